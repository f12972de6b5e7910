//! How the rooms reach one connection: the messages it should receive (its
//! [`Outbox`]) and the operator's word on it (a kick, a move).
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
    /// Leave the current room and enter `room` with the same name and mute
    /// state (see [`Rooms::follow_move`](crate::rooms::Rooms::follow_move)).
    MoveTo { room: String },
    /// Several nodes: the participant's room now lives on `node` (this
    /// node drains, or the room map names another owner): leave here and
    /// hand the client over, rejoining there with the same identity — in
    /// room `into` when set (an operator's move into a room on `node`).
    Rehome { node: String, into: Option<String> },
}

impl OperatorAction {
    /// Whether this action takes the slot from `pending`: a kick overrides
    /// a move or re-homing not yet made (the member leaves anyway), a
    /// re-homing (its node is going) overrides a move, nothing overrides a
    /// kick, and a member is never asked to make two moves at once.
    fn overrides(&self, pending: Option<&OperatorAction>) -> bool {
        match (pending, self) {
            (None, _) => true,
            (
                Some(OperatorAction::MoveTo { .. }),
                OperatorAction::Kick { .. } | OperatorAction::Rehome { .. },
            ) => true,
            (Some(OperatorAction::Rehome { .. }), OperatorAction::Kick { .. }) => true,
            (Some(_), _) => false,
        }
    }
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
    /// To empty the slot once a move is taken, so a later action fits.
    tx: watch::Sender<Option<OperatorAction>>,
}

/// A delivery handle for a connection's outbox, and the slot its session
/// watches for operator actions.
pub fn delivery(outbox: Outbox) -> (Delivery, OperatorSlot) {
    let (operator, rx) = watch::channel(None);
    let slot = OperatorSlot {
        rx,
        tx: operator.clone(),
    };
    (Delivery { outbox, operator }, slot)
}

impl Delivery {
    /// Queues a message for the client (never blocks; see [`Outbox::push`]).
    pub fn send(&self, text: String) {
        self.outbox.push(text);
    }

    /// Records an operator action for the session. Never blocks and never
    /// fails: a pending action stays unless this one overrides it (a kick
    /// overrides a move), and one recorded after the session ended is moot.
    pub fn act(&self, action: OperatorAction) {
        self.operator.send_if_modified(|slot| {
            if !action.overrides(slot.as_ref()) {
                return false;
            }
            *slot = Some(action);
            true
        });
    }
}

impl OperatorSlot {
    /// Waits for an operator action. Cancel-safe: the action stays in the
    /// slot until it is seen, however many times the wait is dropped. A
    /// move is taken out of the slot (the session stays and may be acted on
    /// again); a kick stays (the session ends).
    pub async fn next(&mut self) -> OperatorAction {
        loop {
            // The slot's guard must not live across the `.await`.
            if self.rx.wait_for(Option::is_some).await.is_err() {
                // Every Delivery is gone, so no action can come any more.
                return std::future::pending().await;
            }
            // Taken in one step with the check, so an action recorded in
            // between (a kick) is neither lost nor taken for the move.
            let mut seen = None;
            self.tx.send_if_modified(|slot| {
                seen = match slot {
                    Some(OperatorAction::MoveTo { .. }) => slot.take(),
                    other => other.clone(),
                };
                false
            });
            if let Some(action) = seen {
                return action;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::outbox;

    fn move_to(room: &str) -> OperatorAction {
        OperatorAction::MoveTo {
            room: room.to_owned(),
        }
    }

    fn kick() -> OperatorAction {
        OperatorAction::Kick {
            reason: "bye".to_owned(),
        }
    }

    #[tokio::test]
    async fn a_taken_move_frees_the_slot_and_a_kick_overrides_a_pending_move() {
        let (out, _rx) = outbox();
        let (delivery, mut slot) = delivery(out);
        delivery.act(move_to("b"));
        // A second move while one is pending is not recorded.
        delivery.act(move_to("c"));
        assert_eq!(slot.next().await, move_to("b"));
        // Taken: the next action fits.
        delivery.act(move_to("c"));
        delivery.act(kick());
        assert_eq!(slot.next().await, kick());
        // A kick stays, and nothing overrides it.
        delivery.act(move_to("d"));
        assert_eq!(slot.next().await, kick());
    }
}
