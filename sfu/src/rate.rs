//! Rates from counters sampled at snapshot time (never per packet).

use std::time::Instant;

/// Remembers the previous sample of a set of counters and turns the next
/// one into per-second rates. Samples closer than half a second reuse the
/// previous rates, so several admin viewers do not shrink the window.
#[derive(Debug, Default, Clone)]
pub struct RateMeter {
    last: Option<(Instant, Vec<u64>)>,
    rates: Vec<f64>,
}

impl RateMeter {
    pub fn sample(&mut self, now: Instant, counters: &[u64]) -> &[f64] {
        match &self.last {
            Some((at, previous)) if previous.len() == counters.len() => {
                let secs = now.saturating_duration_since(*at).as_secs_f64();
                if secs >= 0.5 {
                    self.rates = counters
                        .iter()
                        .zip(previous)
                        .map(|(c, p)| c.saturating_sub(*p) as f64 / secs)
                        .collect();
                    self.last = Some((now, counters.to_vec()));
                }
            }
            _ => {
                self.rates = vec![0.0; counters.len()];
                self.last = Some((now, counters.to_vec()));
            }
        }
        &self.rates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_over_the_window() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!(m.sample(t0, &[10, 100]), &[0.0, 0.0]);
        assert_eq!(
            m.sample(t0 + Duration::from_secs(2), &[30, 100]),
            &[10.0, 0.0]
        );
        // Too soon: the previous rates stand.
        assert_eq!(
            m.sample(t0 + Duration::from_millis(2100), &[1000, 0]),
            &[10.0, 0.0]
        );
    }
}
