//! One subscriber's continuous sequence-number and timestamp space
//! (mediasoup's `SeqManager` plus the timestamp half, LiveKit's `rtpmunger`).
//!
//! A subscriber must see one RTP stream without gaps or jumps even when the
//! server drops packets for it (deltas before its first keyframe), replays a
//! cached keyframe, or switches the source behind its track (a publisher that
//! reconnected with new SSRCs). Incoming numbers are mapped by an offset that
//! changes only at those events; 16-bit sequence numbers and 32-bit
//! timestamps wrap as RTP does.

use std::collections::VecDeque;
use std::time::Instant;

/// How many recent outgoing sequence numbers remember their input number,
/// for mapping a subscriber's NACK back to the packet cache.
const HISTORY: usize = 1024;
/// Dropped input numbers remembered, for late packets around a drop.
const MAX_DROPPED: usize = 256;

/// True when `a` is newer than `b` in RTP's wrapping sequence space.
pub fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

pub struct RtpMunger {
    clock_rate: u32,
    started: bool,
    /// The next packet starts a new source epoch: continue after the last
    /// output instead of mapping by the old offset.
    resync: bool,
    seq_offset: u16,
    ts_offset: u32,
    /// Highest input sequence number of the current epoch.
    highest_in: u16,
    /// First input sequence number of the current epoch; older ones are
    /// from before a switch and are not forwarded.
    epoch_start: u16,
    highest_out: u16,
    last_out_ts: u32,
    last_out_at: Option<Instant>,
    /// Input numbers dropped (temporal layers drop most of a stream's
    /// packets: a queue, so forgetting the oldest costs nothing).
    dropped: VecDeque<u16>,
    /// Input numbers after which a padding packet took an outgoing number
    /// (see `pad`): late packets from before it keep their old mapping.
    padded: Vec<u16>,
    /// (outgoing seq, incoming seq, timestamp offset then), by outgoing seq.
    history: Vec<Option<(u16, u16, u32)>>,
    /// For the next epoch: the first packet's timestamp in the previous
    /// source's RTP time (from both sources' sender reports), and whether
    /// to leave one sequence number out (the last frame sent was cut off).
    pending_ts: Option<u32>,
    pending_skip: bool,
}

impl RtpMunger {
    pub fn new(clock_rate: u32) -> Self {
        RtpMunger {
            clock_rate,
            started: false,
            resync: false,
            seq_offset: 0,
            ts_offset: 0,
            highest_in: 0,
            epoch_start: 0,
            highest_out: 0,
            last_out_ts: 0,
            last_out_at: None,
            dropped: VecDeque::with_capacity(MAX_DROPPED),
            padded: Vec::new(),
            history: vec![None; HISTORY],
            pending_ts: None,
            pending_skip: false,
        }
    }

    /// A switch to another encoding of the same picture (simulcast): the
    /// first packet's timestamp, expressed in the previous source's RTP time
    /// (`mapped_ts`, from sender reports), continues the timeline exactly;
    /// without it the wall time since the last packet is used. `incomplete`
    /// says the last frame sent lacks its end: one sequence number is left
    /// out, so the subscriber sees a loss and drops that frame instead of
    /// waiting for its end forever.
    pub fn switch_source_mapped(&mut self, mapped_ts: Option<u32>, incomplete: bool) {
        self.switch_source();
        self.pending_ts = mapped_ts;
        self.pending_skip = incomplete;
    }

    /// The next packet comes from a new source (or a replay): its numbers
    /// continue right after the last packet sent.
    pub fn switch_source(&mut self) {
        if self.started {
            self.resync = true;
        }
    }

    fn start_epoch(&mut self, seq: u16, ts: u32, now: Instant) {
        let (mapped, skip) = (
            self.pending_ts.take(),
            std::mem::take(&mut self.pending_skip),
        );
        if self.started {
            let next_seq = self.highest_out.wrapping_add(1 + u16::from(skip));
            self.seq_offset = next_seq.wrapping_sub(seq);
            // Advance the timestamp by the wall time since the last packet
            // (at least one tick), so playout timing stays plausible.
            let elapsed = self
                .last_out_at
                .map(|t| now.saturating_duration_since(t).as_secs_f64())
                .unwrap_or(0.0);
            let advance = ((elapsed * self.clock_rate as f64) as u32).max(1);
            let mut out_ts = self.last_out_ts.wrapping_add(advance);
            if let Some(mapped) = mapped.map(|m| m.wrapping_add(self.ts_offset)) {
                // The sender reports' mapping, unless it would go back in
                // time or jump ahead by more than a second.
                let ahead = mapped.wrapping_sub(self.last_out_ts);
                if ahead > 0 && ahead <= self.clock_rate {
                    out_ts = mapped;
                }
            }
            self.ts_offset = out_ts.wrapping_sub(ts);
        }
        self.started = true;
        self.resync = false;
        self.highest_in = seq;
        self.epoch_start = seq;
        self.dropped.clear();
        self.padded.clear();
    }

    /// Takes the next outgoing sequence number for a packet of the server's
    /// own (a padding-only bandwidth probe), with the latest timestamp sent:
    /// later packets move up by one. `None` before the first packet.
    ///
    /// Also between two epochs (a paused video, or one waiting for the
    /// keyframe of another encoding): a paused video is the one that most
    /// needs a probe to come back, and padding is all its subscriber then
    /// gets on that stream. The next epoch simply starts after the padding;
    /// a sequence number left out for a cut-off frame is left out first, so
    /// the padding does not close that gap.
    pub fn pad(&mut self) -> Option<(u16, u32)> {
        if !self.started {
            return None;
        }
        let skip = std::mem::take(&mut self.pending_skip);
        let out_seq = self.highest_out.wrapping_add(1 + u16::from(skip));
        self.highest_out = out_seq;
        if !self.resync {
            self.seq_offset = self.seq_offset.wrapping_add(1);
            if self.padded.len() == MAX_DROPPED {
                self.padded.remove(0);
            }
            self.padded.push(self.highest_in);
        }
        // Not a forwarded packet: a NACK for it finds nothing to resend.
        self.history[out_seq as usize % HISTORY] = None;
        Some((out_seq, self.last_out_ts))
    }

    /// The server decided not to forward packet `seq`: later packets move
    /// down so the subscriber sees no gap.
    pub fn drop_packet(&mut self, seq: u16, ts: u32, now: Instant) {
        if !self.started || self.resync {
            // Nothing sent in this epoch yet: the epoch starts with the
            // first packet actually forwarded.
            return;
        }
        let _ = (ts, now);
        if seq_newer(seq, self.highest_in) {
            // Packets between the highest and this one are still expected
            // (and may arrive late); only this number is skipped.
            self.highest_in = seq;
            self.seq_offset = self.seq_offset.wrapping_sub(1);
            if self.dropped.len() == MAX_DROPPED {
                self.dropped.pop_front();
            }
            self.dropped.push_back(seq);
        }
    }

    /// Maps an incoming packet to the outgoing (sequence number, timestamp),
    /// or `None` when it must not be forwarded (from before a switch, or a
    /// duplicate of a dropped number).
    pub fn map(&mut self, seq: u16, ts: u32, now: Instant) -> Option<(u16, u32)> {
        if !self.started || self.resync {
            self.start_epoch(seq, ts, now);
        }
        let padded_after_it = |seq: u16| {
            self.padded
                .iter()
                .filter(|&&p| p == seq || seq_newer(p, seq))
                .count() as u16
        };
        let out_seq = if seq_newer(seq, self.highest_in)
            || (seq == self.highest_in && self.padded.last() != Some(&seq))
        {
            self.highest_in = seq;
            seq.wrapping_add(self.seq_offset)
        } else {
            // A late (reordered or retransmitted) packet of this epoch.
            if seq_newer(self.epoch_start, seq) || self.dropped.contains(&seq) {
                return None;
            }
            let later_drops = self.dropped.iter().filter(|&&d| seq_newer(d, seq)).count() as u16;
            seq.wrapping_add(self.seq_offset)
                .wrapping_add(later_drops)
                .wrapping_sub(padded_after_it(seq))
        };
        let out_ts = ts.wrapping_add(self.ts_offset);
        if seq_newer(out_seq, self.highest_out) || self.last_out_at.is_none() {
            self.highest_out = out_seq;
            self.last_out_ts = out_ts;
            self.last_out_at = Some(now);
        }
        self.history[out_seq as usize % HISTORY] = Some((out_seq, seq, self.ts_offset));
        Some((out_seq, out_ts))
    }

    /// The input sequence number that was sent as `out_seq`, if recent, and
    /// the timestamp offset it was sent with.
    pub fn input_for(&self, out_seq: u16) -> Option<(u16, u32)> {
        match self.history[out_seq as usize % HISTORY] {
            Some((out, input, ts_offset)) if out == out_seq => Some((input, ts_offset)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn seqs(m: &mut RtpMunger, input: &[u16], now: Instant) -> Vec<Option<u16>> {
        input
            .iter()
            .map(|&s| m.map(s, 1000, now).map(|(o, _)| o))
            .collect()
    }

    #[test]
    fn passes_through_a_plain_stream_across_wraparound() {
        let now = Instant::now();
        let mut m = RtpMunger::new(90000);
        let out = seqs(&mut m, &[65534, 65535, 0, 1], now);
        assert_eq!(out, vec![Some(65534), Some(65535), Some(0), Some(1)]);
        assert_eq!(m.input_for(0), Some((0, 0)));
    }

    #[test]
    fn reordered_and_duplicate_packets_keep_their_numbers() {
        let now = Instant::now();
        let mut m = RtpMunger::new(90000);
        let out = seqs(&mut m, &[10, 12, 11, 12, 13], now);
        assert_eq!(out, vec![Some(10), Some(12), Some(11), Some(12), Some(13)]);
    }

    #[test]
    fn drops_leave_no_gap_and_late_packets_map_consistently() {
        let now = Instant::now();
        let mut m = RtpMunger::new(90000);
        assert_eq!(m.map(100, 0, now).map(|x| x.0), Some(100));
        assert_eq!(m.map(102, 0, now).map(|x| x.0), Some(102)); // 101 is late
        m.drop_packet(103, 0, now);
        m.drop_packet(104, 0, now);
        assert_eq!(m.map(105, 0, now).map(|x| x.0), Some(103));
        // The late 101 keeps the number it would have had.
        assert_eq!(m.map(101, 0, now).map(|x| x.0), Some(101));
        // A dropped number arriving again (retransmission) is not forwarded.
        assert_eq!(m.map(104, 0, now), None);
        assert_eq!(m.input_for(103), Some((105, 0)));
    }

    #[test]
    fn source_switch_continues_numbers_and_time() {
        let t0 = Instant::now();
        let mut m = RtpMunger::new(90000);
        assert_eq!(
            m.map(65535, 4_294_967_000, t0),
            Some((65535, 4_294_967_000))
        );
        m.switch_source();
        let t1 = t0 + Duration::from_millis(100);
        // New source: unrelated numbers, continues at 0 and +9000 ticks (wrapping).
        let (seq, ts) = m.map(31_000, 77, t1).unwrap();
        assert_eq!(seq, 0);
        assert_eq!(ts, 4_294_967_000u32.wrapping_add(9000));
        assert_eq!(
            m.map(31_001, 77 + 3000, t1).unwrap(),
            (1, ts.wrapping_add(3000))
        );
        // A straggler from the new source's past is refused, the old
        // source's packets too (they are older than the epoch start).
        assert_eq!(m.map(30_999, 0, t1), None);
    }

    #[test]
    fn switch_in_the_middle_of_a_frame_then_drop_until_keyframe() {
        let t0 = Instant::now();
        let mut m = RtpMunger::new(90000);
        for s in 500..503 {
            m.map(s, 3000, t0);
        }
        m.switch_source();
        // Deltas of the new source before its keyframe are dropped: they do
        // not start the epoch, so the keyframe follows 502 directly.
        m.drop_packet(9000, 1, t0);
        m.drop_packet(9001, 1, t0);
        assert_eq!(m.map(9002, 2, t0).map(|x| x.0), Some(503));
        assert_eq!(m.map(9003, 2, t0).map(|x| x.0), Some(504));
    }

    #[test]
    fn layer_switch_maps_time_by_sender_reports_and_skips_after_a_cut_frame() {
        let t0 = Instant::now();
        let mut m = RtpMunger::new(90000);
        assert_eq!(m.map(10, 1000, t0), Some((10, 1000)));
        // The frame at 1000 was cut off (no marker sent); the new encoding's
        // keyframe at 50_000 is 4000 ticks after it in the old encoding's time.
        m.switch_source_mapped(Some(5000), true);
        let (seq, ts) = m.map(700, 50_000, t0 + Duration::from_millis(10)).unwrap();
        assert_eq!(
            (seq, ts),
            (12, 5000),
            "one number left out; time from the reports"
        );
        assert_eq!(
            m.map(701, 53_000, t0 + Duration::from_millis(10)).unwrap(),
            (13, 8000)
        );
        // A mapping that would go back in time is not used: wall time is.
        m.switch_source_mapped(Some(7000), false);
        let (seq, ts) = m.map(90, 1, t0 + Duration::from_millis(110)).unwrap();
        assert_eq!(seq, 14);
        assert_eq!(ts, 8000 + 9000);
    }

    #[test]
    fn padding_takes_a_number_and_late_packets_keep_theirs() {
        let t0 = Instant::now();
        let mut m = RtpMunger::new(90000);
        assert_eq!(m.pad(), None, "nothing to continue yet");
        assert_eq!(m.map(100, 3000, t0), Some((100, 3000)));
        assert_eq!(m.map(102, 6000, t0), Some((102, 6000)));
        assert_eq!(m.pad(), Some((103, 6000)));
        assert_eq!(m.pad(), Some((104, 6000)));
        assert_eq!(m.input_for(103), None, "a NACK for padding resends nothing");
        assert_eq!(m.map(103, 9000, t0), Some((105, 9000)));
        // Late: 101 (before the padding) and a repeat of 102 keep theirs.
        assert_eq!(m.map(101, 3000, t0), Some((101, 3000)));
        assert_eq!(m.map(102, 6000, t0), Some((102, 6000)));
        assert_eq!(m.map(104, 9000, t0), Some((106, 9000)));
        assert_eq!(m.input_for(106), Some((104, 0)));
    }

    #[test]
    fn padding_while_paused_keeps_the_gap_of_a_cut_frame_and_the_next_epoch_follows_it() {
        let t0 = Instant::now();
        let mut m = RtpMunger::new(90000);
        assert_eq!(m.map(100, 3000, t0), Some((100, 3000)));
        assert_eq!(m.map(101, 3000, t0), Some((101, 3000)));
        // Paused in the middle of a frame: 102 stays unused, so the
        // subscriber sees the frame as lost rather than completed.
        m.switch_source_mapped(None, true);
        assert_eq!(m.pad(), Some((103, 3000)));
        assert_eq!(m.pad(), Some((104, 3000)));
        assert_eq!(m.input_for(104), None);
        // The resume (a keyframe, any input number) continues after the
        // padding, with no second gap.
        let (seq, _) = m.map(500, 30_000, t0 + Duration::from_millis(40)).unwrap();
        assert_eq!(seq, 105);
        assert_eq!(m.map(501, 30_000, t0).map(|(s, _)| s), Some(106));
        assert_eq!(m.input_for(106).map(|(input, _)| input), Some(501));
    }

    #[test]
    fn seq_newer_handles_wrap() {
        assert!(seq_newer(0, 65535));
        assert!(!seq_newer(65535, 0));
        assert!(seq_newer(100, 50));
        assert!(!seq_newer(5, 5));
    }
}
