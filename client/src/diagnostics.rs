//! Diagnostics a test (or someone debugging a bot) reaches for: holding
//! answers back, the handle of a remote track to send RTCP on, per-sequence
//! arrival counts, the socket tap, and RTCP feedback about what we publish.
//! Public rather than behind a feature: none of it costs anything unless
//! used, and a feature would split the crate's API between its users.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use webrtc::media_stream::track_remote::TrackRemote;

use crate::socket_tap::SocketTap;
use crate::{Client, MediaKind};

impl Client {
    // ----- test instrumentation (see `MediaOptions`) -----

    /// While on, answers to server offers are computed and applied locally but
    /// kept back (see [`Client::take_held_answer`]) instead of being sent.
    pub fn set_hold_answers(&self, hold: bool) -> Result<()> {
        self.media()?
            .shared
            .hold_answers
            .store(hold, Ordering::SeqCst);
        Ok(())
    }

    /// Waits for an answer held back by [`Client::set_hold_answers`].
    pub async fn take_held_answer(&self, timeout: Duration) -> Result<String> {
        self.wait_media("a held-back answer", timeout, |c| {
            c.media
                .as_ref()
                .is_some_and(|m| !m.shared.held_answers.lock().unwrap().is_empty())
        })
        .await?;
        self.media()?
            .shared
            .held_answers
            .lock()
            .unwrap()
            .pop_front()
            .ok_or_else(|| anyhow!("{}: held answer vanished", self.label))
    }

    /// The index (into [`Client::remote_tracks`]) of the newest live track
    /// from `participant` of `kind`.
    fn live_track_index(&self, participant: &str, kind: MediaKind) -> Option<usize> {
        self.remote_tracks()
            .iter()
            .enumerate()
            .rev()
            .find(|(_, t)| {
                t.stream_id == participant && t.kind == Some(kind) && t.packets > 0 && !t.ended
            })
            .map(|(i, _)| i)
    }

    /// Handle and SSRC of the newest live track from `participant`/`kind`.
    pub fn remote_track_handle(
        &self,
        participant: &str,
        kind: MediaKind,
    ) -> Result<(Arc<dyn TrackRemote>, u32)> {
        let idx = self.live_track_index(participant, kind).ok_or_else(|| {
            anyhow!(
                "{}: no live {kind:?} track from {participant}; {}",
                self.label,
                self.media_report()
            )
        })?;
        let shared = &self.media()?.shared;
        let ssrc = shared.tracks.lock().unwrap()[idx]
            .ssrc
            .ok_or_else(|| anyhow!("{}: track without SSRC", self.label))?;
        let handle = Arc::clone(&shared.track_extra.lock().unwrap()[idx].handle);
        Ok((handle, ssrc))
    }

    /// Sends RTCP (PLI, NACK, ...) about the newest live track from
    /// `participant`/`kind`, as that track's receiver. Returns the SSRC.
    pub async fn send_rtcp_on_track(
        &self,
        participant: &str,
        kind: MediaKind,
        packets: Vec<Box<dyn rtc::rtcp::Packet>>,
    ) -> Result<()> {
        let (handle, _) = self.remote_track_handle(participant, kind)?;
        handle
            .write_rtcp(packets)
            .await
            .map_err(|e| anyhow!("{}: write_rtcp: {e}", self.label))
    }

    /// How many times `seq` reached the newest live track from
    /// `participant`/`kind` (after SRTP, i.e. what the application sees).
    pub fn track_seq_count(&self, participant: &str, kind: MediaKind, seq: u16) -> u32 {
        let (Some(idx), Some(m)) = (self.live_track_index(participant, kind), &self.media) else {
            return 0;
        };
        m.shared.track_extra.lock().unwrap()[idx]
            .seq_counts
            .get(&seq)
            .copied()
            .unwrap_or(0)
    }

    /// The last (up to 200) sequence numbers that reached that track.
    pub fn recent_track_seqs(&self, participant: &str, kind: MediaKind) -> Vec<u16> {
        let (Some(idx), Some(m)) = (self.live_track_index(participant, kind), &self.media) else {
            return Vec::new();
        };
        m.shared.track_extra.lock().unwrap()[idx]
            .recent_seqs
            .iter()
            .copied()
            .collect()
    }

    /// The socket tap, when joined with `MediaOptions::socket_tap`.
    pub fn socket_tap(&self) -> Option<Arc<SocketTap>> {
        self.media.as_ref().and_then(|m| m.tap.clone())
    }

    /// `(PLIs, NACK packets)` received about our published video SSRC (needs
    /// `MediaOptions::rtcp_to_app`).
    pub fn publisher_feedback(&self) -> (u64, u64) {
        self.media
            .as_ref()
            .map(|m| {
                (
                    m.shared.feedback.plis.load(Ordering::SeqCst),
                    m.shared.feedback.nacks.load(Ordering::SeqCst),
                )
            })
            .unwrap_or((0, 0))
    }
}
