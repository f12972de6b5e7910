//! Upstream keyframe-request throttling (in the spirit of mediasoup's
//! `KeyFrameRequestManager`).
//!
//! Every subscriber of a video track may ask for a keyframe (PLI/FIR), and a
//! room of twenty people joining at once would otherwise flood the publisher's
//! encoder. At most one request per publisher track leaves the server per
//! throttle interval; requests inside the interval are remembered and sent when
//! it ends, so no subscriber's request is lost.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct KeyframeRequestThrottle {
    interval: Duration,
    last_sent: Option<Instant>,
    deferred: bool,
}

impl KeyframeRequestThrottle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_sent: None,
            deferred: false,
        }
    }

    /// A subscriber (or the server itself) wants a keyframe. Returns true when a
    /// request should go upstream now.
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(last) if now.duration_since(last) < self.interval => {
                self.deferred = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.deferred = false;
                true
            }
        }
    }

    /// When a deferred request is due, the instant it becomes due.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.deferred, self.last_sent) {
            (true, Some(last)) => Some(last + self.interval),
            _ => None,
        }
    }

    /// Returns true when a deferred request is due at `now` (and marks it sent).
    pub fn poll_deferred(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(due) if now >= due => {
                self.deferred = false;
                self.last_sent = Some(now);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_goes_out_then_throttles() {
        let t0 = Instant::now();
        let mut k = KeyframeRequestThrottle::new(Duration::from_millis(500));
        assert!(k.request(t0));
        assert!(!k.request(t0 + Duration::from_millis(10)));
        assert!(!k.request(t0 + Duration::from_millis(400)));
        assert_eq!(k.deadline(), Some(t0 + Duration::from_millis(500)));
        assert!(!k.poll_deferred(t0 + Duration::from_millis(499)));
        assert!(k.poll_deferred(t0 + Duration::from_millis(500)));
        // The deferred one was sent: nothing more is pending.
        assert_eq!(k.deadline(), None);
        assert!(!k.request(t0 + Duration::from_millis(900)));
        assert!(k.poll_deferred(t0 + Duration::from_millis(1000)));
        assert!(k.request(t0 + Duration::from_millis(1600)));
    }
}
