//! What every load-generator client shares, whichever server it talks to:
//! the stamps that measure the server's added latency and the run's
//! counters. The synthetic media itself (VP8-like video, Opus-sized audio,
//! the `(ssrc, seq)` stamp in each payload) is `noom_client::rtp_synth`,
//! re-exported here.
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
use std::time::{Duration, Instant};

use noom_client::{MediaKind, MediaObserver};

use crate::layer_counts::LayerCounts;
use rtc::rtp::Packet;

pub use noom_client::rtp_synth::{
    audio_payload, random_u32, read_stamp, rtp_id, video_payload, FrameSchedule, MediaProfile,
    AUDIO_INTERVAL,
};

/// How long a join may take to reach `connected` before it is retried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// One participant's view of its media for the run's counters: what it
/// sends (times the receivers each packet should reach) and receives (with
/// latency from the stamps), and when its first packet arrived after joining.
pub struct LoadObserver {
    metrics: Arc<Metrics>,
    recv_stamps: Arc<RecvStamps>,
    /// Receivers each published packet should reach.
    fanout: AtomicU64,
    packets_received: AtomicU64,
    /// When this participant asked to receive (join); the first packet
    /// after it is recorded once.
    join_at: Mutex<Option<Instant>>,
    first_seen: AtomicBool,
    /// Simulcast: which encoding of each publisher arrived (window only).
    pub layers: LayerCounts,
}

impl LoadObserver {
    pub fn new(metrics: Arc<Metrics>) -> Arc<LoadObserver> {
        Arc::new(LoadObserver {
            metrics,
            recv_stamps: Arc::default(),
            fanout: AtomicU64::new(0),
            packets_received: AtomicU64::new(0),
            join_at: Mutex::new(None),
            first_seen: AtomicBool::new(false),
            layers: LayerCounts::default(),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Where this participant's socket records arrival stamps.
    pub fn recv_stamps(&self) -> Arc<RecvStamps> {
        Arc::clone(&self.recv_stamps)
    }

    /// Receivers each published packet should reach (for loss).
    pub fn set_fanout(&self, n: u64) {
        self.fanout.store(n, Ordering::Relaxed);
    }

    /// The moment this participant asked for media (join -> first packet).
    pub fn mark_join(&self) {
        *self.join_at.lock().unwrap() = Some(Instant::now());
    }

    pub fn packets_received(&self) -> u64 {
        self.packets_received.load(Ordering::Relaxed)
    }
}

impl MediaObserver for LoadObserver {
    fn on_sent(&self, _kind: MediaKind) {
        self.metrics.on_sent(self.fanout.load(Ordering::Relaxed));
    }

    fn on_received(&self, kind: MediaKind, pkt: &Packet) {
        self.packets_received.fetch_add(1, Ordering::Relaxed);
        let arrived = self
            .recv_stamps
            .take(pkt.header.ssrc, pkt.header.sequence_number);
        let sent = read_stamp(&pkt.payload).and_then(|(s, q)| SendStamps::global().get(s, q));
        self.metrics
            .on_received(kind == MediaKind::Video, sent, arrived);
        if kind == MediaKind::Video && self.metrics.is_measuring() {
            self.layers.on_video(&pkt.payload);
        }
        if !self.first_seen.swap(true, Ordering::Relaxed) {
            if let Some(at) = *self.join_at.lock().unwrap() {
                self.metrics.on_first_packet(at.elapsed());
            }
        }
    }
}
