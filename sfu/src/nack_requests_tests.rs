//! `NackRequests` against rtc-interceptor's NACK generator, which it
//! replaces: fed the same packets at the same instants, both must ask for
//! the same sequence numbers.

use std::time::{Duration, Instant};

use rtc::interceptor::{Interceptor, NackGeneratorBuilder, Packet, RTCPFeedback, StreamInfo};
use rtc::rtp;
use rtc::sansio::Protocol;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::rtc_interceptor_testing::{read, written};

/// Sequence numbers asked for, by media SSRC.
type Asked = Vec<(u32, Vec<u16>)>;

struct Pair {
    ours: NackRequests,
    rtc: Box<dyn Interceptor>,
}

impl Pair {
    fn new(ssrcs: &[u32]) -> Pair {
        let mut pair = Pair {
            ours: NackRequests::default(),
            rtc: Box::new(NackGeneratorBuilder::new().build()),
        };
        for &ssrc in ssrcs {
            pair.ours.bind(ssrc);
            pair.rtc.bind_remote_stream(&StreamInfo {
                ssrc,
                clock_rate: 90_000,
                rtcp_feedback: vec![RTCPFeedback {
                    typ: "nack".into(),
                    parameter: String::new(),
                }],
                ..Default::default()
            });
        }
        pair
    }

    fn rtp(&mut self, ssrc: u32, seq: u16, now: Instant) {
        self.ours.on_rtp(ssrc, seq, now);
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                ssrc,
                sequence_number: seq,
                payload_type: 96,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(b"payload"),
        };
        read(&mut *self.rtc, Packet::Rtp(packet), now);
    }

    /// Runs both timers at `now`: the sequence numbers each asks for, by
    /// media SSRC.
    fn nacked(&mut self, now: Instant) -> (Asked, Asked) {
        assert_eq!(self.ours.poll_timeout(), self.rtc.poll_timeout());
        let listed = |n: &TransportLayerNack| {
            let seqs = n.nacks.iter().flat_map(|p| p.packet_list()).collect();
            (n.media_ssrc, seqs)
        };
        let mut ours: Vec<_> = self.ours.handle_timeout(now).iter().map(listed).collect();
        let mut theirs: Vec<_> = written::<TransportLayerNack>(&mut *self.rtc, now)
            .iter()
            .map(listed)
            .collect();
        ours.sort();
        theirs.sort();
        (ours, theirs)
    }
}

#[test]
fn asks_for_what_rtc_asked_for_through_loss_reordering_a_jump_and_a_wrap() {
    let (a, b) = (0xaaaa, 0xbbbb);
    let mut pair = Pair::new(&[a, b]);
    let start = Instant::now();
    let mut random = StdRng::seed_from_u64(11);
    let mut held: Vec<u16> = Vec::new();
    let mut checks = 0;
    let mut asked = 0;
    // Stream a starts near the wrap: 4 s of 200 packets a second, 8 %
    // lost, 4 % arriving 1 to 60 packets late, and at 2 s a jump of 700
    // (more than the log holds). Stream b: 50 a second, every 10th lost.
    for i in 0..800u32 {
        let now = start + Duration::from_millis(u64::from(i) * 5);
        let jump = if i >= 400 { 700 } else { 0 };
        let seq = 65_400u16.wrapping_add(i as u16).wrapping_add(jump);
        if random.random_range(0..100) < 30 {
            if let Some(late) = held.pop() {
                pair.rtp(a, late, now);
            }
        }
        match random.random_range(0..100) {
            0..=7 => {}
            8..=11 => held.insert(0, seq),
            _ => pair.rtp(a, seq, now),
        }
        if i % 4 == 0 && (i / 4) % 10 != 9 {
            pair.rtp(b, (i / 4) as u16, now);
        }
        if pair.ours.poll_timeout().is_some_and(|t| t <= now) {
            let (ours, theirs) = pair.nacked(now);
            assert_eq!(ours, theirs, "check {checks} at packet {i}");
            asked += ours.iter().map(|(_, s)| s.len()).sum::<usize>();
            checks += 1;
        }
    }
    assert!(checks >= 35, "{checks} checks");
    assert!(asked > 100, "{asked} sequence numbers asked for");
}

#[test]
fn only_bound_streams_are_asked_about() {
    let mut pair = Pair::new(&[1]);
    let start = Instant::now();
    for seq in [10u16, 12] {
        pair.rtp(2, seq, start);
    }
    assert_eq!(pair.ours.poll_timeout(), None);
    for seq in [10u16, 12] {
        pair.rtp(1, seq, start);
    }
    let (ours, theirs) = pair.nacked(start + NACK_INTERVAL);
    assert_eq!(ours, vec![(1, vec![11])]);
    assert_eq!(ours, theirs);
    pair.ours.unbind(1);
    assert!(pair
        .ours
        .handle_timeout(start + 2 * NACK_INTERVAL)
        .is_empty());
}
