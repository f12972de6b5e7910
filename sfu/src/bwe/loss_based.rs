//! The loss-based bound. Heavy loss (over 10 % of the last second's
//! packets) means the sender overran the link: what the link delivered is
//! then the most it can carry, so the bound drops to the acknowledged rate
//! (rtc's GCC instead cuts 5 % per step from the old estimate, which a
//! sender that keeps sending drives to the floor). Light loss (under 2 %)
//! lets the bound rise 8 %/s, and never below what was delivered.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);
const HIGH_LOSS: f64 = 0.10;
const LOW_LOSS: f64 = 0.02;
/// Fewer packets than this say nothing about loss.
const MIN_PACKETS: u32 = 20;
const DECREASE_INTERVAL: Duration = Duration::from_millis(300);
const INCREASE_PER_SECOND: f64 = 1.08;

#[derive(Debug, Default)]
pub struct LossBased {
    /// (feedback time, lost, reported) per feedback.
    reports: VecDeque<(Instant, u32, u32)>,
    bound: Option<f64>,
    last_update: Option<Instant>,
    last_decrease: Option<Instant>,
}

impl LossBased {
    /// Share of the last second's reported packets that were lost.
    pub fn loss(&self) -> Option<f64> {
        let (lost, total) = self
            .reports
            .iter()
            .fold((0, 0), |(l, t), &(_, lost, total)| (l + lost, t + total));
        (total >= MIN_PACKETS).then(|| lost as f64 / total as f64)
    }

    /// The bound on the estimate, if loss set one.
    pub fn bound(&self) -> Option<f64> {
        self.bound
    }

    pub fn on_feedback(
        &mut self,
        lost: u32,
        reported: u32,
        acked: Option<f64>,
        estimate: f64,
        now: Instant,
    ) {
        self.reports.push_back((now, lost, reported));
        while self
            .reports
            .front()
            .is_some_and(|&(t, ..)| now.saturating_duration_since(t) > WINDOW)
        {
            self.reports.pop_front();
        }
        let dt = self.last_update.map_or(0.0, |t| {
            now.saturating_duration_since(t).as_secs_f64().min(1.0)
        });
        self.last_update = Some(now);
        let Some(loss) = self.loss() else {
            return;
        };
        if loss > HIGH_LOSS {
            let due = self
                .last_decrease
                .is_none_or(|t| now.saturating_duration_since(t) >= DECREASE_INTERVAL);
            if due {
                // What gets through now, not the lowest ever seen: a
                // ratchet would drift down with every noisy sample.
                self.bound = Some(match acked {
                    Some(delivered) => delivered,
                    None => self
                        .bound
                        .unwrap_or(estimate)
                        .min(estimate * (1.0 - 0.5 * loss)),
                });
                self.last_decrease = Some(now);
            }
        } else if loss < LOW_LOSS {
            if let Some(bound) = self.bound {
                let raised = (bound * INCREASE_PER_SECOND.powf(dt)).max(acked.unwrap_or(0.0));
                // Far above the other bounds it no longer matters.
                self.bound = (raised < 2.0 * estimate).then_some(raised);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_loss_bounds_the_estimate_by_what_was_delivered_and_light_loss_lifts_it() {
        let t0 = Instant::now();
        let mut loss = LossBased::default();
        // Two thirds lost: the sender pushes 1.5 Mbit/s into 500 kbit/s.
        for i in 0..10 {
            loss.on_feedback(
                20,
                30,
                Some(500_000.0),
                1_500_000.0,
                t0 + Duration::from_millis(100 * i),
            );
        }
        assert_eq!(loss.bound(), Some(500_000.0));
        assert!((loss.loss().unwrap() - 2.0 / 3.0).abs() < 1e-9);
        // Clean again, and the link delivers 1.5 Mbit/s: lifted at once.
        for i in 10..25 {
            loss.on_feedback(
                0,
                30,
                Some(1_500_000.0),
                600_000.0,
                t0 + Duration::from_millis(100 * i),
            );
        }
        assert_eq!(loss.bound(), None);
    }

    #[test]
    fn a_few_packets_say_nothing() {
        let mut loss = LossBased::default();
        loss.on_feedback(5, 10, Some(100_000.0), 1_000_000.0, Instant::now());
        assert_eq!(loss.bound(), None);
    }
}
