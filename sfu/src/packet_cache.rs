//! Recent RTP packets of one published track, for answering subscribers' NACKs.
//!
//! One cache per published track (not per subscriber): every subscriber of the
//! track receives the same packets, so one copy serves them all. Payloads are
//! `Bytes`, so storing a packet is a reference-count increment, not a copy.

use rtc::rtp;

/// Packets older than this many sequence numbers are forgotten. At 1.5 Mbit/s
/// and 1,200-byte packets this is about three seconds of video.
pub const CACHE_SIZE: usize = 512;

pub struct PacketCache {
    slots: Vec<Option<rtp::Packet>>,
}

impl Default for PacketCache {
    fn default() -> Self {
        Self {
            slots: vec![None; CACHE_SIZE],
        }
    }
}

impl PacketCache {
    pub fn insert(&mut self, packet: &rtp::Packet) {
        let slot = packet.header.sequence_number as usize % CACHE_SIZE;
        self.slots[slot] = Some(packet.clone());
    }

    /// The cached packet with exactly this sequence number, if still held.
    pub fn get(&self, sequence_number: u16) -> Option<&rtp::Packet> {
        self.slots[sequence_number as usize % CACHE_SIZE]
            .as_ref()
            .filter(|p| p.header.sequence_number == sequence_number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16) -> rtp::Packet {
        rtp::Packet {
            header: rtp::Header {
                sequence_number: seq,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn returns_exact_sequence_only() {
        let mut cache = PacketCache::default();
        cache.insert(&packet(65535));
        cache.insert(&packet(0));
        assert!(cache.get(65535).is_some());
        assert!(cache.get(0).is_some());
        assert!(cache.get(1).is_none());
        // A newer packet in the same slot evicts the old one.
        cache.insert(&packet(CACHE_SIZE as u16));
        assert!(cache.get(0).is_none());
        assert!(cache.get(CACHE_SIZE as u16).is_some());
    }
}
