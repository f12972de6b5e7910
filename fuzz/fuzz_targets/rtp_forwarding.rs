//! The per-packet forwarding pieces on parsed RTP, fed a stream of packets
//! and decisions in any order: `KeyframeCache::observe` (with
//! `is_keyframe_start` on each payload) and `RtpMunger::map` /
//! `drop_packet` / `switch_source`. Besides "no panic", it checks the
//! invariants subscribers rely on.
//!
//! Input: records of `[op, len, len bytes of RTP]`. `op & 3`: 0 = forward
//! (observe + map), 1 = the server drops it (observe + drop_packet),
//! 2 = source switch, 3 = forward with the clock `op >> 2` * 10 ms later.
#![no_main]
use libfuzzer_sys::fuzz_target;
use noom_sfu::{KeyframeCache, RtpMunger};
use rtc::rtp;
use rtc::shared::marshal::Unmarshal;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let mut cache = KeyframeCache::default();
    let mut munger = RtpMunger::new(90_000);
    let mut now = Instant::now();
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let len = (*len as usize).min(tail.len());
        let (raw, next) = tail.split_at(len);
        rest = next;
        if op & 3 == 2 {
            munger.switch_source();
            continue;
        }
        if op & 3 == 3 {
            now += Duration::from_millis(10 * u64::from(op >> 2));
        }
        let Ok(packet) = rtp::Packet::unmarshal(&mut &raw[..]) else {
            continue;
        };
        let _ = noom_sfu::is_keyframe_start(&packet.payload);
        cache.observe(&packet);
        let kf = cache.packets();
        if let Some(first) = kf.first() {
            // A cached keyframe: starts with a keyframe packet, ends with the
            // marker, one frame (timestamp), bounded.
            assert!(noom_sfu::is_keyframe_start(&first.payload));
            assert!(kf.last().is_some_and(|p| p.header.marker));
            assert!(kf
                .iter()
                .all(|p| p.header.timestamp == first.header.timestamp));
            assert!(kf.len() <= 1000);
        }
        let (seq, ts) = (packet.header.sequence_number, packet.header.timestamp);
        if op & 3 == 1 {
            munger.drop_packet(seq, ts, now);
        } else if let Some((out_seq, out_ts)) = munger.map(seq, ts, now) {
            // What NACK repair relies on: the number sent maps back to the
            // packet that was sent under it, with its timestamp offset.
            let (input, offset) = munger
                .input_for(out_seq)
                .expect("a number just sent is in the history");
            assert_eq!(input, seq);
            assert_eq!(ts.wrapping_add(offset), out_ts);
        }
    }
});
