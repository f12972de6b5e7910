//! The WebRTC side of a joined participant: a peer connection driven by the
//! server's offers (the contract's server-offers model). It answers every
//! offer, trickles candidates over the WebSocket once the first answer is
//! out, publishes synthetic audio and video into the `recvonly` m-sections
//! of the offer, and records what it receives (see [`crate::receive`]).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCIceGatheringState,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription,
};

use crate::media_state::{MediaHooks, MediaOptions, MediaShared};
use crate::peer_setup::{
    add_local_tracks, add_tracks, build_peer_connection, LocalTrack, PeerSetup,
};
use crate::receive::{read_data_channel, read_remote_track};
use crate::rtcp_feedback::count_local_rtcp;
use crate::rtp_synth::{publish_audio, publish_video, random_u32, MediaProfile, SendGate};
use crate::sdp::{parse_sections, rewrite_candidates, strip_candidates};
use crate::simulcast_publish::{publish_simulcast_video, LAYERS};
use crate::socket_tap::{SocketTap, UdpWrap};

struct Handler {
    shared: Arc<MediaShared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => self.shared.local_candidate(Some(init.candidate)),
            Err(e) => self
                .shared
                .error(format!("cannot serialise local candidate: {e}")),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.shared.local_candidate(None);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(client = %self.shared.label, "peer connection state {state}");
        *self.shared.conn_state.lock().unwrap() = state;
        if state == RTCPeerConnectionState::Connected {
            self.shared
                .connected_at
                .lock()
                .unwrap()
                .get_or_insert_with(Instant::now);
        }
        self.shared
            .conn_history
            .lock()
            .unwrap()
            .push(state.to_string());
        self.shared.notify.notify_waiters();
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Runs on the connection's driver: do the work in a task.
        let shared = Arc::clone(&self.shared);
        tokio::spawn(read_remote_track(shared, track));
    }

    async fn on_data_channel(&self, dc: Arc<dyn webrtc::data_channel::DataChannel>) {
        let shared = Arc::clone(&self.shared);
        tokio::spawn(read_data_channel(shared, dc));
    }
}

/// What the WebSocket reader routes to the peer connection.
pub(crate) enum Signal {
    Offer(String),
    Candidate(Value),
}

/// Both ends of the channel the WebSocket reader routes [`Signal`]s into.
pub(crate) type Signals = (
    mpsc::UnboundedSender<Signal>,
    mpsc::UnboundedReceiver<Signal>,
);

/// A publishing and subscribing WebRTC endpoint driven by server offers.
pub struct MediaPeer {
    label: String,
    pc: Arc<dyn PeerConnection>,
    pub(crate) shared: Arc<MediaShared>,
    pub(crate) signal_tx: mpsc::UnboundedSender<Signal>,
    tasks: Vec<JoinHandle<()>>,
    pub audio_ssrc: u32,
    pub video_ssrc: u32,
    pub local_stream_id: String,
    pub(crate) tap: Option<Arc<SocketTap>>,
}

impl MediaPeer {
    /// A peer connection whose answers and candidates go out on `ws_out`.
    pub(crate) async fn new(
        label: &str,
        ws_out: mpsc::UnboundedSender<Message>,
        opts: MediaOptions,
        hooks: MediaHooks,
    ) -> Result<MediaPeer> {
        Self::with_signals(label, ws_out, opts, hooks, mpsc::unbounded_channel()).await
    }

    /// [`MediaPeer::new`] fed by a signal channel that may already hold
    /// the server's offer (the one that followed a move's `joined`).
    pub(crate) async fn with_signals(
        label: &str,
        ws_out: mpsc::UnboundedSender<Message>,
        opts: MediaOptions,
        hooks: MediaHooks,
        (signal_tx, signal_rx): Signals,
    ) -> Result<MediaPeer> {
        let shared = Arc::new(MediaShared::new(label, ws_out, opts, hooks.observer));
        let tap = opts.socket_tap.then(|| Arc::new(SocketTap::default()));
        let udp: Option<Arc<dyn UdpWrap>> = match &tap {
            Some(tap) => Some(Arc::new(Arc::clone(tap))),
            None => hooks.udp,
        };
        let setup = PeerSetup {
            bind_ip: opts.bind_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            rtcp_to_app: opts.rtcp_to_app,
            udp,
            simulcast: opts.simulcast,
        };
        let pc = build_peer_connection(
            &setup,
            Arc::new(Handler {
                shared: Arc::clone(&shared),
            }),
        )
        .await?;

        let (audio_ssrc, video_ssrc) = opts.ssrcs.unwrap_or_else(|| (random_u32(), random_u32()));
        let local_stream_id = format!("local-{label}");
        // Simulcast: the first encoding (q) has `video_ssrc`.
        let simulcast_ssrcs = [video_ssrc, random_u32(), random_u32()];
        let local = if opts.receive_only {
            None
        } else if opts.simulcast {
            let codings: Vec<(&str, u32)> =
                LAYERS.iter().map(|l| l.rid).zip(simulcast_ssrcs).collect();
            Some(add_tracks(&pc, label, &local_stream_id, audio_ssrc, &codings).await?)
        } else {
            Some(add_local_tracks(&pc, label, &local_stream_id, (audio_ssrc, video_ssrc)).await?)
        };

        let mut tasks = Vec::new();
        if let Some([audio, video]) = &local {
            let gate: Arc<dyn SendGate> = shared.clone();
            let profile = opts.profile.unwrap_or_else(MediaProfile::light);
            if profile.audio {
                tasks.push(tokio::spawn(publish_audio(
                    Arc::clone(&gate),
                    Arc::clone(&audio.track),
                    audio_ssrc,
                )));
            }
            if opts.simulcast {
                tasks.push(tokio::spawn(publish_simulcast_video(
                    gate,
                    Arc::clone(&video.track),
                    Arc::clone(&video.transceiver),
                    simulcast_ssrcs,
                    profile,
                )));
            } else {
                tasks.push(tokio::spawn(publish_video(
                    gate,
                    Arc::clone(&video.track),
                    video_ssrc,
                    profile,
                )));
            }
            if opts.rtcp_to_app {
                for t in [video, audio] {
                    let wake = Arc::clone(&shared);
                    tasks.push(tokio::spawn(count_local_rtcp(
                        Arc::clone(&t.track),
                        t.ssrc,
                        Arc::clone(&shared.feedback),
                        move || wake.notify.notify_waiters(),
                    )));
                }
            }
        }
        tasks.push(tokio::spawn(negotiation_loop(
            Arc::clone(&pc),
            Arc::clone(&shared),
            signal_rx,
            local,
        )));

        Ok(MediaPeer {
            label: label.to_owned(),
            pc,
            shared,
            signal_tx,
            tasks,
            audio_ssrc,
            video_ssrc,
            local_stream_id,
            tap,
        })
    }

    pub(crate) async fn close(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Err(e) = self.pc.close().await {
            tracing::warn!(client = %self.label, "closing peer connection: {e}");
        }
    }
}

impl Drop for MediaPeer {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

async fn negotiation_loop(
    pc: Arc<dyn PeerConnection>,
    shared: Arc<MediaShared>,
    mut rx: mpsc::UnboundedReceiver<Signal>,
    local: Option<[LocalTrack; 2]>,
) {
    let mut early_candidates: Vec<Value> = Vec::new();
    let mut have_remote = false;
    let mut n = 0u64;
    while let Some(sig) = rx.recv().await {
        match sig {
            Signal::Offer(sdp) => {
                n += 1;
                match apply_offer(&pc, &shared, &sdp, n, local.as_ref()).await {
                    Ok(()) => {
                        have_remote = true;
                        for c in early_candidates.drain(..) {
                            add_remote_candidate(&pc, &shared, &c).await;
                        }
                    }
                    Err(e) => shared.error(format!("applying server offer #{n}: {e:#}")),
                }
                shared.offers_applied.fetch_add(1, Ordering::SeqCst);
                shared.notify.notify_waiters();
            }
            Signal::Candidate(c) => {
                if have_remote {
                    add_remote_candidate(&pc, &shared, &c).await;
                } else {
                    early_candidates.push(c);
                }
            }
        }
    }
}

async fn add_remote_candidate(pc: &Arc<dyn PeerConnection>, shared: &MediaShared, c: &Value) {
    if c.is_null() {
        return; // end of the server's candidates
    }
    let Some(candidate) = c["candidate"].as_str() else {
        shared.error(format!(
            "server `candidate` message without a candidate string: {c}"
        ));
        return;
    };
    if candidate.is_empty() {
        return;
    }
    let candidate = rewrite_candidates(candidate, shared.opts.candidate_rewrite);
    let candidate = candidate.as_str();
    let init = RTCIceCandidateInit {
        candidate: candidate.to_owned(),
        sdp_mid: c["sdpMid"].as_str().map(str::to_owned),
        sdp_mline_index: c["sdpMLineIndex"].as_u64().map(|v| v as u16),
        ..Default::default()
    };
    if let Err(e) = pc.add_ice_candidate(init).await {
        shared.error(format!("add_ice_candidate({candidate}): {e}"));
    }
}

/// The offer without its simulcast request: this client sends one encoding
/// (unless [`MediaOptions::simulcast`]),
/// and rtc 0.21.1 as answerer mirrors the offered rids into its answer
/// whatever it sends (then the server waits for rid-tagged layers that never
/// come). A client without simulcast support answers as if never asked.
fn without_simulcast(sdp: &str) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    sdp.split(eol)
        .filter(|l| !l.starts_with("a=rid:") && !l.starts_with("a=simulcast:"))
        .collect::<Vec<_>>()
        .join(eol)
}

async fn apply_offer(
    pc: &Arc<dyn PeerConnection>,
    shared: &MediaShared,
    sdp: &str,
    n: u64,
    local: Option<&[LocalTrack; 2]>,
) -> Result<()> {
    let rewrite = shared.opts.candidate_rewrite;
    let offer = rewrite_candidates(sdp, rewrite);
    let offer = if shared.opts.simulcast {
        offer
    } else {
        without_simulcast(&offer)
    };
    let offer = RTCSessionDescription::offer(offer).context("parse offer")?;
    pc.set_remote_description(offer)
        .await
        .context("set_remote_description(offer)")?;
    let answer = pc.create_answer(None).await.context("create_answer")?;
    pc.set_local_description(answer.clone())
        .await
        .context("set_local_description(answer)")?;
    // Recorded once applied and before the answer leaves: from then on the
    // server may forward on the offer's sections, and a check of "the last
    // offer" against the media that arrives must see this one.
    *shared.last_offer.lock().unwrap() = Some(sdp.to_owned());
    if shared.hold_answers.load(Ordering::SeqCst) {
        shared
            .held_answers
            .lock()
            .unwrap()
            .push_back(answer.sdp.clone());
    } else {
        shared
            .ws_out
            .send(Message::text(
                json!({"type": "answer", "sdp": strip_candidates(&answer.sdp, rewrite)})
                    .to_string(),
            ))
            .map_err(|_| anyhow!("WebSocket writer is gone"))?;
    }

    let offer_sections = parse_sections(sdp);
    let first_mid = offer_sections
        .iter()
        .find_map(|m| m.mid.clone())
        .unwrap_or_else(|| "0".to_owned());
    shared.open_answer_gate(first_mid);
    *shared.last_answer.lock().unwrap() = Some(answer.sdp.clone());

    // Our publishing transceivers must sit on recvonly sections of the offer,
    // and the answer must send there.
    let answer_sections = parse_sections(&answer.sdp);
    for t in local.into_iter().flatten() {
        let kind = t.kind.sdp_name();
        let mid = t.transceiver.mid().await.context("transceiver mid")?;
        let Some(mid) = mid else {
            bail!(
                "offer #{n} gave our {kind} track no m-section: no {kind} section was \
                 recvonly; offer sections: {}",
                offer_sections
                    .iter()
                    .map(|m| m.short())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let in_offer = offer_sections
            .iter()
            .find(|m| m.mid.as_deref() == Some(mid.as_str()));
        match in_offer {
            Some(m) if m.kind == kind && m.direction == "recvonly" && m.port != 0 => {}
            other => bail!(
                "offer #{n}: our {kind} publishing section mid={mid} should be a live \
                 recvonly {kind} section, but the offer has {:?}",
                other.map(|m| m.short())
            ),
        }
        let in_answer = answer_sections
            .iter()
            .find(|m| m.mid.as_deref() == Some(mid.as_str()));
        if !matches!(in_answer, Some(m) if m.direction == "sendonly" || m.direction == "sendrecv") {
            bail!(
                "answer to offer #{n} does not send on our {kind} section mid={mid}: {:?}",
                in_answer.map(|m| m.short())
            );
        }
        let pt = t
            .negotiated_payload_type()
            .await
            .with_context(|| format!("offer #{n}"))?;
        shared.payload_types.set(t.kind, pt);
    }
    Ok(())
}
