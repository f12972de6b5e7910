//! The delay-based rate: additive-increase / multiplicative-decrease driven
//! by the delay detector's verdicts, anchored on the acknowledged rate.
//!
//! Overuse cuts to 0.85x what the link delivered (not of the old estimate,
//! which may have been far off). Normal climbs: 8 %/s while the link's
//! capacity is unknown, about one packet per response time near the rate
//! where it last congested. Two anchors on the acknowledged rate close
//! rtc 0.21.1's gaps: the estimate never drops below what the link
//! delivered without a growing queue (so it follows a lifted limit at once
//! when the sender has more to send), and never climbs above 1.5x it (a
//! sender using little of the link has proven nothing: no app-limited
//! estimate running away to the maximum).

use super::delay_based::Usage;
use std::time::{Duration, Instant};

pub const MIN_BITRATE: f64 = 30_000.0;
pub const MAX_BITRATE: f64 = 50_000_000.0;
/// Cap above the acknowledged rate (see the module doc), and its floor so
/// an idle connection can still start a video.
const ACKED_CAP_FACTOR: f64 = 1.5;
const ACKED_CAP_FLOOR: f64 = 300_000.0;
const DECREASE_FACTOR: f64 = 0.85;
/// Cuts at most this often: one cut per queue build-up, not per feedback.
const DECREASE_INTERVAL: Duration = Duration::from_millis(300);
const MULTIPLICATIVE_PER_SECOND: f64 = 1.08;
/// Bits per response time added near the known capacity (one 1,200-byte
/// packet every 200 ms: 48 kbit/s per second).
const ADDITIVE_PER_SECOND: f64 = 48_000.0;
/// Near capacity means below this multiple of the rate that last
/// congested; above it the capacity is taken as changed.
const NEAR_CAPACITY: f64 = 1.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Hold,
    Increase,
}

#[derive(Debug)]
pub struct RateControl {
    estimate: f64,
    state: State,
    last_update: Option<Instant>,
    last_decrease: Option<Instant>,
    /// The acknowledged rate at the last congestion (smoothed).
    capacity: Option<f64>,
    /// The highest rate the link delivered since it last congested.
    proven: f64,
}

impl RateControl {
    pub fn new(initial: f64) -> Self {
        RateControl {
            estimate: initial.clamp(MIN_BITRATE, MAX_BITRATE),
            state: State::Increase,
            last_update: None,
            last_decrease: None,
            capacity: None,
            proven: 0.0,
        }
    }

    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    pub fn update(&mut self, usage: Usage, acked: Option<f64>, now: Instant) -> f64 {
        let before = self.estimate;
        let dt = self.last_update.map_or(0.0, |t| {
            now.saturating_duration_since(t).as_secs_f64().min(1.0)
        });
        self.last_update = Some(now);
        match usage {
            Usage::Overusing => {
                let due = self
                    .last_decrease
                    .is_none_or(|t| now.saturating_duration_since(t) >= DECREASE_INTERVAL);
                if due {
                    let base = acked.unwrap_or(self.estimate);
                    let target = DECREASE_FACTOR * base;
                    // The first cut of an overuse episode never raises the
                    // estimate; while the overuse persists (the sender does
                    // not or cannot slow down) it follows what the link
                    // delivers instead of ratcheting down on every noisy
                    // sample.
                    self.estimate = match self.state {
                        State::Hold => target,
                        State::Increase => self.estimate.min(target),
                    };
                    // Smoothed while congestion recurs near one rate; a
                    // rate far from it is a new capacity.
                    self.capacity = Some(match (self.capacity, acked) {
                        (Some(c), Some(a)) if (a - c).abs() < 0.3 * c => 0.7 * c + 0.3 * a,
                        (_, a) => a.unwrap_or(self.estimate),
                    });
                    self.last_decrease = Some(now);
                    self.proven = acked.unwrap_or(0.0);
                }
                self.state = State::Hold;
            }
            Usage::Underusing => self.state = State::Hold,
            Usage::Normal => {
                if self.state == State::Hold {
                    self.state = State::Increase;
                } else if let Some(acked) = acked {
                    if self
                        .capacity
                        .is_some_and(|c| self.estimate > NEAR_CAPACITY * c)
                    {
                        self.capacity = None;
                    }
                    self.estimate = match self.capacity {
                        Some(_) => self.estimate + ADDITIVE_PER_SECOND * dt,
                        None => self.estimate * MULTIPLICATIVE_PER_SECOND.powf(dt),
                    };
                    // Delivered without a growing queue: the link holds it.
                    self.estimate = self.estimate.max(acked);
                }
            }
        }
        if let Some(acked) = acked {
            // The cap stops a climb; it does not pull the estimate below
            // what the link has delivered since it last congested (as
            // libwebrtc's AIMD clamps only increases): a sender that sends
            // less for a while (a simulcast encoding ramping up after a
            // switch) has not found the link smaller, and an estimate that
            // sank with what is sent would take away the layers that would
            // fill it again. An estimate nothing proved (the initial
            // guess) is still pulled down.
            if usage != Usage::Overusing {
                self.proven = self.proven.max(acked);
            }
            let cap = (ACKED_CAP_FACTOR * acked).max(ACKED_CAP_FLOOR);
            self.estimate = self.estimate.min(cap.max(before.min(self.proven)));
        }
        self.estimate = self.estimate.clamp(MIN_BITRATE, MAX_BITRATE);
        self.estimate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overuse_cuts_to_a_share_of_the_acknowledged_rate_once_per_interval() {
        let t0 = Instant::now();
        let mut rc = RateControl::new(2_000_000.0);
        let e = rc.update(Usage::Overusing, Some(500_000.0), t0);
        assert_eq!(e, 425_000.0);
        // Still overusing 100 ms later: no second cut yet.
        let e = rc.update(
            Usage::Overusing,
            Some(400_000.0),
            t0 + Duration::from_millis(100),
        );
        assert_eq!(e, 425_000.0);
        let e = rc.update(
            Usage::Overusing,
            Some(400_000.0),
            t0 + Duration::from_millis(400),
        );
        assert_eq!(e, 340_000.0);
    }

    #[test]
    fn climbs_additively_near_capacity_and_never_past_one_and_a_half_times_the_acknowledged_rate() {
        let t0 = Instant::now();
        let mut rc = RateControl::new(1_000_000.0);
        rc.update(Usage::Overusing, Some(500_000.0), t0);
        let mut e = 0.0;
        for i in 1..=20 {
            e = rc.update(
                Usage::Normal,
                Some(425_000.0),
                t0 + Duration::from_millis(100 * i),
            );
        }
        // Two seconds of additive increase: about 48 kbit/s per second.
        assert!(e > 500_000.0 && e < 530_000.0, "{e}");
        // A sender using 100 kbit/s cannot push the estimate past 300 kbit/s
        // (the floor) however long nothing goes wrong.
        let mut rc = RateControl::new(250_000.0);
        for i in 0..600 {
            e = rc.update(
                Usage::Normal,
                Some(100_000.0),
                t0 + Duration::from_millis(100 * i),
            );
        }
        assert_eq!(e, 300_000.0);
    }

    #[test]
    fn sending_less_for_a_while_keeps_what_the_link_delivered() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut rc = RateControl::new(1_000_000.0);
        for i in 0..10 {
            rc.update(Usage::Normal, Some(900_000.0), at(100 * i));
        }
        let earned = rc.estimate();
        assert!(earned >= 900_000.0, "{earned}");
        // The sender drops to 250 kbit/s (an encoding ramping up): the
        // estimate stays at what the link delivered.
        let e = rc.update(Usage::Normal, Some(250_000.0), at(1100));
        assert_eq!(e, 900_000.0);
        // After congestion, what was proven before counts no more.
        rc.update(Usage::Overusing, Some(250_000.0), at(1200));
        let e = rc.update(Usage::Normal, Some(250_000.0), at(1300));
        assert!(e <= 375_000.0, "{e}");
    }

    #[test]
    fn follows_a_delivered_rate_above_the_estimate_at_once() {
        let t0 = Instant::now();
        let mut rc = RateControl::new(400_000.0);
        rc.update(Usage::Normal, Some(400_000.0), t0);
        let e = rc.update(
            Usage::Normal,
            Some(1_500_000.0),
            t0 + Duration::from_millis(100),
        );
        assert!(e >= 1_500_000.0, "{e}");
    }
}
