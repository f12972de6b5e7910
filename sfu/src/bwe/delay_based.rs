//! Delay-based congestion detection: is the queue toward the subscriber
//! growing? Packets are grouped by send time (a frame's packets leave
//! together); for consecutive groups the change in one-way delay is
//! arrival spacing minus send spacing. Its running sum, smoothed, is fitted
//! with a line over the last groups (the trendline filter of GCC,
//! draft-ietf-rmcat-gcc-02); a slope above an adaptive threshold for long
//! enough is overuse, below its negative underuse.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Packets sent within this span of a group's first form one group.
const BURST: Duration = Duration::from_millis(5);
/// Groups the trendline is fitted over.
const WINDOW: usize = 20;
const SMOOTHING: f64 = 0.9;
const THRESHOLD_GAIN: f64 = 4.0;
/// The adaptive threshold follows the trend up slowly and down fast, so
/// a competing flow's delay does not starve us and real queues are caught.
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
const THRESHOLD_INITIAL_MS: f64 = 12.5;
const THRESHOLD_MIN_MS: f64 = 6.0;
const THRESHOLD_MAX_MS: f64 = 600.0;
/// Over the threshold this long (and more than one sample) is overuse.
const OVERUSE_TIME_MS: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Usage {
    #[default]
    Normal,
    Overusing,
    Underusing,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_sent: Instant,
    last_sent: Instant,
    last_arrival_us: i64,
}

#[derive(Debug)]
pub struct DelayDetector {
    current: Option<Group>,
    previous: Option<Group>,
    first_arrival_us: Option<i64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    samples: VecDeque<(f64, f64)>,
    deltas: u32,
    threshold_ms: f64,
    last_threshold_update_ms: Option<f64>,
    /// Time spent over the threshold; negative while under it.
    time_over_ms: f64,
    overuse_count: u32,
    previous_trend: f64,
    usage: Usage,
    /// The last modified trend (for tests and logs).
    pub trend: f64,
}

impl Default for DelayDetector {
    fn default() -> Self {
        DelayDetector {
            current: None,
            previous: None,
            first_arrival_us: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            samples: VecDeque::with_capacity(WINDOW + 1),
            deltas: 0,
            threshold_ms: THRESHOLD_INITIAL_MS,
            last_threshold_update_ms: None,
            time_over_ms: -1.0,
            overuse_count: 0,
            previous_trend: 0.0,
            usage: Usage::Normal,
            trend: 0.0,
        }
    }
}

impl DelayDetector {
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// A packet that arrived, in send order.
    pub fn on_packet(&mut self, sent_at: Instant, arrived_us: i64) {
        self.first_arrival_us.get_or_insert(arrived_us);
        let Some(current) = self.current.as_mut() else {
            self.current = Some(Group {
                first_sent: sent_at,
                last_sent: sent_at,
                last_arrival_us: arrived_us,
            });
            return;
        };
        if sent_at.saturating_duration_since(current.first_sent) <= BURST {
            current.last_sent = current.last_sent.max(sent_at);
            current.last_arrival_us = current.last_arrival_us.max(arrived_us);
            return;
        }
        let finished = *current;
        if let Some(previous) = self.previous {
            let send_delta_ms = finished
                .last_sent
                .saturating_duration_since(previous.last_sent)
                .as_secs_f64()
                * 1e3;
            let arrival_delta_ms =
                (finished.last_arrival_us - previous.last_arrival_us) as f64 / 1e3;
            // A reordered group (arrived before the previous one) says
            // nothing about queueing.
            if arrival_delta_ms >= 0.0 {
                self.update(
                    arrival_delta_ms - send_delta_ms,
                    send_delta_ms,
                    finished.last_arrival_us,
                );
            }
        }
        self.previous = Some(finished);
        self.current = Some(Group {
            first_sent: sent_at,
            last_sent: sent_at,
            last_arrival_us: arrived_us,
        });
    }

    fn update(&mut self, delay_ms: f64, send_delta_ms: f64, arrival_us: i64) {
        self.deltas = (self.deltas + 1).min(1000);
        self.accumulated_ms += delay_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        let arrival_ms = (arrival_us - self.first_arrival_us.unwrap_or(arrival_us)) as f64 / 1e3;
        self.samples.push_back((arrival_ms, self.smoothed_ms));
        if self.samples.len() > WINDOW {
            self.samples.pop_front();
        }
        let slope = if self.samples.len() == WINDOW {
            linear_fit_slope(&self.samples).unwrap_or(0.0)
        } else {
            0.0
        };
        let modified = self.deltas.min(60) as f64 * slope * THRESHOLD_GAIN;
        self.trend = modified;
        self.detect(modified, slope, send_delta_ms, arrival_ms);
    }

    fn detect(&mut self, modified: f64, slope: f64, send_delta_ms: f64, now_ms: f64) {
        if modified > self.threshold_ms {
            if self.time_over_ms < 0.0 {
                self.time_over_ms = send_delta_ms / 2.0;
            } else {
                self.time_over_ms += send_delta_ms;
            }
            self.overuse_count += 1;
            if self.time_over_ms > OVERUSE_TIME_MS
                && self.overuse_count > 1
                && slope >= self.previous_trend
            {
                self.time_over_ms = 0.0;
                self.overuse_count = 0;
                self.usage = Usage::Overusing;
            }
        } else if modified < -self.threshold_ms {
            self.time_over_ms = -1.0;
            self.overuse_count = 0;
            self.usage = Usage::Underusing;
        } else {
            self.time_over_ms = -1.0;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.previous_trend = slope;
        self.adapt_threshold(modified.abs(), now_ms);
    }

    fn adapt_threshold(&mut self, magnitude: f64, now_ms: f64) {
        let last = *self.last_threshold_update_ms.get_or_insert(now_ms);
        self.last_threshold_update_ms = Some(now_ms);
        // A spike far above the threshold (a one-off delay) is not let in.
        if magnitude > self.threshold_ms + 15.0 {
            return;
        }
        let k = if magnitude < self.threshold_ms {
            K_DOWN
        } else {
            K_UP
        };
        let dt = (now_ms - last).clamp(0.0, 100.0);
        self.threshold_ms = (self.threshold_ms + k * (magnitude - self.threshold_ms) * dt)
            .clamp(THRESHOLD_MIN_MS, THRESHOLD_MAX_MS);
    }
}

/// Least-squares slope of (x, y) points.
fn linear_fit_slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames every 33 ms; each arrives `extra_ms(i)` later than it would
    /// on an empty path.
    fn run(detector: &mut DelayDetector, frames: u64, extra_ms: impl Fn(u64) -> f64) -> Vec<Usage> {
        let t0 = Instant::now();
        (0..frames)
            .map(|i| {
                let sent = t0 + Duration::from_millis(33 * i);
                let arrived = (33_000 * i) as f64 + 20_000.0 + extra_ms(i) * 1e3;
                detector.on_packet(sent, arrived as i64);
                detector.usage()
            })
            .collect()
    }

    #[test]
    fn steady_delay_is_normal() {
        let mut d = DelayDetector::default();
        let usages = run(&mut d, 300, |i| (i % 3) as f64); // ±1 ms jitter
        assert!(usages.iter().all(|u| *u == Usage::Normal), "{usages:?}");
    }

    #[test]
    fn a_growing_queue_is_overuse_within_half_a_second() {
        let mut d = DelayDetector::default();
        // After 100 steady frames the queue grows 5 ms per frame (sending
        // 15 % over the link).
        let all = run(&mut d, 130, |i| {
            if i < 100 {
                0.0
            } else {
                5.0 * (i - 100) as f64
            }
        });
        assert!(all[..100].iter().all(|u| *u == Usage::Normal));
        let first = all
            .iter()
            .position(|u| *u == Usage::Overusing)
            .expect("overuse");
        assert!(first < 115, "overuse at frame {first}");
    }

    #[test]
    fn a_draining_queue_is_underuse() {
        let mut d = DelayDetector::default();
        let usages = run(&mut d, 160, |i| match i {
            0..100 => 0.0,
            100..130 => 5.0 * (i - 100) as f64,
            _ => (150.0 - 8.0 * (i - 130) as f64).max(0.0),
        });
        assert!(usages[130..].contains(&Usage::Underusing), "{usages:?}");
    }
}
