//! Upstream keyframe-request throttling (in the spirit of mediasoup's
//! `KeyFrameRequestManager`).
//!
//! Every subscriber of a video track may ask for a keyframe (PLI/FIR), and a
//! room of twenty people joining at once would otherwise flood the publisher's
//! encoder. At most one request per publisher track leaves the server per
//! throttle interval; requests inside the interval are remembered and sent when
//! it ends, so no subscriber's request is lost.
//!
//! A request can still be lost on the wire (a PLI is one unacknowledged
//! datagram), and so can the keyframe it asks for. The server therefore asks
//! again for as long as a down track is still waiting: every packet a waiting
//! down track withholds is a new request, so an unanswered one is repeated one
//! interval after the last was sent. A keyframe arriving from the publisher
//! answers every request made so far, and the pending repeat is dropped.
//! (Without the repeat, one lost PLI left a new subscriber without video
//! until the publisher's next periodic keyframe: 100 s for aiortc.)

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

    /// The publisher sent a keyframe (its first packet arrived): it answers
    /// every request made until now, so a deferred repeat is not needed. A
    /// down track that still cannot use it asks again.
    pub fn keyframe_arrived(&mut self) {
        self.deferred = false;
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

    const INTERVAL: Duration = Duration::from_millis(500);
    /// One video packet every ~33 ms (30 fps, one packet per frame).
    const FRAME: Duration = Duration::from_millis(33);

    #[test]
    fn first_request_goes_out_then_throttles() {
        let t0 = Instant::now();
        let mut k = KeyframeRequestThrottle::new(INTERVAL);
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

    /// Drives the throttle as the router does for a down track that waits
    /// for a keyframe: one request per withheld packet, deferred requests
    /// fired at their deadline. Returns the instants requests went out.
    fn requests_while_waiting(
        k: &mut KeyframeRequestThrottle,
        from: Instant,
        until: Instant,
    ) -> Vec<Duration> {
        let mut sent = Vec::new();
        let mut now = from;
        while now < until {
            if k.poll_deferred(now) || k.request(now) {
                sent.push(now - from);
            }
            now += FRAME;
        }
        sent
    }

    #[test]
    fn an_unanswered_request_is_repeated_until_a_keyframe_arrives() {
        let t0 = Instant::now();
        let mut k = KeyframeRequestThrottle::new(INTERVAL);
        // The first request is lost on the way: no keyframe comes. The
        // waiting down track keeps asking, and a request goes out again
        // every interval (at the first packet after it), not never.
        let sent = requests_while_waiting(&mut k, t0, t0 + Duration::from_millis(1600));
        assert_eq!(
            sent,
            [0, 528, 1056, 1584].map(Duration::from_millis).to_vec(),
            "one request per interval while no keyframe arrives"
        );
        // The keyframe answering the last request arrives 100 ms later; the
        // down track takes it and stops asking.
        let t1 = t0 + Duration::from_millis(1650);
        assert!(!k.request(t1 - Duration::from_millis(10)), "throttled");
        assert!(k.deadline().is_some());
        k.keyframe_arrived();
        assert_eq!(k.deadline(), None, "the keyframe answered the repeat");
        assert!(!k.poll_deferred(t1 + Duration::from_secs(5)));
    }

    #[test]
    fn a_keyframe_answers_a_deferred_request() {
        let t0 = Instant::now();
        let mut k = KeyframeRequestThrottle::new(INTERVAL);
        assert!(k.request(t0));
        // A second subscriber asks while the first request's keyframe is on
        // its way: the keyframe serves both, no second keyframe is asked for.
        assert!(!k.request(t0 + Duration::from_millis(50)));
        k.keyframe_arrived();
        assert!(!k.poll_deferred(t0 + INTERVAL));
        // A later request (a subscriber lost that keyframe) goes out at once.
        assert!(k.request(t0 + INTERVAL + FRAME));
    }
}
