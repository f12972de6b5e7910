//! The packets of the latest complete keyframe of a video track, so a new
//! subscriber's first frame does not wait for a keyframe-request round trip.

use crate::vp8;
use rtc::rtp;

/// A keyframe of more packets than this is not cached (about 1.2 MB).
const MAX_PACKETS: usize = 1000;

#[derive(Default)]
pub struct KeyframeCache {
    complete: Vec<rtp::Packet>,
    building: Vec<rtp::Packet>,
    building_ts: Option<u32>,
}

impl KeyframeCache {
    /// Looks at every packet of the track, in arrival order.
    pub fn observe(&mut self, packet: &rtp::Packet) {
        if vp8::is_keyframe_start(&packet.payload) {
            self.building.clear();
            self.building_ts = Some(packet.header.timestamp);
        } else if self.building_ts != Some(packet.header.timestamp) {
            self.building_ts = None;
            self.building.clear();
            return;
        }
        if self.building.len() >= MAX_PACKETS {
            self.building_ts = None;
            self.building.clear();
            return;
        }
        self.building.push(packet.clone());
        if packet.header.marker {
            self.complete = std::mem::take(&mut self.building);
            self.building_ts = None;
        }
    }

    /// The latest complete keyframe, in sequence order.
    pub fn packets(&self) -> &[rtp::Packet] {
        &self.complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet(seq: u16, ts: u32, key_start: bool, marker: bool) -> rtp::Packet {
        let payload: &'static [u8] = if key_start {
            &[0x10, 0x00]
        } else {
            &[0x00, 0x01]
        };
        rtp::Packet {
            header: rtp::Header {
                sequence_number: seq,
                timestamp: ts,
                marker,
                ..Default::default()
            },
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn keeps_the_latest_complete_keyframe() {
        let mut cache = KeyframeCache::default();
        cache.observe(&packet(1, 100, true, false));
        assert!(
            cache.packets().is_empty(),
            "incomplete keyframes are not served"
        );
        cache.observe(&packet(2, 100, false, false));
        cache.observe(&packet(3, 100, false, true));
        assert_eq!(cache.packets().len(), 3);
        // Deltas do not disturb it.
        cache.observe(&packet(4, 200, false, true));
        assert_eq!(cache.packets().len(), 3);
        // A keyframe interrupted by another frame is abandoned.
        cache.observe(&packet(5, 300, true, false));
        cache.observe(&packet(6, 400, false, true));
        assert_eq!(cache.packets()[0].header.sequence_number, 1);
        // A newer complete keyframe replaces the old one.
        cache.observe(&packet(7, 500, true, true));
        assert_eq!(cache.packets().len(), 1);
        assert_eq!(cache.packets()[0].header.sequence_number, 7);
    }
}
