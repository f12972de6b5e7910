//! What an operator sees of a shard: peers, their tracks and rates. Built on
//! the shard thread on request (about once a second per admin viewer), never
//! on the packet path.

use crate::bwe::BweStats;
use crate::events::{ConnectionState, ParticipantId};
use crate::stats::ShardStatsSnapshot;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub counters: ShardStatsSnapshot,
    /// Share of wall time the event loop spent working since the previous
    /// snapshot (0 to 1).
    pub busy_ratio: f64,
    /// RTP packets received per second since the previous snapshot.
    pub packets_in_per_second: f64,
    /// RTP packets forwarded per second since the previous snapshot.
    pub packets_out_per_second: f64,
    pub peers: Vec<PeerSnapshot>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PeerSnapshot {
    pub participant: ParticipantId,
    pub room: String,
    pub state: ConnectionState,
    /// The address media currently comes from.
    pub remote_addr: Option<SocketAddr>,
    /// ICE round-trip time of the selected candidate pair, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Fraction of our packets the client reported lost (0 to 1), worst
    /// forwarded stream.
    pub loss_to_client: Option<f64>,
    /// The server's bandwidth estimate toward the client (`None` when its
    /// forwarded media is not on the fast path).
    pub bandwidth: Option<BweStats>,
    /// The rate (bit/s, all media) a padding probe toward the client is
    /// testing now, if any.
    pub probe_bps: Option<u64>,
    pub published: Vec<TrackSnapshot>,
    pub forwarded: Vec<ForwardedSnapshot>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrackSnapshot {
    pub kind: String,
    pub mime_type: String,
    pub ssrc: u32,
    pub packets: u64,
    pub bytes: u64,
    pub packets_per_second: f64,
    pub bits_per_second: f64,
    /// Packets the server saw missing from this publisher (NACKed).
    pub packets_lost: i64,
    /// The simulcast rids received (empty: one encoding).
    pub layers: Vec<String>,
    /// The publisher's recent pauses between pictures (video), each
    /// encoding's newest ones, oldest first: a freeze that starts at the
    /// source (see `source_pauses.rs`).
    pub source_pauses: Vec<SourcePauseSnapshot>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourcePauseSnapshot {
    /// The encoding's rid (empty without simulcast).
    pub rid: String,
    /// When the picture that ended the pause arrived.
    pub ended_at: SystemTime,
    pub length: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForwardedSnapshot {
    /// The publishing participant.
    pub publisher: ParticipantId,
    pub kind: String,
    pub ssrc: u32,
    pub packets: u64,
    /// The encoding forwarded now (its rid; empty without simulcast),
    /// `None` while none is (waiting for a keyframe, or paused).
    pub layer: Option<String>,
    /// No video is sent: the subscriber hides it (`layout` width 0) or the
    /// allocator paused it.
    pub paused: bool,
    /// Encoding switches made for this subscriber.
    pub layer_switches: u64,
    /// The bandwidth allocator's cap: the highest encoding (0 = lowest
    /// flowing) this subscriber may get now; `None` when uncapped (audio,
    /// or no estimate).
    pub max_layer: Option<usize>,
    /// The allocator's temporal cap on a VP8 video: the highest temporal
    /// layer (TID) this subscriber may get (0 = the base layer only, a
    /// quarter of Chromium's frame rate); `None` when all layers go.
    pub max_temporal_layer: Option<u8>,
}
