//! The server-as-offerer negotiation state of one connection.
//!
//! The server never sends an offer while an earlier one is unanswered;
//! changes that arrive meanwhile are folded into the next offer. Pure state,
//! no SDP, so it can be tested alone.

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Negotiator {
    offer_outstanding: bool,
    changes_pending: bool,
}

impl Negotiator {
    /// Something changed that the client must learn through an offer.
    pub fn mark_changed(&mut self) {
        self.changes_pending = true;
    }

    /// True when an offer should be created now; the caller then calls
    /// [`Negotiator::offer_sent`].
    pub fn should_offer(&self) -> bool {
        self.changes_pending && !self.offer_outstanding
    }

    pub fn offer_sent(&mut self) {
        self.offer_outstanding = true;
        self.changes_pending = false;
    }

    pub fn offer_outstanding(&self) -> bool {
        self.offer_outstanding
    }

    /// The client's answer was applied.
    pub fn answered(&mut self) {
        self.offer_outstanding = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_changes_while_an_offer_is_outstanding() {
        let mut n = Negotiator::default();
        assert!(!n.should_offer());
        n.mark_changed();
        assert!(n.should_offer());
        n.offer_sent();
        n.mark_changed();
        n.mark_changed();
        assert!(!n.should_offer(), "never two offers outstanding");
        n.answered();
        assert!(n.should_offer(), "folded changes go into the next offer");
        n.offer_sent();
        n.answered();
        assert!(!n.should_offer());
    }
}
