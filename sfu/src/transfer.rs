//! [`Transfer`]: the state of one file being relayed over the data channel.
//! Its own module because both the peer (which owns its sender's transfers)
//! and the router's data relay (which creates and advances them) use it;
//! living in `router/` it made `peer` and `router` import each other.

use crate::track::ConnKey;

/// One file being relayed from a sender.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub recipients: Vec<ConnKey>,
    /// Addressed to one participant: the server's abort carries the flag too.
    pub direct: bool,
    pub size: u64,
    pub relayed: u64,
}
