//! Telling publishers which of their simulcast encodings anybody watches
//! (the decision is `encoding_demand`'s): re-evaluated after every command
//! that can change a tile or a subscription (`layout`, join, leave,
//! negotiation) so a grown tile turns its encoding on at once, and on a
//! slow tick for what changes on its own (an encoding's size learnt from
//! its first keyframe, a subscriber lost to a timeout, an unwanted
//! encoding's wait running out).

use super::*;
use crate::encoding_demand::{wanted_encodings, EncodingDemand};
use rtc::rtp_transceiver::RTCRtpTransceiverId;

/// How often the demand is looked at without a command.
const DEMAND_TICK: Duration = Duration::from_millis(250);

#[derive(Default)]
pub(super) struct EncodingDemands {
    next_tick: Option<Instant>,
    /// Per simulcast video track: the source epoch it was told for (a
    /// restarted publisher's new encoder starts all encodings again) and
    /// what it was told.
    tracks: HashMap<TrackKey, (u32, EncodingDemand)>,
}

impl EncodingDemands {
    /// The next tick, or sooner an unwanted encoding's wait running out.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let offs = self.tracks.values().filter_map(|(_, d)| d.deadline());
        offs.chain(self.next_tick).min()
    }

    /// Not looked at since the shard was last empty, or something is due.
    pub(super) fn due(&self, now: Instant) -> bool {
        self.next_deadline().is_none_or(|t| t <= now)
    }
}

impl Router {
    /// Re-evaluates every simulcast video's wanted encodings and tells each
    /// publisher what changed.
    pub(super) fn update_encoding_demand(&mut self, now: Instant) {
        let Router {
            peers,
            tracks,
            encoding_demands,
            ..
        } = self;
        encoding_demands
            .tracks
            .retain(|key, _| tracks.contains_key(key));
        for (&key, track) in tracks.iter() {
            let rids: Vec<&str> = track.layers.iter().map(|l| l.rid.as_str()).collect();
            if !track.is_video()
                || track.orphaned
                || rids.len() < 2
                || rids.iter().any(|r| r.is_empty())
            {
                continue;
            }
            let infos = crate::simulcast_layer::layer_infos(&track.layers, now);
            // Every subscriber but those that refused its codec; one still
            // negotiating counts (it is about to watch: turning the top
            // encoding off during a join would only start it again).
            let tiles = track
                .down_tracks
                .iter()
                .filter(|d| d.rewriter.is_some() || d.refused_codec.is_none())
                .map(|d| d.selector);
            let wanted = wanted_encodings(&infos, tiles);
            let wanted: Vec<(&str, bool)> = rids.iter().copied().zip(wanted).collect();
            let (epoch, demand) = encoding_demands
                .tracks
                .entry(key)
                .or_insert_with(|| (track.epoch, EncodingDemand::default()));
            if *epoch != track.epoch {
                *epoch = track.epoch;
                *demand = EncodingDemand::default();
            }
            let Some(active) = demand.update(&wanted, now) else {
                continue;
            };
            let Some(publisher) = peers.get_mut(&track.publisher) else {
                continue;
            };
            let Some(track_id) = publisher
                .published
                .iter()
                .find(|(_, &k)| k == key)
                .map(|(id, _)| id.clone())
            else {
                continue;
            };
            let mid = publisher
                .pc
                .rtp_transceiver(RTCRtpTransceiverId::from(track.receiver_id))
                .and_then(|t| t.mid().clone());
            tracing::info!(participant = %publisher.participant, %track_id, ?active, "encodings wanted");
            publisher.sink.deliver(MediaEvent::EncodingsWanted {
                track_id,
                mid,
                active,
            });
        }
        // Ticks only while someone is here (an empty shard sleeps).
        encoding_demands.next_tick = (!peers.is_empty()).then_some(now + DEMAND_TICK);
    }
}
