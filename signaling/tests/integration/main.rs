//! Noom's integration tests: real servers (in-process or `noom` processes),
//! real WebRTC clients (`noom-client` on the async `webrtc` crate) and a real
//! `redis-server`, asserting what a user would notice.
//!
//! All of them are one test binary on purpose. As 22 binaries each one
//! compiled and linked the whole server and the helpers below again (about
//! 18 s of CPU apiece, most of CI's build), and cargo ran the binaries one
//! after another, so a test waiting on the network left the second core
//! idle. One binary builds once and lets libtest run any two tests side by
//! side. Pick a file's tests by its module name:
//! `cargo test -p noom-signaling --test integration cluster_failover::`.

// Helpers shared by the test modules.
mod data_channel_support;
mod media_support;
mod node_process;
mod redis_server;
mod support;

// The tests, one module per concern.
mod abuse;
mod admin_api;
mod bandwidth_estimate;
mod cluster_failover;
mod cluster_nodes;
mod cluster_operators;
mod cluster_redis;
mod cluster_redis_outage;
mod contract_errors;
mod data_channel;
mod data_channel_backpressure;
mod hardening;
mod lifecycle;
mod lossy_link;
mod media_feedback;
mod media_restart;
mod media_robustness;
mod metrics_exposition;
mod operator_under_storm;
mod oversized_frames;
mod room_move;
mod security;
mod three_party;
