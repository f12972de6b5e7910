//! Screen shares: a video track a client publishes through an m-section of
//! its own offer (contract: "a client may itself offer ... to publish a
//! screen share as an extra track"). They start like any track (`publish`
//! marks them, see [`is_screen_share`]); they end when the client's next
//! offer stops sending in that section, because rtc 0.21.1 reports no track
//! end of its own.

use super::*;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpTransceiverId};

/// Whether a video track arriving in m-section `section` of `peer` (its
/// first encoding tagged `rid`) is a screen share: see [`screen_share_rule`].
pub(super) fn is_screen_share(
    peer: &mut Peer,
    tracks: &crate::FastMap<TrackKey, PublishedTrack>,
    section: RTCRtpTransceiverId,
    rid: &str,
) -> bool {
    let in_publish_section = peer.publish_sections.contains(&section);
    let mut camera_section_receives = false;
    for &id in &peer.publish_sections {
        let is_video = peer
            .pc
            .rtp_receiver(RTCRtpReceiverId::from(id))
            .is_some_and(|r| r.track().kind() == RtpCodecKind::Video);
        let receiving = peer.pc.rtp_transceiver(id).is_some_and(|t| {
            matches!(
                t.current_direction(),
                RTCRtpTransceiverDirection::Recvonly | RTCRtpTransceiverDirection::Sendrecv
            )
        });
        camera_section_receives |= is_video && receiving;
    }
    let camera_published = peer
        .published
        .values()
        .filter_map(|k| tracks.get(k))
        .any(|t| t.is_video() && !t.screen_share);
    screen_share_rule(
        in_publish_section,
        !rid.is_empty(),
        camera_section_receives || camera_published,
    )
}

/// The camera comes in the server's recvonly video section; a video of one
/// of the client's own sections is an extra video, a screen share (the web
/// client's are one plain encoding), except one case: the contract lets a
/// client publish its camera as simulcast encodings "in its own offer"
/// too, so a rid-tagged video of the client's own section is its camera
/// when the client has no other camera (it sends nothing in the server's
/// video section and has published no camera elsewhere).
fn screen_share_rule(in_publish_section: bool, rid_tagged: bool, other_camera: bool) -> bool {
    let own_camera = rid_tagged && !other_camera;
    !in_publish_section && !own_camera
}

impl Router {
    /// After the client's offer `sdp` was applied: unpublishes every track
    /// of `conn` whose m-section the offer no longer sends in (the client
    /// removed the track, or stopped the transceiver).
    pub(super) fn unpublish_stopped(&mut self, conn: ConnKey, sdp: &str) {
        let stopped = sections_not_sending(sdp);
        if stopped.is_empty() {
            return;
        }
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let mut ended = Vec::new();
        for (track_id, key) in &peer.published {
            let Some(track) = self.tracks.get(key) else {
                continue;
            };
            let transceiver = RTCRtpTransceiverId::from(track.receiver_id);
            let mid = peer
                .pc
                .rtp_transceiver(transceiver)
                .and_then(|t| t.mid().clone());
            if mid.is_some_and(|mid| stopped.contains(&mid)) {
                ended.push(track_id.clone());
            }
        }
        for track_id in ended {
            tracing::info!(participant = %peer_name(&self.peers, conn), %track_id, "track stopped by the client's offer");
            self.unpublish(conn, &track_id);
        }
    }

    /// A restarted connection's screen shares end with it.
    pub(super) fn end_screen_shares(&mut self, published: &HashMap<String, TrackKey>) {
        for key in published.values() {
            if !self.tracks.get(key).is_some_and(|t| t.screen_share) {
                continue;
            }
            if let Some(track) = self.tracks.remove(key) {
                for dt in track.down_tracks {
                    self.remove_down_track(dt, track.kind);
                }
            }
        }
    }
}

fn peer_name(peers: &crate::FastMap<ConnKey, Peer>, conn: ConnKey) -> &str {
    peers
        .get(&conn)
        .map(|p| p.participant.as_str())
        .unwrap_or("?")
}

/// The mids of the m-sections in `sdp` that carry no media from its author:
/// rejected (port 0), `inactive` or `recvonly`.
fn sections_not_sending(sdp: &str) -> Vec<String> {
    let mut out = Vec::new();
    for section in sdp.split("\nm=").skip(1) {
        let rejected = section.split_whitespace().nth(1) == Some("0");
        let mut mid = None;
        let mut sending = true;
        for line in section.lines().map(str::trim_end) {
            if let Some(value) = line.strip_prefix("a=mid:") {
                mid = Some(value.to_owned());
            } else if line == "a=inactive" || line == "a=recvonly" {
                sending = false;
            }
        }
        if let Some(mid) = mid.filter(|_| rejected || !sending) {
            out.push(mid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{screen_share_rule, sections_not_sending};

    #[test]
    fn a_client_offered_simulcast_video_is_the_camera_unless_there_is_one() {
        // (in the server's video section, rid-tagged, another camera) -> screen share
        assert!(
            !screen_share_rule(true, true, false),
            "server-offered simulcast camera"
        );
        assert!(
            !screen_share_rule(true, false, false),
            "server-offered plain camera"
        );
        assert!(
            screen_share_rule(false, false, false),
            "the web client's share: one plain encoding"
        );
        assert!(
            screen_share_rule(false, false, true),
            "a plain share beside the camera"
        );
        assert!(
            !screen_share_rule(false, true, false),
            "a camera offered as simulcast by the client"
        );
        assert!(
            screen_share_rule(false, true, true),
            "a simulcast extra video beside the camera"
        );
    }

    #[test]
    fn finds_sections_that_stopped_sending() {
        let sdp = "v=0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=inactive\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:4\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:5\r\na=sendrecv\r\n";
        assert_eq!(sections_not_sending(sdp), vec!["2", "3", "4"]);
        assert!(sections_not_sending("not sdp").is_empty());
    }
}
