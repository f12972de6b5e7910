//! Which simulcast encodings of one published video anybody watches, so the
//! publisher can stop encoding and sending the others (issue #16, point 4).
//!
//! A camera published as 180p, 360p and 720p costs its sender all three
//! even when every subscriber shows it in a thumbnail. The server knows
//! each subscriber's tile (`layout`), so it tells the publisher which
//! encodings are wanted; the browser then sets `active: false` on the rest.
//!
//! The rules, and why:
//! - The lowest encoding is always wanted: when a subscriber's bandwidth
//!   drops, the allocator falls back to it at once, without waiting for
//!   the publisher to start an encoder.
//! - A higher encoding is wanted while some subscriber's tile needs it or
//!   a larger one (the encoding it would get with unlimited bandwidth:
//!   `LayerSelector` without cap or pause; no `layout` = the best). The
//!   encodings below a tile's need stay wanted too: they are what the
//!   bandwidth allocator falls back to for that subscriber.
//! - A hidden tile (`layout` width 0) wants nothing.
//! - An encoding whose picture size is still unknown (no keyframe seen,
//!   e.g. Chromium has not started it yet, or an H.264 track) is wanted:
//!   nobody can tell it is too large.
//! - Wanted again: on at once. Unwanted: off only after `OFF_AFTER`, so a
//!   tile resized back and forth does not restart encoders each time.
//!
//! Sans-IO: time is a parameter; the router feeds it and delivers what
//! changed (`MediaEvent::EncodingsWanted`).

use crate::layer_selector::{LayerInfo, LayerSelector};
use std::time::{Duration, Instant};

/// How long an encoding must have been unwanted before it is turned off:
/// longer than a resize takes (a window drag, a grid relayout), short
/// enough that a thumbnail saves its publisher's upload within seconds.
pub const OFF_AFTER: Duration = Duration::from_secs(3);

/// Which of `layers` (one per encoding, as `Layer::info` describes them)
/// the subscribers' tiles need; `tiles` are their `LayerSelector`s (only
/// the tile size and `hidden` count: caps and pauses are bandwidth, which
/// comes and goes).
pub fn wanted_encodings(
    layers: &[LayerInfo],
    tiles: impl IntoIterator<Item = LayerSelector>,
) -> Vec<bool> {
    // Only encodings of known size take part in the choice; the selector
    // skips encodings that are not "live", so that flag marks them.
    let sized: Vec<LayerInfo> = layers
        .iter()
        .map(|l| LayerInfo {
            live: l.height.is_some(),
            ..*l
        })
        .collect();
    let mut wanted: Vec<bool> = layers.iter().map(|l| l.height.is_none()).collect();
    if let Some(lowest) = (0..sized.len())
        .filter(|&i| sized[i].live)
        .min_by_key(|&i| sized[i].quality())
    {
        wanted[lowest] = true;
    }
    for tile in tiles {
        let unlimited = LayerSelector {
            max_layer: None,
            paused: false,
            ..tile
        };
        let Some(need) = unlimited.target(&sized) else {
            continue; // Hidden, or no size known yet.
        };
        for (i, layer) in sized.iter().enumerate() {
            if layer.live && layer.quality() <= sized[need].quality() {
                wanted[i] = true;
            }
        }
    }
    wanted
}

/// One encoding as the publisher was last told (or starts: active).
#[derive(Debug, Clone)]
struct Told {
    rid: String,
    active: bool,
    /// Active but unwanted since then.
    unwanted_since: Option<Instant>,
}

/// What one publisher was told about one track's encodings.
#[derive(Debug, Clone, Default)]
pub struct EncodingDemand {
    encodings: Vec<Told>,
}

impl EncodingDemand {
    /// Takes the encodings wanted now, `(rid, wanted)`; returns every
    /// encoding's `(rid, active)`, in the order given, when that changed
    /// (the publisher is then to be told), else `None`. An encoding not seen
    /// before is taken as active: browsers start every encoding.
    pub fn update(&mut self, wanted: &[(&str, bool)], now: Instant) -> Option<Vec<(String, bool)>> {
        let mut changed = false;
        for &(rid, wanted) in wanted {
            let told = match self.encodings.iter().position(|t| t.rid == rid) {
                Some(i) => &mut self.encodings[i],
                None => {
                    self.encodings.push(Told {
                        rid: rid.to_string(),
                        active: true,
                        unwanted_since: None,
                    });
                    self.encodings.last_mut().expect("just pushed")
                }
            };
            if wanted {
                told.unwanted_since = None;
                if !told.active {
                    told.active = true;
                    changed = true;
                }
            } else if told.active {
                let since = *told.unwanted_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= OFF_AFTER {
                    told.active = false;
                    told.unwanted_since = None;
                    changed = true;
                }
            }
        }
        changed.then(|| {
            wanted
                .iter()
                .filter_map(|&(rid, _)| self.encodings.iter().find(|t| t.rid == rid))
                .map(|t| (t.rid.clone(), t.active))
                .collect()
        })
    }

    /// When an encoding that is unwanted now is next due to be turned off.
    pub fn deadline(&self) -> Option<Instant> {
        self.encodings
            .iter()
            .filter_map(|t| t.unwanted_since)
            .min()
            .map(|since| since + OFF_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(heights: [Option<u16>; 3]) -> Vec<LayerInfo> {
        (0..3)
            .map(|i| LayerInfo {
                height: heights[i],
                rid_rank: i,
                live: true,
            })
            .collect()
    }

    const SIZES: [Option<u16>; 3] = [Some(180), Some(360), Some(720)];

    fn tile(height: u32) -> LayerSelector {
        LayerSelector {
            wanted_height: Some(height),
            ..Default::default()
        }
    }

    const HIDDEN: LayerSelector = LayerSelector {
        wanted_height: None,
        hidden: true,
        paused: false,
        max_layer: None,
        cap_urgent: false,
    };

    #[test]
    fn nobody_watching_wants_only_the_lowest() {
        assert_eq!(wanted_encodings(&layers(SIZES), []), [true, false, false]);
        assert_eq!(
            wanted_encodings(&layers(SIZES), [HIDDEN]),
            [true, false, false]
        );
    }

    #[test]
    fn a_tile_wants_the_encoding_it_needs_and_those_below() {
        let all = layers(SIZES);
        assert_eq!(wanted_encodings(&all, [tile(180)]), [true, false, false]);
        assert_eq!(wanted_encodings(&all, [tile(360)]), [true, true, false]);
        assert_eq!(wanted_encodings(&all, [tile(720)]), [true, true, true]);
        // No layout: the best there is.
        assert_eq!(
            wanted_encodings(&all, [LayerSelector::default()]),
            [true; 3]
        );
        // The most demanding subscriber counts.
        assert_eq!(
            wanted_encodings(&all, [tile(180), HIDDEN, tile(1080)]),
            [true; 3]
        );
        // A cap or pause (bandwidth) does not lower the need.
        let capped = LayerSelector {
            max_layer: Some(0),
            paused: true,
            ..tile(720)
        };
        assert_eq!(wanted_encodings(&all, [capped]), [true; 3]);
    }

    #[test]
    fn encodings_of_unknown_size_are_wanted() {
        // Chromium has not started the top encoding yet.
        let early = layers([Some(180), Some(360), None]);
        assert_eq!(wanted_encodings(&early, [tile(180)]), [true, false, true]);
        assert_eq!(wanted_encodings(&layers([None; 3]), []), [true; 3]);
        // Listed in another order (a client's own offer): by size.
        let shuffled = vec![layers(SIZES)[2], layers(SIZES)[0], layers(SIZES)[1]];
        assert_eq!(
            wanted_encodings(&shuffled, [tile(360)]),
            [false, true, true]
        );
        assert_eq!(wanted_encodings(&shuffled, []), [false, true, false]);
    }

    fn wanted(q: bool, h: bool, f: bool) -> [(&'static str, bool); 3] {
        [("q", q), ("h", h), ("f", f)]
    }

    fn told(q: bool, h: bool, f: bool) -> Option<Vec<(String, bool)>> {
        Some(vec![("q".into(), q), ("h".into(), h), ("f".into(), f)])
    }

    #[test]
    fn off_only_after_being_unwanted_for_a_while_on_at_once() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut demand = EncodingDemand::default();
        // Everything starts active: nothing to say.
        assert_eq!(demand.update(&wanted(true, true, true), t0), None);
        assert_eq!(demand.deadline(), None);
        // The tile shrinks: nothing yet, then off once the wait is over.
        assert_eq!(demand.update(&wanted(true, false, false), ms(100)), None);
        assert_eq!(demand.deadline(), Some(ms(100) + OFF_AFTER));
        assert_eq!(demand.update(&wanted(true, false, false), ms(3099)), None);
        assert_eq!(
            demand.update(&wanted(true, false, false), ms(3100)),
            told(true, false, false)
        );
        assert_eq!(demand.deadline(), None);
        // Said once.
        assert_eq!(demand.update(&wanted(true, false, false), ms(5000)), None);
        // It grows: on at once.
        assert_eq!(
            demand.update(&wanted(true, true, true), ms(5001)),
            told(true, true, true)
        );
        assert_eq!(demand.update(&wanted(true, true, true), ms(5002)), None);
    }

    #[test]
    fn a_brief_shrink_turns_nothing_off() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut demand = EncodingDemand::default();
        assert_eq!(demand.update(&wanted(true, true, false), t0), None);
        assert_eq!(demand.update(&wanted(true, true, true), ms(2000)), None);
        assert_eq!(demand.deadline(), None);
        // The wait starts over at the next shrink.
        assert_eq!(demand.update(&wanted(true, true, false), ms(2500)), None);
        assert_eq!(demand.update(&wanted(true, true, false), ms(5000)), None);
        assert_eq!(
            demand.update(&wanted(true, true, false), ms(5500)),
            told(true, true, false)
        );
    }

    #[test]
    fn encodings_that_appear_later_start_active() {
        let t0 = Instant::now();
        let mut demand = EncodingDemand::default();
        assert_eq!(demand.update(&[("q", true)], t0), None);
        assert_eq!(demand.update(&wanted(true, false, true), t0), None);
        assert_eq!(
            demand.update(&wanted(true, false, true), t0 + OFF_AFTER),
            told(true, false, true)
        );
    }
}
