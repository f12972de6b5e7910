//! Where the WebSocket reader sends the server's `offer`s and `candidate`s:
//! to the current peer connection, or nowhere (no media, or left).
//!
//! Several nodes: a `joined` that arrives while in a room means the server
//! moved the participant (its room's node was lost, or an operator moved
//! the room). The contract says to answer the `offer` that follows with a
//! NEW peer connection, and that offer may arrive before the test (or bot)
//! has seen the `joined`: so the reader detaches the old peer at once and
//! parks what follows until [`Client::follow_move`] routes it to a new one.
//!
//! [`Client::follow_move`]: crate::Client::follow_move

use crate::media_peer::Signal;
use tokio::sync::mpsc;

/// Signals kept while a moved participant has no peer connection yet; a
/// move brings one offer and its candidates, far fewer than this.
const PARKED_LIMIT: usize = 256;

#[derive(Default)]
pub(crate) struct MediaRoute {
    peer: Option<mpsc::UnboundedSender<Signal>>,
    /// Some while waiting for the peer connection of a move.
    parked: Option<Vec<Signal>>,
}

impl MediaRoute {
    /// Routes signals to `peer` from now on, parked ones first.
    pub(crate) fn attach(&mut self, peer: mpsc::UnboundedSender<Signal>) {
        for signal in self.parked.take().unwrap_or_default() {
            let _ = peer.send(signal);
        }
        self.peer = Some(peer);
    }

    /// No media any more (left, closed): signals are dropped.
    pub(crate) fn detach(&mut self) {
        self.peer = None;
        self.parked = None;
    }

    pub(crate) fn is_attached(&self) -> bool {
        self.peer.is_some()
    }

    /// The server moved the participant: the old peer connection gets
    /// nothing more; what follows waits for a new one.
    pub(crate) fn moved(&mut self) {
        if self.peer.take().is_some() || self.parked.is_some() {
            self.parked = Some(Vec::new());
        }
    }

    pub(crate) fn route(&mut self, signal: Signal) {
        if let Some(peer) = &self.peer {
            let _ = peer.send(signal);
        } else if let Some(parked) = &mut self.parked {
            if parked.len() < PARKED_LIMIT {
                parked.push(signal);
            }
        }
    }
}
