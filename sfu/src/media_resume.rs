//! Notices a publisher's video coming back after its network path broke.
//!
//! When a publisher's path fails for a few seconds (Wi-Fi hiccup, a tunnel),
//! its packets of that time are gone for good: the publisher's retransmission
//! history is about a second deep, so NACKs cannot repair the gap and every
//! subscriber's decoder waits for a keyframe. Each subscriber asks for one
//! only after its own NACKs went unanswered (about 1.5 s in Chromium), and the
//! publisher, whose bandwidth estimate collapsed during the outage, then
//! paces that keyframe out slowly. Asking the moment the stream resumes
//! saves that time (measured in tests/browser/network_change.test.mjs).
//!
//! A gap alone is not enough: a screen share of a still picture sends nothing
//! for seconds with no packet lost, and a keyframe would only waste bits. Only
//! a gap that also lost packets (a sequence jump) asks for one.

use std::time::{Duration, Instant};

/// Silence after which lost packets are beyond repair by NACK.
pub const UNREPAIRABLE_GAP: Duration = Duration::from_secs(1);

/// Arrival times of one publisher stream.
#[derive(Debug, Default)]
pub struct ResumeDetector {
    last_arrival: Option<Instant>,
}

impl ResumeDetector {
    /// A packet arrived at `now`, revealing `missing` lost packets before it.
    /// Returns true when the stream resumes after an unrepairable gap: a
    /// keyframe is needed.
    pub fn arrived(&mut self, now: Instant, missing: u64) -> bool {
        let resumed = missing > 0
            && self
                .last_arrival
                .is_some_and(|last| now.saturating_duration_since(last) >= UNREPAIRABLE_GAP);
        // A late packet (a repair) never moves time backwards.
        if self.last_arrival.is_none_or(|last| now > last) {
            self.last_arrival = Some(now);
        }
        resumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(33);

    #[test]
    fn a_stream_resuming_after_a_lossy_outage_needs_a_keyframe() {
        let t0 = Instant::now();
        let mut d = ResumeDetector::default();
        assert!(!d.arrived(t0, 0), "the first packet is not a resumption");
        assert!(!d.arrived(t0 + FRAME, 0));
        // Five seconds of nothing, and 150 packets missing.
        let back = t0 + FRAME + Duration::from_secs(5);
        assert!(d.arrived(back, 150));
        // Only once: the stream flows again.
        assert!(!d.arrived(back + FRAME, 0));
        assert!(!d.arrived(back + FRAME * 2, 3), "short loss is for NACKs");
    }

    #[test]
    fn a_still_source_that_lost_nothing_needs_no_keyframe() {
        let t0 = Instant::now();
        let mut d = ResumeDetector::default();
        d.arrived(t0, 0);
        assert!(!d.arrived(t0 + Duration::from_secs(4), 0));
    }

    #[test]
    fn loss_within_the_repair_window_needs_no_keyframe() {
        let t0 = Instant::now();
        let mut d = ResumeDetector::default();
        d.arrived(t0, 0);
        assert!(!d.arrived(t0 + Duration::from_millis(900), 40));
        assert!(d.arrived(t0 + Duration::from_millis(1900), 40));
    }
}
