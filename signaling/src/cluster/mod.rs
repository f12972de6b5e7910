//! Several nodes over one Redis (issue #14): the Redis-side groundwork.
//!
//! `link` is the self-healing Redis client, `registry` the node heartbeats,
//! `placement` the atomic room -> node map, `bus` node-to-node messages and
//! `relay` the ordering of one relayed WebSocket. Nothing here is wired into
//! the server yet: single-node behaviour does not touch Redis at all.

pub mod bus;
pub mod front;
pub mod healing;
pub(crate) mod host;
pub mod keys;
pub mod link;
pub mod node;
pub mod placement;
pub mod registry;
pub mod relay;
pub mod stream;
