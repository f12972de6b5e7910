//! Spreads one subscriber's forwarded packets over time while its link is
//! congested, instead of handing each burst to the socket at once.
//!
//! A forwarded keyframe arrives from the publisher as a burst of 8-10 kB.
//! Toward a subscriber whose bottleneck queue holds a few kB (a 160 kbit/s
//! link, measured in `tests/browser/starved_link.test.mjs`), that burst
//! overflows the queue: the keyframe arrives incomplete, the subscriber asks
//! for another, and the next one is lost the same way (loss stayed at
//! 10-30 % for about 4 s after the allocator had cut the video to what fits,
//! with gaps of up to 1.4 s). Paced at a small multiple of the estimate,
//! the same bytes reach the queue about as fast as it drains.
//!
//! Pacing costs latency, so it is on only within [`HOLD_AFTER_CONGESTION`]
//! of a sign of congestion (the estimator's delay detector overusing, or
//! loss above [`CONGESTION_LOSS`]): an uncongested subscriber's packets go
//! out as they arrive, as before. No packet waits longer than
//! [`MAX_QUEUE_DELAY`]: a backlog that old is let out at once (the link is
//! then slower than even the paced estimate, and holding more would only
//! add delay). This is libwebrtc's and LiveKit's pacing factor idea (2.5x
//! the estimate) without their priority queues: one subscriber's packets
//! keep their order.
//!
//! Time is an input: the owner calls [`Pacer::pop`] at
//! [`Pacer::next_release`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Whether congestion turns pacing on at all (a switch kept for measuring
/// without it). It was off for a while: a Firefox subscriber's video froze
/// for the rest of the call in 2 of 4 runs of `firefox_ice_tcp.test.mjs`.
/// The pacer only made visible what was wrong: transport-wide numbers on
/// Firefox's audio, which it never reports, read as 65-99 % loss, and the
/// estimate (and with it the pacing rate) sank to the floor; packets are
/// now numbered only in sections that negotiated the extension.
pub const ENABLED: bool = true;
/// Paced at this multiple of the estimate: bursts are spread, yet the
/// queue drains faster than the encoder fills it.
pub const PACING_FACTOR: f64 = 2.5;
/// Never paced slower than this (bit/s): audio plus the lowest layer's
/// keyframe must still get through on the lowest estimates.
pub const MIN_PACING_BPS: f64 = 200_000.0;
/// Pacing stays on this long after the last sign of congestion.
pub const HOLD_AFTER_CONGESTION: Duration = Duration::from_secs(10);
/// Share of packets lost in the estimator's window that counts as
/// congestion.
pub const CONGESTION_LOSS: f64 = 0.02;
/// The longest a packet waits in the queue.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(500);
/// The most packets held at once; beyond it the oldest is let out (bounds
/// memory whatever the publishers send).
pub const MAX_QUEUED: usize = 1024;
/// Unused budget carried over while the queue is empty, as time at the
/// pacing rate: a small burst is fine, a second's worth is not.
const MAX_BURST: Duration = Duration::from_millis(10);
/// A debt this small counts as paid, and `next_release` adds `ROUNDING`:
/// float rounding must never leave a due release that `pop` refuses (the
/// shard would spin on it).
const PAID_SLACK: f64 = 1.0;
const ROUNDING: Duration = Duration::from_micros(1);

#[derive(Debug)]
pub struct Pacer<T> {
    rate_bps: f64,
    /// Pacing is on until then (None: never congested).
    active_until: Option<Instant>,
    /// Bytes that may still leave now; negative while paying off the last
    /// packet (a packet leaves whenever this is not negative).
    budget: f64,
    refilled_at: Option<Instant>,
    queue: VecDeque<Queued<T>>,
    /// Packets ever queued (a counter for metrics).
    queued_total: u64,
}

#[derive(Debug)]
struct Queued<T> {
    item: T,
    size: usize,
    at: Instant,
}

impl<T> Default for Pacer<T> {
    fn default() -> Self {
        Pacer {
            rate_bps: MIN_PACING_BPS,
            active_until: None,
            budget: 0.0,
            refilled_at: None,
            queue: VecDeque::new(),
            queued_total: 0,
        }
    }
}

impl<T> Pacer<T> {
    /// A new estimate; `congested` when the estimator saw delay building
    /// up or loss.
    pub fn on_estimate(&mut self, estimate_bps: u64, congested: bool, now: Instant) {
        self.refill(now);
        self.rate_bps = (estimate_bps as f64 * PACING_FACTOR).max(MIN_PACING_BPS);
        if congested {
            if !self.is_pacing(now) {
                tracing::debug!(rate_bps = self.rate_bps, "pacing on (congestion)");
                // Starts from an empty bucket, not from what idled up.
                self.budget = 0.0;
                self.refilled_at = Some(now);
            }
            self.active_until = Some(now + HOLD_AFTER_CONGESTION);
        }
    }

    /// Whether a packet written now goes through the queue ([`push`]) rather
    /// than straight out.
    ///
    /// [`push`]: Pacer::push
    pub fn is_pacing(&self, now: Instant) -> bool {
        !self.queue.is_empty() || self.active_until.is_some_and(|t| now < t)
    }

    /// Queues `item` of `size` bytes; take what may leave with [`pop`].
    ///
    /// [`pop`]: Pacer::pop
    pub fn push(&mut self, item: T, size: usize, now: Instant) {
        self.queue.push_back(Queued {
            item,
            size,
            at: now,
        });
        self.queued_total += 1;
    }

    /// The next packet that may leave now, in the order they were pushed.
    pub fn pop(&mut self, now: Instant) -> Option<T> {
        self.refill(now);
        let front = self.queue.front()?;
        let overdue = now.saturating_duration_since(front.at) >= MAX_QUEUE_DELAY;
        if self.budget <= -PAID_SLACK && !overdue && self.queue.len() <= MAX_QUEUED {
            return None;
        }
        let front = self.queue.pop_front()?;
        self.budget -= front.size as f64;
        Some(front.item)
    }

    /// When [`pop`] next has something to give (None: the queue is empty).
    ///
    /// [`pop`]: Pacer::pop
    pub fn next_release(&self) -> Option<Instant> {
        let front = self.queue.front()?;
        let overdue = front.at + MAX_QUEUE_DELAY;
        let paid = match self.refilled_at {
            Some(at) if self.budget <= -PAID_SLACK => {
                // Rounded up, so that `pop` then finds the debt paid.
                at + Duration::from_secs_f64(-self.budget * 8.0 / self.rate_bps) + ROUNDING
            }
            Some(at) => at,
            None => front.at,
        };
        Some(paid.min(overdue))
    }

    /// Takes out of the queue every packet `stale` picks (keeping the
    /// others' order) and hands each to `dropped`; how many went.
    pub fn drop_where(
        &mut self,
        mut stale: impl FnMut(&T) -> bool,
        mut dropped: impl FnMut(T),
    ) -> usize {
        let mut count = 0;
        // Rotates through the queue once: no allocation.
        for _ in 0..self.queue.len() {
            let Some(queued) = self.queue.pop_front() else {
                break;
            };
            if stale(&queued.item) {
                count += 1;
                dropped(queued.item);
            } else {
                self.queue.push_back(queued);
            }
        }
        count
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Packets queued so far (never decreases).
    pub fn queued_total(&self) -> u64 {
        self.queued_total
    }

    fn refill(&mut self, now: Instant) {
        let Some(at) = self.refilled_at else {
            self.refilled_at = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        let cap = self.rate_bps / 8.0 * MAX_BURST.as_secs_f64();
        self.budget = (self.budget + elapsed * self.rate_bps / 8.0).min(cap);
        self.refilled_at = Some(now.max(at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drains `pacer` from `start` by following `next_release`; when each
    /// item left.
    fn drain(pacer: &mut Pacer<u32>, start: Instant) -> Vec<(u32, Duration)> {
        let mut left = Vec::new();
        let mut now = start;
        while let Some(at) = pacer.next_release() {
            now = now.max(at);
            while let Some(item) = pacer.pop(now) {
                left.push((item, now - start));
            }
        }
        left
    }

    #[test]
    fn an_uncongested_subscriber_is_not_paced() {
        let t0 = Instant::now();
        let mut pacer = Pacer::<u32>::default();
        pacer.on_estimate(300_000, false, t0);
        assert!(!pacer.is_pacing(t0));
        assert_eq!(pacer.next_release(), None);
    }

    #[test]
    fn a_keyframe_burst_is_spread_at_the_pacing_rate() {
        let t0 = Instant::now();
        let mut pacer = Pacer::<u32>::default();
        // 160 kbit/s estimate: paced at 400 kbit/s = 50 bytes per ms.
        pacer.on_estimate(160_000, true, t0);
        assert!(pacer.is_pacing(t0));
        for i in 0..8 {
            pacer.push(i, 1_000, t0);
        }
        let left = drain(&mut pacer, t0);
        let order: Vec<u32> = left.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..8).collect::<Vec<_>>(), "order kept");
        // The first leaves at once, then one per 20 ms.
        for (n, (_, at)) in left.iter().enumerate() {
            let expected = ms(20 * n as u64);
            let diff = at.as_secs_f64() - expected.as_secs_f64();
            assert!(diff.abs() < 0.001, "packet {n} left at {at:?}");
        }
    }

    #[test]
    fn a_backlog_older_than_the_bound_is_let_out() {
        let t0 = Instant::now();
        let mut pacer = Pacer::<u32>::default();
        pacer.on_estimate(0, true, t0); // The floor: 25 bytes per ms.
        for i in 0..100 {
            pacer.push(i, 1_200, t0);
        }
        let left = drain(&mut pacer, t0);
        assert_eq!(left.len(), 100);
        let last = left.last().unwrap().1;
        assert!(last <= MAX_QUEUE_DELAY, "last left after {last:?}");
        assert!(left[5].1 > ms(200), "the rest was paced first");
    }

    #[test]
    fn pacing_ends_after_the_hold_once_the_queue_is_empty() {
        let t0 = Instant::now();
        let mut pacer = Pacer::<u32>::default();
        pacer.on_estimate(500_000, true, t0);
        pacer.on_estimate(500_000, false, t0 + ms(5_000));
        assert!(pacer.is_pacing(t0 + ms(9_999)));
        assert!(!pacer.is_pacing(t0 + HOLD_AFTER_CONGESTION));
        pacer.push(1, 100, t0 + HOLD_AFTER_CONGESTION);
        assert!(
            pacer.is_pacing(t0 + HOLD_AFTER_CONGESTION),
            "queue not empty"
        );
    }

    #[test]
    fn idle_time_earns_only_a_small_burst() {
        let t0 = Instant::now();
        let mut pacer = Pacer::<u32>::default();
        pacer.on_estimate(400_000, true, t0); // 125 bytes per ms, 1250 cap.
        let later = t0 + ms(2_000);
        for i in 0..4 {
            pacer.push(i, 1_000, later);
        }
        let left = drain(&mut pacer, later);
        // Two leave on the carried-over budget (1250 >= 0, then 250 >= 0),
        // the third waits for the debt of 750 bytes to be paid (6 ms).
        assert_eq!(left[1].1, Duration::ZERO);
        assert!(left[2].1 >= ms(5), "{:?}", left[2].1);
    }

    #[test]
    fn the_queue_never_holds_more_than_its_bound() {
        let t0 = Instant::now();
        let mut pacer = Pacer::<u32>::default();
        pacer.on_estimate(0, true, t0);
        let mut out = 0;
        for i in 0..(MAX_QUEUED as u32 + 10) {
            pacer.push(i, 1_200, t0);
            while pacer.pop(t0).is_some() {
                out += 1;
            }
        }
        assert_eq!(pacer.queued(), MAX_QUEUED);
        assert_eq!(
            out, 10,
            "the first at once, then one per push past the bound"
        );
    }

    #[test]
    fn dropped_packets_leave_the_queue_and_the_rest_keep_their_order() {
        let t0 = Instant::now();
        let mut pacer = Pacer::<u32>::default();
        pacer.on_estimate(160_000, true, t0);
        for i in 0..10 {
            pacer.push(i, 1_000, t0);
        }
        let mut dropped = Vec::new();
        let count = pacer.drop_where(|&i| i % 2 == 0, |i| dropped.push(i));
        assert_eq!(count, 5);
        assert_eq!(dropped, vec![0, 2, 4, 6, 8]);
        let left: Vec<u32> = drain(&mut pacer, t0).into_iter().map(|(i, _)| i).collect();
        assert_eq!(left, vec![1, 3, 5, 7, 9]);
        assert_eq!(pacer.next_release(), None);
    }
}
