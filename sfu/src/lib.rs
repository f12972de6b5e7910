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

//!
//! This file only declares modules and re-exports the public API; the
//! shared types live in leaf modules (`events`, `settings`, `command`) so
//! every module's imports point one way, with no circle through the root.

mod active_speaker;
mod arrival_time;
pub mod bwe;
mod client_hello_repeats;
mod command;
mod data_frame;
mod decodable_pictures;
mod demux;
mod down_track;
mod dtls_setup;
mod early_dtls;
mod encoding_demand;
mod engine;
mod events;
mod fast_writer;
#[doc(hidden)]
pub mod forward_bench;
#[doc(hidden)]
pub mod fuzzing;
mod h264;
mod keyframe_cache;
mod keyframe_request;
mod layer_selector;
mod media_resume;
mod nack_requests;
mod negotiator;
mod pacer;
mod packet_cache;
mod peer;
mod plane;
mod publisher_feedback;
mod rate;
mod receiver_reports;
mod remote_codecs;
pub(crate) mod router;
#[cfg(test)]
mod rtc_interceptor_testing;
mod rtcp_tap;
mod rtp_munger;
mod rtp_rewriter;
pub mod send_batch;
mod sender_report;
mod seq_bitmap;
mod settings;
mod shard;
mod simulcast_layer;
mod simulcast_offer;
mod snapshot;
mod source_pauses;
mod srtp_gcm;
mod srtp_gcm_open;
mod srtp_key_tap;
mod srtp_session;
mod start_bitrate;
mod stats;
mod stream_rewrite;
mod tcp_media;
mod temporal_layer;
mod track;
mod transfer;
mod video_codec;
mod vp8;
mod vp8_descriptor;

/// Maps on the per-packet path, keyed by the shard's own connection and
/// track keys, SSRCs and validated remote addresses: FxHash (rustc-hash,
/// already built for rtc) is a multiply per word, where std's SipHash
/// (`BuildHasher::hash_one`) took 1.1 % of a fan-out-50 shard's samples
/// (every forwarded packet looks up each subscriber; perf, 2026-12-01).
/// SipHash's resistance to chosen keys buys nothing here: the keys are
/// ours, or few per connection and only added once it is authenticated.
pub(crate) type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;

pub use bwe::{BweStats, Usage};
pub use command::{Command, NegotiationError, Reply, VideoLayout};
pub use data_frame::{
    client_frame, error_frame, file_offer_body, parse_client, parse_file_offer, server_frame,
    ClientFrame, FileOffer, FrameError, FLAG_DIRECT, KIND_CHAT, KIND_ERROR, KIND_FILE_ABORT,
    KIND_FILE_CHUNK, KIND_FILE_END, KIND_FILE_OFFER, MAX_MESSAGE_BYTES, MAX_SERVER_FRAME_BYTES,
};
pub use demux::{classify, stun_local_ufrag, DatagramKind};
pub use events::{ConnectionState, EventSink, IceCandidate, MediaEvent, ParticipantId};
pub use keyframe_cache::KeyframeCache;
pub use keyframe_request::KeyframeRequestThrottle;
pub use packet_cache::PacketCache;
pub use plane::MediaPlane;
pub use rtp_munger::{seq_newer, RtpMunger};
pub use rtp_rewriter::RtpRewriter;
pub use settings::MediaSettings;
pub use shard::ShardHandle;
pub use snapshot::{
    ForwardedSnapshot, PeerSnapshot, ShardSnapshot, SourcePauseSnapshot, TrackSnapshot,
};
pub use stats::{ShardStats, ShardStatsSnapshot, BWE_BANDS_BPS};
pub use video_codec::VideoCodec;
pub use vp8::is_keyframe_start;
