//! The estimator against a simulated bottleneck: a FIFO link of a given
//! rate that drops what would wait longer than 100 ms (what `tc tbf` with
//! `latency 100ms` does), 20 ms each way, feedback every 100 ms as a
//! browser sends it. Deterministic: time is simulated.

use super::*;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
};
use std::time::Duration;

const PACKET: u32 = 1200;
const ONE_WAY: Duration = Duration::from_millis(20);
const MAX_QUEUE: Duration = Duration::from_millis(100);
const FEEDBACK_EVERY: Duration = Duration::from_millis(100);

struct Sim {
    t0: Instant,
    now: Duration,
    bwe: SendSideBwe,
    /// When the link is free again (sim time).
    link_free: Duration,
    /// (wire seq, arrival at the receiver or None) not yet fed back.
    pending: Vec<(u16, Option<Duration>)>,
    next_feedback: Duration,
    /// Fractional packets owed to the sender's pacing.
    credit: f64,
    fb_count: u8,
}

impl Sim {
    fn new() -> Self {
        Sim {
            t0: Instant::now(),
            now: Duration::ZERO,
            bwe: SendSideBwe::default(),
            link_free: Duration::ZERO,
            pending: Vec::new(),
            next_feedback: FEEDBACK_EVERY,
            credit: 0.0,
            fb_count: 0,
        }
    }

    /// Runs `seconds`, sending at `send_bps(estimate)` over a link of
    /// `link_bps`, in 1 ms steps; the estimate at each 100 ms.
    fn run(&mut self, seconds: f64, link_bps: f64, send_bps: impl Fn(f64) -> f64) -> Vec<f64> {
        let steps = (seconds * 1000.0) as u64;
        let mut samples = Vec::new();
        for _ in 0..steps {
            self.now += Duration::from_millis(1);
            let rate = send_bps(self.bwe.estimate_bps() as f64);
            self.credit += rate / 8.0 / PACKET as f64 / 1000.0;
            while self.credit >= 1.0 {
                self.credit -= 1.0;
                self.send_one(link_bps);
            }
            if self.now >= self.next_feedback {
                self.next_feedback += FEEDBACK_EVERY;
                self.feedback();
                samples.push(self.bwe.estimate_bps() as f64);
            }
        }
        samples
    }

    fn send_one(&mut self, link_bps: f64) {
        let seq = self.bwe.next_sequence();
        self.bwe.on_sent(seq, PACKET, self.t0 + self.now);
        let at_link = self.now + ONE_WAY / 2;
        let start = at_link.max(self.link_free);
        let arrival = if start - at_link > MAX_QUEUE {
            None
        } else {
            let done = start + Duration::from_secs_f64(PACKET as f64 * 8.0 / link_bps);
            self.link_free = done;
            Some(done + ONE_WAY / 2)
        };
        self.pending.push((seq as u16, arrival));
    }

    /// Reports every pending packet that has arrived by now, and the lost
    /// ones before the newest arrival (as a receiver sees gaps).
    fn feedback(&mut self) {
        // Feedback leaves the receiver now and reaches us 20 ms later; the
        // simulation hands it in at once (the delay only shifts time).
        let now = self.now;
        let Some(last) = self
            .pending
            .iter()
            .rposition(|(_, a)| a.is_some_and(|a| a <= now))
        else {
            return;
        };
        let batch: Vec<_> = self.pending.drain(..=last).collect();
        let first_arrival = batch.iter().find_map(|(_, a)| *a).unwrap();
        let reference = (first_arrival.as_micros() as i64) / 64_000;
        let mut previous = reference * 64_000;
        let mut chunks = Vec::new();
        let mut deltas = Vec::new();
        for (_, arrival) in &batch {
            let symbol = match arrival {
                Some(a) if *a <= now => {
                    let at = a.as_micros() as i64;
                    deltas.push(RecvDelta {
                        type_tcc_packet: SymbolTypeTcc::PacketReceivedLargeDelta,
                        delta: at - previous,
                    });
                    previous = at;
                    SymbolTypeTcc::PacketReceivedLargeDelta
                }
                _ => SymbolTypeTcc::PacketNotReceived,
            };
            chunks.push(PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: symbol,
                run_length: 1,
            }));
        }
        self.fb_count = self.fb_count.wrapping_add(1);
        let fb = TransportLayerCc {
            base_sequence_number: batch[0].0,
            packet_status_count: batch.len() as u16,
            reference_time: reference as u32,
            fb_pkt_count: self.fb_count,
            packet_chunks: chunks,
            recv_deltas: deltas,
            ..Default::default()
        };
        self.bwe.on_feedback(&fb, self.t0 + now + ONE_WAY);
    }
}

fn mean(samples: &[f64]) -> f64 {
    samples.iter().sum::<f64>() / samples.len() as f64
}

/// How many 100 ms samples until the estimate stays within `lo..=hi`.
fn settle_samples(samples: &[f64], lo: f64, hi: f64) -> Option<usize> {
    (0..samples.len()).find(|&i| samples[i..].iter().all(|e| (lo..=hi).contains(e)))
}

#[test]
fn a_sender_pushing_more_than_the_link_sees_the_link_rate_within_two_seconds() {
    let mut sim = Sim::new();
    // 1.5 Mbit/s through a 5 Mbit/s link: the estimate follows what is sent.
    let before = sim.run(10.0, 5_000_000.0, |_| 1_500_000.0);
    let e = *before.last().unwrap();
    // Capped at 1.5x what the link delivered.
    assert!((1_450_000.0..=2_300_000.0).contains(&e), "{e}");
    // The link is cut to 500 kbit/s; the sender keeps sending 1.5 Mbit/s.
    let cut = sim.run(10.0, 500_000.0, |_| 1_500_000.0);
    let settled = settle_samples(&cut, 400_000.0, 600_000.0).expect("settles");
    assert!(
        settled <= 20,
        "within 20 % after {settled} samples: {cut:?}"
    );
    let m = mean(&cut[20..]);
    assert!((m - 500_000.0).abs() < 50_000.0, "mean {m}");
    // Limit lifted: back within a second or two.
    let lifted = sim.run(5.0, 5_000_000.0, |_| 1_500_000.0);
    let back = lifted
        .iter()
        .position(|e| *e >= 1_400_000.0)
        .expect("climbs back");
    assert!(back <= 20, "back after {back} samples: {lifted:?}");
}

#[test]
fn a_sender_following_the_estimate_converges_on_the_link_and_climbs_after_the_cut() {
    let mut sim = Sim::new();
    let follow = |e: f64| e.min(2_500_000.0);
    sim.run(10.0, 2_000_000.0, follow);
    let cut = sim.run(10.0, 500_000.0, follow);
    let settled = settle_samples(&cut, 400_000.0, 600_000.0).expect("settles");
    assert!(
        settled <= 20,
        "within 20 % after {settled} samples: {cut:?}"
    );
    let m = mean(&cut[20..]);
    assert!((m - 500_000.0).abs() < 100_000.0, "mean {m}");
    // Lifted: the estimate climbs back by itself (8 %/s, then faster as
    // the sender follows it) to 2 Mbit/s within 20 s.
    let lifted = sim.run(25.0, 2_000_000.0, follow);
    let back = lifted
        .iter()
        .position(|e| *e >= 1_600_000.0)
        .expect("climbs back");
    assert!(
        back <= 200,
        "80 % of the link after {back} samples: {lifted:?}"
    );
}

#[test]
fn an_app_limited_sender_does_not_run_the_estimate_away() {
    let mut sim = Sim::new();
    let samples = sim.run(60.0, 10_000_000.0, |_| 150_000.0);
    let e = *samples.last().unwrap();
    assert!(e <= 300_000.0, "{e}");
}

#[test]
fn no_feedback_keeps_the_initial_estimate() {
    let mut bwe = SendSideBwe::default();
    let t0 = Instant::now();
    for i in 0..1000 {
        let seq = bwe.next_sequence();
        bwe.on_sent(seq, 1200, t0 + Duration::from_millis(i));
    }
    assert_eq!(bwe.estimate_bps(), INITIAL_ESTIMATE_BPS as u64);
    assert_eq!(bwe.stats().feedbacks, 0);
}
