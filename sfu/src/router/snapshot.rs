//! The operator's view of the shard, built on request.

use super::*;
use crate::simulcast_layer::Layer;
use crate::snapshot::SourcePauseSnapshot;
use crate::stats::BWE_BANDS_BPS;
use std::time::SystemTime;

impl Router {
    /// Sets the shard's estimate gauges (bounded: bands, not a series per
    /// connection) from every connection whose estimate has feedback.
    pub(super) fn publish_bandwidth_gauges(&self, now: Instant) {
        let mut bands = [0u64; BWE_BANDS_BPS.len()];
        let (mut count, mut sum) = (0, 0);
        for stats in self
            .peers
            .values()
            .filter_map(|p| p.fast_writer.as_ref())
            .map(|w| w.bwe.stats())
            .filter(|s| s.feedbacks > 0)
        {
            count += 1;
            sum += stats.estimate_bps;
            for (band, limit) in bands.iter_mut().zip(BWE_BANDS_BPS) {
                *band += (stats.estimate_bps <= limit) as u64;
            }
        }
        set(&self.stats.bwe_subscribers, count);
        set(&self.stats.bwe_estimate_sum_bps, sum);
        set(&self.stats.bwe_estimate_le_300k, bands[0]);
        set(&self.stats.bwe_estimate_le_1m, bands[1]);
        set(&self.stats.bwe_estimate_le_3m, bands[2]);
        self.publish_layer_gauges(now);
    }

    /// Counts forwarded videos by the encoding they get (its rank among
    /// the flowing ones) or paused: bounded gauges where a series per
    /// participant would not be.
    fn publish_layer_gauges(&self, now: Instant) {
        let mut by_rank = [0u64; 3];
        let mut paused = 0;
        for track in self.tracks.values().filter(|t| t.is_video()) {
            let infos = crate::simulcast_layer::layer_infos(&track.layers, now);
            for dt in &track.down_tracks {
                if dt.selector.hidden || dt.selector.paused {
                    paused += 1;
                    continue;
                }
                let Some(current) = dt.layer.and_then(|l| track.layers.get(l)) else {
                    continue; // Waiting for a keyframe.
                };
                let ours = current.quality();
                let rank = infos
                    .iter()
                    .filter(|info| info.live && info.quality() < ours)
                    .count();
                by_rank[rank.min(2)] += 1;
            }
        }
        set(&self.stats.forwarded_video_layer_0, by_rank[0]);
        set(&self.stats.forwarded_video_layer_1, by_rank[1]);
        set(&self.stats.forwarded_video_layer_2, by_rank[2]);
        set(&self.stats.forwarded_video_paused, paused);
    }

    /// Describes the shard for operators.
    pub(super) fn snapshot(&mut self, now: Instant) -> ShardSnapshot {
        let counters = self.stats.snapshot();
        let rates = self
            .shard_rate
            .sample(
                now,
                &[
                    counters.loop_busy_micros,
                    counters.rtp_in,
                    counters.rtp_forwarded,
                ],
            )
            .to_vec();
        let wall = SystemTime::now();
        let mut peers = Vec::with_capacity(self.peers.len());
        let participant_of: HashMap<ConnKey, ParticipantId> = self
            .peers
            .iter()
            .map(|(&k, p)| (k, p.participant.clone()))
            .collect();
        for (&conn, peer) in self.peers.iter_mut() {
            let report = peer.pc.get_stats(now, StatsSelector::None);
            let rtt_ms = report
                .candidate_pairs()
                .filter(|p| p.current_round_trip_time > 0.0)
                .max_by_key(|p| p.bytes_received)
                .map(|p| p.current_round_trip_time * 1000.0);
            // From the client's receiver reports (`handle_rtcp`): rtc's
            // statistics do not see the RTCP the fast path reads.
            let loss_to_client = peer
                .sent
                .values()
                .filter_map(|s| s.fraction_lost)
                .reduce(f64::max);
            let mut published = Vec::new();
            let mut forwarded = Vec::new();
            for track in self.tracks.values_mut() {
                if track.publisher == conn {
                    let rates = track
                        .rate
                        .sample(now, &[track.packets, track.bytes])
                        .to_vec();
                    published.push(TrackSnapshot {
                        kind: track.kind.to_string(),
                        mime_type: track.mime_type.clone(),
                        ssrc: track.layers.first().map_or(0, |l| l.ssrc),
                        layers: track
                            .layers
                            .iter()
                            .map(|l| l.rid.clone())
                            .filter(|r| !r.is_empty())
                            .collect(),
                        packets: track.packets,
                        bytes: track.bytes,
                        packets_per_second: rates[0],
                        bits_per_second: rates[1] * 8.0,
                        packets_lost: track.lost as i64,
                        source_pauses: source_pauses(&track.layers, now, wall),
                    });
                }
                for dt in track.down_tracks.iter().filter(|d| d.subscriber == conn) {
                    forwarded.push(ForwardedSnapshot {
                        publisher: participant_of
                            .get(&track.publisher)
                            .cloned()
                            .unwrap_or_default(),
                        kind: track.kind.to_string(),
                        ssrc: dt.ssrc,
                        packets: dt.packets_sent,
                        layer: dt
                            .layer
                            .and_then(|l| track.layers.get(l))
                            .map(|l| l.rid.clone()),
                        paused: dt.selector.hidden || dt.selector.paused,
                        layer_switches: dt.layer_switches,
                        max_layer: dt.selector.max_layer,
                        max_temporal_layer: Some(dt.vp8.temporal.target())
                            .filter(|&t| t < crate::temporal_layer::ALL_LAYERS),
                    });
                }
            }
            peers.push(PeerSnapshot {
                participant: peer.participant.clone(),
                room: peer.room.clone(),
                state: peer.state,
                remote_addr: peer.routes.last().map(|(_, addr)| *addr),
                rtt_ms,
                loss_to_client,
                bandwidth: peer.fast_writer.as_ref().map(|w| w.bwe.stats()),
                probe_bps: self.allocations.probe_goal(conn),
                published,
                forwarded,
            });
        }
        peers.sort_by(|a, b| (&a.room, &a.participant).cmp(&(&b.room, &b.participant)));
        ShardSnapshot {
            shard: self.shard,
            counters,
            busy_ratio: (rates[0] / 1e6).min(1.0),
            packets_in_per_second: rates[1],
            packets_out_per_second: rates[2],
            peers,
        }
    }
}

/// Each encoding's recent pauses, told in wall-clock time (`now` is
/// `wall`).
fn source_pauses(layers: &[Layer], now: Instant, wall: SystemTime) -> Vec<SourcePauseSnapshot> {
    layers
        .iter()
        .flat_map(|layer| {
            layer.source_pauses.recent().map(|p| SourcePauseSnapshot {
                rid: layer.rid.clone(),
                ended_at: wall - now.saturating_duration_since(p.ended),
                length: p.length,
            })
        })
        .collect()
}
