//! How the rooms reach one connection: the messages it should receive (its
//! [`Outbox`]) and the operator's word on it (a kick).
//!
//! The two travel apart on purpose. Messages may be dropped when a client
//! stops reading (the outbox is bounded and then closes the connection), but
//! an operator action must never be lost, even while the session is flooded
//! with messages or its outbox is full: it sits in a one-value slot (a
//! `watch` channel) that the session checks before anything else.

use crate::outbox::Outbox;
use tokio::sync::watch;

/// An operator's instruction to one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorAction {
    /// Tell the client why (`kicked`), leave the room, close the connection.
    Kick { reason: String },
    /// Several nodes: the participant's room now lives on `node` (this
    /// node drains, or the room map names another owner): leave here and
    /// hand the client over, rejoining there with the same identity.
    Rehome { node: String },
}

/// The handle the rooms keep for a connection, in the lobby or in a room.
#[derive(Clone)]
pub struct Delivery {
    outbox: Outbox,
    operator: watch::Sender<Option<OperatorAction>>,
}

/// The session's end of [`Delivery::act`].
pub struct OperatorSlot {
    rx: watch::Receiver<Option<OperatorAction>>,
}

/// A delivery handle for a connection's outbox, and the slot its session
/// watches for operator actions.
pub fn delivery(outbox: Outbox) -> (Delivery, OperatorSlot) {
    let (operator, rx) = watch::channel(None);
    (Delivery { outbox, operator }, OperatorSlot { rx })
}

impl Delivery {
    /// Queues a message for the client (never blocks; see [`Outbox::push`]).
    pub fn send(&self, text: String) {
        self.outbox.push(text);
    }

    /// Records an operator action for the session. Never blocks and never
    /// fails: the first action stays (the session is leaving anyway), later
    /// ones are ignored, and one recorded after the session ended is moot.
    pub fn act(&self, action: OperatorAction) {
        self.operator.send_if_modified(|slot| {
            if slot.is_some() {
                return false;
            }
            *slot = Some(action);
            true
        });
    }
}

impl OperatorSlot {
    /// Waits for an operator action. Cancel-safe: the action stays in the
    /// slot until it is seen, however many times the wait is dropped.
    pub async fn next(&mut self) -> OperatorAction {
        // The slot's guard must not live across the `.await` below.
        let seen = self.rx.wait_for(Option::is_some).await.map(|a| a.clone());
        match seen {
            Ok(Some(action)) => action,
            // Every Delivery is gone, so no action can come any more.
            _ => std::future::pending().await,
        }
    }
}
