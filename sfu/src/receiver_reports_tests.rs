//! `ReceiverReports` against rtc-interceptor's receiver-report interceptor,
//! which it replaces: fed the same packets and sender reports, at the same
//! instants, both must write the same reports.

use std::time::{Duration, Instant};

use rtc::interceptor::{Interceptor, Packet, ReceiverReportBuilder, StreamInfo};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp;
use rtc::sansio::Protocol;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::rtc_interceptor_testing::{read, written};

/// Both generators, fed alike.
struct Pair {
    ours: ReceiverReports,
    rtc: Box<dyn Interceptor>,
}

impl Pair {
    fn new(streams: &[(u32, u32)]) -> Pair {
        let mut pair = Pair {
            ours: ReceiverReports::default(),
            rtc: Box::new(ReceiverReportBuilder::new().build()),
        };
        for &(ssrc, clock_rate) in streams {
            pair.ours.bind(ssrc, clock_rate);
            pair.rtc.bind_remote_stream(&StreamInfo {
                ssrc,
                clock_rate,
                ..Default::default()
            });
        }
        pair
    }

    fn rtp(&mut self, ssrc: u32, seq: u16, timestamp: u32, now: Instant) {
        self.ours.on_rtp(ssrc, seq, timestamp, now);
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                ssrc,
                sequence_number: seq,
                timestamp,
                payload_type: 96,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(b"payload"),
        };
        read(&mut *self.rtc, Packet::Rtp(packet), now);
    }

    fn sender_report(&mut self, ssrc: u32, ntp_time: u64, now: Instant) {
        let report = SenderReport {
            ssrc,
            ntp_time,
            ..Default::default()
        };
        self.ours.on_sender_report(&report, now);
        read(&mut *self.rtc, Packet::Rtcp(vec![Box::new(report)]), now);
    }

    /// Runs both timers at `now`; both reports' blocks, by media SSRC.
    fn reports(&mut self, now: Instant) -> (Vec<ReceptionReport>, Vec<ReceptionReport>) {
        assert_eq!(self.ours.poll_timeout(), self.rtc.poll_timeout());
        let mut ours: Vec<ReceptionReport> = self
            .ours
            .handle_timeout(now)
            .into_iter()
            .flat_map(|r| r.reports)
            .collect();
        let mut theirs: Vec<ReceptionReport> = written::<ReceiverReport>(&mut *self.rtc, now)
            .into_iter()
            .flat_map(|r| r.reports)
            .collect();
        ours.sort_by_key(|r| r.ssrc);
        theirs.sort_by_key(|r| r.ssrc);
        (ours, theirs)
    }
}

#[test]
fn writes_what_rtc_wrote_through_loss_reordering_and_a_wrap() {
    let (video, audio) = (0x1111_1111, 0x2222_2222);
    let mut pair = Pair::new(&[(video, 90_000), (audio, 48_000)]);
    let start = Instant::now();
    let mut random = StdRng::seed_from_u64(7);
    let mut reports = 0;
    let mut late: Vec<(u16, u32)> = Vec::new();
    // Video starts near the wrap; 6 s of 100 packets a second, 5 % lost,
    // 2 % held back and sent after the next one, arrivals jittered by
    // up to 8 ms; audio 50 a second, no loss; a sender report every 2 s.
    for i in 0..600u32 {
        let now = start + Duration::from_millis(u64::from(i) * 10 + random.random_range(0..8));
        let seq = 65_300u16.wrapping_add(i as u16);
        let timestamp = 1_000 + i * 900;
        if let Some((seq, timestamp)) = late.pop() {
            pair.rtp(video, seq, timestamp, now);
        }
        match random.random_range(0..100) {
            0..=4 => {}
            5..=6 => late.push((seq, timestamp)),
            _ => pair.rtp(video, seq, timestamp, now),
        }
        if i % 2 == 0 {
            pair.rtp(audio, (i / 2) as u16, i * 480, now);
        }
        if i % 200 == 100 {
            pair.sender_report(video, 0x0123_4567_89ab_cdef + u64::from(i), now);
        }
        if pair.ours.poll_timeout().is_some_and(|t| t <= now) {
            let (ours, theirs) = pair.reports(now);
            assert_eq!(ours, theirs, "report {reports}");
            assert_eq!(ours.len(), 2);
            reports += 1;
        }
    }
    assert!(reports >= 5, "{reports} reports");
    // The losses show: the video's counts are not zero, the audio's are.
    let (ours, _) = pair.reports(start + Duration::from_secs(7));
    let lost = |ssrc| ours.iter().find(|r| r.ssrc == ssrc).unwrap().total_lost;
    assert!(lost(video) > 10, "video lost {}", lost(video));
    assert_eq!(lost(audio), 0);
    let wrapped = ours.iter().find(|r| r.ssrc == video).unwrap();
    assert_eq!(wrapped.last_sequence_number >> 16, 1, "one wrap counted");
    assert_ne!(wrapped.last_sender_report, 0);
}

#[test]
fn nothing_before_a_packet_and_nothing_on_unbound_streams() {
    let mut pair = Pair::new(&[(5, 90_000)]);
    let start = Instant::now();
    assert_eq!(pair.ours.poll_timeout(), None);
    pair.rtp(6, 1, 0, start);
    assert_eq!(
        pair.ours.poll_timeout(),
        None,
        "an unbound stream arms nothing"
    );
    pair.rtp(5, 1, 0, start);
    assert_eq!(pair.ours.poll_timeout(), Some(start + REPORT_INTERVAL));
    pair.ours.unbind(5);
    pair.rtc.unbind_remote_stream(&StreamInfo {
        ssrc: 5,
        ..Default::default()
    });
    let (ours, theirs) = pair.reports(start + REPORT_INTERVAL);
    assert!(ours.is_empty() && theirs.is_empty());
}
