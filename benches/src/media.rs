//! What every load-generator client shares, whichever server it talks to:
//! the synthetic media (VP8-like video, Opus-sized audio), the stamps that
//! measure the server's added latency, and the run's counters.
//!
//! Latency is measured on the wire, not in the client stacks: a publisher's
//! socket records when each RTP packet `(ssrc, seq)` left it (RTP headers are
//! in clear under SRTP), every subscriber socket reads the kernel's receive
//! stamp of each packet (SO_TIMESTAMPNS, see [`crate::stamp`]), and the
//! payload carries the publisher's `(ssrc, seq)` so the subscriber, once it
//! has decrypted a packet, can pair the two. Sender and receiver are the
//! same process on the same machine, so both are on one clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

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
}

impl Default for MediaProfile {
    fn default() -> Self {
        MediaProfile {
            video_bitrate: 1_500_000,
            packet_size: 1_200,
            fps: 30,
            keyframe_interval: Duration::from_secs(2),
            audio: true,
        }
    }
}

impl MediaProfile {
    pub fn video_packets_per_second(&self) -> f64 {
        self.video_bitrate as f64 / 8.0 / self.packet_size as f64
    }

    pub fn packets_per_second(&self) -> f64 {
        self.video_packets_per_second() + if self.audio { 50.0 } else { 0.0 }
    }

    pub fn video_payload(&self) -> usize {
        self.packet_size.saturating_sub(VIDEO_OVERHEAD).max(64)
    }
}

/// Decides how many packets each video frame has: a keyframe every
/// `keyframe_interval` three times the size of an average frame, the deltas
/// sharing the rest of the group's budget (fractions carried over).
pub struct FrameSchedule {
    frames_per_gop: u64,
    key_packets: u32,
    delta_packets: f64,
    carry: f64,
    frame: u64,
}

impl FrameSchedule {
    pub fn new(p: &MediaProfile) -> Self {
        let fps = p.fps.max(1) as f64;
        let frames_per_gop = (p.keyframe_interval.as_secs_f64() * fps).round().max(1.0) as u64;
        let gop_packets = p.video_packets_per_second() * frames_per_gop as f64 / fps;
        let avg = gop_packets / frames_per_gop as f64;
        let key_packets = (avg * 3.0).round().max(1.0) as u32;
        let delta_packets = if frames_per_gop > 1 {
            ((gop_packets - key_packets as f64) / (frames_per_gop - 1) as f64).max(1.0)
        } else {
            0.0
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
/// frame tag with the keyframe bit, a keyframe's start code, then the stamp.
pub fn video_payload(size: usize, first_of_frame: bool, key: bool, ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; size.max(VIDEO_STAMP_AT + 10)];
    if first_of_frame {
        p[0] = 0x10; // S=1, PID=0
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
    p[0] = 0xfc; // TOC: CELT FB 20 ms
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

/// `(ssrc, seq)` of an RTP datagram (not RTCP), from its clear header.
pub fn rtp_id(d: &[u8]) -> Option<(u32, u16)> {
    if d.len() < 12 || !(128..=191).contains(&d[0]) || (192..=223).contains(&d[1]) {
        return None;
    }
    Some((
        u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        u16::from_be_bytes([d[2], d[3]]),
    ))
}

const SEND_RING: usize = 4096;

/// When each published packet left its publisher's socket, by (ssrc, seq),
/// for the last `SEND_RING` packets of each SSRC.
#[derive(Default)]
pub struct SendStamps {
    rings: Mutex<HashMap<u32, Vec<(u16, u64)>>>,
}

impl SendStamps {
    pub fn global() -> &'static SendStamps {
        static S: OnceLock<SendStamps> = OnceLock::new();
        S.get_or_init(SendStamps::default)
    }

    /// `at_ns`: [`crate::stamp::now_ns`] right before `send_to`.
    pub fn record(&self, ssrc: u32, seq: u16, at_ns: u64) {
        let mut rings = self.rings.lock().unwrap();
        let ring = rings
            .entry(ssrc)
            .or_insert_with(|| vec![(0, u64::MAX); SEND_RING]);
        ring[seq as usize % SEND_RING] = (seq, at_ns);
    }

    pub fn get(&self, ssrc: u32, seq: u16) -> Option<u64> {
        let rings = self.rings.lock().unwrap();
        let (s, t) = rings.get(&ssrc)?[seq as usize % SEND_RING];
        (s == seq && t != u64::MAX).then_some(t)
    }
}

/// When RTP packets arrived at one subscriber's socket, until its stack
/// hands them over decrypted.
#[derive(Default, Debug)]
pub struct RecvStamps {
    map: Mutex<HashMap<(u32, u16), u64>>,
}

impl RecvStamps {
    /// `at_ns`: the kernel's receive stamp.
    pub fn record(&self, ssrc: u32, seq: u16, at_ns: u64) {
        let mut map = self.map.lock().unwrap();
        if map.len() > 20_000 {
            map.clear(); // packets the stack never delivered (not ours)
        }
        map.insert((ssrc, seq), at_ns);
    }

    pub fn take(&self, ssrc: u32, seq: u16) -> Option<u64> {
        self.map.lock().unwrap().remove(&(ssrc, seq))
    }
}

/// Counters of one scenario run, shared by every client.
#[derive(Default)]
pub struct Metrics {
    /// Set during the measurement window only.
    pub measuring: AtomicBool,
    /// Packets publishers sent in the window.
    pub sent: AtomicU64,
    /// Sent packets times the receivers each should reach.
    pub expected: AtomicU64,
    /// Packets subscribers received in the window (all tracks).
    pub received: AtomicU64,
    pub received_video: AtomicU64,
    /// Latency samples (microseconds, wire to wire) in the window.
    latencies: Mutex<Vec<u32>>,
    /// Received packets without a usable stamp pairing.
    pub unstamped: AtomicU64,
    /// join -> first forwarded packet, per receiving participant (ms).
    join_to_first: Mutex<Vec<f64>>,
    pub errors: Mutex<Vec<String>>,
    /// Joins retried because the peer connection did not come up (seen:
    /// DTLS handshakes of the webrtc-rs client that never finish, about 1 in
    /// 100 under load; see RESULTS.md).
    pub join_retries: AtomicU64,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    pub fn is_measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    /// A publisher sent one packet that `fanout` receivers should get.
    pub fn on_sent(&self, fanout: u64) {
        if self.is_measuring() {
            self.sent.fetch_add(1, Ordering::Relaxed);
            self.expected.fetch_add(fanout, Ordering::Relaxed);
        }
    }

    /// A subscriber got one packet; `sent_ns`/`arrived_ns` from the stamps.
    pub fn on_received(&self, video: bool, sent_ns: Option<u64>, arrived_ns: Option<u64>) {
        if !self.is_measuring() {
            return;
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        if video {
            self.received_video.fetch_add(1, Ordering::Relaxed);
        }
        match (sent_ns, arrived_ns) {
            (Some(s), Some(a)) if a >= s => {
                let us = ((a - s) / 1000).min(u32::MAX as u64) as u32;
                self.latencies.lock().unwrap().push(us);
            }
            _ => {
                self.unstamped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn on_first_packet(&self, join_to_first: Duration) {
        self.join_to_first
            .lock()
            .unwrap()
            .push(join_to_first.as_secs_f64() * 1000.0);
    }

    pub fn error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 50 {
            errors.push(e);
        }
    }

    pub fn latencies_us(&self) -> Vec<u32> {
        let mut v = self.latencies.lock().unwrap().clone();
        v.sort_unstable();
        v
    }

    pub fn join_to_first_ms(&self) -> Vec<f64> {
        let mut v = self.join_to_first.lock().unwrap().clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }
}

/// The value at quantile `q` of sorted samples.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

/// A random non-zero u32 (std's randomly keyed hasher; no extra crate).
pub fn random_u32() -> u32 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u64(crate::stamp::now_ns());
    (h.finish() >> 16) as u32 | 1
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
    fn stamps_round_trip() {
        let v = video_payload(1160, true, true, 7, 9);
        assert_eq!(read_stamp(&v), Some((7, 9)));
        assert_eq!(v[0], 0x10);
        let a = audio_payload(8, 10);
        assert_eq!(read_stamp(&a), Some((8, 10)));
        assert_eq!(read_stamp(&[0u8; 40]), None);
    }
}
