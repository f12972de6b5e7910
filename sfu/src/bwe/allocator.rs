//! Sharing one subscriber's bandwidth estimate among the videos it
//! receives (in the spirit of LiveKit's StreamAllocator). Sans-IO: the
//! caller hands in the estimate and, per video track, its layers'
//! measured bitrates, the highest layer its tile needs and its priority;
//! the allocator answers with a layer or `Paused` per track, and the rate
//! it would like probed to climb.
//!
//! Rules, in order:
//! - Audio is reserved first and never paused (it is not allocated here).
//! - Every visible video gets its lowest layer, highest priority first; a
//!   video whose lowest layer no longer fits is paused (lowest priority
//!   first), and so is a hidden one.
//! - What is left upgrades videos layer by layer: the highest priority
//!   (screen share, then active speaker) up to its tile's layer first,
//!   videos of equal priority in turn.
//! - Hysteresis: layers already granted are kept while the allocation fits
//!   the whole estimate; going above a track's current layer needs 5 % of
//!   the estimate spare and 15 % headroom on top, and no downgrade of that
//!   track in the last 4 s, so layers do not flap on a noisy estimate.
//! - Downgrades: at once when the allocation (audio included) exceeds the
//!   estimate by half or more (the link was cut: the estimate drops on the
//!   growing queue, before loss builds up); a smaller shortfall must last a
//!   second. One noisy overuse verdict cuts the estimate to 0.85 times what
//!   the link delivered, which a subscriber using little of its link has no
//!   margin for; within a second the estimate is back above the delivered
//!   rate if the link was not full. Audio counts on both sides: on a link
//!   where it is a third of the rate, comparing the video alone with what
//!   audio leaves of the estimate made such a dip look like a cut (a
//!   160 kbit/s link paused its video for 4 s).
//!
//! Wiring: per subscriber, on every estimate change and every change of its
//! tracks (layers appearing, `layout`, speaker), call [`StreamAllocator::
//! allocate`] and hand each [`Target`] to that track's layer selector; a
//! `probe_bps` asks the estimator's prober to test that rate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Identifies a track within one subscriber's allocation (the router's
/// `TrackKey`).
pub type TrackId = u64;

/// Share of the estimate allocated at all (the rest absorbs rate bursts:
/// keyframes, retransmissions).
const BUDGET_SHARE: f64 = 0.95;
/// Going above a track's current layer must fit within this share of the
/// budget.
const UPGRADE_HEADROOM: f64 = 0.85;
/// After a downgrade, the track stays down at least this long.
const UPGRADE_HOLD: Duration = Duration::from_secs(4);
/// A shortfall below this multiple of the estimate is tolerated for
/// `DOWNGRADE_AFTER`; above it, layers drop at once.
const CUT: f64 = 1.5;
const DOWNGRADE_AFTER: Duration = Duration::from_secs(1);

/// Who gets bits first (higher first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Priority {
    #[default]
    Normal,
    ActiveSpeaker,
    ScreenShare,
}

/// One video track as the allocator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoDemand {
    pub track: TrackId,
    /// Measured bitrate of each layer the publisher sends, lowest first
    /// (a single-layer track has one); 0 for a layer not arriving now,
    /// which is never chosen.
    pub layer_bps: Vec<u64>,
    /// The highest layer the subscriber's tile needs (from `layout`);
    /// `None` when the video is not shown (paused).
    pub max_layer: Option<usize>,
    pub priority: Priority,
    /// The layer `StreamAllocator::keep_lowest_layers` keeps: the lowest
    /// whole encoding, above the steps that forward only part of it (its
    /// base temporal layers, see the router's `temporal_steps`); 0 when
    /// the list has no such steps.
    pub floor: usize,
}

/// What one track should receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Paused,
    Layer(usize),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Allocation {
    /// One target per demanded track, in the demand's order.
    pub targets: Vec<(TrackId, Target)>,
    /// Some visible video is below its tile's layer for want of bandwidth:
    /// the total rate (audio included) that would let the next upgrade
    /// through. Probe it, and the estimate may rise to allow it.
    pub probe_bps: Option<u64>,
    /// Bits per second the targets add up to (audio included).
    pub allocated_bps: u64,
}

#[derive(Debug, Clone, Copy)]
struct TrackState {
    target: Target,
    last_downgrade: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct StreamAllocator {
    /// Every shown video keeps at least its lowest layer: the link has not
    /// shown that it cannot carry them, so the estimate alone does not
    /// pause a video. Set while the link has shown no congestion at all
    /// (the estimate is then a guess that grows only with what is sent: a
    /// publisher sending one 1 Mbit/s encoding would be paused for every
    /// new subscriber, the initial estimate being 300 kbit/s, and with
    /// nothing but audio flowing it could never grow to let it in), and
    /// while the link delivers what is sent without loss (an estimate cut
    /// by delay noise, a loaded receiver that reads late, is no reason to
    /// take a picture away; a downgrade between layers still follows it).
    /// A video already paused, or held below its `floor`, is not lifted by
    /// it: it comes back the usual way, once a probe has proven the
    /// estimate.
    pub keep_lowest_layers: bool,
    tracks: BTreeMap<TrackId, TrackState>,
    /// Since when the layers granted before exceed the estimate.
    short_since: Option<Instant>,
}

impl StreamAllocator {
    /// Allocates `estimate_bps` with `audio_bps` reserved for audio.
    pub fn allocate(
        &mut self,
        estimate_bps: u64,
        audio_bps: u64,
        videos: &[VideoDemand],
        now: Instant,
    ) -> Allocation {
        let budget = (estimate_bps as f64 * BUDGET_SHARE - audio_bps as f64).max(0.0);
        self.tracks
            .retain(|id, _| videos.iter().any(|v| v.track == *id));
        // What the layers granted before cost now, against the estimate.
        let granted: f64 = videos
            .iter()
            .map(|v| match self.tracks.get(&v.track).map(|s| s.target) {
                Some(Target::Layer(l)) => v.layer_bps.get(l).copied().unwrap_or(0) as f64,
                _ => 0.0,
            })
            .sum();
        let whole = (estimate_bps as f64 - audio_bps as f64).max(0.0);
        if granted <= whole {
            self.short_since = None;
        } else {
            self.short_since.get_or_insert(now);
        }
        let tolerated = self
            .short_since
            .is_some_and(|t| now.saturating_duration_since(t) < DOWNGRADE_AFTER)
            && granted + audio_bps as f64 <= estimate_bps as f64 * CUT;
        let budgets = Budgets {
            keep: if tolerated { whole.max(granted) } else { whole },
            climb: budget * UPGRADE_HEADROOM,
        };
        let mut order: Vec<usize> = (0..videos.len()).collect();
        order.sort_by(|&a, &b| {
            (videos[b].priority, videos[a].track).cmp(&(videos[a].priority, videos[b].track))
        });
        let mut chosen: Vec<Target> = vec![Target::Paused; videos.len()];
        let mut used = 0.0;
        // Everyone's lowest layer, by priority.
        for &i in &order {
            // What the link keeps: the lowest whole encoding, or less if
            // the video already has less (a kept link holds a video where
            // it is; only an upgrade with room for it lifts it, or the
            // floor would overrun the link each time it looks sound again).
            let previous = self.tracks.get(&videos[i].track).map(|t| t.target);
            let kept = self.keep_lowest_layers && previous != Some(Target::Paused);
            let floor = match previous {
                _ if !kept => 0,
                Some(Target::Layer(current)) => videos[i].floor.min(current),
                _ => videos[i].floor,
            };
            let Some(lowest) = self
                .layers(&videos[i])
                .find(|&l| l >= floor)
                .or_else(|| self.layers(&videos[i]).next())
            else {
                continue;
            };
            let cost = videos[i].layer_bps[lowest] as f64;
            if kept
                || self.allowed(
                    &videos[i],
                    Target::Layer(lowest),
                    used + cost,
                    &budgets,
                    now,
                )
            {
                chosen[i] = Target::Layer(lowest);
                used += cost;
            }
        }
        // Upgrades: the highest priority first; equal priorities in turn.
        let mut wanted: Option<f64> = None;
        let mut start = 0;
        while start < order.len() {
            let priority = videos[order[start]].priority;
            let end = order[start..]
                .iter()
                .position(|&i| videos[i].priority != priority)
                .map_or(order.len(), |n| start + n);
            loop {
                let mut upgraded = false;
                for &i in &order[start..end] {
                    let Target::Layer(current) = chosen[i] else {
                        continue;
                    };
                    let Some(next) = self.layers(&videos[i]).find(|&l| l > current) else {
                        continue;
                    };
                    // Measured rates need not grow with the layer (one just
                    // started, a keyframe in another): never a negative cost.
                    let extra = videos[i].layer_bps[next]
                        .saturating_sub(videos[i].layer_bps[current])
                        as f64;
                    if self.allowed(&videos[i], Target::Layer(next), used + extra, &budgets, now) {
                        chosen[i] = Target::Layer(next);
                        used += extra;
                        upgraded = true;
                    } else {
                        wanted = Some(wanted.map_or(extra, |w: f64| w.min(extra)));
                    }
                }
                if !upgraded {
                    break;
                }
            }
            start = end;
        }
        // A visible video left paused also wants bits.
        for (i, video) in videos.iter().enumerate() {
            if let (Target::Paused, Some(lowest)) = (chosen[i], self.layers(video).next()) {
                let extra = video.layer_bps[lowest] as f64;
                wanted = Some(wanted.map_or(extra, |w| w.min(extra)));
            }
        }
        for (video, &target) in videos.iter().zip(&chosen) {
            // Only a downgrade for want of bandwidth holds a track down: a
            // tile hidden or shrunk, or an encoding the publisher stopped,
            // must come back as soon as it is wanted (a hidden tile shown
            // again waited out the whole hold before).
            let still_offered = |t: Target| match t {
                Target::Layer(l) => self.layers(video).any(|x| x == l),
                Target::Paused => true,
            };
            let for_bandwidth = self
                .tracks
                .get(&video.track)
                .is_some_and(|s| target < s.target && still_offered(s.target));
            let state = self.tracks.entry(video.track).or_insert(TrackState {
                target,
                last_downgrade: None,
            });
            if for_bandwidth {
                state.last_downgrade = Some(now);
            }
            state.target = target;
        }
        Allocation {
            targets: videos.iter().map(|v| v.track).zip(chosen).collect(),
            probe_bps: wanted.map(|extra| {
                // The estimate at which `climb` takes the upgrade.
                ((used + extra) / UPGRADE_HEADROOM + audio_bps as f64).div_euclid(BUDGET_SHARE)
                    as u64
                    + 1
            }),
            allocated_bps: used as u64 + audio_bps,
        }
    }

    /// The layers `video` may get: arriving, and within its tile's need.
    fn layers<'a>(&self, video: &'a VideoDemand) -> impl Iterator<Item = usize> + 'a {
        let max = video.max_layer;
        video
            .layer_bps
            .iter()
            .enumerate()
            .filter(move |&(l, &bps)| bps > 0 && max.is_some_and(|m| l <= m))
            .map(|(l, _)| l)
    }

    /// May `video` have `target` if the allocation then totals `total`?
    fn allowed(
        &self,
        video: &VideoDemand,
        target: Target,
        total: f64,
        budgets: &Budgets,
        now: Instant,
    ) -> bool {
        let previous = self.tracks.get(&video.track);
        let climbing = previous.is_some_and(|p| target > p.target);
        if !climbing {
            return total <= budgets.keep;
        }
        let held = previous
            .and_then(|p| p.last_downgrade)
            .is_some_and(|t| now.saturating_duration_since(t) < UPGRADE_HOLD);
        !held && total <= budgets.climb
    }
}

/// What video may total (audio excluded): to keep layers granted before,
/// and to climb above them.
struct Budgets {
    keep: f64,
    climb: f64,
}

#[cfg(test)]
#[path = "allocator_tests.rs"]
mod tests;
