//! The send-side bandwidth estimate toward one subscriber, from its
//! transport-wide congestion feedback. Sans-IO: the caller stamps each
//! forwarded packet with [`SendSideBwe::next_sequence`], reports what it
//! sent with [`SendSideBwe::on_sent`] and hands in the feedback; time is
//! always a parameter.
//!
//! Estimate = min(delay-based rate, loss-based bound): see `rate_control`
//! and `loss_based` for how each is anchored on the acknowledged rate.

use super::acknowledged_rate::AcknowledgedRate;
use super::delay_based::{DelayDetector, Usage};
use super::loss_based::LossBased;
use super::rate_control::RateControl;
use super::send_history::SendHistory;
use super::twcc_feedback::{arrivals, Arrival, ReferenceTime};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use std::time::Instant;

/// Where a new connection's estimate starts: enough for a mid layer and
/// audio, so the first allocation is not all lowest layers.
pub const INITIAL_ESTIMATE_BPS: f64 = 1_000_000.0;

#[derive(Debug)]
pub struct SendSideBwe {
    next_seq: u64,
    history: SendHistory,
    reference: ReferenceTime,
    /// Reused between feedbacks.
    scratch: Vec<Arrival>,
    acked: AcknowledgedRate,
    delay: DelayDetector,
    rate: RateControl,
    loss: LossBased,
    estimate: f64,
    feedbacks: u64,
    /// Bytes on the wire so far (the prober fills up to its rate).
    sent_bytes: u64,
}

impl Default for SendSideBwe {
    fn default() -> Self {
        Self::new(INITIAL_ESTIMATE_BPS)
    }
}

/// What an operator (and the allocator) may want to know.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BweStats {
    pub estimate_bps: u64,
    pub acknowledged_bps: Option<u64>,
    /// Share of the last second's packets the subscriber reported lost.
    pub loss: Option<f64>,
    pub usage: Usage,
    /// Feedback packets taken in (0: the subscriber sends none, so the
    /// estimate is only the initial guess).
    pub feedbacks: u64,
}

impl SendSideBwe {
    pub fn new(initial_bps: f64) -> Self {
        let rate = RateControl::new(initial_bps);
        SendSideBwe {
            next_seq: 0,
            history: SendHistory::default(),
            reference: ReferenceTime::default(),
            scratch: Vec::new(),
            acked: AcknowledgedRate::default(),
            delay: DelayDetector::default(),
            estimate: rate.estimate(),
            rate,
            loss: LossBased::default(),
            feedbacks: 0,
            sent_bytes: 0,
        }
    }

    /// The transport-wide sequence number for the next packet; its low 16
    /// bits go on the wire. Report the packet with `on_sent`.
    pub fn next_sequence(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The packet numbered `seq` left at `now`, `size` bytes on the wire
    /// (0: it did not leave; feedback about it is ignored).
    pub fn on_sent(&mut self, seq: u64, size: u32, now: Instant) {
        self.history.record(seq, size, now);
        self.sent_bytes += u64::from(size);
        if size == 0 {
            if let Some(p) = self.history.get_mut(seq) {
                p.reported = true;
            }
        }
    }

    pub fn on_feedback(&mut self, feedback: &TransportLayerCc, now: Instant) {
        self.feedbacks += 1;
        self.scratch.clear();
        arrivals(feedback, &mut self.reference, &mut self.scratch);
        let (mut lost, mut reported) = (0u32, 0u32);
        for arrival in &self.scratch {
            let Some(packet) = self
                .history
                .unwrap(arrival.seq)
                .and_then(|seq| self.history.get_mut(seq))
            else {
                continue; // Too old, or never sent by us.
            };
            if packet.reported {
                continue;
            }
            packet.reported = true;
            reported += 1;
            match arrival.arrived_us {
                Some(at) => {
                    self.acked.on_arrival(at, packet.size);
                    self.delay.on_packet(packet.sent_at, at);
                }
                None => lost += 1,
            }
        }
        if reported == 0 {
            return;
        }
        let acked = self.acked.bitrate();
        self.loss
            .on_feedback(lost, reported, acked, self.estimate, now);
        let delay_based = self.rate.update(self.delay.usage(), acked, now);
        self.estimate = self
            .loss
            .bound()
            .map_or(delay_based, |b| delay_based.min(b));
    }

    /// Bytes sent so far, as reported with `on_sent`.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    pub fn estimate_bps(&self) -> u64 {
        self.estimate as u64
    }

    pub fn stats(&self) -> BweStats {
        BweStats {
            estimate_bps: self.estimate as u64,
            acknowledged_bps: self.acked.bitrate().map(|b| b as u64),
            loss: self.loss.loss(),
            usage: self.delay.usage(),
            feedbacks: self.feedbacks,
        }
    }
}

#[cfg(test)]
#[path = "estimator_tests.rs"]
mod tests;
