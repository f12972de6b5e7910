//! Receiver reports on a publisher's streams (RFC 3550 6.4.2): loss,
//! extended highest sequence number, interarrival jitter, and the last
//! sender report with the delay since, from which the publisher measures its
//! round-trip time.
//!
//! rtc-interceptor's `ReceiverReportInterceptor` keeps exactly these
//! statistics, and ran here until 2026-12-03 (`PublisherFeedback`). It is
//! written again because of what it costs per packet around the statistics,
//! not in them: the whole packet moved into and out of its queue beside a
//! map lookup. With this and [`crate::nack_requests`] the publisher's
//! feedback fell from 5.4 % to 3.2 % of a shard's samples at rooms of 4
//! (`benches/RESULTS.md`, "Feedback generators of our own"). The
//! arithmetic is rtc's, so the reports are the same (a test feeds both the
//! same packets and compares what they write).

use std::time::{Duration, Instant};

use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;

use crate::seq_bitmap::SeqBitmap;
use crate::FastMap;

/// How often each stream is reported on (rtc's default).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Sequence numbers remembered as received or not: 8,192 (rtc's size).
type Received = SeqBitmap<128>;

/// Receiver-report state of every bound stream of one publisher.
#[derive(Default)]
pub struct ReceiverReports {
    streams: FastMap<u32, ReceivedStream>,
    /// Armed by the first packet of a bound stream, then every interval.
    next_report: Option<Instant>,
}

struct ReceivedStream {
    /// The SSRC the reports come from (random per stream, as rtc's).
    reporter_ssrc: u32,
    clock_rate: f64,
    /// Received since it was last skipped by a newer packet.
    received: Received,
    cycles: u16,
    highest: u16,
    highest_at_last_report: u16,
    last_timestamp: u32,
    last_arrival: Option<Instant>,
    jitter: f64,
    /// The middle 32 bits of the last sender report's NTP time.
    last_sender_report: u32,
    last_sender_report_at: Option<Instant>,
    total_lost: u32,
}

impl ReceivedStream {
    fn new(clock_rate: u32) -> Self {
        ReceivedStream {
            reporter_ssrc: rand::random(),
            clock_rate: f64::from(clock_rate),
            received: Received::default(),
            cycles: 0,
            highest: 0,
            highest_at_last_report: 0,
            last_timestamp: 0,
            last_arrival: None,
            jitter: 0.0,
            last_sender_report: 0,
            last_sender_report_at: None,
            total_lost: 0,
        }
    }

    fn on_packet(&mut self, seq: u16, timestamp: u32, arrival: Instant) {
        self.received.set(seq, true);
        match self.last_arrival {
            None => {
                self.highest = seq;
                self.highest_at_last_report = seq.wrapping_sub(1);
            }
            Some(last_arrival) => {
                let ahead = seq.wrapping_sub(self.highest);
                if ahead > 0 && ahead < 1 << 15 {
                    if seq < self.highest {
                        self.cycles = self.cycles.wrapping_add(1);
                    }
                    // What was skipped is missing until it arrives.
                    let mut missing = self.highest.wrapping_add(1);
                    while missing != seq {
                        self.received.set(missing, false);
                        missing = missing.wrapping_add(1);
                    }
                    self.highest = seq;
                }
                // RFC 3550 6.4.1 (and A.8), in RTP timestamp units.
                let transit_change = arrival.duration_since(last_arrival).as_secs_f64()
                    * self.clock_rate
                    - (f64::from(timestamp) - f64::from(self.last_timestamp));
                self.jitter += (transit_change.abs() - self.jitter) / 16.0;
            }
        }
        self.last_timestamp = timestamp;
        self.last_arrival = Some(arrival);
    }

    fn report(&mut self, ssrc: u32, now: Instant) -> ReceiverReport {
        let expected = self.highest.wrapping_sub(self.highest_at_last_report);
        let mut lost = 0u32;
        let mut seq = self.highest_at_last_report.wrapping_add(1);
        while seq != self.highest {
            lost += u32::from(!self.received.get(seq));
            seq = seq.wrapping_add(1);
        }
        // Both counts are 24 bits on the wire.
        self.total_lost = (self.total_lost + lost).min(0xFF_FFFF);
        let lost = lost.min(0xFF_FFFF);
        let fraction_lost = if expected > 0 {
            (f64::from(lost * 256) / f64::from(expected)) as u8
        } else {
            0
        };
        // Delay since the last sender report, in 1/65536 s (0: none yet).
        let delay = self.last_sender_report_at.map_or(0, |at| {
            (now.duration_since(at).as_secs_f64() * 65536.0) as u32
        });
        self.highest_at_last_report = self.highest;
        ReceiverReport {
            ssrc: self.reporter_ssrc,
            reports: vec![ReceptionReport {
                ssrc,
                last_sequence_number: u32::from(self.cycles) << 16 | u32::from(self.highest),
                last_sender_report: self.last_sender_report,
                fraction_lost,
                total_lost: self.total_lost,
                delay,
                jitter: self.jitter as u32,
            }],
            ..Default::default()
        }
    }
}

impl ReceiverReports {
    /// Starts reporting on `ssrc` (again from nothing if it was bound).
    pub fn bind(&mut self, ssrc: u32, clock_rate: u32) {
        self.streams.insert(ssrc, ReceivedStream::new(clock_rate));
    }

    pub fn unbind(&mut self, ssrc: u32) {
        self.streams.remove(&ssrc);
    }

    /// A packet of a stream arrived at `arrival`; unbound streams are
    /// not reported on.
    pub fn on_rtp(&mut self, ssrc: u32, seq: u16, timestamp: u32, arrival: Instant) {
        let Some(stream) = self.streams.get_mut(&ssrc) else {
            return;
        };
        stream.on_packet(seq, timestamp, arrival);
        if self.next_report.is_none() {
            self.next_report = Some(arrival + REPORT_INTERVAL);
        }
    }

    /// The publisher's sender report on one of its streams.
    pub fn on_sender_report(&mut self, report: &SenderReport, now: Instant) {
        if let Some(stream) = self.streams.get_mut(&report.ssrc) {
            stream.last_sender_report = (report.ntp_time >> 16) as u32;
            stream.last_sender_report_at = Some(now);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_report
    }

    /// When due, one report per bound stream (each its own RTCP message,
    /// as rtc sent them).
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<ReceiverReport> {
        if self.next_report.is_none_or(|t| now < t) {
            return Vec::new();
        }
        self.next_report = Some(now + REPORT_INTERVAL);
        self.streams
            .iter_mut()
            .map(|(&ssrc, stream)| stream.report(ssrc, now))
            .collect()
    }
}

#[cfg(test)]
#[path = "receiver_reports_tests.rs"]
mod tests;
