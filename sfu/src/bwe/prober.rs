//! Padding probes toward one subscriber: how its estimate climbs back after
//! a cut. Sans-IO: the allocator's wish comes in with [`Prober::set_goal`]
//! (about every 200 ms), and the packet pacer asks [`Prober::padding_bytes`]
//! how much padding may go out now (every few milliseconds while probing).
//!
//! Why probing at all: the estimate is capped near what the link delivered
//! (1.5 times the acknowledged rate, see `rate_control`), because a sender
//! using little of its link has proven nothing. rtc 0.21.1's GCC has the
//! same need and no answer: it has no prober and no app-limited detection,
//! so its estimate either runs away while little is sent or, capped, stays
//! at what is sent. A subscriber held on the lowest layer sends only that
//! layer, so its estimate could never reach the next one. The prober fills
//! the gap with padding-only RTP packets (sent on a forwarded video stream
//! at a frame boundary, as libwebrtc does without RTX) so that, if the link
//! carries them without a growing queue, the acknowledged rate and with it
//! the estimate rise to the goal, and the allocator upgrades.
//!
//! A probe ramps from the current estimate toward the goal (doubling each
//! second) rather than jumping there, and never sends more than 1.25 times
//! what the link delivered (the acknowledged rate): on a free link that
//! rate follows the probe within a feedback window, so the ramp hardly
//! slows; on a full one the probe overshoots by a quarter, not by the
//! doubling, so the queue grows slowly enough for the delay detector to
//! end the probe before the link drops packets (a 160 kbit/s link fed a
//! ramp to 250 kbit/s lost 14 % for a second, and its video froze). It
//! ends when the goal is met (the allocator has nothing left to ask for:
//! the goal layers flow and fill the link themselves), or fails on a
//! growing queue, on loss, or after a few seconds without success; after a
//! failure the next probe waits, twice as long each time.

use super::delay_based::Usage;
use super::estimator::BweStats;
use std::time::{Duration, Instant};

/// The probe rate doubles this fast from where it starts.
const RAMP_PER_SECOND: f64 = 2.0;
/// The probe goes this much past the goal, so the estimate (which follows
/// the delivered rate) clearly reaches it.
const OVERSHOOT: f64 = 1.1;
/// A probe that has not reached its goal by then has failed.
const MAX_SESSION: Duration = Duration::from_secs(5);
/// A probe sends at most this multiple of the acknowledged rate.
const OVER_DELIVERED: f64 = 1.25;
/// Loss over this share during a probe: the link is full.
const PROBE_LOSS: f64 = 0.05;
/// A goal that moves by more than this share is a new wish (layer rates
/// vary by less between measurements).
const NEW_GOAL: f64 = 0.25;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(6);
/// How often padding is paced out while probing.
pub const PACE_INTERVAL: Duration = Duration::from_millis(5);
/// Padding allowed in one go: this much of the probe rate (a burst).
const MAX_BURST: Duration = Duration::from_millis(20);
/// Media above the probe rate is forgiven after this much (a keyframe
/// does not silence the probe for long).
const MAX_DEBT: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq)]
struct Session {
    goal: u64,
    started: Instant,
    start_bps: f64,
}

#[derive(Debug)]
pub struct Prober {
    session: Option<Session>,
    /// No new probe before this (back-off after a failure).
    not_before: Option<Instant>,
    backoff: Duration,
    /// Bytes the probe may still add (negative: media already sent more
    /// than the probe rate).
    credit: f64,
    last_pace: Option<Instant>,
    last_sent_bytes: u64,
    /// What the link delivered lately (bit/s), from the last `set_goal`.
    delivered: Option<u64>,
    /// Probes that reached their goal / failed, for operators.
    pub succeeded: u64,
    pub failed: u64,
}

impl Default for Prober {
    fn default() -> Self {
        Prober {
            session: None,
            not_before: None,
            backoff: FIRST_BACKOFF,
            credit: 0.0,
            last_pace: None,
            last_sent_bytes: 0,
            delivered: None,
            succeeded: 0,
            failed: 0,
        }
    }
}

impl Prober {
    /// The total rate (bit/s) the allocator would like the link to prove,
    /// `None` when it has what it needs; and the estimate's state now.
    pub fn set_goal(&mut self, goal: Option<u64>, bwe: &BweStats, now: Instant) {
        self.delivered = bwe.acknowledged_bps;
        if let Some(session) = self.session.as_mut() {
            let failed = bwe.usage == Usage::Overusing
                || bwe.loss.is_some_and(|l| l > PROBE_LOSS)
                || now.saturating_duration_since(session.started) > MAX_SESSION;
            match goal {
                None => {
                    self.session = None;
                    self.succeeded += 1;
                    self.backoff = FIRST_BACKOFF;
                    self.not_before = None;
                }
                Some(_) if failed => {
                    self.session = None;
                    self.failed += 1;
                    self.not_before = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
                Some(goal)
                    if goal.abs_diff(session.goal) as f64 > NEW_GOAL * session.goal as f64 =>
                {
                    // The wish changed: the allocator took what was probed
                    // (and wants the next layer) or wants less. A new ramp
                    // from where the estimate is now.
                    self.succeeded += 1;
                    self.backoff = FIRST_BACKOFF;
                    *session = Session {
                        goal,
                        started: now,
                        start_bps: (bwe.estimate_bps.min(goal) as f64).max(1.0),
                    };
                }
                // The same wish, measured again (layer rates vary).
                Some(goal) => session.goal = goal,
            }
            return;
        }
        let Some(goal) = goal else {
            return;
        };
        if self.not_before.is_some_and(|t| now < t) || bwe.usage == Usage::Overusing {
            return;
        }
        self.session = Some(Session {
            goal,
            started: now,
            start_bps: (bwe.estimate_bps.min(goal) as f64).max(1.0),
        });
        self.credit = 0.0;
        self.last_pace = None;
    }

    /// The probe's rate now (media and padding together), if probing.
    pub fn rate_bps(&self, now: Instant) -> Option<f64> {
        let s = self.session?;
        let t = now.saturating_duration_since(s.started).as_secs_f64();
        let ramp = (s.start_bps * RAMP_PER_SECOND.powf(t)).min(s.goal as f64 * OVERSHOOT);
        Some(match self.delivered {
            Some(delivered) => ramp.min(delivered as f64 * OVER_DELIVERED),
            None => ramp,
        })
    }

    /// The goal of the probe under way.
    pub fn goal(&self) -> Option<u64> {
        self.session.map(|s| s.goal)
    }

    /// Padding bytes that may go out now, given every byte sent to this
    /// subscriber so far (`sent_bytes`, media, retransmissions and earlier
    /// padding: the probe fills up to its rate, it does not add to it).
    pub fn padding_bytes(&mut self, sent_bytes: u64, now: Instant) -> usize {
        let sent = sent_bytes.saturating_sub(self.last_sent_bytes);
        self.last_sent_bytes = sent_bytes;
        let Some(rate) = self.rate_bps(now) else {
            self.last_pace = None;
            return 0;
        };
        let elapsed = self
            .last_pace
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last_pace = Some(now);
        let bytes_per_second = rate / 8.0;
        self.credit += bytes_per_second * elapsed.as_secs_f64() - sent as f64;
        self.credit = self.credit.clamp(
            -bytes_per_second * MAX_DEBT.as_secs_f64(),
            bytes_per_second * MAX_BURST.as_secs_f64(),
        );
        self.credit.max(0.0) as usize
    }

    /// When padding is next paced out, while probing.
    pub fn next_deadline(&self) -> Option<Instant> {
        let session = self.session?;
        Some(
            self.last_pace
                .map_or(session.started, |t| t + PACE_INTERVAL),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(estimate: u64, usage: Usage) -> BweStats {
        BweStats {
            estimate_bps: estimate,
            usage,
            ..Default::default()
        }
    }

    /// Paces for `secs` seconds with `media_bps` of media; the padding
    /// bytes given out.
    fn pace(p: &mut Prober, t0: Instant, from_ms: u64, to_ms: u64, media_bps: u64) -> u64 {
        let mut sent = 0u64;
        let mut padding = 0u64;
        let mut media_acc = 0.0;
        for ms in (from_ms..to_ms).step_by(5) {
            media_acc += media_bps as f64 / 8.0 * 0.005;
            let pad = p.padding_bytes(sent + media_acc as u64, t0 + Duration::from_millis(ms));
            sent += pad as u64;
            padding += pad as u64;
        }
        padding
    }

    #[test]
    fn ramps_from_the_estimate_toward_the_goal_and_fills_up_to_it() {
        let t0 = Instant::now();
        let mut p = Prober::default();
        p.set_goal(Some(2_000_000), &stats(500_000, Usage::Normal), t0);
        assert_eq!(p.rate_bps(t0), Some(500_000.0));
        let one = p.rate_bps(t0 + Duration::from_secs(1)).unwrap();
        assert!((one - 1_000_000.0).abs() < 1.0, "{one}");
        // Never far past the goal.
        assert_eq!(p.rate_bps(t0 + Duration::from_secs(4)), Some(2_200_000.0));
        // With 300 kbit/s of media, padding makes up the rest of the rate:
        // in the first second about (500k..1M average 720k) - 300k.
        let padding = pace(&mut p, t0, 0, 1000, 300_000) as f64 * 8.0;
        assert!((380_000.0..460_000.0).contains(&padding), "{padding}");
        // Media above the rate: no padding.
        let mut q = Prober::default();
        q.set_goal(Some(600_000), &stats(500_000, Usage::Normal), t0);
        assert_eq!(pace(&mut q, t0, 0, 500, 900_000), 0);
    }

    #[test]
    fn a_probe_sends_at_most_a_quarter_more_than_the_link_delivered() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let delivering = |acked| BweStats {
            acknowledged_bps: Some(acked),
            ..stats(150_000, Usage::Normal)
        };
        let mut p = Prober::default();
        // A 160 kbit/s link full at 150: the ramp (doubling from 150)
        // would send 250 after a second; the probe stays at 1.25x 150.
        p.set_goal(Some(230_000), &delivering(150_000), t0);
        p.set_goal(Some(230_000), &delivering(151_000), at(900));
        assert_eq!(p.rate_bps(at(950)), Some(151_000.0 * 1.25));
        // A free link delivers what the probe sends: the cap moves with it.
        p.set_goal(Some(230_000), &delivering(210_000), at(1000));
        assert_eq!(p.rate_bps(at(1000)), Some(230_000.0 * 1.1));
    }

    #[test]
    fn a_growing_queue_ends_the_probe_and_the_next_waits_longer_each_time() {
        let t0 = Instant::now();
        let mut p = Prober::default();
        p.set_goal(Some(1_000_000), &stats(400_000, Usage::Normal), t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        p.set_goal(Some(1_000_000), &stats(450_000, Usage::Overusing), at(600));
        assert_eq!(p.goal(), None);
        assert_eq!(p.failed, 1);
        assert_eq!(p.padding_bytes(0, at(610)), 0);
        // Backed off for a second.
        p.set_goal(Some(1_000_000), &stats(400_000, Usage::Normal), at(1400));
        assert_eq!(p.goal(), None);
        p.set_goal(Some(1_000_000), &stats(400_000, Usage::Normal), at(1600));
        assert_eq!(p.goal(), Some(1_000_000));
        // Fails again (loss): two seconds now.
        let lossy = BweStats {
            loss: Some(0.2),
            ..stats(400_000, Usage::Normal)
        };
        p.set_goal(Some(1_000_000), &lossy, at(1800));
        assert_eq!(p.goal(), None);
        p.set_goal(Some(1_000_000), &stats(400_000, Usage::Normal), at(3700));
        assert_eq!(p.goal(), None);
        p.set_goal(Some(1_000_000), &stats(400_000, Usage::Normal), at(3900));
        assert_eq!(p.goal(), Some(1_000_000));
        // No success within five seconds: failed too.
        p.set_goal(Some(1_000_000), &stats(400_000, Usage::Normal), at(9000));
        assert_eq!(p.goal(), None);
        assert_eq!(p.failed, 3);
    }

    #[test]
    fn a_met_goal_ends_the_probe_and_the_next_may_start_at_once() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut p = Prober::default();
        p.set_goal(Some(1_000_000), &stats(400_000, Usage::Normal), t0);
        p.set_goal(Some(1_000_000), &stats(450_000, Usage::Overusing), at(200));
        p.set_goal(Some(1_000_000), &stats(400_000, Usage::Normal), at(1300));
        assert!(p.goal().is_some());
        p.set_goal(None, &stats(1_100_000, Usage::Normal), at(2000));
        assert_eq!(p.goal(), None);
        assert_eq!(p.succeeded, 1);
        assert_eq!(p.next_deadline(), None);
        // A new wish under way starts a new ramp from the estimate.
        p.set_goal(Some(1_000_000), &stats(400_000, Usage::Normal), at(2400));
        // Measured again a little differently: the same ramp goes on.
        p.set_goal(Some(1_100_000), &stats(700_000, Usage::Normal), at(2500));
        assert_eq!(p.rate_bps(at(2500)), Some(400_000.0 * 2f64.powf(0.1)));
        p.set_goal(Some(1_500_000), &stats(900_000, Usage::Normal), at(3000));
        assert_eq!(p.goal(), Some(1_500_000));
        assert_eq!(p.rate_bps(at(3000)), Some(900_000.0));
        assert_eq!(p.succeeded, 2);
        p.set_goal(None, &stats(1_500_000, Usage::Normal), at(3500));
        // The next wish (the layer above) probes at once.
        p.set_goal(Some(3_000_000), &stats(1_500_000, Usage::Normal), at(3600));
        assert_eq!(p.goal(), Some(3_000_000));
        assert_eq!(p.rate_bps(at(3600)), Some(1_500_000.0));
    }
}
