//! Replays packet sequences recorded from Chromium (VP8 simulcast, L1T3 in
//! every encoding; see `CAPTURE_H`) through one subscriber's rewrite
//! (`stream_rewrite::rewrite_packet`, what `DownTrack::send` runs) and
//! checks what its decoder would see: sequence numbers without a gap,
//! picture ids without a gap, TL0PICIDX as sent, whole frames, and every
//! forwarded frame's references forwarded too.

use super::*;
use crate::rtp_munger::RtpMunger;
use crate::stream_rewrite::rewrite_packet;
use crate::vp8_descriptor::Vp8Munger;
use rtc::rtp;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// One packet as recorded on Noom's packet path (a trace of
/// `tests/browser/simulcast.test.mjs`): sequence number, RTP timestamp,
/// marker, picture id, TL0PICIDX, TID, Y, starts a keyframe.
type Recorded = (u16, u32, bool, u16, u8, u8, bool, bool);

/// The same fields of a packet as the subscriber gets it, with the input
/// packet's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Out {
    input: usize,
    seq: u16,
    ts: u32,
    marker: bool,
    pid: u16,
    tl0: u8,
    tid: u8,
    sync: bool,
}

fn packet(r: &Recorded, first_of_picture: bool) -> rtp::Packet {
    let &(seq, ts, marker, pid, tl0, tid, sync, keyframe) = r;
    let s = if first_of_picture { 0x10 } else { 0 };
    let mut payload = vec![
        0x80 | s,
        0xE0, // I, L, T (Chromium sends no KEYIDX)
        0x80 | (pid >> 8) as u8,
        pid as u8,
        tl0,
        tid << 6 | u8::from(sync) << 5,
        u8::from(!keyframe), // VP8 header: P bit clear on a keyframe
    ];
    payload.extend_from_slice(&[0xAB; 20]);
    crate::forward_bench::test_packet(1234, seq, ts, marker, payload)
}

fn packets(recorded: &[Recorded]) -> Vec<rtp::Packet> {
    recorded
        .iter()
        .enumerate()
        .map(|(i, r)| packet(r, i == 0 || recorded[i - 1].3 != r.3))
        .collect()
}

/// One subscriber's stream state, as a `DownTrack` holds it.
struct Subscriber {
    munger: RtpMunger,
    vp8: Vp8Munger,
    t0: Instant,
}

impl Subscriber {
    fn new() -> Self {
        Subscriber {
            munger: RtpMunger::new(90_000),
            vp8: Vp8Munger::default(),
            t0: Instant::now(),
        }
    }

    fn send(&mut self, input: usize, p: &rtp::Packet) -> Option<Out> {
        let now = self.t0 + Duration::from_millis(u64::from(p.header.timestamp / 90 % 100_000));
        let (seq, ts, payload) = rewrite_packet(&mut self.munger, Some(&mut self.vp8), p, now)?;
        let d = Vp8Descriptor::parse(&payload).unwrap();
        assert_eq!(
            &payload[d.len..],
            &p.payload[6..],
            "the frame itself untouched"
        );
        Some(Out {
            input,
            seq,
            ts,
            marker: p.header.marker,
            pid: d.picture_id.unwrap(),
            tl0: d.tl0_pic_idx.unwrap(),
            tid: d.temporal_id.unwrap(),
            sync: d.layer_sync,
        })
    }

    /// Sends `range` of `input`, in order.
    fn replay(&mut self, input: &[rtp::Packet], range: std::ops::Range<usize>) -> Vec<Out> {
        range.filter_map(|i| self.send(i, &input[i])).collect()
    }
}

/// What a decoder needs of the stream, checked on `out` (in sending
/// order): consecutive sequence numbers, picture ids growing by one per
/// picture, whole pictures (the last packet of each has the marker).
fn assert_continuous(out: &[Out]) {
    for w in out.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "sequence gap: {w:?}");
        if w[1].pid != w[0].pid {
            assert_eq!(w[1].pid, (w[0].pid + 1) & 0x7fff, "picture id gap: {w:?}");
            assert!(w[0].marker, "picture {} cut before its end", w[0].pid);
        }
    }
}

/// Every forwarded picture's references were forwarded (RFC 7741's
/// model, as libwebrtc's VP8 reference finder applies it): a frame of
/// layer t depends on the latest frame of each layer up to t, a Y frame
/// on the latest TL0 frame only, a keyframe on nothing.
fn assert_decodable(recorded: &[Recorded], out: &[Out]) {
    let forwarded: HashSet<u16> = out.iter().map(|o| recorded[o.input].3).collect();
    let mut latest: [Option<u16>; 4] = [None; 4];
    let mut previous_pid = None;
    for r in recorded {
        let &(_, _, _, pid, _, tid, sync, keyframe) = r;
        if previous_pid == Some(pid) {
            continue;
        }
        previous_pid = Some(pid);
        let deps: Vec<u16> = if keyframe {
            vec![]
        } else if sync {
            latest[0].into_iter().collect()
        } else {
            latest[..=tid as usize].iter().flatten().copied().collect()
        };
        if forwarded.contains(&pid) {
            for dep in deps {
                assert!(
                    forwarded.contains(&dep),
                    "picture {pid} (TL{tid}) forwarded without its reference {dep}"
                );
            }
        }
        if keyframe {
            latest = [None; 4];
        }
        latest[tid as usize] = Some(pid);
    }
}

/// The TL0PICIDX of every packet sent is the one it came with.
fn assert_tl0_untouched(recorded: &[Recorded], out: &[Out]) {
    for o in out {
        assert_eq!(o.tl0, recorded[o.input].4);
    }
}

fn pictures(out: &[Out]) -> Vec<(u16, u8)> {
    let mut pics: Vec<(u16, u8)> = out.iter().map(|o| (o.pid, o.tid)).collect();
    pics.dedup();
    pics
}

#[test]
fn every_layer_passes_unchanged_by_default() {
    let input = packets(CAPTURE_H);
    let mut sub = Subscriber::new();
    let out = sub.replay(&input, 0..input.len());
    assert_eq!(out.len(), input.len());
    for o in &out {
        let r = CAPTURE_H[o.input];
        assert_eq!(
            (o.seq, o.ts, o.pid, o.tid, o.sync),
            (r.0, r.1, r.3, r.5, r.6)
        );
    }
    assert_eq!(sub.vp8.temporal.current(), ALL_LAYERS);
}

#[test]
fn dropping_tl2_halves_the_frame_rate_without_gaps() {
    let input = packets(CAPTURE_H);
    let mut sub = Subscriber::new();
    sub.vp8.temporal.set_target(1);
    let out = sub.replay(&input, 0..input.len());
    assert_continuous(&out);
    assert_decodable(CAPTURE_H, &out);
    assert_tl0_untouched(CAPTURE_H, &out);
    let pics = pictures(&out);
    // 27 pictures recorded: TIDs 0 2 1 2 ..., 14 of them TL0 or TL1.
    assert_eq!(pics.len(), 14);
    assert!(pics.iter().all(|&(_, tid)| tid <= 1));
    assert_eq!(pics[0].0, 3638, "the first picture keeps its id");
    assert_eq!(pics[13].0, 3638 + 13);
    assert_eq!(out[0].seq, CAPTURE_H[0].0);
}

#[test]
fn dropping_tl1_and_tl2_keeps_the_base_layer() {
    let input = packets(CAPTURE_H);
    let mut sub = Subscriber::new();
    sub.vp8.temporal.set_target(0);
    let out = sub.replay(&input, 0..input.len());
    assert_continuous(&out);
    assert_decodable(CAPTURE_H, &out);
    assert_tl0_untouched(CAPTURE_H, &out);
    let pics = pictures(&out);
    assert_eq!(pics.len(), 7, "a quarter of the frames");
    assert!(pics.iter().all(|&(_, tid)| tid == 0));
    // Every TL0 frame is there: TL0PICIDX counts up by one.
    let tl0s: Vec<u8> = out.iter().map(|o| o.tl0).collect();
    assert!(tl0s.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
}

#[test]
fn a_climb_waits_for_a_sync_frame_one_layer_at_a_time() {
    let input = packets(CAPTURE_H);
    let mut sub = Subscriber::new();
    sub.vp8.temporal.set_target(0);
    // Base layer only, until picture 3641 (TL2, not a sync frame) is next.
    let start = CAPTURE_H.iter().position(|r| r.3 == 3641).unwrap();
    let mut out = sub.replay(&input, 0..start);
    sub.vp8.temporal.set_target(2);
    out.extend(sub.replay(&input, start..input.len()));
    assert_continuous(&out);
    assert_decodable(CAPTURE_H, &out);
    assert_tl0_untouched(CAPTURE_H, &out);
    // Input pictures forwarded, by input picture id.
    let sent: Vec<(u16, u8, bool)> = {
        let mut v: Vec<_> = out
            .iter()
            .map(|o| (CAPTURE_H[o.input].3, o.tid, o.sync))
            .collect();
        v.dedup();
        v
    };
    let first = |tid: u8| sent.iter().find(|s| s.1 == tid).copied().unwrap();
    // Recorded: 3644 TL1 without Y, 3647 TL2 Y (the layer between not
    // synced yet), 3648 TL1 Y (the first sync point for TL1), 3655 TL2 Y
    // (the next one for TL2).
    assert_eq!(first(1), (3648, 1, true), "TL1 from its first sync frame");
    assert_eq!(
        first(2),
        (3655, 2, true),
        "TL2 from its first sync frame after TL1 synced"
    );
    assert!(
        !sent.iter().any(|s| s.0 == 3647),
        "a TL2 sync frame before TL1 synced"
    );
    // From there on every picture goes.
    let all_after = CAPTURE_H.iter().filter(|r| r.3 >= 3655).count();
    assert_eq!(
        out.iter().filter(|o| CAPTURE_H[o.input].3 >= 3655).count(),
        all_after
    );
    assert_eq!(sub.vp8.temporal.current(), 2);
}

#[test]
fn a_step_down_mid_frame_finishes_the_frame() {
    let input = packets(CAPTURE_H);
    let mut sub = Subscriber::new();
    // Down in the middle of a TL2 picture of several packets.
    let (cut, _) = CAPTURE_H
        .iter()
        .enumerate()
        .skip(10)
        .find(|(i, r)| r.5 == 2 && !r.2 && CAPTURE_H[i - 1].3 != r.3)
        .unwrap();
    let cut = cut + 1;
    let mut out = sub.replay(&input, 0..cut);
    sub.vp8.temporal.set_target(0);
    let after = sub.replay(&input, cut..input.len());
    let cut_pid = CAPTURE_H[cut].3;
    // The rest of that picture still goes; nothing above TL0 after it.
    assert!(after.iter().any(|o| CAPTURE_H[o.input].3 == cut_pid));
    assert!(after
        .iter()
        .filter(|o| CAPTURE_H[o.input].3 != cut_pid)
        .all(|o| o.tid == 0));
    out.extend(after);
    assert_continuous(&out);
    assert_decodable(CAPTURE_H, &out);
    assert_tl0_untouched(CAPTURE_H, &out);
}

#[test]
fn a_dropped_packet_is_never_sent_again() {
    let input = packets(CAPTURE_H);
    let mut sub = Subscriber::new();
    sub.vp8.temporal.set_target(1);
    let out = sub.replay(&input, 0..input.len());
    let sent_inputs: HashSet<usize> = out.iter().map(|o| o.input).collect();
    // The publisher retransmits every packet (as if the server had
    // asked): dropped ones stay dropped, sent ones keep their numbers.
    for (i, p) in input.iter().enumerate() {
        match sub.send(i, p) {
            None => assert!(!sent_inputs.contains(&i), "packet {i} was sent before"),
            Some(o) => {
                let first = out.iter().find(|x| x.input == i).unwrap();
                assert_eq!(o, *first, "a repeat maps as the original did");
            }
        }
    }
    // A subscriber's NACK names an outgoing number: each maps back to a
    // forwarded packet, none to a dropped one.
    for o in &out {
        assert_eq!(
            sub.munger.input_for(o.seq).map(|x| x.0),
            Some(CAPTURE_H[o.input].0)
        );
    }
    let dropped: Vec<u16> = (0..input.len())
        .filter(|i| !sent_inputs.contains(i))
        .map(|i| CAPTURE_H[i].0)
        .collect();
    assert!(!dropped.is_empty());
    for seq in out.iter().map(|o| o.seq) {
        let input = sub.munger.input_for(seq).unwrap().0;
        assert!(!dropped.contains(&input));
    }
}

#[test]
fn a_late_packet_keeps_its_pictures_numbers() {
    let input = packets(CAPTURE_H);
    let mut sub = Subscriber::new();
    sub.vp8.temporal.set_target(1);
    // The second packet of the TL1 picture 3640 comes after two later
    // pictures (one dropped, one sent).
    let late = CAPTURE_H.iter().position(|r| r.3 == 3640).unwrap() + 1;
    let resume = CAPTURE_H.iter().position(|r| r.3 == 3643).unwrap();
    let mut order: Vec<usize> = (0..late).collect();
    order.extend(late + 1..resume);
    order.push(late);
    order.extend(resume..input.len());
    let out: Vec<Out> = order
        .iter()
        .filter_map(|&i| sub.send(i, &input[i]))
        .collect();
    let late_out = out.iter().find(|o| o.input == late).unwrap();
    let same_picture = out.iter().find(|o| o.input == late - 1).unwrap();
    assert_eq!(late_out.pid, same_picture.pid);
    assert_eq!(late_out.seq, same_picture.seq + 1, "its own slot");
    let mut in_order = out.clone();
    in_order.sort_by_key(|o| o.input);
    assert_continuous(&in_order);
    assert_decodable(CAPTURE_H, &out);
}

#[test]
fn a_switch_of_encoding_continues_under_the_temporal_target() {
    let h = packets(CAPTURE_H);
    let f = packets(CAPTURE_F);
    let mut sub = Subscriber::new();
    sub.vp8.temporal.set_target(1);
    let out_h = sub.replay(&h, 0..h.len());
    // The switch as `DownTrack::forward` makes it, at f's keyframe.
    sub.munger.switch_source_mapped(None, false);
    sub.vp8.switch_source();
    let out_f = sub.replay(&f, 0..f.len());
    assert_continuous(&[&out_h[..], &out_f[..]].concat());
    assert_decodable(CAPTURE_H, &out_h);
    assert_decodable(CAPTURE_F, &out_f);
    assert!(out_f.iter().all(|o| o.tid <= 1));
    // f's keyframe refreshes everything: its first TL1 frame goes at once.
    let pics = pictures(&out_f);
    assert_eq!(pics[0].1, 0);
    assert_eq!(pics[1].1, 1);
    assert_eq!(pics.len(), 13, "26 pictures recorded, half of them TL2");
    // The TL0PICIDX sequence continues across the switch (by the munger's
    // offset), and within f is f's own, shifted as a whole.
    let shift = out_f[0].tl0.wrapping_sub(CAPTURE_F[0].4);
    assert_eq!(out_f[0].tl0, out_h.last().unwrap().tl0.wrapping_add(1));
    assert!(out_f
        .iter()
        .all(|o| o.tl0 == CAPTURE_F[o.input].4.wrapping_add(shift)));

    // And up again on f: TL2 from its next sync frame.
    let mut sub2 = Subscriber::new();
    sub2.vp8.temporal.set_target(0);
    sub2.replay(&h, 0..h.len());
    sub2.munger.switch_source_mapped(None, false);
    sub2.vp8.switch_source();
    sub2.vp8.temporal.set_target(2);
    let out = sub2.replay(&f, 0..f.len());
    assert_decodable(CAPTURE_F, &out);
    assert_eq!(pictures(&out).len(), 26, "the keyframe syncs every layer");
}

#[test]
fn a_stream_without_temporal_layers_is_untouched() {
    let mut filter = TemporalFilter::default();
    filter.set_target(0);
    let no_tid = Vp8Descriptor {
        picture_id: Some(5),
        ..Default::default()
    };
    assert!(filter.admit(&no_tid));
    assert_eq!(filter.skipped_before(5), 0);
}

include!("temporal_layer_capture.rs");
