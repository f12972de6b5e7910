//! Per-shard counters, written by the shard thread and read by metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        /// Counters of one shard. Relaxed atomics: each is written by one thread.
        #[derive(Debug, Default)]
        pub struct ShardStats { $(#[doc = $doc] pub $name: AtomicU64,)* }

        /// A copy of [`ShardStats`] at one instant.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct ShardStatsSnapshot { $(#[doc = $doc] pub $name: u64,)* }

        impl ShardStats {
            pub fn snapshot(&self) -> ShardStatsSnapshot {
                ShardStatsSnapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }
    };
}

counters! {
    datagrams_in: "UDP datagrams received",
    bytes_in: "UDP bytes received",
    datagrams_out: "UDP datagrams sent",
    bytes_out: "UDP bytes sent",
    dropped_datagrams: "datagrams dropped: unknown protocol, unknown sender or rejected by the connection",
    early_dtls_replayed: "DTLS datagrams that arrived before ICE selected a pair, held and read once it had (see `EarlyDtls`)",
    early_dtls_dropped: "DTLS datagrams that arrived before ICE selected a pair and were dropped (hold full, or the connection went away first); also in dropped_datagrams",
    fast_path_connections: "connections whose forwarded media the router protects and sends itself (SRTP keys recovered, see `srtp_key_tap`)",
    fast_path_refused: "connections whose SRTP keys could not be recovered: their forwarded media stays on rtc's pipeline",
    srtp_rejected: "client RTP and RTCP refused by the fast path's SRTP check (authentication or replay); also in dropped_datagrams",
    rtp_in: "RTP packets received from publishers",
    rtp_in_direct: "of rtp_in, the packets read without rtc's pipeline (fast path: own SRTP check)",
    rtcp_in_direct: "RTCP datagrams from clients read without rtc's pipeline (fast path: own SRTCP check)",
    rtp_forwarded: "RTP packets handed to subscribers' connections",
    rtp_lost: "RTP packets missing from publishers' streams (sequence gaps on arrival)",
    keyframe_requests_in: "PLI/FIR received from subscribers",
    keyframe_requests_out: "PLI sent to publishers",
    nacks_in: "NACK packets received from subscribers",
    retransmissions: "packets re-sent from the packet cache for NACKs",
    retransmissions_skipped: "NACKed packets not re-sent: the subscriber's retransmission budget (a share of its bandwidth estimate) was spent",
    layer_switches: "simulcast encoding switches made for subscribers (each at a keyframe of the new encoding)",
    padding_packets: "padding-only packets sent to subscribers as bandwidth probes (see `bwe::Prober`)",
    paced_datagrams: "packets toward congested subscribers that waited in their pacer before leaving (see `pacer`)",
    forwarded_video_layer_0: "video streams forwarded on their lowest flowing encoding (gauge, set each second)",
    forwarded_video_layer_1: "video streams forwarded on their second encoding (gauge)",
    forwarded_video_layer_2: "video streams forwarded on their third encoding or above (gauge)",
    forwarded_video_paused: "video streams not forwarded: paused by the allocator or hidden by the subscriber (gauge)",
    peers: "peer connections on this shard",
    rooms: "rooms on this shard",
    tracks: "published tracks on this shard",
    tcp_connections: "ICE-TCP connections open on this shard",
    tcp_dropped: "packets dropped because an ICE-TCP connection's send queue was full (its peer reads too slowly)",
    loop_busy_micros: "microseconds the event loop spent working (not waiting)",
    data_messages_in: "data-channel messages received",
    data_bytes_relayed: "file bytes relayed over data channels",
    data_errors: "data-channel frames refused",
    data_queue_peak_bytes: "largest number of bytes ever queued toward one data channel (bounded by back-pressure)",
    bwe_subscribers: "connections whose bandwidth estimate has taken transport-wide feedback (a gauge, set each second)",
    bwe_estimate_le_300k: "of bwe_subscribers, those estimated at 300 kbit/s or less (gauge)",
    bwe_estimate_le_1m: "of bwe_subscribers, those estimated at 1 Mbit/s or less (gauge)",
    bwe_estimate_le_3m: "of bwe_subscribers, those estimated at 3 Mbit/s or less (gauge)",
    bwe_estimate_sum_bps: "sum of bwe_subscribers' estimates in bit/s (gauge; with bwe_subscribers, the mean)",
}

/// Upper bounds (bit/s) of the estimate bands counted above, matching
/// `bwe_estimate_le_*`.
pub const BWE_BANDS_BPS: [u64; 3] = [300_000, 1_000_000, 3_000_000];

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

pub(crate) fn raise_to(counter: &AtomicU64, n: u64) {
    counter.fetch_max(n, Relaxed);
}

pub(crate) fn set(counter: &AtomicU64, n: u64) {
    counter.store(n, Relaxed);
}
