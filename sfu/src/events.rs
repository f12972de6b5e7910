//! What the media plane tells the control plane about a participant, and
//! the names both sides use for it. A leaf module: everything else in the
//! crate may depend on it, it depends on nothing of the crate.

/// The control plane's name for a participant; opaque to the media plane.
pub type ParticipantId = String;

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
    /// The active speakers of the participant's room changed (loudest
    /// first; empty when nobody speaks). Every member of the room gets it.
    Speakers {
        participants: Vec<ParticipantId>,
    },
    /// The participant's answer did not accept the codec of a track it was
    /// offered (a VP8-only client and an H.264 publisher): it receives no
    /// packet of that track until a later negotiation accepts the codec.
    TrackUnsupported {
        /// Who publishes the track.
        publisher: ParticipantId,
        /// The track id its m-section carries (`a=msid:<publisher> <id>`).
        track_id: String,
        /// The track's MIME type, e.g. `video/H264`.
        mime_type: String,
    },
    /// Which simulcast encodings of one of the participant's own tracks
    /// anybody watches (see `encoding_demand`): the client may stop the
    /// others (`active: false`) and start them again when told.
    EncodingsWanted {
        /// The track id of the participant's `a=msid` for it.
        track_id: String,
        /// The m-section that carries it, when negotiated.
        mid: Option<String>,
        /// Every encoding of the track: (rid, keep it active).
        active: Vec<(String, bool)>,
    },
}

/// Receives [`MediaEvent`]s for one participant. Called on the shard thread:
/// implementations must not block (use a bounded channel's `try_send`).
pub trait EventSink: Send {
    fn deliver(&self, event: MediaEvent);
}
