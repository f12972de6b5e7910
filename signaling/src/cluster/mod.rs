//! Several nodes over one Redis (issue #14): the Redis-side groundwork.
//!
//! `link` is the self-healing Redis client, `registry` the node heartbeats,
//! `placement` the atomic room -> node map, `bus` node-to-node messages and
//! `relay` the ordering of one relayed WebSocket, `ask` questions and
//! answers between nodes, `operators` the admin API across the cluster.
//! Single-node behaviour does not touch Redis at all.

pub mod ask;
pub mod bus;
pub mod front;
pub mod healing;
pub(crate) mod host;
pub mod keys;
pub mod link;
pub(crate) mod metrics;
pub mod node;
pub(crate) mod operators;
pub mod placement;
pub mod registry;
pub mod relay;
pub mod stream;
