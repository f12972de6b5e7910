//! How much a subscriber's NACKs may make the server resend: a token
//! bucket filled at a share of the bandwidth estimate.
//!
//! A receiver may NACK the same missing packets again and again (webrtc-rs'
//! NACK generator repeats every missing sequence number each interval, with
//! no limit by default). Answering all of it toward a congested link is an
//! amplifier: measured with tests/netem/bwe.sh, a subscriber limited to
//! 500 kbit/s drew 2,782 retransmissions/s (27.8 Mbit/s sent into the
//! 500 kbit/s link) from 8 NACK packets/s, and the queue that built
//! buried the estimate. Retransmissions past the budget are skipped (the
//! receiver asks again, or its decoder asks for a keyframe).

use std::time::Instant;

/// Share of the estimate retransmissions may take.
const SHARE: f64 = 0.25;
/// The budget's rate however low the estimate (loss on a slow link still
/// deserves repair).
const FLOOR_BPS: f64 = 100_000.0;
/// Burst allowance: this many seconds of the budget's rate (a lost burst
/// of a keyframe is answered at once).
const DEPTH_SECONDS: f64 = 1.0;

#[derive(Debug, Default)]
pub struct RetransmitBudget {
    tokens_bytes: f64,
    last: Option<Instant>,
}

impl RetransmitBudget {
    /// Takes `bytes` from the budget if it holds them.
    pub fn take(&mut self, bytes: usize, estimate_bps: u64, now: Instant) -> bool {
        let rate = (estimate_bps as f64 * SHARE).max(FLOOR_BPS) / 8.0;
        let elapsed = self.last.map_or(DEPTH_SECONDS, |t| {
            now.saturating_duration_since(t).as_secs_f64()
        });
        self.last = Some(now);
        self.tokens_bytes = (self.tokens_bytes + rate * elapsed).min(rate * DEPTH_SECONDS);
        if self.tokens_bytes >= bytes as f64 {
            self.tokens_bytes -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn resends_at_most_a_quarter_of_the_estimate() {
        let t0 = Instant::now();
        let mut budget = RetransmitBudget::default();
        // 800 kbit/s estimate: 25 kB/s, 25 kB of burst (the first second).
        let mut sent = 0;
        for ms in 0..1000u64 {
            // NACKs asking for ten 1,200-byte packets every millisecond.
            for _ in 0..10 {
                if budget.take(1200, 800_000, t0 + Duration::from_millis(ms)) {
                    sent += 1200;
                }
            }
        }
        assert!(
            (48_000..=51_000).contains(&sent),
            "{sent} bytes in a second"
        );
        // A second later (refilled): 25 kB again, no more.
        let mut sent = 0;
        for ms in 2000..2010u64 {
            for _ in 0..10 {
                if budget.take(1200, 800_000, t0 + Duration::from_millis(ms)) {
                    sent += 1200;
                }
            }
        }
        assert!((24_000..=25_200).contains(&sent), "{sent} bytes");
    }
}
