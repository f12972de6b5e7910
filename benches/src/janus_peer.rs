//! The load generator's WebRTC endpoint for Janus, whose VideoRoom
//! signaling (HTTP, one peer connection per handle, no trickle) the caller
//! drives: create an offer or answer one, then wait for gathering. Built from
//! `noom_client`'s pieces (the same peer connection setup, synthetic tracks
//! and publishing loops as Noom's participants); the Noom side uses
//! `noom_client::Client` itself (see [`crate::noom`]).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use rtc::rtp;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription,
};

use noom_client::peer_setup::{add_local_tracks, build_peer_connection, LocalTrack, PeerSetup};
use noom_client::rtp_synth::{publish_audio, publish_video, random_u32, PayloadTypes, SendGate};
use noom_client::{MediaKind, MediaObserver};

use crate::media::{LoadObserver, MediaProfile, Metrics};
use crate::stamp_socket::StampingUdp;

/// State the peer connection's callbacks and tasks share.
struct Shared {
    label: String,
    observer: Arc<LoadObserver>,
    notify: Notify,
    state: Mutex<RTCPeerConnectionState>,
    ice_state: Mutex<String>,
    gathering_complete: AtomicBool,
    payload_types: PayloadTypes,
}

impl SendGate for Shared {
    fn payload_type(&self, kind: MediaKind) -> Option<u8> {
        let connected = *self.state.lock().unwrap() == RTCPeerConnectionState::Connected;
        self.payload_types.to_send(connected, kind)
    }

    fn on_sent(&self, kind: MediaKind, _header: &rtp::header::Header, _keyframe_start: bool) {
        self.observer.on_sent(kind);
    }
}

struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.shared.gathering_complete.store(true, Ordering::SeqCst);
            self.shared.notify.notify_waiters();
        }
    }

    async fn on_ice_connection_state_change(
        &self,
        state: webrtc::peer_connection::RTCIceConnectionState,
    ) {
        *self.shared.ice_state.lock().unwrap() = state.to_string();
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        *self.shared.state.lock().unwrap() = state;
        if state == RTCPeerConnectionState::Failed {
            self.shared
                .observer
                .metrics()
                .error(format!("{}: peer connection failed", self.shared.label));
        }
        self.shared.notify.notify_waiters();
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        tokio::spawn(read_track(Arc::clone(&self.shared.observer), track));
    }
}

async fn read_track(observer: Arc<LoadObserver>, track: Arc<dyn TrackRemote>) {
    let kind = match track.kind().await {
        rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video => MediaKind::Video,
        _ => MediaKind::Audio,
    };
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(pkt) => observer.on_received(kind, &pkt),
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

/// What one endpoint does.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    pub label: String,
    /// Address to bind and gather on (the veth address for Janus).
    pub bind_ip: IpAddr,
    /// Publish audio and video (else receive only).
    pub publish: bool,
    pub profile: MediaProfile,
}

/// A WebRTC endpoint; the caller drives signaling.
pub struct Peer {
    pub label: String,
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    local: Option<[LocalTrack; 2]>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Peer {
    pub async fn new(opts: PeerOptions, metrics: Arc<Metrics>) -> Result<Peer> {
        let observer = LoadObserver::new(metrics);
        let shared = Arc::new(Shared {
            label: opts.label.clone(),
            observer: Arc::clone(&observer),
            notify: Notify::new(),
            state: Mutex::new(RTCPeerConnectionState::New),
            ice_state: Mutex::new("new".to_owned()),
            gathering_complete: AtomicBool::new(false),
            payload_types: PayloadTypes::default(),
        });
        let setup = PeerSetup {
            bind_ip: opts.bind_ip,
            rtcp_to_app: false,
            udp: Some(Arc::new(StampingUdp {
                recv: observer.recv_stamps(),
            })),
            simulcast: false,
        };
        let pc = build_peer_connection(
            &setup,
            Arc::new(Handler {
                shared: Arc::clone(&shared),
            }),
        )
        .await?;

        let mut tasks = Vec::new();
        let mut local = None;
        if opts.publish {
            let stream = format!("stream-{}", opts.label);
            let ssrcs = (random_u32(), random_u32());
            let [audio, video] = add_local_tracks(&pc, &opts.label, &stream, ssrcs).await?;
            let gate: Arc<dyn SendGate> = shared.clone();
            if opts.profile.audio {
                tasks.push(tokio::spawn(publish_audio(
                    Arc::clone(&gate),
                    Arc::clone(&audio.track),
                    audio.ssrc,
                )));
            }
            tasks.push(tokio::spawn(publish_video(
                gate,
                Arc::clone(&video.track),
                video.ssrc,
                opts.profile,
            )));
            local = Some([audio, video]);
        }
        Ok(Peer {
            label: opts.label,
            pc,
            shared,
            local,
            tasks: Mutex::new(tasks),
        })
    }

    /// Receivers each published packet should reach (for loss).
    pub fn set_fanout(&self, n: u64) {
        self.shared.observer.set_fanout(n);
    }

    /// The moment this participant asked for media (join -> first packet).
    pub fn mark_join(&self) {
        self.shared.observer.mark_join();
    }

    pub fn packets_received(&self) -> u64 {
        self.shared.observer.packets_received()
    }

    /// "peer connection state / ICE state".
    pub fn state(&self) -> String {
        format!(
            "{} / ICE {}",
            self.shared.state.lock().unwrap(),
            self.shared.ice_state.lock().unwrap()
        )
    }

    /// Applies a remote offer; returns our answer (without candidates: see
    /// [`Peer::local_sdp_gathered`]).
    pub async fn answer(&self, offer_sdp: &str) -> Result<String> {
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned()).context("parse offer")?;
        self.pc
            .set_remote_description(offer)
            .await
            .context("set_remote_description(offer)")?;
        let answer = self.pc.create_answer(None).await.context("create_answer")?;
        self.pc
            .set_local_description(answer.clone())
            .await
            .context("set_local_description(answer)")?;
        self.refresh_payload_types().await;
        Ok(answer.sdp)
    }

    /// Creates and applies our own offer.
    pub async fn offer(&self) -> Result<String> {
        let offer = self.pc.create_offer(None).await.context("create_offer")?;
        self.pc
            .set_local_description(offer.clone())
            .await
            .context("set_local_description(offer)")?;
        Ok(offer.sdp)
    }

    pub async fn apply_answer(&self, sdp: &str) -> Result<()> {
        let answer = RTCSessionDescription::answer(sdp.to_owned()).context("parse answer")?;
        self.pc
            .set_remote_description(answer)
            .await
            .context("set_remote_description(answer)")?;
        self.refresh_payload_types().await;
        Ok(())
    }

    /// Our current local description once ICE gathering is complete (Janus
    /// is not sent trickled candidates).
    pub async fn local_sdp_gathered(&self, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            if self.shared.gathering_complete.load(Ordering::SeqCst) {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break; // use what we have
            }
        }
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| anyhow!("{}: no local description", self.label))
    }

    async fn refresh_payload_types(&self) {
        for t in self.local.iter().flatten() {
            if let Ok(pt) = t.negotiated_payload_type().await {
                self.shared.payload_types.set(t.kind, pt);
            }
        }
    }

    /// Waits until the connection is up.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            let state = *self.shared.state.lock().unwrap();
            match state {
                RTCPeerConnectionState::Connected => return Ok(()),
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    return Err(anyhow!("{}: connection {state}", self.label))
                }
                _ => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(anyhow!(
                    "{}: not connected after {timeout:?} (state {state})",
                    self.label
                ));
            }
        }
    }

    pub async fn close(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        let _ = self.pc.close().await;
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}
