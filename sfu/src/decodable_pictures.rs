//! Which of an encoding's VP8 pictures a libwebrtc receiver hands to its
//! decoder, going by the temporal-layer fields of the payload descriptor
//! (RFC 7741: TID, the layer-sync bit Y, the picture id), with every
//! packet arriving.
//!
//! Why: a publisher's pause is what `source_pauses` reports, and a picture
//! a receiver holds back is as good as one never sent. Chromium's VP8
//! encoder, on a busy machine, skips the layer-sync picture of temporal
//! layer 2 right after a keyframe; the next layer-2 pictures carry no Y
//! bit although nothing of their layer came since the keyframe. Chromium's
//! receiver (`RtpVp8RefFinder`) keeps such a picture waiting for a
//! reference it will never get, and, as it still counts as not received,
//! every later picture above layer 0 that would reference across it waits
//! too, until layer-sync pictures come (measured 2026-12-03: 200-217 ms
//! freezes in `tests/browser/simulcast.test.mjs` under a busy core, every
//! picture forwarded). This mirrors that receiver's rules for a stream
//! without loss; the server forwards such pictures unchanged.
//!
//! Time plays no part: each packet is an input.

use crate::vp8_descriptor::Vp8Descriptor;

/// Held pictures remembered (bounded whatever the publisher sends; a
/// keyframe clears them). libwebrtc stashes at most 100 frames.
const HELD_KEPT: usize = 16;

/// A receiver's view of one encoding's pictures.
#[derive(Debug, Clone, Default)]
pub struct DecodablePictures {
    /// The newest picture id seen, and whether that picture is decodable.
    current: Option<(u16, bool)>,
    /// Per temporal layer, the newest decodable picture since the last
    /// keyframe (libwebrtc's `layer_info`, which a base-layer picture
    /// carries forward).
    newest_on_layer: [Option<u16>; 4],
    /// Pictures held back since the last keyframe, oldest first.
    held: Vec<u16>,
    /// Whether a keyframe has been seen: before it nothing is decodable,
    /// but nothing is held either (the server waits for one anyway).
    keyed: bool,
}

/// Picture ids are 15 bits (7-bit ones are compared in the same space).
fn newer(a: u16, b: u16) -> bool {
    let diff = a.wrapping_sub(b) & 0x7fff;
    diff != 0 && diff < 0x4000
}

impl DecodablePictures {
    /// A packet of the encoding arrived, with its descriptor (`None`: not
    /// VP8, or no descriptor). True when a receiver would decode the
    /// picture it belongs to. Packets without a picture id or temporal
    /// index (no temporal layers) always count as decodable, as do late
    /// packets of older pictures (they decide nothing).
    pub fn on_packet(&mut self, descriptor: Option<&Vp8Descriptor>) -> bool {
        let Some(d) = descriptor else {
            return true;
        };
        let (Some(pid), Some(tid)) = (d.picture_id, d.temporal_id) else {
            return true;
        };
        match self.current {
            Some((current, decodable)) if current == pid => return decodable,
            Some((current, _)) if !newer(pid, current) => return true,
            _ => {}
        }
        let decodable = self.decide(pid, usize::from(tid).min(3), d);
        self.current = Some((pid, decodable));
        decodable
    }

    fn decide(&mut self, pid: u16, tid: usize, d: &Vp8Descriptor) -> bool {
        if d.keyframe_start {
            self.keyed = true;
            self.newest_on_layer = [Some(pid), None, None, None];
            self.held.clear();
            return true;
        }
        if !self.keyed {
            return true;
        }
        // A base-layer picture references the previous one; a layer-sync
        // picture only its base-layer picture.
        let decodable = tid == 0
            || d.layer_sync
            || (0..=tid).all(|layer| {
                self.newest_on_layer[layer].is_some_and(|newest| {
                    !self.held.iter().any(|&h| newer(h, newest) && newer(pid, h))
                })
            });
        if decodable {
            self.newest_on_layer[tid] = Some(pid);
        } else {
            if self.held.len() == HELD_KEPT {
                self.held.remove(0);
            }
            self.held.push(pid);
        }
        decodable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(pid: u16, tid: u8, sync: bool, key: bool) -> Vp8Descriptor {
        Vp8Descriptor {
            picture_id: Some(pid),
            temporal_id: Some(tid),
            layer_sync: sync,
            keyframe_start: key,
            ..Default::default()
        }
    }

    /// Feeds (pid, tid, Y) pictures after a keyframe with pid `key`;
    /// returns the decodable ones.
    fn decodable(key: u16, pictures: &[(u16, u8, bool)]) -> Vec<u16> {
        let mut d = DecodablePictures::default();
        assert!(d.on_packet(Some(&picture(key, 0, true, true))));
        pictures
            .iter()
            .filter(|&&(pid, tid, y)| d.on_packet(Some(&picture(pid, tid, y, false))))
            .map(|&(pid, ..)| pid)
            .collect()
    }

    #[test]
    fn the_regular_three_layer_pattern_is_all_decodable() {
        // 0 2 1 2 0 2 1 2: the first 2 and 1 after the keyframe are syncs.
        let pattern = [
            (1, 2, true),
            (2, 1, true),
            (3, 2, false),
            (4, 0, false),
            (5, 2, false),
            (6, 1, false),
            (7, 2, false),
            (8, 0, false),
        ];
        assert_eq!(decodable(0, &pattern), vec![1, 2, 3, 4, 5, 6, 7, 8]);
    }

    /// Picture ids of a run of `simulcast.test.mjs` (2026-12-03, fr-2):
    /// the layer-2 sync after keyframe 30994 was skipped by the encoder;
    /// the subscriber presented 30995, 30997 and 31001 only.
    #[test]
    fn a_skipped_layer_sync_holds_every_picture_above_the_base_until_the_next_syncs() {
        let after_key = [
            (30995, 1, true),
            (30996, 2, false),
            (30997, 0, false),
            (30998, 2, false),
            (30999, 1, false),
            (31000, 2, false),
            (31001, 0, false),
            (31002, 2, true),
            (31003, 1, true),
            (31004, 2, false),
            (31005, 0, false),
            (31006, 2, false),
        ];
        assert_eq!(
            decodable(30994, &after_key),
            vec![30995, 30997, 31001, 31002, 31003, 31004, 31005, 31006]
        );
    }

    #[test]
    fn packets_of_one_picture_share_its_fate_and_late_ones_decide_nothing() {
        let mut d = DecodablePictures::default();
        assert!(d.on_packet(Some(&picture(10, 0, true, true))));
        assert!(!d.on_packet(Some(&picture(11, 2, false, false))));
        assert!(!d.on_packet(Some(&picture(11, 2, false, false))));
        assert!(d.on_packet(Some(&picture(12, 0, false, false))));
        // A retransmission of picture 11 arriving late.
        assert!(d.on_packet(Some(&picture(11, 2, false, false))));
        assert!(!d.on_packet(Some(&picture(13, 2, false, false))));
    }

    #[test]
    fn streams_without_temporal_layers_and_other_codecs_are_decodable() {
        let mut d = DecodablePictures::default();
        assert!(d.on_packet(None));
        let no_tid = Vp8Descriptor {
            picture_id: Some(5),
            ..Default::default()
        };
        assert!(d.on_packet(Some(&no_tid)));
    }

    #[test]
    fn held_pictures_stay_bounded_and_a_keyframe_clears_them() {
        let mut d = DecodablePictures::default();
        assert!(d.on_packet(Some(&picture(0, 0, true, true))));
        for pid in 1..1000u16 {
            d.on_packet(Some(&picture(pid, 2, false, false)));
        }
        assert_eq!(d.held.len(), HELD_KEPT);
        assert!(d.on_packet(Some(&picture(1000, 0, true, true))));
        assert!(d.held.is_empty());
        assert!(d.on_packet(Some(&picture(1001, 2, true, false))));
        assert!(d.on_packet(Some(&picture(1002, 1, true, false))));
        assert!(d.on_packet(Some(&picture(1003, 2, false, false))));
    }

    #[test]
    fn picture_ids_wrap() {
        let after_key = [(0, 2, true), (1, 1, true), (2, 2, false), (3, 0, false)];
        assert_eq!(decodable(0x7fff, &after_key), vec![0, 1, 2, 3]);
    }
}
