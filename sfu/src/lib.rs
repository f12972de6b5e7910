//! Noom's media plane.
//!
//! The media plane owns UDP sockets and runs webrtc-rs' sans-IO `rtc` peer
//! connections on a few shard threads. Each shard is one thread with one event
//! loop and one UDP port (one socket per bind address on that port); a room
//! lives entirely on one shard, so forwarding a packet from a publisher to its
//! subscribers is plain function calls: no lock, channel hop or `.await` on the
//! per-packet path.
//!
//! The control plane talks to a shard through [`Command`]s and hears back
//! through the [`EventSink`] it handed over at [`Command::Join`]. This crate
//! knows nothing of WebSockets or JSON.

mod data_frame;
mod demux;
mod engine;
#[doc(hidden)]
pub mod fuzzing;
mod keyframe_cache;
mod keyframe_request;
mod negotiator;
mod packet_cache;
mod peer;
mod rate;
pub(crate) mod router;
mod rtcp_tap;
mod rtp_munger;
mod rtp_rewriter;
pub mod send_batch;
mod shard;
mod snapshot;
mod stats;
mod track;
mod vp8;

pub use data_frame::{
    client_frame, error_frame, file_offer_body, parse_client, parse_file_offer, server_frame,
    ClientFrame, FileOffer, FrameError, FLAG_DIRECT, KIND_CHAT, KIND_ERROR, KIND_FILE_ABORT,
    KIND_FILE_CHUNK, KIND_FILE_END, KIND_FILE_OFFER, MAX_MESSAGE_BYTES, MAX_SERVER_FRAME_BYTES,
};
pub use demux::{classify, stun_local_ufrag, DatagramKind};
pub use keyframe_cache::KeyframeCache;
pub use keyframe_request::KeyframeRequestThrottle;
pub use packet_cache::PacketCache;
pub use rtp_munger::{seq_newer, RtpMunger};
pub use rtp_rewriter::RtpRewriter;
pub use shard::ShardHandle;
pub use snapshot::{ForwardedSnapshot, PeerSnapshot, ShardSnapshot, TrackSnapshot};
pub use stats::{ShardStats, ShardStatsSnapshot};
pub use vp8::is_keyframe_start;

use std::io;
use std::net::IpAddr;
use std::time::Duration;

/// The control plane's name for a participant; opaque to the media plane.
pub type ParticipantId = String;

/// What the media plane needs to know of the operator's configuration.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Number of shard threads (at least one).
    pub shards: usize,
    /// Addresses to bind; each shard binds one socket per address.
    pub bind_ips: Vec<IpAddr>,
    /// First UDP port; shard n listens on `port + n`. 0 picks ephemeral ports.
    pub port: u16,
    /// Address announced instead of non-loopback bind addresses (1:1 NAT).
    pub public_ip: Option<IpAddr>,
    /// At most one keyframe request per publisher track per this interval.
    pub pli_throttle: Duration,
    /// Prime new subscribers with the latest cached keyframe.
    pub keyframe_cache: bool,
    /// Largest file a participant may send over the data channel.
    pub max_file_bytes: u64,
}

/// An ICE candidate as trickled over signaling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCandidate {
    pub candidate: String,
    pub sdp_mid: Option<String>,
    pub sdp_mline_index: Option<u16>,
    pub username_fragment: Option<String>,
}

/// State of a participant's media connection, as the control plane needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

/// Something the media plane tells the control plane about one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A new server offer to deliver to the client.
    Offer {
        sdp: String,
    },
    /// The server's answer to an offer the client made.
    Answer {
        sdp: String,
    },
    /// A server candidate to trickle to the client.
    Candidate(IceCandidate),
    ConnectionState(ConnectionState),
}

/// Receives [`MediaEvent`]s for one participant. Called on the shard thread:
/// implementations must not block (use a bounded channel's `try_send`).
pub trait EventSink: Send {
    fn deliver(&self, event: MediaEvent);
}

/// Why a negotiation step was refused. The participant's existing media keeps
/// working whatever the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationError {
    /// The participant is not known to the shard (never joined, or gone).
    UnknownParticipant,
    /// An answer arrived while no server offer was outstanding.
    NoOfferOutstanding,
    /// The client offered while a server offer was outstanding: the server wins
    /// and the client must roll back and answer.
    Glare,
    /// The SDP or candidate could not be applied.
    Rejected(String),
    /// The candidate names an m-section that does not exist.
    UnknownMid(String),
}

impl std::fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownParticipant => write!(f, "no media session for this participant"),
            Self::NoOfferOutstanding => write!(f, "no offer is outstanding"),
            Self::Glare => write!(
                f,
                "the server's offer is outstanding; roll back and answer it"
            ),
            Self::Rejected(why) => write!(f, "{why}"),
            Self::UnknownMid(mid) => write!(f, "no m-section with mid {mid:?}"),
        }
    }
}

/// Completion of a negotiation command, called on the shard thread.
pub type Reply = Box<dyn FnOnce(Result<(), NegotiationError>) + Send>;

/// An instruction from the control plane to a shard.
pub enum Command {
    /// Create the participant's peer connection in `room` and send the first offer.
    Join {
        room: String,
        participant: ParticipantId,
        sink: Box<dyn EventSink>,
    },
    /// The client's answer to the outstanding server offer.
    Answer {
        participant: ParticipantId,
        sdp: String,
        reply: Reply,
    },
    /// An offer made by the client (the server answers through the sink).
    Offer {
        participant: ParticipantId,
        sdp: String,
        reply: Reply,
    },
    /// A trickled client candidate; `None` ends the client's candidates.
    Candidate {
        participant: ParticipantId,
        candidate: Option<IceCandidate>,
        reply: Reply,
    },
    /// Replace the participant's peer connection with a new one (a new offer
    /// follows), keeping what it publishes flowing to subscribers under the
    /// same tracks and SSRCs once the new connection's media arrives.
    RestartMedia {
        participant: ParticipantId,
        reply: Reply,
    },
    /// Close the participant's connection and stop forwarding its media.
    Leave { participant: ParticipantId },
    /// Describe the shard for operators.
    Snapshot {
        reply: Box<dyn FnOnce(ShardSnapshot) + Send>,
    },
}

/// All shards of this server.
pub struct MediaPlane {
    shards: Vec<ShardHandle>,
}

impl MediaPlane {
    /// Binds every shard's sockets and starts the shard threads.
    pub fn start(settings: &MediaSettings) -> io::Result<MediaPlane> {
        if settings.bind_ips.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to bind for media",
            ));
        }
        let count = settings.shards.max(1);
        let mut shards = Vec::with_capacity(count);
        for index in 0..count {
            shards.push(shard::spawn(index, settings)?);
        }
        Ok(MediaPlane { shards })
    }

    pub fn shards(&self) -> &[ShardHandle] {
        &self.shards
    }

    pub fn shard(&self, index: usize) -> &ShardHandle {
        &self.shards[index % self.shards.len()]
    }

    /// Stops every shard: closes peer connections and joins the threads.
    /// Commands sent afterwards are refused.
    pub fn shutdown(&self) {
        for shard in &self.shards {
            shard.request_stop();
        }
        for shard in &self.shards {
            shard.join();
        }
    }
}
