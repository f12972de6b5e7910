//! Which simulcast encoding one subscriber gets of one video (the decision
//! half of mediasoup's `SimulcastConsumer` and LiveKit's forwarder; the
//! switching itself is in `DownTrack`).
//!
//! Three things limit the choice: the size the subscriber shows the video
//! at (`layout`: the smallest encoding at least about 0.9 times the tile's
//! height, since a slightly small picture scaled up looks better than a
//! twice-too-large one costs), a cap the bandwidth allocator sets, and
//! pausing (a hidden tile, or no bandwidth): no video at all. Only
//! encodings that are flowing count: a publisher short of bandwidth stops
//! its top encodings, and a subscriber waiting for one would freeze.

/// A requested height is met by an encoding at least this share of it.
const HEIGHT_TOLERANCE: f64 = 0.9;

/// What the selector knows of one encoding of the publisher's video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerInfo {
    /// Height of its latest keyframe; `None` until one was seen.
    pub height: Option<u16>,
    /// Its rank among the rids the server asked for (q < h < f), to order
    /// encodings whose size is not known yet.
    pub rid_rank: usize,
    /// Packets arrived recently.
    pub live: bool,
}

impl LayerInfo {
    /// Orders encodings lowest first: by picture height, then rid.
    pub fn quality(&self) -> (u16, usize) {
        (self.height.unwrap_or(0), self.rid_rank)
    }
}

/// One subscriber's limits on one video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerSelector {
    /// Height at which the subscriber shows the video (device pixels).
    pub wanted_height: Option<u32>,
    /// Not shown (`layout` width 0): no video packets at all.
    pub hidden: bool,
    /// No bandwidth for it (the allocator): no video packets at all.
    pub paused: bool,
    /// Highest encoding allowed (0 = lowest), for the bandwidth allocator.
    pub max_layer: Option<usize>,
    /// The link is failing to deliver what it is sent (loss, a filling
    /// queue): an encoding above the cap stops at once. Otherwise it stays
    /// until the lower encoding's keyframe, as a tile shrink does, so a
    /// downgrade on a mere estimate dip is seamless.
    pub cap_urgent: bool,
}

impl LayerSelector {
    /// The encoding to forward (an index into `layers`), or `None` for none.
    /// Runs per packet and subscriber: no allocation, a handful of layers.
    pub fn target(&self, layers: &[LayerInfo]) -> Option<usize> {
        if self.hidden || self.paused {
            return None;
        }
        // Rank of a live encoding among the live ones, lowest quality 0.
        let rank = |i: usize| {
            layers
                .iter()
                .filter(|l| l.live && l.quality() < layers[i].quality())
                .count()
        };
        let allowed = |i: usize| layers[i].live && self.max_layer.is_none_or(|max| rank(i) <= max);
        let by_quality = |a: &usize, b: &usize| layers[*a].quality().cmp(&layers[*b].quality());
        let best = (0..layers.len())
            .filter(|&i| allowed(i))
            .max_by(by_quality)?;
        let Some(wanted) = self.wanted_height else {
            return Some(best);
        };
        let enough = (wanted as f64 * HEIGHT_TOLERANCE).ceil() as u32;
        (0..layers.len())
            .filter(|&i| allowed(i))
            .filter(|&i| layers[i].height.is_some_and(|h| u32::from(h) >= enough))
            .min_by(by_quality)
            .or(Some(best))
    }
}

impl LayerSelector {
    /// The allocator's cap excludes encoding `current` (an index into
    /// `layers`) on a failing link (`cap_urgent`): the link cannot carry
    /// it, so it must stop at once rather than at the next keyframe of the
    /// lower encoding, or the packets it keeps sending meanwhile bury that
    /// keyframe in the queue they build.
    pub fn cap_excludes(&self, layers: &[LayerInfo], current: usize) -> bool {
        let Some(max) = self.max_layer.filter(|_| self.cap_urgent) else {
            return false;
        };
        let rank = layers
            .iter()
            .filter(|l| l.live && l.quality() < layers[current].quality())
            .count();
        rank > max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(heights: [Option<u16>; 3], live: [bool; 3]) -> Vec<LayerInfo> {
        (0..3)
            .map(|i| LayerInfo {
                height: heights[i],
                rid_rank: i,
                live: live[i],
            })
            .collect()
    }

    const SIZES: [Option<u16>; 3] = [Some(180), Some(360), Some(720)];

    #[test]
    fn the_top_encoding_by_default() {
        let s = LayerSelector::default();
        assert_eq!(s.target(&layers(SIZES, [true; 3])), Some(2));
        // Size unknown yet: the rid order decides.
        assert_eq!(s.target(&layers([None; 3], [true; 3])), Some(2));
        // A single encoding (no simulcast).
        assert_eq!(s.target(&layers([None; 3], [true, false, false])), Some(0));
    }

    #[test]
    fn the_smallest_encoding_that_fills_the_tile() {
        let mut s = LayerSelector {
            wanted_height: Some(180),
            ..Default::default()
        };
        let all = layers(SIZES, [true; 3]);
        assert_eq!(s.target(&all), Some(0));
        s.wanted_height = Some(200); // 0.9 * 200 = 180: the 180p encoding is enough.
        assert_eq!(s.target(&all), Some(0));
        s.wanted_height = Some(201);
        assert_eq!(s.target(&all), Some(1));
        s.wanted_height = Some(1080); // Larger than any: the best there is.
        assert_eq!(s.target(&all), Some(2));
        // Encodings listed in another order (a client's own offer) are
        // ordered by their size.
        let shuffled = vec![all[2], all[0], all[1]];
        s.wanted_height = Some(360);
        assert_eq!(s.target(&shuffled), Some(2));
    }

    #[test]
    fn only_flowing_encodings_count() {
        let s = LayerSelector::default();
        // The publisher stopped its top encoding (short of bandwidth).
        assert_eq!(s.target(&layers(SIZES, [true, true, false])), Some(1));
        let small = LayerSelector {
            wanted_height: Some(360),
            ..Default::default()
        };
        assert_eq!(small.target(&layers(SIZES, [true, false, true])), Some(2));
        assert_eq!(s.target(&layers(SIZES, [false; 3])), None);
    }

    #[test]
    fn pause_and_the_allocators_cap() {
        let all = layers(SIZES, [true; 3]);
        let paused = LayerSelector {
            paused: true,
            ..Default::default()
        };
        assert_eq!(paused.target(&all), None);
        let hidden = LayerSelector {
            hidden: true,
            ..Default::default()
        };
        assert_eq!(hidden.target(&all), None);
        let mut capped = LayerSelector {
            max_layer: Some(1),
            ..Default::default()
        };
        assert_eq!(capped.target(&all), Some(1));
        // On a link that still delivers, the top encoding stays until the
        // lower one's keyframe; on a failing one it stops at once.
        assert!(!capped.cap_excludes(&all, 2));
        capped.cap_urgent = true;
        let capped_small = LayerSelector {
            max_layer: Some(0),
            wanted_height: Some(720),
            ..Default::default()
        };
        assert_eq!(capped_small.target(&all), Some(0));
        assert!(capped.cap_excludes(&all, 2));
        assert!(!capped.cap_excludes(&all, 1));
        assert!(!LayerSelector::default().cap_excludes(&all, 2));
    }
}
