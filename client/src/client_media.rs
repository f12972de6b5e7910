//! What a [`Client`] knows about its media: remote tracks and their packets,
//! what it sent, the negotiation so far, and waits on any of it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use tokio::time::Instant;
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::media_state::{PacketRecord, RemoteTrackInfo, SentKeyframe};
use crate::sdp::parse_sections;
use crate::{Client, MediaKind};

impl Client {
    pub fn remote_tracks(&self) -> Vec<RemoteTrackInfo> {
        self.media
            .as_ref()
            .map(|m| m.shared.tracks.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Packets received so far on tracks whose stream id is `participant`.
    pub fn packets_from(&self, participant: &str, kind: MediaKind) -> u64 {
        self.remote_tracks()
            .iter()
            .filter(|t| t.stream_id == participant && t.kind == Some(kind))
            .map(|t| t.packets)
            .sum()
    }

    pub fn media_errors(&self) -> Vec<String> {
        self.media
            .as_ref()
            .map(|m| m.shared.errors.lock().unwrap().clone())
            .unwrap_or_default()
    }

    pub fn offers_applied(&self) -> u64 {
        self.media
            .as_ref()
            .map(|m| m.shared.offers_applied.load(Ordering::SeqCst))
            .unwrap_or(0)
    }

    pub fn last_offer_sdp(&self) -> Option<String> {
        self.media
            .as_ref()
            .and_then(|m| m.shared.last_offer.lock().unwrap().clone())
    }

    pub fn last_answer_sdp(&self) -> Option<String> {
        self.media
            .as_ref()
            .and_then(|m| m.shared.last_answer.lock().unwrap().clone())
    }

    pub fn sent_packets(&self) -> (u64, u64) {
        self.media
            .as_ref()
            .map(|m| {
                (
                    m.shared.audio_sent.load(Ordering::Relaxed),
                    m.shared.video_sent.load(Ordering::Relaxed),
                )
            })
            .unwrap_or((0, 0))
    }

    pub fn local_ssrcs(&self) -> Option<(u32, u32)> {
        self.media.as_ref().map(|m| (m.audio_ssrc, m.video_ssrc))
    }

    /// One line describing the media state, for failure messages.
    pub fn media_report(&self) -> String {
        let Some(m) = &self.media else {
            return format!("{}: no peer connection", self.label);
        };
        let s = &m.shared;
        let (a, v) = self.sent_packets();
        format!(
            "{} (id {:?}): pc states {:?}; offers applied {}; sent audio {a} video {v}; \
             remote tracks: {}; media errors: {:?}",
            self.label,
            self.id,
            s.conn_history.lock().unwrap(),
            s.offers_applied.load(Ordering::SeqCst),
            s.tracks
                .lock()
                .unwrap()
                .iter()
                .map(|t| t.short())
                .collect::<Vec<_>>()
                .join(" "),
            s.errors.lock().unwrap(),
        )
    }

    /// Waits until `cond` holds on this client's media state (checked on
    /// every recorded event: track, packet, state change, offer applied; and
    /// at least every 200 ms for conditions on state that does not notify,
    /// such as the sent-packet counters).
    pub async fn wait_media<F>(&self, what: &str, timeout: Duration, cond: F) -> Result<()>
    where
        F: Fn(&Client) -> bool,
    {
        let shared = Arc::clone(&self.media()?.shared);
        let deadline = Instant::now() + timeout;
        loop {
            let notified = shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond(self) {
                return Ok(());
            }
            let recheck = std::cmp::min(deadline, Instant::now() + Duration::from_millis(200));
            if tokio::time::timeout_at(recheck, notified).await.is_err() && recheck >= deadline {
                if cond(self) {
                    return Ok(());
                }
                bail!(
                    "{}: timed out after {timeout:?} waiting for {what}; media state: {}",
                    self.label,
                    self.media_report()
                );
            }
        }
    }

    /// Waits until at least `n` remote tracks have received packets.
    pub async fn wait_for_tracks(&self, n: usize, timeout: Duration) -> Result<()> {
        self.wait_media(&format!("{n} remote tracks with packets"), timeout, |c| {
            c.remote_tracks()
                .iter()
                .filter(|t| t.packets > 0 && !t.ended)
                .count()
                >= n
        })
        .await
    }

    /// Waits until the packet count from `participant`/`kind` exceeds `than`.
    pub async fn wait_packets_above(
        &self,
        participant: &str,
        kind: MediaKind,
        than: u64,
        timeout: Duration,
    ) -> Result<u64> {
        self.wait_media(
            &format!("more than {than} {kind:?} packets from {participant}"),
            timeout,
            |c| c.packets_from(participant, kind) > than,
        )
        .await?;
        Ok(self.packets_from(participant, kind))
    }

    /// Waits until no packet from `participant` (any kind) has arrived for
    /// `quiet`, giving up after `timeout`.
    pub async fn wait_packets_stop(
        &self,
        participant: &str,
        quiet: Duration,
        timeout: Duration,
    ) -> Result<()> {
        let total = |c: &Client| {
            c.packets_from(participant, MediaKind::Audio)
                + c.packets_from(participant, MediaKind::Video)
        };
        let deadline = Instant::now() + timeout;
        let mut last = total(self);
        let mut since = Instant::now();
        loop {
            if Instant::now() >= since + quiet {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: packets from {participant} kept arriving for {timeout:?} \
                     (count now {last}); media state: {}",
                    self.label,
                    self.media_report()
                );
            }
            // An observation window, not synchronisation: absence of packets
            // can only be seen over time.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = total(self);
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
    }

    /// Waits until an offer satisfying `cond` has been applied and answered;
    /// returns its SDP.
    pub async fn wait_offer_applied<F>(
        &self,
        what: &str,
        timeout: Duration,
        cond: F,
    ) -> Result<String>
    where
        F: Fn(&str) -> bool,
    {
        self.wait_media(what, timeout, |c| {
            c.last_offer_sdp().map(|s| cond(&s)).unwrap_or(false)
        })
        .await
        .map_err(|e| {
            anyhow!(
                "{e:#}\n    last offer: {}",
                self.last_offer_sdp()
                    .map(|s| parse_sections(&s)
                        .iter()
                        .map(|m| m.short())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_else(|| "none".to_owned())
            )
        })?;
        Ok(self.last_offer_sdp().unwrap_or_default())
    }

    /// Indices of the remote tracks from `participant`/`kind`, oldest first.
    fn track_indices(&self, participant: &str, kind: MediaKind) -> Vec<usize> {
        self.remote_tracks()
            .iter()
            .enumerate()
            .filter(|(_, t)| t.stream_id == participant && t.kind == Some(kind))
            .map(|(i, _)| i)
            .collect()
    }

    /// Every remote track (ended ones too) from `participant`/`kind`.
    pub fn tracks_from(&self, participant: &str, kind: MediaKind) -> Vec<RemoteTrackInfo> {
        self.remote_tracks()
            .into_iter()
            .filter(|t| t.stream_id == participant && t.kind == Some(kind))
            .collect()
    }

    /// The packets that reached the first remote track from
    /// `participant`/`kind`, in arrival order (up to `TRACK_LOG_CAP`).
    pub fn track_log(&self, participant: &str, kind: MediaKind) -> Vec<PacketRecord> {
        let (Some(&idx), Some(m)) = (self.track_indices(participant, kind).first(), &self.media)
        else {
            return Vec::new();
        };
        m.shared.track_extra.lock().unwrap()[idx].log.clone()
    }

    /// The keyframes this client's current peer connection published.
    pub fn keyframes_sent(&self) -> Vec<SentKeyframe> {
        self.media
            .as_ref()
            .map(|m| m.shared.keyframes_sent.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// When the current peer connection first reached `connected`.
    pub fn connected_at(&self) -> Option<Instant> {
        self.media
            .as_ref()
            .and_then(|m| *m.shared.connected_at.lock().unwrap())
    }

    /// The peer connection's state (`New` without one).
    pub fn connection_state(&self) -> RTCPeerConnectionState {
        self.media
            .as_ref()
            .map(|m| *m.shared.conn_state.lock().unwrap())
            .unwrap_or(RTCPeerConnectionState::New)
    }

    /// Waits until the peer connection is `connected`; fails at once when
    /// it failed or closed.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        self.wait_media("a connected peer connection", timeout, |c| {
            matches!(
                c.connection_state(),
                RTCPeerConnectionState::Connected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        })
        .await?;
        match self.connection_state() {
            RTCPeerConnectionState::Connected => Ok(()),
            state => bail!("{}: peer connection {state}", self.label),
        }
    }
}
