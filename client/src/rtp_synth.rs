//! Synthetic media: Opus-sized audio and VP8-like video RTP that any SFU
//! forwards like the real thing (a VP8 payload descriptor, a frame tag with
//! the keyframe bit, a keyframe's start code), without an encoder.
//!
//! Every payload carries its publisher's `(ssrc, seq)` behind a magic word
//! (a *stamp*), so a receiver can tell which published packet it got even
//! after the server rewrote SSRC and sequence numbers; the load generator
//! pairs it with wire timestamps to measure the server's added latency.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;

use crate::MediaKind;

/// Marks a payload that carries a stamp ("NOOM").
pub const MAGIC: u32 = 0x4E4F_4F4D;
/// Where the stamp sits in a video payload (after the VP8 descriptor, the
/// frame tag and a keyframe's start code).
pub const VIDEO_STAMP_AT: usize = 16;
/// Where the stamp sits in an audio payload (after the Opus TOC byte).
pub const AUDIO_STAMP_AT: usize = 4;
/// Opus at about 32 kbit/s: 80 bytes every 20 ms.
pub const AUDIO_PAYLOAD: usize = 80;
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// Bytes of a video packet that are not payload: RTP header (12), the
/// extensions a WebRTC stack adds (about 12) and the SRTP tag (16).
pub const VIDEO_OVERHEAD: usize = 40;

/// Opus as browsers offer it.
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// VP8 without feedback parameters (the server adds what it supports).
pub fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// Frames of fixed sizes: `(packets, payload bytes per packet)` of a
/// keyframe and of a delta frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedFrames {
    pub key: (u32, usize),
    pub delta: (u32, usize),
}

/// The synthetic publisher's settings.
#[derive(Debug, Clone, Copy)]
pub struct MediaProfile {
    /// Video bits per second (payload and headers).
    pub video_bitrate: u64,
    /// Bytes per video packet on the wire.
    pub packet_size: usize,
    pub fps: u32,
    pub keyframe_interval: Duration,
    pub audio: bool,
    /// When set, frame sizes are these instead of following the bitrate.
    pub fixed_frames: Option<FixedFrames>,
}

/// The load generator's default: 1.5 Mbit/s of 1,200-byte packets.
impl Default for MediaProfile {
    fn default() -> Self {
        MediaProfile {
            video_bitrate: 1_500_000,
            packet_size: 1_200,
            fps: 30,
            keyframe_interval: Duration::from_secs(2),
            audio: true,
            fixed_frames: None,
        }
    }
}

impl MediaProfile {
    /// A light call participant (about 250 kbit/s of video at 30 fps): a
    /// keyframe of 3 × 1,000 bytes every 2 s, deltas of 2 × 500 bytes. What
    /// [`crate::Client`] publishes unless told otherwise; small and regular,
    /// so tests can reason about packet counts.
    pub fn light() -> Self {
        MediaProfile {
            fixed_frames: Some(FixedFrames {
                key: (3, 1000),
                delta: (2, 500),
            }),
            ..MediaProfile::default()
        }
    }

    pub fn video_packets_per_second(&self) -> f64 {
        match self.fixed_frames {
            Some(f) => {
                let gop = self.frames_per_gop() as f64;
                (f.key.0 as f64 + f.delta.0 as f64 * (gop - 1.0)) / gop * self.fps.max(1) as f64
            }
            None => self.video_bitrate as f64 / 8.0 / self.packet_size as f64,
        }
    }

    pub fn packets_per_second(&self) -> f64 {
        self.video_packets_per_second() + if self.audio { 50.0 } else { 0.0 }
    }

    /// Payload bytes of a video packet of a bitrate-driven profile.
    pub fn video_payload(&self) -> usize {
        self.packet_size.saturating_sub(VIDEO_OVERHEAD).max(64)
    }

    /// Payload bytes of each packet of a keyframe or a delta frame.
    pub fn payload_size(&self, key: bool) -> usize {
        match self.fixed_frames {
            Some(f) if key => f.key.1,
            Some(f) => f.delta.1,
            None => self.video_payload(),
        }
    }

    fn frames_per_gop(&self) -> u64 {
        let fps = self.fps.max(1) as f64;
        (self.keyframe_interval.as_secs_f64() * fps)
            .round()
            .max(1.0) as u64
    }
}

/// Decides how many packets each video frame has: with fixed frames, those;
/// else a keyframe every `keyframe_interval` three times the size of an
/// average frame, the deltas sharing the rest of the group's budget
/// (fractions carried over).
pub struct FrameSchedule {
    frames_per_gop: u64,
    key_packets: u32,
    delta_packets: f64,
    carry: f64,
    frame: u64,
}

impl FrameSchedule {
    pub fn new(p: &MediaProfile) -> Self {
        let frames_per_gop = p.frames_per_gop();
        let (key_packets, delta_packets) = match p.fixed_frames {
            Some(f) => (f.key.0, f64::from(f.delta.0)),
            None => {
                let fps = p.fps.max(1) as f64;
                let gop_packets = p.video_packets_per_second() * frames_per_gop as f64 / fps;
                let avg = gop_packets / frames_per_gop as f64;
                let key_packets = (avg * 3.0).round().max(1.0) as u32;
                let delta = if frames_per_gop > 1 {
                    ((gop_packets - key_packets as f64) / (frames_per_gop - 1) as f64).max(1.0)
                } else {
                    0.0
                };
                (key_packets, delta)
            }
        };
        FrameSchedule {
            frames_per_gop,
            key_packets,
            delta_packets,
            carry: 0.0,
            frame: 0,
        }
    }

    /// The next frame: (is keyframe, packets).
    pub fn next_frame(&mut self) -> (bool, u32) {
        let key = self.frame.is_multiple_of(self.frames_per_gop);
        self.frame += 1;
        if key {
            return (true, self.key_packets);
        }
        self.carry += self.delta_packets;
        let n = self.carry.floor().max(1.0);
        self.carry -= n;
        (false, n as u32)
    }
}

/// A video payload: VP8 descriptor (S bit on a frame's first packet), a
/// frame tag with the keyframe bit, a keyframe's start code (640x480), then
/// the stamp.
pub fn video_payload(size: usize, first_of_frame: bool, key: bool, ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; size.max(VIDEO_STAMP_AT + 10)];
    if first_of_frame {
        p[0] = 0x10; // S=1, PID=0
                     // Frame tag: first partition size 100, show_frame, version 0, P bit
                     // 0 for a keyframe.
        let tag: u32 = (100 << 5) | (1 << 4) | u32::from(!key);
        p[1] = tag as u8;
        p[2] = (tag >> 8) as u8;
        p[3] = (tag >> 16) as u8;
        if key {
            p[4..11].copy_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
        }
    }
    write_stamp(&mut p[VIDEO_STAMP_AT..], ssrc, seq);
    p
}

/// An Opus-sized audio payload with its stamp.
pub fn audio_payload(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; AUDIO_PAYLOAD];
    p[0] = 0xfc; // TOC: CELT FB 20 ms, stereo, one frame
    write_stamp(&mut p[AUDIO_STAMP_AT..], ssrc, seq);
    p
}

fn write_stamp(b: &mut [u8], ssrc: u32, seq: u16) {
    b[..4].copy_from_slice(&MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&ssrc.to_be_bytes());
    b[8..10].copy_from_slice(&seq.to_be_bytes());
}

/// The publisher's `(ssrc, seq)` of a payload, if it carries a stamp.
pub fn read_stamp(payload: &[u8]) -> Option<(u32, u16)> {
    for at in [VIDEO_STAMP_AT, AUDIO_STAMP_AT] {
        let Some(b) = payload.get(at..at + 10) else {
            continue;
        };
        if b[..4] == MAGIC.to_be_bytes() {
            return Some((
                u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                u16::from_be_bytes([b[8], b[9]]),
            ));
        }
    }
    None
}

/// `(ssrc, seq)` of an RTP datagram (not RTCP, RFC 7983 demultiplexing),
/// from its header, which SRTP leaves in clear.
pub fn rtp_id(d: &[u8]) -> Option<(u32, u16)> {
    if d.len() < 12 || !(128..=191).contains(&d[0]) || (192..=223).contains(&d[1]) {
        return None;
    }
    Some((
        u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        u16::from_be_bytes([d[2], d[3]]),
    ))
}

/// True for the first packet of a VP8 keyframe (RFC 7741 payload descriptor,
/// then the frame tag whose lowest bit is 0 for a keyframe).
pub fn is_vp8_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let s = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !s || pid != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            let Some(&pic) = p.get(i) else { return false };
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    matches!(p.get(i), Some(tag) if tag & 0x01 == 0)
}

/// A random non-zero u32 (std's randomly keyed hasher; no extra crate).
pub fn random_u32() -> u32 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u64(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    (h.finish() >> 16) as u32 | 1
}

/// The payload types negotiated for our audio and video (0: not yet).
#[derive(Debug, Default)]
pub struct PayloadTypes {
    audio: AtomicU32,
    video: AtomicU32,
}

impl PayloadTypes {
    fn slot(&self, kind: MediaKind) -> &AtomicU32 {
        match kind {
            MediaKind::Audio => &self.audio,
            MediaKind::Video => &self.video,
        }
    }

    pub fn set(&self, kind: MediaKind, pt: u8) {
        self.slot(kind).store(u32::from(pt), Ordering::SeqCst);
    }

    /// The payload type to send `kind` with, if `connected` and negotiated:
    /// what [`SendGate::payload_type`] answers.
    pub fn to_send(&self, connected: bool, kind: MediaKind) -> Option<u8> {
        match self.slot(kind).load(Ordering::SeqCst) {
            v if connected && v != 0 => Some(v as u8),
            _ => None,
        }
    }
}

/// What a publishing loop asks of the endpoint it publishes for.
pub trait SendGate: Send + Sync {
    /// The negotiated payload type for `kind`, or `None` while nothing may
    /// be sent (not connected, not negotiated yet).
    fn payload_type(&self, kind: MediaKind) -> Option<u8>;
    /// One packet was handed to the track; `keyframe_start` for the first
    /// packet of a VP8 keyframe.
    fn on_sent(&self, kind: MediaKind, header: &rtp::header::Header, keyframe_start: bool);
}

/// Publishes one Opus-sized packet every 20 ms while the gate allows it
/// (marker on the first, as at the start of a talkspurt). Runs until the
/// task is aborted.
pub async fn publish_audio(gate: Arc<dyn SendGate>, track: Arc<TrackLocalStaticRTP>, ssrc: u32) {
    let mut tick = tokio::time::interval(AUDIO_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = (random_u32() & 0x7fff) as u16;
    let mut ts = random_u32();
    let mut first = true;
    loop {
        tick.tick().await;
        ts = ts.wrapping_add(960);
        let Some(pt) = gate.payload_type(MediaKind::Audio) else {
            continue;
        };
        let pkt = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: first,
                payload_type: pt,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from(audio_payload(ssrc, seq)),
        };
        first = false;
        seq = seq.wrapping_add(1);
        let header = pkt.header.clone();
        if track.write_rtp(pkt).await.is_ok() {
            gate.on_sent(MediaKind::Audio, &header, false);
        }
    }
}

/// Publishes VP8-like frames at `profile.fps` while the gate allows it: a
/// keyframe first and every `keyframe_interval`, marker on each frame's
/// last packet. Runs until the task is aborted.
pub async fn publish_video(
    gate: Arc<dyn SendGate>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    profile: MediaProfile,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / profile.fps.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = (random_u32() & 0x7fff) as u16;
    let mut ts = random_u32();
    let mut schedule = FrameSchedule::new(&profile);
    let step = 90_000 / profile.fps.max(1);
    loop {
        tick.tick().await;
        ts = ts.wrapping_add(step);
        let Some(pt) = gate.payload_type(MediaKind::Video) else {
            continue;
        };
        let (key, count) = schedule.next_frame();
        let size = profile.payload_size(key);
        for i in 0..count {
            let pkt = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: i + 1 == count,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(video_payload(size, i == 0, key, ssrc, seq)),
            };
            seq = seq.wrapping_add(1);
            let header = pkt.header.clone();
            if track.write_rtp(pkt).await.is_ok() {
                gate.on_sent(MediaKind::Video, &header, key && i == 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_keeps_the_bitrate() {
        let p = MediaProfile::default();
        let mut s = FrameSchedule::new(&p);
        let frames = 30 * 10;
        let (mut packets, mut keys) = (0u64, 0);
        for _ in 0..frames {
            let (key, n) = s.next_frame();
            packets += n as u64;
            keys += key as u32;
        }
        let pps = packets as f64 / 10.0;
        assert!((pps - p.video_packets_per_second()).abs() < 3.0, "{pps}");
        assert_eq!(keys, 5);
    }

    #[test]
    fn light_profile_has_fixed_frames() {
        let p = MediaProfile::light();
        let mut s = FrameSchedule::new(&p);
        let frames: Vec<_> = (0..61).map(|_| s.next_frame()).collect();
        assert_eq!(frames[0], (true, 3));
        assert!(frames[1..60].iter().all(|f| *f == (false, 2)));
        assert_eq!(frames[60], (true, 3));
        assert_eq!((p.payload_size(true), p.payload_size(false)), (1000, 500));
    }

    #[test]
    fn stamps_round_trip() {
        let v = video_payload(1160, true, true, 7, 9);
        assert_eq!(read_stamp(&v), Some((7, 9)));
        assert!(is_vp8_keyframe(&v));
        assert!(!is_vp8_keyframe(&video_payload(500, true, false, 7, 10)));
        let a = audio_payload(8, 10);
        assert_eq!(read_stamp(&a), Some((8, 10)));
        assert_eq!(read_stamp(&[0u8; 40]), None);
    }
}
