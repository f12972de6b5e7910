//! Ordering for one relayed WebSocket: node A holds a client's WebSocket,
//! node B hosts its room, and the messages between them cross Redis.
//!
//! Each direction numbers its frames from 1. Redis delivers the messages of
//! one channel from one publishing connection in order, so on the receiving
//! side a repeated number is a duplicate (a resend after a publish whose
//! reply was lost) and a skipped number is a loss (published while a
//! connection was down: pub/sub does not replay). A loss is reported, never
//! papered over: the owner closes the relayed connection and the client
//! reconnects, which is the contract's answer to a broken session.
//!
//! Pure logic, no I/O, so it is tested deterministically.

use serde::{Deserialize, Serialize};

/// One relayed frame: stream (connection) id, sequence number, payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelayFrame {
    /// Names the relayed connection, unique in the cluster (node id + local
    /// connection number).
    pub stream: String,
    pub seq: u64,
    pub body: serde_json::Value,
}

/// Numbers outgoing frames of one stream.
#[derive(Debug)]
pub struct RelaySender {
    stream: String,
    next: u64,
}

impl RelaySender {
    pub fn new(stream: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            next: 1,
        }
    }

    /// The next frame of this stream.
    pub fn frame(&mut self, body: serde_json::Value) -> RelayFrame {
        let seq = self.next;
        self.next += 1;
        RelayFrame {
            stream: self.stream.clone(),
            seq,
            body,
        }
    }
}

/// What the receiver makes of one frame.
#[derive(Debug, PartialEq)]
pub enum Received {
    /// The next frame in order: deliver its body.
    Deliver(serde_json::Value),
    /// Already delivered: dropped.
    Duplicate { seq: u64 },
    /// Frames `expected..got` never arrived. The stream is broken from now
    /// on; every later frame is refused.
    Gap { expected: u64, got: u64 },
    /// The stream broke earlier (gap) or the frame names another stream.
    Refused,
}

/// Accepts the frames of one stream in order.
#[derive(Debug)]
pub struct RelayReceiver {
    stream: String,
    expected: u64,
    broken: bool,
}

impl RelayReceiver {
    pub fn new(stream: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            expected: 1,
            broken: false,
        }
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    pub fn accept(&mut self, frame: RelayFrame) -> Received {
        if self.broken || frame.stream != self.stream {
            return Received::Refused;
        }
        if frame.seq < self.expected {
            return Received::Duplicate { seq: frame.seq };
        }
        if frame.seq > self.expected {
            self.broken = true;
            return Received::Gap {
                expected: self.expected,
                got: frame.seq,
            };
        }
        self.expected += 1;
        Received::Deliver(frame.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn in_order_frames_are_delivered() {
        let mut tx = RelaySender::new("a/1");
        let mut rx = RelayReceiver::new("a/1");
        for n in 0..5 {
            let frame = tx.frame(json!({ "n": n }));
            assert_eq!(rx.accept(frame), Received::Deliver(json!({ "n": n })));
        }
        assert!(!rx.is_broken());
    }

    #[test]
    fn duplicates_are_dropped_and_the_stream_goes_on() {
        let mut tx = RelaySender::new("a/1");
        let mut rx = RelayReceiver::new("a/1");
        let first = tx.frame(json!("hello"));
        let second = tx.frame(json!("world"));
        assert_eq!(rx.accept(first.clone()), Received::Deliver(json!("hello")));
        assert_eq!(rx.accept(first), Received::Duplicate { seq: 1 });
        assert_eq!(rx.accept(second.clone()), Received::Deliver(json!("world")));
        assert_eq!(rx.accept(second), Received::Duplicate { seq: 2 });
        assert_eq!(rx.accept(tx.frame(json!(3))), Received::Deliver(json!(3)));
    }

    #[test]
    fn a_lost_frame_is_reported_and_breaks_the_stream() {
        let mut tx = RelaySender::new("a/1");
        let mut rx = RelayReceiver::new("a/1");
        let first = tx.frame(json!(1));
        let _lost = tx.frame(json!(2));
        let third = tx.frame(json!(3));
        assert_eq!(rx.accept(first), Received::Deliver(json!(1)));
        assert_eq!(
            rx.accept(third),
            Received::Gap {
                expected: 2,
                got: 3
            }
        );
        assert!(rx.is_broken());
        // Nothing after a gap is delivered: no silent loss.
        assert_eq!(rx.accept(tx.frame(json!(4))), Received::Refused);
    }

    #[test]
    fn frames_of_another_stream_are_refused() {
        let mut other = RelaySender::new("b/7");
        let mut rx = RelayReceiver::new("a/1");
        assert_eq!(rx.accept(other.frame(json!(1))), Received::Refused);
        assert!(!rx.is_broken());
    }
}
