//! Temporal layers as allocation steps (issue #16 point 2): below the
//! lowest encoding's full rate, the allocator may grant that encoding's
//! base temporal layer (a quarter of Chromium's frame rate), then base
//! and TL1 (half), before it pauses the video entirely. A subscriber whose
//! link fits only part of the lowest encoding then keeps a moving picture
//! instead of a frozen one.
//!
//! The allocator itself knows nothing of this: the steps are prepended to
//! the video's layer list (`VideoDemand::layer_bps`), and its answer maps
//! back to an encoding cap and a temporal target. A step's rate is the
//! encoding's rate over the same window counting only packets of those
//! temporal layers (measured per TID as they arrive, see
//! `Layer::temporal`).
//!
//! Every VP8 video has the steps, whatever is known of its rates, so a
//! layer number means the same from one allocation to the next (the
//! allocator's hysteresis remembers them): steps whose temporal rates are
//! not measured (yet, or ever: an encoder without temporal layers) cost as
//! much as the whole encoding, so they are never chosen over it. While the
//! link keeps every video's lowest layer (`StreamAllocator::
//! keep_lowest_layers`), the video's `floor` makes that the whole lowest
//! encoding, not its base temporal layer.

use crate::bwe::allocator::VideoDemand;
use crate::temporal_layer::ALL_LAYERS;

/// Steps below a whole encoding: its TL0, its TL0 + TL1.
pub(super) const STEPS: usize = 2;

/// Whether VP8 videos get the steps. They were off while the steps came
/// and went with the link's state (the allocator's remembered layer
/// numbers then shifted under it: shaped_link flapped between the lowest
/// encoding's TL0 + TL1 and the middle encoding, 1.2 s freezes).
pub(super) const ENABLED: bool = true;

/// Prepends the temporal steps of the lowest encoding to `demand`, given
/// that encoding's measured rates of TL0 and of TL0 + TL1 (bit/s, 0 when
/// not measured). Returns how many steps were added: always `STEPS` for a
/// video with a lowest encoding, so layer numbers stay put.
pub(super) fn add_steps(demand: &mut VideoDemand, lowest: [u64; STEPS]) -> usize {
    let Some(&full) = demand.layer_bps.first() else {
        return 0;
    };
    let lowest = match lowest[0] {
        0 => [full; STEPS],
        _ => lowest,
    };
    // Never above the whole encoding, never below the step before (the
    // windows are the same, but packets straddle their edges).
    let tl0 = lowest[0].min(full);
    let tl1 = lowest[1].clamp(tl0, full);
    demand.layer_bps.splice(0..0, [tl0, tl1]);
    demand.max_layer = demand.max_layer.map(|m| m + STEPS);
    demand.floor = STEPS;
    STEPS
}

/// The allocator's layer `granted` (in the list `add_steps` made, `steps`
/// long at its start) as an encoding cap (0 = lowest flowing) and a
/// temporal target.
pub(super) fn split(granted: usize, steps: usize) -> (usize, u8) {
    if granted < steps {
        (0, granted as u8)
    } else {
        (granted - steps, ALL_LAYERS)
    }
}

/// Where a video forwarded at encoding `rank` (0 = lowest flowing) with
/// temporal layers up to `temporal` stands in that list.
pub(super) fn position(rank: usize, temporal: u8, steps: usize) -> usize {
    if rank == 0 && usize::from(temporal) < steps {
        usize::from(temporal)
    } else {
        rank + steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bwe::allocator::{Priority, StreamAllocator, Target};
    use std::time::Instant;

    fn demand(layer_bps: Vec<u64>) -> VideoDemand {
        VideoDemand {
            track: 1,
            max_layer: Some(layer_bps.len() - 1),
            layer_bps,
            priority: Priority::Normal,
            floor: 0,
        }
    }

    #[test]
    fn steps_go_below_the_lowest_encoding() {
        let mut d = demand(vec![150_000, 500_000, 1_500_000]);
        assert_eq!(add_steps(&mut d, [60_000, 100_000]), 2);
        assert_eq!(
            d.layer_bps,
            vec![60_000, 100_000, 150_000, 500_000, 1_500_000]
        );
        assert_eq!(d.max_layer, Some(4));
        // Measured around a keyframe: never out of order.
        let mut d = demand(vec![150_000]);
        add_steps(&mut d, [170_000, 90_000]);
        assert_eq!(d.layer_bps, vec![150_000, 150_000, 150_000]);
        // No temporal layers (or not measured yet): steps as dear as the
        // whole encoding, so the numbers stay put and are never chosen.
        let mut d = demand(vec![150_000, 500_000]);
        assert_eq!(add_steps(&mut d, [0, 0]), 2);
        assert_eq!(d.layer_bps, vec![150_000, 150_000, 150_000, 500_000]);
        assert_eq!(d.floor, 2);
        assert_eq!(
            (split(1, 0), position(1, ALL_LAYERS, 0)),
            ((1, ALL_LAYERS), 1)
        );
    }

    #[test]
    fn a_link_short_of_the_lowest_encoding_gets_its_base_layer() {
        let now = Instant::now();
        let mut allocator = StreamAllocator::default();
        let mut d = demand(vec![150_000, 500_000]);
        let steps = add_steps(&mut d, [50_000, 90_000]);
        // 100 kbit/s with 30 of audio: TL0 + TL1 (90) does not fit, TL0
        // (50) does.
        let a = allocator.allocate(100_000, 30_000, &[d.clone()], now);
        let Target::Layer(granted) = a.targets[0].1 else {
            panic!("paused: {a:?}");
        };
        assert_eq!(split(granted, steps), (0, 0));
        assert_eq!(position(0, 0, steps), granted);
        // Enough for the whole lowest encoding: no temporal limit.
        let mut fresh = StreamAllocator::default();
        let a = fresh.allocate(300_000, 30_000, &[d.clone()], now);
        assert_eq!(a.targets[0].1, Target::Layer(2));
        assert_eq!(split(2, steps), (0, ALL_LAYERS));
        // A link that keeps every video's lowest layer keeps the whole
        // lowest encoding, not a step of it.
        let mut kept = StreamAllocator::default();
        kept.keep_lowest_layers = true;
        let a = kept.allocate(100_000, 30_000, &[d.clone()], now);
        assert_eq!(a.targets[0].1, Target::Layer(steps));
        // But a video the link already holds on a step stays there when
        // the link looks sound again: the floor would overrun it.
        allocator.keep_lowest_layers = true;
        let a = allocator.allocate(100_000, 30_000, &[d.clone()], now);
        assert_eq!(a.targets[0].1, Target::Layer(0));
        // Less than the base layer: paused.
        let mut poor = StreamAllocator::default();
        let a = poor.allocate(60_000, 30_000, &[d], now);
        assert_eq!(a.targets[0].1, Target::Paused);
    }
}
