//! Active speakers per room: publishers' audio levels go into the room's
//! observer (`active_speaker`), and every member hears when its answer
//! changes. A room lives on one shard, so its members' sinks are all here;
//! each sink leads to the member's session wherever its WebSocket is.

use super::*;
use crate::active_speaker::audio_level;
use rtc::sdp::extmap::AUDIO_LEVEL_URI;

impl Router {
    /// Feeds an audio packet's level (RFC 6464 header extension) to its
    /// room's observer; video, and audio without the extension, pass by.
    pub(super) fn observe_audio_level(
        &mut self,
        conn: ConnKey,
        key: TrackKey,
        packet: &rtp::Packet,
        now: Instant,
    ) {
        let Some(track) = self.tracks.get(&key) else {
            return;
        };
        if track.is_video() {
            return;
        }
        let Some(&(_, id)) = track
            .extensions
            .iter()
            .find(|(uri, _)| uri == AUDIO_LEVEL_URI)
        else {
            return;
        };
        let (Some(level), Some(publisher)) = (audio_level(packet, id), self.peers.get(&conn))
        else {
            return;
        };
        let observer = match self.speakers.get_mut(&publisher.room) {
            Some(observer) => observer,
            None => self.speakers.entry(publisher.room.clone()).or_default(),
        };
        observer.observe(&publisher.participant, level, now);
    }

    /// A participant left its room: it stops counting at once.
    pub(super) fn forget_speaker(&mut self, room: &str, participant: &str, now: Instant) {
        if let Some(observer) = self.speakers.get_mut(room) {
            observer.remove(participant, now);
        }
    }

    /// Tells a participant who joined a room where someone already speaks.
    pub(super) fn tell_current_speakers(&self, conn: ConnKey) {
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        if let Some(observer) = self.speakers.get(&peer.room) {
            if !observer.current().is_empty() {
                peer.sink.deliver(MediaEvent::Speakers {
                    participants: observer.current().to_vec(),
                });
            }
        }
    }

    /// Runs the observers that are due and tells every member of a room
    /// whose speakers changed. Observers of rooms gone quiet are dropped.
    pub(super) fn report_speakers(&mut self, now: Instant) {
        let Router {
            speakers,
            rooms,
            peers,
            ..
        } = self;
        speakers.retain(|room, observer| {
            if let Some(participants) = observer.poll(now) {
                tracing::debug!(%room, ?participants, "active speakers");
                for member in rooms.get(room).into_iter().flatten() {
                    if let Some(peer) = peers.get(member) {
                        peer.sink.deliver(MediaEvent::Speakers {
                            participants: participants.clone(),
                        });
                    }
                }
            }
            !observer.is_idle() && rooms.contains_key(room)
        });
    }
}
