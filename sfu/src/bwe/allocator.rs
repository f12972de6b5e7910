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
//! - Hysteresis: a downgrade happens as soon as the allocation exceeds the
//!   budget (the estimate drops on a growing queue, before loss builds up);
//!   going above a track's current layer needs 15 % headroom and no
//!   downgrade of that track in the last 4 s, so layers do not flap on a
//!   noisy estimate.
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
    tracks: BTreeMap<TrackId, TrackState>,
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
        let mut order: Vec<usize> = (0..videos.len()).collect();
        order.sort_by(|&a, &b| {
            (videos[b].priority, videos[a].track).cmp(&(videos[a].priority, videos[b].track))
        });
        let mut chosen: Vec<Target> = vec![Target::Paused; videos.len()];
        let mut used = 0.0;
        // Everyone's lowest layer, by priority.
        for &i in &order {
            let Some(lowest) = self.layers(&videos[i]).next() else {
                continue;
            };
            let cost = videos[i].layer_bps[lowest] as f64;
            if self.allowed(&videos[i], Target::Layer(lowest), used + cost, budget, now) {
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
                    let extra = (videos[i].layer_bps[next] - videos[i].layer_bps[current]) as f64;
                    if self.allowed(&videos[i], Target::Layer(next), used + extra, budget, now) {
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
            let state = self.tracks.entry(video.track).or_insert(TrackState {
                target,
                last_downgrade: None,
            });
            if target < state.target {
                state.last_downgrade = Some(now);
            }
            state.target = target;
        }
        Allocation {
            targets: videos.iter().map(|v| v.track).zip(chosen).collect(),
            probe_bps: wanted.map(|extra| {
                ((used + extra) / UPGRADE_HEADROOM / BUDGET_SHARE + audio_bps as f64) as u64
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
        budget: f64,
        now: Instant,
    ) -> bool {
        let previous = self.tracks.get(&video.track);
        let climbing = previous.is_some_and(|p| target > p.target);
        if !climbing {
            return total <= budget;
        }
        let held = previous
            .and_then(|p| p.last_downgrade)
            .is_some_and(|t| now.saturating_duration_since(t) < UPGRADE_HOLD);
        !held && total <= budget * UPGRADE_HEADROOM
    }
}

#[cfg(test)]
#[path = "allocator_tests.rs"]
mod tests;
