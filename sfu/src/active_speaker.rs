//! Who is speaking in a room, from the audio levels publishers put in their
//! packets (RFC 6464), in the spirit of LiveKit's audio level observer: a
//! participant speaks while a large share of the last ~400 ms of its audio
//! was louder than a speech threshold; speakers are ordered by a smoothed
//! loudness, and the loudest keeps the lead until someone is clearly louder.
//!
//! Sans-IO: time is an input, so the behaviour is tested deterministically.
//! The observer only says when its answer changed; the router tells the room.

use crate::events::ParticipantId;
use rtc::rtp;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The stretch of audio each decision looks at. Long enough to ride over
/// the gaps between syllables, short enough to follow a change within a
/// few hundred milliseconds.
pub const WINDOW: Duration = Duration::from_millis(400);
/// How often the set is recomputed while anyone sends audio (a few Opus
/// packets: each evaluation is cheap, and a change is seen within this).
pub const EVALUATION_INTERVAL: Duration = Duration::from_millis(50);
/// Levels are -dBov (0 loudest, 127 silence): -40 dBov or louder counts as
/// speech (LiveKit uses -35, mediasoup's observer -80 by default; a normal
/// voice on a laptop microphone sits around -20 to -35 dBov).
pub const SPEECH_LEVEL: u8 = 40;
/// Share of the window (percent) that must be speech to become a speaker.
pub const SPEECH_SHARE_PERCENT: usize = 40;
/// A speaker stays one this long after its window last met the share, so a
/// pause between words does not make the set flicker (with the window, a
/// silence of about half a second ends a speaker).
pub const LINGER: Duration = Duration::from_millis(200);
/// Packets a window is judged against at least (Opus sends one per 20 ms):
/// a participant's first loud packet alone is not half a window of speech.
const MIN_SAMPLES: usize = 10;
/// Weight of the newest evaluation in the smoothed loudness (a time
/// constant of about 150 ms at one evaluation per 50 ms).
const SMOOTHING: f32 = 0.3;
/// How much louder (dB) a challenger must be to take the lead.
const LEAD_MARGIN: f32 = 3.0;
/// Samples kept per participant: a window's worth at 10 ms packets, so a
/// publisher sending faster cannot grow the queue without bound.
const MAX_SAMPLES: usize = 40;

/// The level (-dBov, 0..=127) of an audio packet, from its RFC 6464 header
/// extension (`extension_id` as negotiated with its publisher).
pub fn audio_level(packet: &rtp::Packet, extension_id: u8) -> Option<u8> {
    let payload = packet.header.get_extension(extension_id)?;
    // First byte: V (voice activity, bit 7) and the level (bits 0-6).
    payload.first().map(|b| b & 0x7f)
}

#[derive(Debug, Default)]
struct Talker {
    /// (arrival, level) of the packets within the window.
    samples: VecDeque<(Instant, u8)>,
    /// Smoothed loudness (dB above silence, weighted by the speech share).
    loudness: f32,
    /// Counts as a speaker until then.
    active_until: Option<Instant>,
}

impl Talker {
    fn prune(&mut self, now: Instant) {
        while let Some(&(at, _)) = self.samples.front() {
            if now.saturating_duration_since(at) <= WINDOW {
                break;
            }
            self.samples.pop_front();
        }
    }

    /// Updates loudness and activity from the window ending at `now`.
    fn evaluate(&mut self, now: Instant) {
        self.prune(now);
        let loud: Vec<u8> = self
            .samples
            .iter()
            .map(|&(_, level)| level)
            .filter(|&level| level <= SPEECH_LEVEL)
            .collect();
        let judged = self.samples.len().max(MIN_SAMPLES);
        let share = loud.len() as f32 / judged as f32;
        let mean_loud = if loud.is_empty() {
            0.0
        } else {
            loud.iter().map(|&l| 127.0 - l as f32).sum::<f32>() / loud.len() as f32
        };
        self.loudness += SMOOTHING * (mean_loud * share - self.loudness);
        if loud.len() * 100 >= judged * SPEECH_SHARE_PERCENT {
            self.active_until = Some(now + LINGER);
        }
    }

    fn is_active(&self, now: Instant) -> bool {
        self.active_until.is_some_and(|until| until > now)
    }
}

/// The active speakers of one room.
#[derive(Debug, Default)]
pub struct ActiveSpeakers {
    talkers: HashMap<ParticipantId, Talker>,
    /// The list last reported, loudest first.
    current: Vec<ParticipantId>,
    next_evaluation: Option<Instant>,
}

impl ActiveSpeakers {
    /// One audio packet's level from `participant`.
    pub fn observe(&mut self, participant: &str, level: u8, now: Instant) {
        let talker = match self.talkers.get_mut(participant) {
            Some(talker) => talker,
            None => self.talkers.entry(participant.to_owned()).or_default(),
        };
        if talker.samples.len() >= MAX_SAMPLES {
            talker.samples.pop_front();
        }
        talker.samples.push_back((now, level.min(127)));
        self.next_evaluation
            .get_or_insert(now + EVALUATION_INTERVAL);
    }

    /// The participant left the room: forget it (the next evaluation, due
    /// at once, reports the set without it).
    pub fn remove(&mut self, participant: &str, now: Instant) {
        if self.talkers.remove(participant).is_some()
            || self.current.iter().any(|p| p == participant)
        {
            self.next_evaluation = Some(now);
        }
    }

    /// The speakers last reported, loudest first.
    pub fn current(&self) -> &[ParticipantId] {
        &self.current
    }

    /// When [`poll`](Self::poll) has work; `None` while the room is silent
    /// and nobody is reported.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_evaluation
    }

    /// Whether nothing is tracked any more (the room's observer can go).
    pub fn is_idle(&self) -> bool {
        self.talkers.is_empty() && self.current.is_empty()
    }

    /// Re-evaluates when due; the new list (loudest first) when the set of
    /// speakers or the loudest one changed.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<ParticipantId>> {
        if self.next_evaluation.is_none_or(|due| due > now) {
            return None;
        }
        for talker in self.talkers.values_mut() {
            talker.evaluate(now);
        }
        self.talkers
            .retain(|_, t| !t.samples.is_empty() || t.is_active(now));
        let mut speakers: Vec<(&ParticipantId, f32)> = self
            .talkers
            .iter()
            .filter(|(_, t)| t.is_active(now))
            .map(|(id, t)| (id, t.loudness))
            .collect();
        speakers.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        // The lead changes hands only to someone clearly louder.
        if let (Some(leader), Some(&(_, top))) = (self.current.first(), speakers.first()) {
            if let Some(i) = speakers.iter().position(|(id, _)| *id == leader) {
                if speakers[i].1 + LEAD_MARGIN > top {
                    let kept = speakers.remove(i);
                    speakers.insert(0, kept);
                }
            }
        }
        let speakers: Vec<ParticipantId> = speakers.into_iter().map(|(id, _)| id.clone()).collect();
        self.next_evaluation = (!self.talkers.is_empty()).then_some(now + EVALUATION_INTERVAL);
        let same_set = speakers.len() == self.current.len()
            && speakers.iter().all(|s| self.current.contains(s));
        if same_set && speakers.first() == self.current.first() {
            return None;
        }
        self.current = speakers.clone();
        Some(speakers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET: Duration = Duration::from_millis(20);
    const LOUD: u8 = 20;
    const QUIET: u8 = 127;

    /// Feeds 20 ms packets for `duration` at the given levels (one per
    /// participant) and polls as a shard would; every reported list with
    /// its time since `start`.
    fn run(
        speakers: &mut ActiveSpeakers,
        start: Instant,
        from: Duration,
        duration: Duration,
        levels: &[(&str, u8)],
    ) -> Vec<(Duration, Vec<ParticipantId>)> {
        let mut reports = Vec::new();
        let mut t = from;
        while t < from + duration {
            let now = start + t;
            for (id, level) in levels {
                speakers.observe(id, *level, now);
            }
            if let Some(list) = speakers.poll(now) {
                reports.push((t, list));
            }
            t += PACKET;
        }
        reports
    }

    fn ids(list: &[&str]) -> Vec<ParticipantId> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_the_level_from_the_header_extension() {
        let mut packet = rtp::Packet::default();
        packet
            .header
            .set_extension(1, bytes::Bytes::from_static(&[0x80 | 33]))
            .unwrap();
        assert_eq!(audio_level(&packet, 1), Some(33));
        assert_eq!(audio_level(&packet, 2), None);
    }

    #[test]
    fn a_speaker_is_reported_within_250_ms_and_silence_is_not() {
        let mut s = ActiveSpeakers::default();
        let start = Instant::now();
        let reports = run(
            &mut s,
            start,
            Duration::ZERO,
            Duration::from_secs(2),
            &[("alice", LOUD), ("bob", QUIET)],
        );
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].1, ids(&["alice"]));
        assert!(reports[0].0 <= Duration::from_millis(250), "{reports:?}");
    }

    #[test]
    fn the_set_follows_a_change_of_speaker_within_half_a_second() {
        let mut s = ActiveSpeakers::default();
        let start = Instant::now();
        run(
            &mut s,
            start,
            Duration::ZERO,
            Duration::from_secs(2),
            &[("alice", LOUD), ("bob", QUIET)],
        );
        let changed_at = Duration::from_secs(2);
        let reports = run(
            &mut s,
            start,
            changed_at,
            Duration::from_secs(2),
            &[("alice", QUIET), ("bob", LOUD)],
        );
        let lead = reports
            .iter()
            .find(|(_, l)| l.first().map(String::as_str) == Some("bob"))
            .expect("bob leads");
        assert!(
            lead.0 - changed_at <= Duration::from_millis(400),
            "{reports:?}"
        );
        let (alone_at, last) = reports.last().unwrap();
        assert_eq!(last, &ids(&["bob"]));
        assert!(
            *alone_at - changed_at <= Duration::from_millis(500),
            "{reports:?}"
        );
    }

    #[test]
    fn short_noises_and_pauses_between_words_change_nothing() {
        let mut s = ActiveSpeakers::default();
        let start = Instant::now();
        let mut reports = Vec::new();
        // Alice talks in 600 ms bursts with 200 ms pauses; bob coughs 60 ms
        // once a second.
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(5) {
            let now = start + t;
            let ms = t.as_millis();
            s.observe("alice", if ms % 800 < 600 { LOUD } else { QUIET }, now);
            s.observe("bob", if ms % 1000 < 60 { 10 } else { QUIET }, now);
            if let Some(list) = s.poll(now) {
                reports.push((t, list));
            }
            t += PACKET;
        }
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].1, ids(&["alice"]));
    }

    #[test]
    fn two_speakers_loudest_first_and_the_lead_needs_a_margin() {
        let mut s = ActiveSpeakers::default();
        let start = Instant::now();
        let reports = run(
            &mut s,
            start,
            Duration::ZERO,
            Duration::from_secs(1),
            &[("alice", 30), ("bob", 20)],
        );
        assert_eq!(reports.last().unwrap().1, ids(&["bob", "alice"]));
        // Alice becomes slightly louder than bob: bob keeps the lead.
        let reports = run(
            &mut s,
            start,
            Duration::from_secs(1),
            Duration::from_secs(1),
            &[("alice", 19), ("bob", 20)],
        );
        assert!(reports.is_empty(), "{reports:?}");
        // Clearly louder: alice leads.
        let reports = run(
            &mut s,
            start,
            Duration::from_secs(2),
            Duration::from_secs(1),
            &[("alice", 5), ("bob", 20)],
        );
        assert_eq!(reports.last().unwrap().1, ids(&["alice", "bob"]));
    }

    #[test]
    fn a_speaker_who_leaves_is_dropped_at_once_and_silence_goes_idle() {
        let mut s = ActiveSpeakers::default();
        let start = Instant::now();
        run(
            &mut s,
            start,
            Duration::ZERO,
            Duration::from_secs(1),
            &[("alice", LOUD)],
        );
        assert_eq!(s.current(), ids(&["alice"]).as_slice());
        let now = start + Duration::from_secs(1);
        s.remove("alice", now);
        assert_eq!(s.next_deadline(), Some(now));
        assert_eq!(s.poll(now), Some(vec![]));
        assert!(s.is_idle());
        assert_eq!(s.next_deadline(), None);
        assert_eq!(s.poll(now + Duration::from_secs(1)), None);
    }

    #[test]
    fn levels_and_queues_stay_bounded() {
        let mut s = ActiveSpeakers::default();
        let now = Instant::now();
        for _ in 0..10_000 {
            s.observe("alice", 255, now);
        }
        assert!(s.talkers["alice"].samples.len() <= MAX_SAMPLES);
        assert!(s.talkers["alice"].samples.iter().all(|&(_, l)| l == 127));
    }
}
