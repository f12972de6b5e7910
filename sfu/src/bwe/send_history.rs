//! What was sent toward one subscriber, by transport-wide sequence number,
//! so its congestion feedback (which names sequence numbers and arrival
//! times only) can be matched with send times and sizes.
//!
//! Bounded by count: a subscriber that never answers cannot grow it. The
//! oldest entries go first; feedback arrives within a few hundred
//! milliseconds, far inside the window.

use std::collections::VecDeque;
use std::time::Instant;

/// Packets remembered per connection: about 1.6 s at 2,500 packets/s (two
/// dozen forwarded videos), many feedback intervals (browsers send one
/// every 50-100 ms). 40 bytes each: 160 KiB per busy subscriber.
pub const HISTORY_CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentPacket {
    /// Unwrapped transport-wide sequence number (the wire carries its low
    /// 16 bits).
    pub seq: u64,
    pub sent_at: Instant,
    /// Bytes on the wire (the protected datagram).
    pub size: u32,
    /// Feedback already reported it (received or lost): a repeat in a later
    /// feedback is not counted twice.
    pub reported: bool,
}

#[derive(Debug, Default)]
pub struct SendHistory {
    packets: VecDeque<SentPacket>,
}

impl SendHistory {
    /// Records a sent packet; `seq` must follow the previous one.
    pub fn record(&mut self, seq: u64, size: u32, now: Instant) {
        if self.packets.back().is_some_and(|p| p.seq + 1 != seq) {
            // Not contiguous (cannot happen with one sequencer): start over
            // rather than index wrongly.
            self.packets.clear();
        }
        if self.packets.len() == HISTORY_CAPACITY {
            self.packets.pop_front();
        }
        self.packets.push_back(SentPacket {
            seq,
            sent_at: now,
            size,
            reported: false,
        });
    }

    /// The unwrapped sequence number whose low 16 bits are `wire`, taken as
    /// the one closest to the newest packet sent.
    pub fn unwrap(&self, wire: u16) -> Option<u64> {
        let newest = self.packets.back()?.seq;
        let back = (newest as u16).wrapping_sub(wire) as u64;
        if back < 1 << 15 {
            newest.checked_sub(back)
        } else {
            Some(newest + ((1u64 << 16) - back))
        }
    }

    pub fn get_mut(&mut self, seq: u64) -> Option<&mut SentPacket> {
        let first = self.packets.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.packets.get_mut(index)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.packets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn finds_packets_by_wire_sequence_number_across_the_wrap() {
        let t0 = Instant::now();
        let mut history = SendHistory::default();
        for seq in 65_530..65_545u64 {
            history.record(seq, 1000, t0 + Duration::from_millis(seq - 65_530));
        }
        let wrapped = history.unwrap(3).unwrap();
        assert_eq!(wrapped, 65_539);
        assert_eq!(history.get_mut(wrapped).unwrap().seq, 65_539);
        assert_eq!(history.unwrap(65_531), Some(65_531));
        // Ahead of anything sent: not found.
        assert!(history.get_mut(history.unwrap(20).unwrap()).is_none());
    }

    #[test]
    fn stays_bounded() {
        let t0 = Instant::now();
        let mut history = SendHistory::default();
        for seq in 0..(HISTORY_CAPACITY as u64 * 3) {
            history.record(seq, 100, t0);
        }
        assert_eq!(history.len(), HISTORY_CAPACITY);
        assert!(history.get_mut(0).is_none());
        assert!(history.get_mut(HISTORY_CAPACITY as u64 * 3 - 1).is_some());
    }
}
