//! What the control plane tells a shard ([`Command`]) and how a negotiation
//! step is answered ([`Reply`], [`NegotiationError`]).

use crate::events::{EventSink, IceCandidate, ParticipantId};
use crate::snapshot::ShardSnapshot;

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
    /// The sizes at which the participant shows the others' videos: each
    /// gets the smallest simulcast encoding that fills its tile, none when
    /// hidden (width 0); publishers left out get the best there is.
    Layout {
        participant: ParticipantId,
        videos: Vec<VideoLayout>,
    },
    /// Close the participant's connection and stop forwarding its media.
    Leave { participant: ParticipantId },
    /// Describe the shard for operators.
    Snapshot {
        reply: Box<dyn FnOnce(ShardSnapshot) + Send>,
    },
}

/// One remote video's size on a subscriber's screen, in device pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoLayout {
    /// The publishing participant.
    pub publisher: ParticipantId,
    /// 0: not shown.
    pub width: u32,
    pub height: u32,
}
