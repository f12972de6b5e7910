//! Publishing synthetic video as three simulcast encodings, the way
//! Chromium answers a server offer that asks for them (RFC 8853): rids
//! `q`, `h`, `f` at 320x180, 640x360 and 1280x720, one SSRC each, the
//! `a=rid`/`a=simulcast` lines of the offer kept so the answer mirrors them,
//! and the mid and rid header extensions on each encoding's first packets
//! (the server binds an encoding by them: the answer declares no SSRCs).
//!
//! The VP8 payloads carry the descriptor a real encoder writes (15-bit
//! picture id, TL0PICIDX) and keyframe headers with each encoding's size,
//! so the server's layer selector and its descriptor rewrite at a switch
//! work on them as on a browser's. The stamp of [`crate::rtp_synth`] is at
//! the same place, followed by the rid's letter ([`rid_of_payload`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rtc::rtp;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::rtp_transceiver::RtpTransceiver;

use crate::rtp_synth::{
    random_u32, read_stamp, FrameSchedule, MediaProfile, SendGate, VIDEO_OVERHEAD, VIDEO_STAMP_AT,
};
use crate::MediaKind;

/// One encoding of the synthetic camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimulcastLayer {
    pub rid: &'static str,
    pub width: u16,
    pub height: u16,
    /// Bits per second of video (payload and headers).
    pub bitrate: u64,
}

/// Lowest first, as the server's `a=simulcast:recv q;h;f` asks; about what
/// Chromium sends of a 1280x720 camera.
pub const LAYERS: [SimulcastLayer; 3] = [
    SimulcastLayer {
        rid: "q",
        width: 320,
        height: 180,
        bitrate: 150_000,
    },
    SimulcastLayer {
        rid: "h",
        width: 640,
        height: 360,
        bitrate: 500_000,
    },
    SimulcastLayer {
        rid: "f",
        width: 1280,
        height: 720,
        bitrate: 1_700_000,
    },
];

/// Each encoding's first packets carry the mid and rid extensions for this
/// long (Chromium keeps them until the receiver acknowledges the stream).
const TAG_FOR: Duration = Duration::from_secs(3);

impl SimulcastLayer {
    /// The publisher settings of this encoding: its bitrate, and packets no
    /// larger than one frame (a 180p frame fits one small packet).
    pub fn profile(&self, base: &MediaProfile) -> MediaProfile {
        let per_frame = (self.bitrate / 8 / u64::from(base.fps.max(1))) as usize;
        MediaProfile {
            video_bitrate: self.bitrate,
            packet_size: base.packet_size.min(per_frame.max(VIDEO_OVERHEAD + 64)),
            fixed_frames: None,
            ..*base
        }
    }

    /// Video packets per second of this encoding.
    pub fn packets_per_second(&self, base: &MediaProfile) -> f64 {
        self.profile(base).video_packets_per_second()
    }
}

/// The rid letter a simulcast payload carries after its stamp.
pub fn rid_of_payload(payload: &[u8]) -> Option<&'static str> {
    read_stamp(payload)?;
    let letter = *payload.get(VIDEO_STAMP_AT + 10)?;
    LAYERS
        .iter()
        .find(|l| l.rid.as_bytes()[0] == letter)
        .map(|l| l.rid)
}

/// What the descriptor of one packet says (RFC 7741: X, I with a 15-bit
/// picture id, L with TL0PICIDX; no temporal layers, so every frame is
/// TL0).
#[derive(Debug, Clone, Copy)]
pub struct Vp8Picture {
    pub picture_id: u16,
    pub tl0_pic_idx: u8,
    pub first_of_frame: bool,
    pub key: bool,
}

/// A simulcast video payload of `size` bytes (at least 27): descriptor,
/// frame tag, a keyframe's start code and size, the stamp, the rid letter.
pub fn vp8_payload(
    size: usize,
    pic: Vp8Picture,
    layer: &SimulcastLayer,
    ssrc: u32,
    seq: u16,
) -> Vec<u8> {
    let mut p = vec![0u8; size.max(VIDEO_STAMP_AT + 11)];
    p[0] = 0x80 | if pic.first_of_frame { 0x10 } else { 0 }; // X, S, PID 0
    p[1] = 0xC0; // I, L
    p[2] = 0x80 | ((pic.picture_id >> 8) & 0x7f) as u8; // M: 15 bits
    p[3] = pic.picture_id as u8;
    p[4] = pic.tl0_pic_idx;
    if pic.first_of_frame {
        // Frame tag: first partition size 100, show_frame, P bit 0 for a
        // keyframe; then a keyframe's start code, width and height.
        let tag: u32 = (100 << 5) | (1 << 4) | u32::from(!pic.key);
        p[5..8].copy_from_slice(&tag.to_le_bytes()[..3]);
        if pic.key {
            p[8..11].copy_from_slice(&[0x9d, 0x01, 0x2a]);
            p[11..13].copy_from_slice(&layer.width.to_le_bytes());
            p[13..15].copy_from_slice(&layer.height.to_le_bytes());
        }
    }
    p[VIDEO_STAMP_AT..VIDEO_STAMP_AT + 4].copy_from_slice(&crate::rtp_synth::MAGIC.to_be_bytes());
    p[VIDEO_STAMP_AT + 4..VIDEO_STAMP_AT + 8].copy_from_slice(&ssrc.to_be_bytes());
    p[VIDEO_STAMP_AT + 8..VIDEO_STAMP_AT + 10].copy_from_slice(&seq.to_be_bytes());
    p[VIDEO_STAMP_AT + 10] = layer.rid.as_bytes()[0];
    p
}

/// The mid of our video section and the ids of the mid and rid header
/// extensions, once negotiated.
async fn tagging(transceiver: &Arc<dyn RtpTransceiver>) -> Option<(Bytes, u8, u8)> {
    use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
    let mid = transceiver.mid().await.ok()??;
    let sender = transceiver.sender().await.ok()??;
    let params = sender.get_parameters().await.ok()?;
    let id = |uri: &str| {
        params
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|e| e.uri == uri)
            .map(|e| e.id as u8)
    };
    Some((
        Bytes::from(mid),
        id(SDES_MID_URI)?,
        id(SDES_RTP_STREAM_ID_URI)?,
    ))
}

/// One encoding's numbering.
struct Encoding {
    layer: SimulcastLayer,
    ssrc: u32,
    profile: MediaProfile,
    schedule: FrameSchedule,
    seq: u16,
    ts: u32,
    picture_id: u16,
    tl0: u8,
}

/// Publishes the three encodings on `track` (whose codings are `ssrcs`,
/// rids q, h, f) at `base.fps` while the gate allows it: keyframes on all
/// three at once, first and every `keyframe_interval`, marker on each
/// frame's last packet. Runs until the task is aborted.
pub async fn publish_simulcast_video(
    gate: Arc<dyn SendGate>,
    track: Arc<TrackLocalStaticRTP>,
    transceiver: Arc<dyn RtpTransceiver>,
    ssrcs: [u32; 3],
    base: MediaProfile,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / base.fps.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let step = 90_000 / base.fps.max(1);
    let mut encodings: Vec<Encoding> = LAYERS
        .iter()
        .zip(ssrcs)
        .map(|(layer, ssrc)| {
            let profile = layer.profile(&base);
            Encoding {
                layer: *layer,
                ssrc,
                profile,
                schedule: FrameSchedule::new(&profile),
                seq: (random_u32() & 0x7fff) as u16,
                ts: random_u32(),
                picture_id: (random_u32() & 0x7fff) as u16,
                tl0: random_u32() as u8,
            }
        })
        .collect();
    let mut tags: Option<(Bytes, u8, u8)> = None;
    let mut tagging_until = None;
    loop {
        tick.tick().await;
        for e in &mut encodings {
            e.ts = e.ts.wrapping_add(step);
        }
        let Some(pt) = gate.payload_type(MediaKind::Video) else {
            continue;
        };
        if tags.is_none() {
            tags = tagging(&transceiver).await;
            if tags.is_none() {
                continue; // the server could not bind the encodings yet
            }
        }
        let tag = *tagging_until.get_or_insert_with(|| tokio::time::Instant::now() + TAG_FOR)
            > tokio::time::Instant::now();
        for e in &mut encodings {
            let (key, count) = e.schedule.next_frame();
            let size = e.profile.payload_size(key);
            e.picture_id = (e.picture_id + 1) & 0x7fff;
            e.tl0 = e.tl0.wrapping_add(1);
            for i in 0..count {
                let pic = Vp8Picture {
                    picture_id: e.picture_id,
                    tl0_pic_idx: e.tl0,
                    first_of_frame: i == 0,
                    key,
                };
                let mut header = rtp::header::Header {
                    version: 2,
                    marker: i + 1 == count,
                    payload_type: pt,
                    sequence_number: e.seq,
                    timestamp: e.ts,
                    ssrc: e.ssrc,
                    ..Default::default()
                };
                if let (true, Some((mid, mid_id, rid_id))) = (tag, &tags) {
                    let rid = Bytes::from_static(e.layer.rid.as_bytes());
                    if header.set_extension(*mid_id, mid.clone()).is_err()
                        || header.set_extension(*rid_id, rid).is_err()
                    {
                        continue;
                    }
                }
                let pkt = rtp::Packet {
                    payload: Bytes::from(vp8_payload(size, pic, &e.layer, e.ssrc, e.seq)),
                    header,
                };
                e.seq = e.seq.wrapping_add(1);
                let header = pkt.header.clone();
                if track.write_rtp(pkt).await.is_ok() {
                    gate.on_sent(MediaKind::Video, &header, key && i == 0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp_synth::is_vp8_keyframe;

    #[test]
    fn payloads_carry_a_full_descriptor_the_size_and_the_rid() {
        let key = Vp8Picture {
            picture_id: 300,
            tl0_pic_idx: 7,
            first_of_frame: true,
            key: true,
        };
        let p = vp8_payload(600, key, &LAYERS[1], 42, 9);
        assert!(is_vp8_keyframe(&p));
        assert_eq!(&p[11..15], &[0x80, 0x02, 0x68, 0x01]); // 640 x 360
        assert_eq!(read_stamp(&p), Some((42, 9)));
        assert_eq!(rid_of_payload(&p), Some("h"));
        let delta = Vp8Picture { key: false, ..key };
        assert!(!is_vp8_keyframe(&vp8_payload(
            600, delta, &LAYERS[2], 42, 10
        )));
        assert_eq!(
            rid_of_payload(&crate::rtp_synth::video_payload(600, true, true, 1, 2)),
            None
        );
    }

    #[test]
    fn layer_rates_follow_the_layers() {
        let base = MediaProfile::default();
        let pps: Vec<f64> = LAYERS.iter().map(|l| l.packets_per_second(&base)).collect();
        // q: one 625-byte packet per frame; f: 1,200-byte packets.
        assert!((pps[0] - 30.0).abs() < 0.5, "{pps:?}");
        assert!(pps[0] < pps[1] && pps[1] < pps[2], "{pps:?}");
        assert!(
            (pps[2] - 1_700_000.0 / 8.0 / 1_200.0).abs() < 1.0,
            "{pps:?}"
        );
    }
}
