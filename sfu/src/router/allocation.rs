//! Sharing each subscriber's bandwidth estimate among the videos it
//! receives, and probing for more (issue #16, point 3).
//!
//! Every `ALLOCATION_INTERVAL` the router measures each published encoding's
//! rate, and for every subscriber whose estimate has transport-wide
//! feedback behind it hands the `StreamAllocator` its estimate, the rate of
//! its audio (reserved, never paused) and, per video, the encodings that
//! flow with their rates, the encoding its tile needs (`layout`) and its
//! priority (screen share, then active speaker). The answer caps or pauses
//! each down track's `LayerSelector` (`limit_video`); the switch happens on
//! the packet path at the next keyframe of the new encoding.
//!
//! Downgrades come as soon as the estimate drops, which it does when the
//! queue toward the subscriber grows, before loss builds up. Upgrades need
//! the link to have proven the rate: the prober (`bwe::Prober`) sends
//! padding until the estimate reaches what the next encoding needs, and
//! keeps filling while a granted upgrade waits for its keyframe, so the
//! estimate (capped near what is delivered) does not sink back meanwhile.
//!
//! A subscriber without the fast path or without transport-wide feedback
//! has no estimate: its videos are left as `layout` sets them.

use super::temporal_steps;
use super::*;
use crate::bwe::allocator::{Priority, StreamAllocator, Target, VideoDemand};
use crate::bwe::{Prober, Usage};
use crate::layer_selector::{LayerInfo, LayerSelector};
use crate::temporal_layer::ALL_LAYERS;
use std::collections::VecDeque;

/// How often allocations are made: a cut shows in the estimate within a
/// few feedback intervals, and the downgrade should follow it promptly.
const ALLOCATION_INTERVAL: Duration = Duration::from_millis(100);
/// An encoding's rate is measured over this much time (a keyframe in it
/// weighs less).
const RATE_WINDOW: Duration = Duration::from_millis(1500);
/// Bytes a forwarded packet takes on the wire beyond its payload: RTP
/// header and extensions, SRTP tag, IPv4 and UDP (the estimate counts
/// them too).
const PACKET_OVERHEAD: u64 = 60;
/// Padding per probe packet: the most one octet can count (RFC 3550).
const PADDING_SIZE: u8 = 255;
/// Padding packets one pacing step may send (bounds a step's work).
const MAX_PADDING_PACKETS: usize = 40;

#[derive(Default)]
pub(super) struct Allocations {
    next_tick: Option<Instant>,
    /// Rate of each encoding (track, SSRC).
    rates: crate::FastMap<(TrackKey, u32), LayerRate>,
    /// Rate of each encoding's temporal layers up to a TID (track, SSRC,
    /// TID), for the steps below a whole encoding (`temporal_steps`).
    temporal_rates: crate::FastMap<(TrackKey, u32, u8), LayerRate>,
    subscribers: crate::FastMap<ConnKey, SubscriberAllocation>,
}

#[derive(Default)]
struct LayerRate {
    /// (when, bytes on the wire so far), oldest first, over `RATE_WINDOW`.
    samples: VecDeque<(Instant, u64)>,
    bps: u64,
}

impl LayerRate {
    fn sample(&mut self, bytes: u64, now: Instant) {
        if self.samples.back().is_some_and(|&(_, last)| bytes < last) {
            // A new source behind the same SSRC counts from zero again.
            self.samples.clear();
        }
        self.samples.push_back((now, bytes));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|&(t, _)| now.saturating_duration_since(t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let (first_at, first_bytes) = self.samples[0];
        let secs = now.saturating_duration_since(first_at).as_secs_f64();
        self.bps = if secs > 0.0 {
            ((bytes - first_bytes) as f64 * 8.0 / secs) as u64
        } else {
            0
        };
    }
}

/// Loss share that counts as congestion for `congestion_seen`.
const CONGESTION_LOSS: f64 = 0.02;
/// Loss share, and share of what was sent that the link delivered, past
/// which the link is failing to carry what it is given: only then may the
/// estimate pause a video (see `StreamAllocator::keep_lowest_layers`).
const FAILING_LOSS: f64 = 0.05;
const FAILING_DELIVERY: f64 = 0.75;

#[derive(Default)]
struct SubscriberAllocation {
    allocator: StreamAllocator,
    prober: Prober,
    /// The subscriber's link has shown congestion (delay growth or loss).
    congestion_seen: bool,
    /// What was sent toward the subscriber (media, retransmissions,
    /// padding), to compare with what its feedback says arrived.
    sent: LayerRate,
}

impl SubscriberAllocation {
    /// Whether the link has shown that it cannot carry what it is given:
    /// loss, or clearly less delivered than sent (a queue filling up).
    fn link_failing(&self, stats: &crate::bwe::BweStats) -> bool {
        let lossy = stats.loss.is_some_and(|l| l > FAILING_LOSS);
        let short = stats
            .acknowledged_bps
            .is_some_and(|acked| (acked as f64) < FAILING_DELIVERY * self.sent.bps as f64);
        lossy || short
    }

    /// Whether a cap must stop the encodings above it at once
    /// (`LayerSelector::cap_urgent`): a queue is building (delay growing),
    /// the link fails, or the estimate is well below what is being sent;
    /// every packet more then queues up in front of the lower encoding's
    /// keyframe. A cap on a link that shows none of it (the estimate was
    /// never probed up to a publisher's growing top encoding) keeps the
    /// current encoding until that keyframe: no freeze.
    fn cap_urgent(&self, stats: &crate::bwe::BweStats) -> bool {
        let overrun = (stats.estimate_bps as f64) < FAILING_DELIVERY * self.sent.bps as f64;
        stats.usage == Usage::Overusing || self.link_failing(stats) || overrun
    }
}

/// One video as allocated: its live encodings, lowest first (indices into
/// the track's layers), so the allocator's layer numbers map back.
struct Plan {
    key: TrackKey,
    order: Vec<usize>,
    forwarded: Option<usize>,
    /// Temporal steps before `order`'s encodings in the allocator's list.
    steps: usize,
    /// The temporal layers forwarded now (up to this TID).
    temporal: u8,
}

/// What the allocator is told of one video: its flowing encodings lowest
/// first with their rates, the one the subscriber's tile needs and its
/// priority; and those encodings' indices in the track. `None` while no
/// encoding's rate is measured yet (the video is then left as it is).
fn video_demand(
    key: TrackKey,
    infos: &[LayerInfo],
    bps: &[u64],
    selector: &LayerSelector,
    priority: Priority,
) -> Option<(VideoDemand, Vec<usize>)> {
    let mut order: Vec<usize> = (0..infos.len()).filter(|&i| infos[i].live).collect();
    order.sort_by_key(|&i| infos[i].quality());
    let mut layer_bps: Vec<u64> = order.iter().map(|&i| bps[i]).collect();
    if layer_bps.iter().all(|&b| b == 0) {
        return None;
    }
    // A higher encoding costs at least what a lower one does: one that
    // just started is still ramping up (measured 240 kbit/s for a 720p
    // encoding next to 450 for the 360p one), and would otherwise look
    // cheaper than the layer it skips.
    for i in 1..layer_bps.len() {
        if layer_bps[i] > 0 {
            layer_bps[i] = layer_bps[i].max(layer_bps[i - 1]);
        }
    }
    // The encoding the tile needs, were bandwidth no limit.
    let unlimited = LayerSelector {
        max_layer: None,
        paused: false,
        ..*selector
    };
    let max_layer = unlimited
        .target(infos)
        .and_then(|i| order.iter().position(|&o| o == i));
    let demand = VideoDemand {
        track: key,
        layer_bps,
        max_layer,
        priority,
        floor: 0,
    };
    Some((demand, order))
}

/// Whether `peer` has a bandwidth estimate to allocate: the fast path, and
/// transport-wide feedback behind its estimator.
fn has_estimate(peer: &Peer) -> bool {
    peer.fast_writer
        .as_ref()
        .is_some_and(|w| w.bwe.stats().feedbacks > 0)
}

impl Allocations {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let probes = self
            .subscribers
            .values()
            .filter_map(|s| s.prober.next_deadline());
        probes.chain(self.next_tick).min()
    }

    /// The probe under way toward `conn`: its goal in bit/s.
    pub(super) fn probe_goal(&self, conn: ConnKey) -> Option<u64> {
        self.subscribers.get(&conn)?.prober.goal()
    }
}

impl Router {
    /// Allocates every subscriber's estimate when due, then paces out the
    /// probes under way.
    pub(super) fn allocate_bandwidth(&mut self, now: Instant, send: Send<'_>) {
        if !self.bandwidth_allocation {
            return;
        }
        let due = self.allocations.next_tick.is_none_or(|t| t <= now);
        if due {
            // Ticks only while someone is here (an empty shard sleeps).
            self.allocations.next_tick =
                (!self.peers.is_empty()).then_some(now + ALLOCATION_INTERVAL);
            self.measure_layer_rates(now);
            let conns: Vec<ConnKey> = self
                .peers
                .iter()
                .filter(|(_, p)| has_estimate(p))
                .map(|(&k, _)| k)
                .collect();
            let peers = &self.peers;
            self.allocations
                .subscribers
                .retain(|conn, _| peers.contains_key(conn));
            for conn in conns {
                self.allocate_for(conn, now);
            }
        }
        self.send_probes(now, send);
    }

    /// `conn`'s tiles changed (`layout`): allocates its estimate now rather
    /// than at the next tick. A grown tile otherwise lets the selector
    /// climb to the encoding the tile needs at its next keyframe, and if
    /// the estimate cannot carry it the tick's cap takes it away again,
    /// with a freeze until the lower encoding's keyframe (seen: 600 ms at
    /// a 320 -> 1280 resize on an 800 kbit/s estimate).
    pub(super) fn allocate_now(&mut self, conn: ConnKey, now: Instant) {
        if self.bandwidth_allocation && self.peers.get(&conn).is_some_and(has_estimate) {
            self.allocate_for(conn, now);
        }
    }

    fn measure_layer_rates(&mut self, now: Instant) {
        let Router {
            tracks,
            allocations,
            ..
        } = self;
        allocations
            .rates
            .retain(|(key, ssrc), _| tracks.get(key).is_some_and(|t| t.layer_of(*ssrc).is_some()));
        allocations.temporal_rates.retain(|(key, ssrc, _), _| {
            tracks.get(key).is_some_and(|t| t.layer_of(*ssrc).is_some())
        });
        for (&key, track) in tracks.iter() {
            for layer in &track.layers {
                let wire = layer.bytes + layer.packets * PACKET_OVERHEAD;
                allocations
                    .rates
                    .entry((key, layer.ssrc))
                    .or_default()
                    .sample(wire, now);
                if layer.temporal[0].0 == 0 {
                    continue; // No temporal layers.
                }
                let mut up_to = 0;
                for tid in 0..temporal_steps::STEPS {
                    let (bytes, packets) = layer.temporal[tid];
                    up_to += bytes + packets * PACKET_OVERHEAD;
                    allocations
                        .temporal_rates
                        .entry((key, layer.ssrc, tid as u8))
                        .or_default()
                        .sample(up_to, now);
                }
            }
        }
    }

    /// One subscriber's allocation, applied to its down tracks.
    fn allocate_for(&mut self, conn: ConnKey, now: Instant) {
        let Some(sub) = self.peers.get(&conn) else {
            return;
        };
        let Some((stats, sent_bytes)) = sub
            .fast_writer
            .as_ref()
            .map(|w| (w.bwe.stats(), w.bwe.sent_bytes()))
        else {
            return;
        };
        let speaking: &[ParticipantId] = self
            .speakers
            .get(&sub.room)
            .map_or(&[], |observer| observer.current());
        let rate = |key: TrackKey, ssrc: u32| {
            self.allocations
                .rates
                .get(&(key, ssrc))
                .map_or(0, |r| r.bps)
        };
        let temporal_rate = |key: TrackKey, ssrc: u32, tid: u8| {
            self.allocations
                .temporal_rates
                .get(&(key, ssrc, tid))
                .map_or(0, |r| r.bps)
        };
        let mut audio_bps = 0;
        let mut videos = Vec::new();
        let mut plans = Vec::new();
        for &key in sub.subscribed.values() {
            let Some(track) = self.tracks.get(&key) else {
                continue;
            };
            let Some(dt) = track.down_tracks.iter().find(|d| d.subscriber == conn) else {
                continue;
            };
            if !track.is_video() {
                audio_bps += track.layers.iter().map(|l| rate(key, l.ssrc)).sum::<u64>();
                continue;
            }
            let infos = crate::simulcast_layer::layer_infos(&track.layers, now);
            let bps: Vec<u64> = track.layers.iter().map(|l| rate(key, l.ssrc)).collect();
            let publisher = self.peers.get(&track.publisher).map(|p| &p.participant);
            let priority = if track.screen_share {
                Priority::ScreenShare
            } else if publisher.is_some_and(|p| speaking.contains(p)) {
                Priority::ActiveSpeaker
            } else {
                Priority::Normal
            };
            let Some((mut demand, order)) = video_demand(key, &infos, &bps, &dt.selector, priority)
            else {
                continue;
            };
            let lowest = track.layers[order[0]].ssrc;
            let steps = if track.codec.is_vp8() && temporal_steps::ENABLED {
                let rates = [0, 1].map(|tid| temporal_rate(key, lowest, tid));
                temporal_steps::add_steps(&mut demand, rates)
            } else {
                0
            };
            videos.push(demand);
            plans.push(Plan {
                key,
                order,
                forwarded: dt.layer,
                steps,
                temporal: dt.vp8.temporal.current(),
            });
        }
        let participant = sub.participant.clone();
        let state = self.allocations.subscribers.entry(conn).or_default();
        state.congestion_seen |=
            stats.usage == Usage::Overusing || stats.loss.is_some_and(|l| l > CONGESTION_LOSS);
        state.sent.sample(sent_bytes, now);
        state.allocator.keep_lowest_layers = !state.congestion_seen || !state.link_failing(&stats);
        let urgent = state.cap_urgent(&stats);
        let allocation = state
            .allocator
            .allocate(stats.estimate_bps, audio_bps, &videos, now);
        // A granted upgrade still waiting for its keyframe: keep the link
        // filled to the allocation, or the estimate sinks back before the
        // new encoding flows and takes the upgrade away again.
        let mut switching = false;
        for (plan, &(_, target)) in plans.iter().zip(&allocation.targets) {
            let forwarded = plan
                .forwarded
                .and_then(|l| plan.order.iter().position(|&o| o == l))
                .map(|rank| temporal_steps::position(rank, plan.temporal, plan.steps));
            if let Target::Layer(wanted) = target {
                switching |= forwarded.is_some_and(|f| f < wanted);
            }
        }
        let goal = allocation
            .probe_bps
            .or(switching.then_some(allocation.allocated_bps));
        state.prober.set_goal(goal, &stats, now);
        tracing::trace!(
            subscriber = %participant,
            estimate = stats.estimate_bps,
            acked = ?stats.acknowledged_bps,
            usage = ?stats.usage,
            loss = ?stats.loss,
            audio_bps,
            layers = ?videos.iter().map(|v| &v.layer_bps).collect::<Vec<_>>(),
            targets = ?allocation.targets,
            probe = ?state.prober.goal(),
            "allocation"
        );
        for ((plan, &(_, target)), demand) in plans.iter().zip(&allocation.targets).zip(&videos) {
            // A cap only where bandwidth keeps the video below what its
            // tile needs: the tile's own choice (a smaller tile) is the
            // selector's, which keeps the current encoding until the lower
            // one's keyframe; a cap on a failing link stops it at once (a
            // 480 ms freeze at every tile shrink when the cap did both).
            let (max_layer, paused) = match target {
                Target::Layer(layer) => {
                    (Some(layer).filter(|&l| Some(l) < demand.max_layer), false)
                }
                Target::Paused => (None, true),
            };
            // Steps below the lowest encoding: its temporal layers.
            let (max_layer, temporal) = match max_layer {
                Some(l) => {
                    let (rank, temporal) = temporal_steps::split(l, plan.steps);
                    (Some(rank), temporal)
                }
                None => (None, ALL_LAYERS),
            };
            let changed = self
                .tracks
                .get(&plan.key)
                .and_then(|t| t.down_tracks.iter().find(|d| d.subscriber == conn))
                .is_some_and(|d| {
                    d.selector.max_layer != max_layer
                        || d.selector.paused != paused
                        || d.selector.cap_urgent != urgent
                        || d.vp8.temporal.target() != temporal
                });
            if changed {
                tracing::debug!(
                    subscriber = %participant,
                    track = plan.key,
                    ?target,
                    temporal,
                    urgent,
                    estimate = stats.estimate_bps,
                    audio_bps,
                    "allocation changed"
                );
                self.limit_video(conn, plan.key, max_layer, paused, urgent);
                self.limit_temporal(conn, plan.key, temporal);
            }
        }
    }

    /// Caps the temporal layers `subscriber` gets of video `key`.
    fn limit_temporal(&mut self, subscriber: ConnKey, key: TrackKey, temporal: u8) {
        let down_track = self.tracks.get_mut(&key).and_then(|t| {
            t.down_tracks
                .iter_mut()
                .find(|d| d.subscriber == subscriber)
        });
        if let Some(dt) = down_track {
            dt.vp8.temporal.set_target(temporal);
        }
    }

    /// Paces out the padding of every probe that is due.
    fn send_probes(&mut self, now: Instant, send: Send<'_>) {
        let Router {
            peers,
            tracks,
            allocations,
            stats,
            ..
        } = self;
        for (&conn, state) in allocations.subscribers.iter_mut() {
            if state.prober.next_deadline().is_none_or(|t| t > now) {
                continue;
            }
            let Some(peer) = peers.get_mut(&conn) else {
                continue;
            };
            let Some(sent) = peer.fast_writer.as_ref().map(|w| w.bwe.sent_bytes()) else {
                continue;
            };
            let mut budget = state.prober.padding_bytes(sent, now);
            if budget == 0 {
                continue;
            }
            // Padding goes on a video this subscriber is being forwarded,
            // else on one paused for want of bandwidth (its way back); never
            // on a hidden one (the subscriber asked for none of it).
            let mut subscribed: Vec<(bool, TrackKey)> = peer
                .subscribed
                .values()
                .filter_map(|key| {
                    let dt = tracks
                        .get(key)?
                        .down_tracks
                        .iter()
                        .find(|d| d.subscriber == conn)?;
                    (!dt.selector.hidden).then_some((dt.layer.is_none(), *key))
                })
                .collect();
            subscribed.sort_unstable();
            let mut out = peer.rtp_writer(&mut *send);
            let mut packets = 0;
            'tracks: for (_, key) in &subscribed {
                let Some(dt) = tracks
                    .get_mut(key)
                    .filter(|t| t.is_video())
                    .and_then(|t| t.down_tracks.iter_mut().find(|d| d.subscriber == conn))
                else {
                    continue;
                };
                while budget > 0 && packets < MAX_PADDING_PACKETS {
                    let before = dt.bytes_sent;
                    if !dt.send_padding(&mut out, PADDING_SIZE, now) {
                        continue 'tracks;
                    }
                    let len = (dt.bytes_sent - before) as usize;
                    add(&stats.datagrams_out, 1);
                    add(&stats.bytes_out, len as u64);
                    add(&stats.padding_packets, 1);
                    budget = budget.saturating_sub(len);
                    packets += 1;
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(height: u16, rid_rank: usize, live: bool) -> LayerInfo {
        LayerInfo {
            height: Some(height),
            rid_rank,
            live,
        }
    }

    #[test]
    fn a_video_is_described_lowest_encoding_first_with_its_tiles_need() {
        // Bound in another order than their sizes (a client's own offer).
        let infos = [info(720, 2, true), info(180, 0, true), info(360, 1, true)];
        let bps = [1_500_000, 150_000, 500_000];
        let tile = LayerSelector {
            wanted_height: Some(360),
            ..Default::default()
        };
        let (demand, order) = video_demand(7, &infos, &bps, &tile, Priority::Normal).unwrap();
        assert_eq!(order, vec![1, 2, 0]);
        assert_eq!(demand.layer_bps, vec![150_000, 500_000, 1_500_000]);
        assert_eq!(
            demand.max_layer,
            Some(1),
            "a 360-high tile needs the middle one"
        );
        // The allocator's own earlier cap and pause do not limit the need.
        let capped = LayerSelector {
            max_layer: Some(0),
            paused: true,
            ..Default::default()
        };
        let (demand, _) = video_demand(7, &infos, &bps, &capped, Priority::Normal).unwrap();
        assert_eq!(demand.max_layer, Some(2));
        // A hidden tile needs nothing; a stopped encoding is not offered.
        let hidden = LayerSelector {
            hidden: true,
            ..Default::default()
        };
        assert_eq!(
            video_demand(7, &infos, &bps, &hidden, Priority::Normal)
                .unwrap()
                .0
                .max_layer,
            None
        );
        let stopped = [info(720, 2, false), info(180, 0, true), info(360, 1, true)];
        let (demand, order) = video_demand(7, &stopped, &bps, &capped, Priority::Normal).unwrap();
        assert_eq!(
            (demand.layer_bps, order, demand.max_layer),
            (vec![150_000, 500_000], vec![1, 2], Some(1))
        );
        // A top encoding that just started costs at least the one below.
        let ramping = [240_000, 150_000, 450_000];
        let (demand, _) = video_demand(7, &infos, &ramping, &tile, Priority::Normal).unwrap();
        assert_eq!(demand.layer_bps, vec![150_000, 450_000, 450_000]);
        let ramping = [200_000, 150_000, 500_000];
        let (demand, _) = video_demand(7, &infos, &ramping, &tile, Priority::Normal).unwrap();
        assert_eq!(demand.layer_bps, vec![150_000, 500_000, 500_000]);
        // Nothing measured yet.
        assert!(video_demand(7, &infos, &[0, 0, 0], &tile, Priority::Normal).is_none());
    }

    #[test]
    fn an_encodings_rate_is_measured_over_the_last_second_and_a_half() {
        let t0 = Instant::now();
        let mut rate = LayerRate::default();
        // 25 kB every 100 ms: 2 Mbit/s.
        for i in 0..=30u64 {
            rate.sample(i * 25_000, t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(rate.bps, 2_000_000);
        // Then a tenth of it: the window has turned over after 1.5 s.
        for i in 1..=16u64 {
            rate.sample(
                750_000 + i * 2_500,
                t0 + Duration::from_millis(3000 + 100 * i),
            );
        }
        assert!((195_000..=205_000).contains(&rate.bps), "{}", rate.bps);
    }
}
