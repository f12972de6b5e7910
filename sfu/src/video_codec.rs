//! The video codec of a published track, and what the forwarding path
//! must do differently per codec.
//!
//! Each published track keeps the codec its publisher negotiated (the
//! server offers VP8 first, then H.264); nothing is transcoded. Keyframe
//! detection (where a subscriber may start, what the keyframe cache keeps)
//! and the VP8 payload descriptor rewrite (picture ids continuous across
//! simulcast switches) depend on it: an H.264 payload is forwarded as is.

use crate::{h264, vp8};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoCodec {
    #[default]
    Vp8,
    H264,
    /// Audio, or a video codec the server does not parse: never a keyframe,
    /// never rewritten.
    Opaque,
}

impl VideoCodec {
    /// From a negotiated MIME type (`video/VP8`, `video/H264`, any case).
    pub fn from_mime(mime_type: &str) -> Self {
        if mime_type.eq_ignore_ascii_case("video/vp8") {
            VideoCodec::Vp8
        } else if mime_type.eq_ignore_ascii_case("video/h264") {
            VideoCodec::H264
        } else {
            VideoCodec::Opaque
        }
    }

    /// True when the packet starts a keyframe (where a decoder can start).
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            VideoCodec::Vp8 => vp8::is_keyframe_start(payload),
            VideoCodec::H264 => h264::is_keyframe_start(payload),
            VideoCodec::Opaque => false,
        }
    }

    /// Whether payloads carry a VP8 descriptor the down track rewrites.
    pub fn is_vp8(self) -> bool {
        self == VideoCodec::Vp8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_are_told_per_codec() {
        let vp8_key = [0x10, 0x00, 0x9d, 0x01, 0x2a];
        let h264_sps = [0x67, 0x42, 0xe0, 0x1f];
        assert_eq!(VideoCodec::from_mime("video/vp8"), VideoCodec::Vp8);
        assert_eq!(VideoCodec::from_mime("video/H264"), VideoCodec::H264);
        assert_eq!(VideoCodec::from_mime("audio/opus"), VideoCodec::Opaque);
        assert!(VideoCodec::Vp8.is_keyframe_start(&vp8_key));
        assert!(VideoCodec::H264.is_keyframe_start(&h264_sps));
        // An H.264 SPS read as VP8: S bit clear, not a VP8 keyframe.
        assert!(!VideoCodec::Vp8.is_keyframe_start(&h264_sps));
        // A VP8 keyframe's first byte read as H.264 is NAL type 16: no.
        assert!(!VideoCodec::H264.is_keyframe_start(&vp8_key));
        assert!(!VideoCodec::Opaque.is_keyframe_start(&h264_sps));
    }
}
