//! `noom-client`: a Rust participant of a Noom call, on the async `webrtc`
//! 0.21.1 crate. It speaks the signaling contract
//! (`shared/contract/signaling.md`, documented in `docs/protocol.md`) over
//! one WebSocket, and with [`Client::join_with_media`] owns a real WebRTC
//! peer connection that answers every server offer, trickles candidates,
//! publishes synthetic Opus and VP8 RTP ([`rtp_synth`]), records every track
//! the server forwards to it and reads the `noom` data channel.
//!
//! Users: Noom's integration tests (`signaling/tests`), the load generator
//! (`noom-load` in `benches/`), and anyone writing a bot or a recorder (see
//! `examples/bot.rs`). Diagnostics for tests (socket tap, held answers, RTCP
//! feedback counts) are part of the public API: see [`diagnostics`].
//!
//! The crate does not depend on the server (`noom-signaling`): it is a
//! client of the wire contract only.

pub mod chat;
pub mod client_media;
pub mod contract;
pub mod data_channel;
pub mod diagnostics;
pub mod http;
pub mod media_peer;
mod media_route;
pub mod media_state;
pub mod peer_setup;
mod receive;
pub mod rtcp_feedback;
pub mod rtp_synth;
pub mod sdp;
pub mod signaling;
pub mod simulcast_publish;
pub mod socket_tap;

use std::time::Duration;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

pub use chat::ChatMessage;
pub use contract::{brief, expect_error, is_recent_unix_ms, rooms_of, Joined, Participant};
pub use http::http_get;
pub use media_peer::MediaPeer;
pub use media_state::{
    MediaHooks, MediaObserver, MediaOptions, PacketRecord, RemoteTrackInfo, SentKeyframe,
};
pub use rtp_synth::MediaProfile;
pub use sdp::{forwarded_in_offer, parse_sections, rewrite_candidates, MediaSection};
pub use signaling::Client;
pub use socket_tap::SocketTap;

/// Default deadline for one awaited signaling message.
pub const MSG_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline for media to start flowing (ICE + DTLS + first packets).
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(30);

/// Audio or video, as the contract and SDP name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub(crate) fn from_codec_kind(k: RtpCodecKind) -> Option<MediaKind> {
        match k {
            RtpCodecKind::Audio => Some(MediaKind::Audio),
            RtpCodecKind::Video => Some(MediaKind::Video),
            _ => None,
        }
    }

    pub fn sdp_name(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}
