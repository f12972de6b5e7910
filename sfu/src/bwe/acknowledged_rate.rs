//! The rate the subscriber's link actually delivered: bytes the feedback
//! reports received, over their arrival times. The estimate is anchored on
//! it (cut to a share of it on congestion, never far above it when the
//! sender is not using the link: see `estimator`).

use std::collections::VecDeque;

/// Arrivals taken into the rate: long enough to smooth frame bursts, short
/// enough that a cut shows within a second.
const WINDOW_US: i64 = 500_000;
/// Below this span the rate is not trusted (a single burst).
const MIN_SPAN_US: i64 = 150_000;

#[derive(Debug, Default)]
pub struct AcknowledgedRate {
    /// (arrival on the receiver's clock in µs, bytes), in arrival order.
    arrivals: VecDeque<(i64, u32)>,
    bytes: u64,
}

impl AcknowledgedRate {
    pub fn on_arrival(&mut self, arrived_us: i64, size: u32) {
        // Feedback reports in sequence order; a reordered arrival is put in
        // place so the window stays sorted.
        let at = self
            .arrivals
            .iter()
            .rposition(|&(t, _)| t <= arrived_us)
            .map_or(0, |i| i + 1);
        self.arrivals.insert(at, (arrived_us, size));
        self.bytes += size as u64;
        let newest = self.arrivals.back().map_or(arrived_us, |a| a.0);
        while let Some(&(t, s)) = self.arrivals.front() {
            if newest - t <= WINDOW_US {
                break;
            }
            self.arrivals.pop_front();
            self.bytes -= s as u64;
        }
    }

    /// Bits per second delivered over the window, once it spans enough.
    pub fn bitrate(&self) -> Option<f64> {
        let (first, first_size) = *self.arrivals.front()?;
        let (last, _) = *self.arrivals.back()?;
        let span = last - first;
        if span < MIN_SPAN_US {
            return None;
        }
        Some((self.bytes - first_size as u64) as f64 * 8.0 * 1e6 / span as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_the_delivered_rate_over_the_last_half_second() {
        let mut rate = AcknowledgedRate::default();
        // 1,000-byte packets every 10 ms: 800 kbit/s.
        for i in 0..100 {
            rate.on_arrival(i * 10_000, 1000);
        }
        let r = rate.bitrate().unwrap();
        assert!((r - 800_000.0).abs() < 1_000.0, "{r}");
        // Then every 40 ms: 200 kbit/s once the window has turned over.
        for i in 0..20 {
            rate.on_arrival(1_000_000 + i * 40_000, 1000);
        }
        let r = rate.bitrate().unwrap();
        assert!((r - 200_000.0).abs() < 1_000.0, "{r}");
    }

    #[test]
    fn no_rate_from_a_single_burst() {
        let mut rate = AcknowledgedRate::default();
        for i in 0..10 {
            rate.on_arrival(i * 1_000, 1200);
        }
        assert_eq!(rate.bitrate(), None);
    }
}
