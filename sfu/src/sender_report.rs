//! Sender reports for a stream the router sends itself (`FastWriter`).
//!
//! rtc's sender-report interceptor counts only packets that pass through its
//! write pipeline, so for directly sent streams it stays silent (it reports
//! nothing for a stream without packets). Subscribers still need reports:
//! browsers synchronise audio with video by their NTP/RTP pairs and compute
//! round-trip time from them. Same semantics as rtc's (`SenderStream`):
//! the wall clock and RTP time of the newest in-order packet, extrapolated
//! to the report's instant, and wrapping 32-bit packet and octet counts.

use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp;
use rtc::shared::time::SystemInstant;
use std::time::{Duration, Instant};

/// How often each stream reports (rtc's default).
pub const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// What one directly sent stream has sent, for its next sender report.
#[derive(Debug, Clone)]
pub struct SenderReportClock {
    clock_rate: f64,
    /// The newest in-order packet: sequence number, RTP time, when sent.
    latest: Option<(u16, u32, Instant, SystemInstant)>,
    packets: u32,
    octets: u32,
}

impl SenderReportClock {
    pub fn new(clock_rate: u32) -> Self {
        SenderReportClock {
            clock_rate: clock_rate as f64,
            latest: None,
            packets: 0,
            octets: 0,
        }
    }

    /// A packet left for the subscriber at `now` (retransmissions too: they
    /// are packets sent, as rtc counted them).
    pub fn sent(&mut self, header: &rtp::Header, payload_len: usize, now: Instant) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
        let in_order = match self.latest {
            None => true,
            Some((seq, ..)) => {
                let diff = header.sequence_number.wrapping_sub(seq);
                diff > 0 && diff < 1 << 15
            }
        };
        if !in_order {
            return;
        }
        let same_time = self
            .latest
            .is_some_and(|(_, ts, ..)| ts == header.timestamp);
        match &mut self.latest {
            Some(latest) if same_time => latest.0 = header.sequence_number,
            _ => {
                self.latest = Some((
                    header.sequence_number,
                    header.timestamp,
                    now,
                    SystemInstant::now(now),
                ))
            }
        }
    }

    /// The report for `ssrc` at `now`; none before the first packet.
    pub fn report(&self, ssrc: u32, now: Instant) -> Option<SenderReport> {
        let (_, ts, at, wall) = self.latest?;
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        Some(SenderReport {
            ssrc,
            ntp_time: wall.ntp(now),
            rtp_time: ts.wrapping_add((elapsed * self.clock_rate) as u32),
            packet_count: self.packets,
            octet_count: self.octets,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u16, ts: u32) -> rtp::Header {
        rtp::Header {
            sequence_number: seq,
            timestamp: ts,
            ..Default::default()
        }
    }

    #[test]
    fn nothing_to_report_before_the_first_packet() {
        assert!(SenderReportClock::new(90_000)
            .report(1, Instant::now())
            .is_none());
    }

    #[test]
    fn rtp_time_is_extrapolated_from_the_newest_in_order_packet() {
        let start = Instant::now();
        let mut clock = SenderReportClock::new(90_000);
        clock.sent(&header(10, 1_000), 100, start);
        clock.sent(&header(11, 4_000), 200, start + Duration::from_millis(33));
        // Late (a retransmission of an older packet): counted, not a time.
        clock.sent(&header(9, 500), 50, start + Duration::from_millis(40));
        let now = start + Duration::from_millis(133);
        let report = clock.report(7, now).expect("report");
        assert_eq!(report.ssrc, 7);
        assert_eq!(report.packet_count, 3);
        assert_eq!(report.octet_count, 350);
        assert_eq!(report.rtp_time, 4_000 + 9_000);
        // NTP time advances with the instant given, not with the machine.
        let later = clock.report(7, now + Duration::from_secs(1)).expect("r");
        let ntp_second = 1u64 << 32;
        let delta = later.ntp_time - report.ntp_time;
        assert!(delta.abs_diff(ntp_second) < ntp_second / 1000, "{delta}");
        assert_eq!(later.rtp_time, report.rtp_time + 90_000);
    }

    #[test]
    fn counters_wrap_like_rtcp_fields() {
        let mut clock = SenderReportClock::new(48_000);
        clock.packets = u32::MAX;
        clock.octets = u32::MAX - 1;
        clock.sent(&header(1, 1), 3, Instant::now());
        let report = clock.report(1, Instant::now()).expect("report");
        assert_eq!((report.packet_count, report.octet_count), (0, 1));
    }
}
