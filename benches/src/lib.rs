//! Noom's load generator (`noom-load`) and its pieces: WebRTC clients on the
//! async `webrtc` crate that talk to Noom (`noom_client`, the WebSocket
//! contract) or Janus (VideoRoom over HTTP), the UDP + SRTP "limit"
//! fan-out, scenarios, and the report (tables and an SVG chart). See
//! RESULTS.md and compare.sh.

pub mod cluster;
pub mod cluster_bench;
pub mod janus;
pub mod janus_peer;
pub mod layer_counts;
pub mod limit;
pub mod media;
pub mod noom;
pub mod procfs;
pub mod redis_probe;
pub mod report;
pub mod scenario;
pub mod stamp;
pub mod stamp_socket;
