//! A publisher's stream changing codec under the same SSRC.
//!
//! rtc binds a published track with the codec of its first packet. A
//! browser may send those first packets in the offer's first codec (VP8)
//! and only then the codec the page chose with `setParameters`
//! (`encodings[].codec`, as web/minimal.html does for H.264), or switch
//! codec mid-call the same way. Forwarding the new codec's packets under
//! the old codec's payload type leaves every subscriber's decoder with
//! nothing it can decode (and asking for keyframes forever), so each
//! packet's payload type is compared with the track's, and a change is
//! looked up in the publisher's negotiated codecs: the track takes the new
//! codec, down tracks resynchronise on its keyframe, and subscribers get
//! the new codec's payload type, or `track_unsupported` if they did not
//! accept it.

use super::*;

/// What to do with a packet whose payload type is not the track's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PayloadTypeCheck {
    /// The track's codec (first packet, or another payload type of it).
    Same,
    /// The track now carries another codec; forward the packet.
    Changed,
    /// Not a payload type the publisher negotiated for this track: drop.
    Unknown,
}

impl Router {
    /// Checks `payload_type` of a packet of track `key` against the track's
    /// and adopts a new codec; cheap when it matches (the per-packet case).
    pub(super) fn check_payload_type(
        &mut self,
        conn: ConnKey,
        key: TrackKey,
        payload_type: u8,
        now: Instant,
    ) -> PayloadTypeCheck {
        let Some(track) = self.tracks.get_mut(&key) else {
            return PayloadTypeCheck::Same;
        };
        if track.payload_type == Some(payload_type) {
            return PayloadTypeCheck::Same;
        }
        let Some(peer) = self.peers.get_mut(&conn) else {
            return PayloadTypeCheck::Same;
        };
        let codecs = peer
            .pc
            .rtp_receiver(track.receiver_id)
            .map(|mut r| r.get_parameters().rtp_parameters.codecs.clone())
            .unwrap_or_default();
        if codecs.is_empty() {
            // Nothing to check against: forward as before, and stop asking.
            track.payload_type = Some(payload_type);
            return PayloadTypeCheck::Same;
        }
        let Some(codec) = codecs.iter().find(|c| c.payload_type == payload_type) else {
            tracing::debug!(participant = %peer.participant, track = key, payload_type, "packet of a payload type not negotiated for its track: dropped");
            return PayloadTypeCheck::Unknown;
        };
        let (mime_type, clock_rate) = (
            codec.rtp_codec.mime_type.clone(),
            codec.rtp_codec.clock_rate,
        );
        if mime_type.eq_ignore_ascii_case(&track.mime_type) {
            track.payload_type = Some(payload_type);
            return PayloadTypeCheck::Same;
        }
        tracing::info!(participant = %peer.participant, track = key, from = %track.mime_type, to = %mime_type, payload_type, "publisher changed codec");
        track.change_codec(mime_type, clock_rate, payload_type);
        // Feedback (NACK, keyframe requests) follows the codec too.
        let feedback = engine::stream_feedback(track.kind);
        for layer in &track.layers {
            peer.feedback.bind(
                layer.ssrc,
                &track.mime_type,
                track.clock_rate,
                &feedback,
                &track.extensions,
            );
        }
        let subscribers: Vec<ConnKey> = track.down_tracks.iter().map(|d| d.subscriber).collect();
        for subscriber in subscribers {
            self.refresh_rewriters(subscriber, now);
        }
        PayloadTypeCheck::Changed
    }
}
