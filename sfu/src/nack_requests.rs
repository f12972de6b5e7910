//! NACKs to a publisher for the packets of its streams that did not arrive
//! (RFC 4585 generic NACK): every 100 ms, each sequence number missing
//! from the last 512 of a stream, until it arrives or falls out of them.
//!
//! rtc-interceptor's `NackGeneratorInterceptor` does exactly this, and ran
//! here until 2026-12-03 (`PublisherFeedback`); it is written again for the
//! same reason as [`crate::receiver_reports`]: per packet it moved the whole
//! packet into and out of a queue around a SipHash lookup and one bit set.
//! The log is rtc's (pion's), so the NACKs are the same; a test feeds both
//! the same packets and compares what they send.

use std::time::{Duration, Instant};

use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    nack_pairs_from_sequence_numbers, TransportLayerNack,
};

use crate::seq_bitmap::SeqBitmap;
use crate::FastMap;

/// How often missing packets are asked for (rtc's default).
pub const NACK_INTERVAL: Duration = Duration::from_millis(100);

/// Sequence numbers a stream's log covers (rtc's default): older missing
/// packets are not asked for.
type Log = SeqBitmap<8>;
const LOG_SIZE: u16 = Log::SIZE as u16;
const HALF: u16 = 1 << 15;

/// The NACK state of every bound stream of one publisher whose codec
/// negotiated `nack`.
pub struct NackRequests {
    /// The SSRC the NACKs come from (random per publisher, as rtc's).
    sender_ssrc: u32,
    logs: FastMap<u32, ReceiveLog>,
    /// Armed by the first packet of a logged stream, then every interval.
    next_check: Option<Instant>,
}

impl Default for NackRequests {
    fn default() -> Self {
        NackRequests {
            sender_ssrc: rand::random(),
            logs: FastMap::default(),
            next_check: None,
        }
    }
}

impl NackRequests {
    /// Starts logging `ssrc` (again from nothing if it was).
    pub fn bind(&mut self, ssrc: u32) {
        self.logs.insert(ssrc, ReceiveLog::default());
    }

    pub fn unbind(&mut self, ssrc: u32) {
        self.logs.remove(&ssrc);
    }

    /// A packet arrived; streams not logged are ignored.
    pub fn on_rtp(&mut self, ssrc: u32, seq: u16, now: Instant) {
        let Some(log) = self.logs.get_mut(&ssrc) else {
            return;
        };
        log.add(seq);
        if self.next_check.is_none() {
            self.next_check = Some(now + NACK_INTERVAL);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_check
    }

    /// When due, one NACK per stream with packets missing.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<TransportLayerNack> {
        if self.next_check.is_none_or(|t| now < t) {
            return Vec::new();
        }
        self.next_check = Some(now + NACK_INTERVAL);
        let mut nacks = Vec::new();
        for (&media_ssrc, log) in &self.logs {
            let missing = log.missing();
            if !missing.is_empty() {
                nacks.push(TransportLayerNack {
                    sender_ssrc: self.sender_ssrc,
                    media_ssrc,
                    nacks: nack_pairs_from_sequence_numbers(&missing),
                });
            }
        }
        nacks
    }
}

/// Which of a stream's last [`LOG_SIZE`] sequence numbers arrived.
#[derive(Default)]
struct ReceiveLog {
    received: Log,
    started: bool,
    /// The highest sequence number seen.
    end: u16,
    /// Every sequence number up to this one arrived.
    last_consecutive: u16,
}

impl ReceiveLog {
    fn add(&mut self, seq: u16) {
        if !self.started {
            self.started = true;
            self.end = seq;
            self.last_consecutive = seq;
            self.received.set(seq, true);
            return;
        }
        let ahead = seq.wrapping_sub(self.end);
        if ahead == 0 {
            return;
        }
        if ahead < HALF {
            // Newer than any: what was skipped is missing until it arrives.
            let mut skipped = self.end.wrapping_add(1);
            while skipped != seq {
                self.received.set(skipped, false);
                skipped = skipped.wrapping_add(1);
            }
            self.end = seq;
            if self.last_consecutive.wrapping_add(1) == seq {
                self.last_consecutive = seq;
            } else if seq.wrapping_sub(self.last_consecutive) > LOG_SIZE {
                self.last_consecutive = seq.wrapping_sub(LOG_SIZE);
                self.advance_last_consecutive();
            }
        } else if self.last_consecutive.wrapping_add(1) == seq {
            // A late packet that fills the oldest hole.
            self.last_consecutive = seq;
            self.advance_last_consecutive();
        }
        self.received.set(seq, true);
    }

    fn advance_last_consecutive(&mut self) {
        let mut next = self.last_consecutive.wrapping_add(1);
        while next != self.end.wrapping_add(1) && self.received.get(next) {
            next = next.wrapping_add(1);
        }
        self.last_consecutive = next.wrapping_sub(1);
    }

    /// The sequence numbers after the last consecutive one, up to the
    /// highest, that have not arrived.
    fn missing(&self) -> Vec<u16> {
        if self.end.wrapping_sub(self.last_consecutive) >= HALF {
            return Vec::new();
        }
        let mut missing = Vec::new();
        let mut seq = self.last_consecutive.wrapping_add(1);
        while seq != self.end.wrapping_add(1) {
            if !self.received.get(seq) {
                missing.push(seq);
            }
            seq = seq.wrapping_add(1);
        }
        missing
    }
}

#[cfg(test)]
#[path = "nack_requests_tests.rs"]
mod tests;
