//! A published track and its per-subscriber down tracks (LiveKit's split:
//! the publisher side receives, each `DownTrack` sends to one subscriber).

use crate::keyframe_request::KeyframeRequestThrottle;
use crate::packet_cache::PacketCache;
use crate::rtp_rewriter::RtpRewriter;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};

/// Shard-local identity of a published track.
pub type TrackKey = u64;
/// Shard-local identity of a peer connection.
pub type ConnKey = u64;

pub struct PublishedTrack {
    pub publisher: ConnKey,
    pub receiver_id: RTCRtpReceiverId,
    /// The publisher's SSRC, target of our keyframe requests.
    pub media_ssrc: u32,
    pub kind: RtpCodecKind,
    pub mime_type: String,
    /// Negotiated (uri, id) of the publisher's header extensions.
    pub extensions: Vec<(String, u8)>,
    pub down_tracks: Vec<DownTrack>,
    pub cache: PacketCache,
    pub keyframes: KeyframeRequestThrottle,
}

impl PublishedTrack {
    pub fn is_video(&self) -> bool {
        self.kind == RtpCodecKind::Video
    }
}

/// The forwarding of one published track to one subscriber.
pub struct DownTrack {
    pub subscriber: ConnKey,
    pub sender_id: RTCRtpSenderId,
    /// The id of the sender's track on the subscriber's connection; RTCP
    /// feedback from the subscriber arrives tagged with it.
    pub sender_track_id: String,
    pub ssrc: u32,
    /// `None` until the subscriber's answer negotiated this m-section.
    pub rewriter: Option<RtpRewriter>,
    /// The subscriber has not been sent a keyframe request on its behalf yet.
    pub needs_keyframe: bool,
}
