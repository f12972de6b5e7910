//! The packets of the latest complete keyframe of a video track, so a new
//! subscriber's first frame does not wait for a keyframe-request round trip.

use crate::video_codec::VideoCodec;
use rtc::rtp;

/// A keyframe of more packets than this is not cached (about 1.2 MB).
const MAX_PACKETS: usize = 1000;

#[derive(Default)]
pub struct KeyframeCache {
    /// How keyframes are recognised (VP8 by default).
    codec: VideoCodec,
    complete: Vec<rtp::Packet>,
    /// The keyframe being assembled, in sequence order, without duplicates.
    building: Vec<rtp::Packet>,
    building_ts: Option<u32>,
    /// Sequence number of the keyframe's last packet (marker), once seen.
    building_end: Option<u16>,
}

impl KeyframeCache {
    /// A cache for a track of `codec`.
    pub fn for_codec(codec: VideoCodec) -> Self {
        KeyframeCache {
            codec,
            ..Default::default()
        }
    }

    /// Looks at every packet of the track, in arrival order (retransmissions
    /// included: they fill the holes loss left in a keyframe).
    ///
    /// A keyframe is served only when every packet from its start to its
    /// marker is here: a subscriber primed with a keyframe that has a hole
    /// cannot decode it nor repair it (the hole has no outgoing sequence
    /// number to NACK), and its jitter buffer stalls behind the hole.
    pub fn observe(&mut self, packet: &rtp::Packet) {
        let seq = packet.header.sequence_number;
        if self.codec.is_keyframe_start(&packet.payload) {
            let same_frame = self.building_ts == Some(packet.header.timestamp);
            let first = self.building.first().map(|p| p.header.sequence_number);
            if same_frame && first == Some(seq) {
                return; // A repeat of the start.
            }
            // H.264 has more than one such packet per keyframe (the SPS,
            // then the IDR slice's start): a later one belongs to the frame
            // begun, an earlier one (reordered) becomes its start.
            // (Bounded: the frame never spans more than MAX_PACKETS.)
            let last = self.building.last().map(|p| p.header.sequence_number);
            let before_first = first.zip(last).is_some_and(|(f, l)| {
                f != seq
                    && (f.wrapping_sub(seq) as usize) < MAX_PACKETS
                    && (l.wrapping_sub(seq) as usize) < MAX_PACKETS
            });
            if same_frame && before_first {
                self.building.insert(0, packet.clone());
                return self.complete_if_whole();
            }
            if same_frame {
                return self.add_to_frame(packet);
            }
            self.building.clear();
            self.building_ts = Some(packet.header.timestamp);
            self.building_end = None;
        } else if self.building_ts != Some(packet.header.timestamp) {
            // Another frame. A keyframe still missing packets stays: its
            // retransmissions may follow.
            return;
        }
        self.add_to_frame(packet);
    }

    /// Adds a packet of the keyframe being built (its start, or one after).
    fn add_to_frame(&mut self, packet: &rtp::Packet) {
        let seq = packet.header.sequence_number;
        let start = self
            .building
            .first()
            .map_or(seq, |p| p.header.sequence_number);
        let offset = seq.wrapping_sub(start);
        if offset as usize >= MAX_PACKETS {
            return; // Before the start (a stray), or a keyframe too large.
        }
        if self
            .building_end
            .is_some_and(|end| offset > end.wrapping_sub(start))
        {
            return; // After the marker: not part of this frame.
        }
        let place = self
            .building
            .binary_search_by_key(&offset, |p| p.header.sequence_number.wrapping_sub(start));
        match place {
            Err(at) => self.building.insert(at, packet.clone()),
            // A duplicate (a retransmission of what is here) changes nothing,
            // not even the end: the copy kept is the one that counts.
            Ok(_) => return,
        }
        if packet.header.marker {
            // The frame ends here: whatever arrived beyond it with the same
            // timestamp was a stray, and "whole" must mean exactly the
            // packets from the start to this marker.
            self.building
                .retain(|p| p.header.sequence_number.wrapping_sub(start) <= offset);
            self.building_end = Some(seq);
        }
        self.complete_if_whole();
    }

    /// Serves the keyframe being built once every packet from its start to
    /// its marker is here.
    fn complete_if_whole(&mut self) {
        let Some(start) = self.building.first().map(|p| p.header.sequence_number) else {
            return;
        };
        let whole = self
            .building_end
            .is_some_and(|end| self.building.len() == end.wrapping_sub(start) as usize + 1);
        if whole {
            self.complete = std::mem::take(&mut self.building);
            self.building_ts = None;
            self.building_end = None;
        }
    }

    /// A keyframe has begun and is not whole yet.
    pub fn assembling(&self) -> bool {
        !self.building.is_empty()
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

    #[test]
    fn a_keyframe_with_a_hole_is_served_only_once_repaired() {
        let mut cache = KeyframeCache::default();
        cache.observe(&packet(10, 900, true, false));
        // 11 is lost on the way; the marker and the next frame arrive.
        cache.observe(&packet(12, 900, false, true));
        cache.observe(&packet(13, 1800, false, true));
        assert!(cache.packets().is_empty(), "a keyframe with a hole");
        // The NACKed 11 arrives (twice): the keyframe is whole, in order.
        cache.observe(&packet(11, 900, false, false));
        cache.observe(&packet(11, 900, false, false));
        let seqs: Vec<u16> = cache
            .packets()
            .iter()
            .map(|p| p.header.sequence_number)
            .collect();
        assert_eq!(seqs, [10, 11, 12]);
    }

    #[test]
    fn packets_beyond_the_marker_never_complete_a_keyframe() {
        // Found by the rtp_forwarding fuzz target: with 11 missing, a stray
        // 13 of the same timestamp made the count look whole (10, 12, 13)
        // and a keyframe without its marker was served.
        let mut cache = KeyframeCache::default();
        cache.observe(&packet(10, 900, true, false));
        cache.observe(&packet(12, 900, false, true));
        cache.observe(&packet(13, 900, false, false));
        assert!(cache.packets().is_empty(), "10, 12, 13 is not a keyframe");
        // A stray before the marker is known is dropped once it is.
        let mut cache = KeyframeCache::default();
        cache.observe(&packet(20, 900, true, false));
        cache.observe(&packet(23, 900, false, false));
        cache.observe(&packet(21, 900, false, true));
        let seqs: Vec<u16> = cache
            .packets()
            .iter()
            .map(|p| p.header.sequence_number)
            .collect();
        assert_eq!(seqs, [20, 21]);
        // A copy of a kept packet with the marker set does not end the frame
        // there (also found by the fuzz target).
        let mut cache = KeyframeCache::default();
        cache.observe(&packet(30, 900, true, false));
        cache.observe(&packet(31, 900, false, false));
        cache.observe(&packet(31, 900, false, true));
        assert!(cache.packets().is_empty(), "31 is kept without a marker");
    }

    #[test]
    fn a_keyframe_across_the_sequence_wrap() {
        let mut cache = KeyframeCache::default();
        cache.observe(&packet(65535, 7, true, false));
        cache.observe(&packet(1, 7, false, true));
        assert!(cache.packets().is_empty());
        cache.observe(&packet(0, 7, false, false));
        assert_eq!(cache.packets().len(), 3);
        assert_eq!(cache.packets()[2].header.sequence_number, 1);
    }
}

#[cfg(test)]
mod h264_tests {
    use super::*;
    use bytes::Bytes;

    fn packet(seq: u16, payload: &'static [u8], marker: bool) -> rtp::Packet {
        rtp::Packet {
            header: rtp::Header {
                sequence_number: seq,
                timestamp: 3000,
                marker,
                ..Default::default()
            },
            payload: Bytes::from_static(payload),
        }
    }

    const SPS_PPS: &[u8] = &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
    const IDR_START: &[u8] = &[0x7c, 0x85, 0x88];
    const IDR_END: &[u8] = &[0x7c, 0x45, 0x11];

    fn seqs(cache: &KeyframeCache) -> Vec<u16> {
        cache
            .packets()
            .iter()
            .map(|p| p.header.sequence_number)
            .collect()
    }

    #[test]
    fn an_h264_keyframe_keeps_its_parameter_sets() {
        // SPS/PPS (STAP-A), then the IDR slice in two fragments: the IDR's
        // start is a keyframe start too, but it continues the frame.
        let mut cache = KeyframeCache::for_codec(VideoCodec::H264);
        cache.observe(&packet(1, SPS_PPS, false));
        cache.observe(&packet(2, IDR_START, false));
        cache.observe(&packet(3, IDR_END, true));
        assert_eq!(seqs(&cache), [1, 2, 3]);
    }

    #[test]
    fn parameter_sets_arriving_after_the_idr_start_still_lead() {
        let mut cache = KeyframeCache::for_codec(VideoCodec::H264);
        cache.observe(&packet(2, IDR_START, false));
        cache.observe(&packet(3, IDR_END, true));
        assert_eq!(seqs(&cache), [2, 3], "an IDR without SPS/PPS in front");
        let mut cache = KeyframeCache::for_codec(VideoCodec::H264);
        cache.observe(&packet(12, IDR_START, false));
        cache.observe(&packet(11, SPS_PPS, false));
        cache.observe(&packet(13, IDR_END, true));
        assert_eq!(seqs(&cache), [11, 12, 13]);
    }
}
