//! One WebRTC endpoint of the load generator, on the async `webrtc` crate
//! (as Noom's own test client): it publishes synthetic VP8-like video and
//! Opus-sized audio, receives whatever the server forwards, and stamps
//! packets on its socket (see [`crate::media`]). Signaling is the caller's:
//! Noom's WebSocket contract or Janus' HTTP API.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit, RtpTransceiver};

use crate::media::{
    audio_payload, random_u32, read_stamp, rtp_id, video_payload, FrameSchedule, MediaProfile,
    Metrics, RecvStamps, SendStamps, AUDIO_INTERVAL,
};

/// How long a join may take to reach `connected` before it is retried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

pub fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// State the peer connection's callbacks and tasks share.
struct Shared {
    label: String,
    metrics: Arc<Metrics>,
    recv_stamps: Arc<RecvStamps>,
    notify: Notify,
    state: Mutex<RTCPeerConnectionState>,
    ice_state: Mutex<String>,
    gathering_complete: AtomicBool,
    /// Local candidates for a trickling caller (None = end of candidates).
    candidates: mpsc::UnboundedSender<Option<String>>,
    /// When this participant asked to receive (join); first packet after it
    /// is recorded once.
    join_at: Mutex<Option<Instant>>,
    first_seen: AtomicBool,
    audio_pt: AtomicU32,
    video_pt: AtomicU32,
    /// Receivers each published packet should reach.
    fanout: AtomicU64,
    packets_received: AtomicU64,
}

impl Shared {
    fn connected(&self) -> bool {
        *self.state.lock().unwrap() == RTCPeerConnectionState::Connected
    }
}

struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.shared.candidates.send(Some(init.candidate));
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.shared.gathering_complete.store(true, Ordering::SeqCst);
            let _ = self.shared.candidates.send(None);
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
                .metrics
                .error(format!("{}: peer connection failed", self.shared.label));
        }
        self.shared.notify.notify_waiters();
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        tokio::spawn(read_track(Arc::clone(&self.shared), track));
    }
}

async fn read_track(shared: Arc<Shared>, track: Arc<dyn TrackRemote>) {
    let video = track.kind().await == RtpCodecKind::Video;
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                shared.packets_received.fetch_add(1, Ordering::Relaxed);
                let arrived = shared
                    .recv_stamps
                    .take(pkt.header.ssrc, pkt.header.sequence_number);
                let sent =
                    read_stamp(&pkt.payload).and_then(|(s, q)| SendStamps::global().get(s, q));
                shared.metrics.on_received(video, sent, arrived);
                if !shared.first_seen.swap(true, Ordering::Relaxed) {
                    if let Some(at) = *shared.join_at.lock().unwrap() {
                        shared.metrics.on_first_packet(at.elapsed());
                    }
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

/// What one endpoint does.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    pub label: String,
    /// Address to bind and gather on (127.0.0.1 for Noom, the veth address
    /// for Janus).
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
    transceivers: Option<(Arc<dyn RtpTransceiver>, Arc<dyn RtpTransceiver>)>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    pub audio_ssrc: u32,
    pub video_ssrc: u32,
    /// Local candidates (for trickle), `None` at the end.
    candidates: Mutex<Option<mpsc::UnboundedReceiver<Option<String>>>>,
}

impl Peer {
    pub async fn new(opts: PeerOptions, metrics: Arc<Metrics>) -> Result<Peer> {
        let (cand_tx, cand_rx) = mpsc::unbounded_channel();
        let recv_stamps = Arc::new(RecvStamps::default());
        let shared = Arc::new(Shared {
            label: opts.label.clone(),
            metrics,
            recv_stamps: Arc::clone(&recv_stamps),
            notify: Notify::new(),
            state: Mutex::new(RTCPeerConnectionState::New),
            ice_state: Mutex::new("new".to_owned()),
            gathering_complete: AtomicBool::new(false),
            candidates: cand_tx,
            join_at: Mutex::new(None),
            first_seen: AtomicBool::new(false),
            audio_pt: AtomicU32::new(0),
            video_pt: AtomicU32::new(0),
            fanout: AtomicU64::new(0),
            packets_received: AtomicU64::new(0),
        });

        let mut media_engine = MediaEngine::default();
        media_engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus_codec(),
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        )?;
        media_engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: vp8_codec(),
                payload_type: 96,
            },
            RtpCodecKind::Video,
        )?;
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
        let setting_engine = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_network_types(vec![NetworkType::Udp4])
            .with_include_loopback_candidate(opts.bind_ip.is_loopback())
            .build();
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(vec![])
            .build();
        let pc = PeerConnectionBuilder::new()
            .with_runtime(Arc::new(TapRuntime {
                inner: webrtc::runtime::TokioRuntime,
                recv: recv_stamps,
            }))
            .with_configuration(config)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting_engine)
            .with_handler(Arc::new(Handler {
                shared: Arc::clone(&shared),
            }))
            .with_udp_addrs(vec![SocketAddr::new(opts.bind_ip, 0).to_string()])
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let (audio_ssrc, video_ssrc) = (random_u32(), random_u32());
        let mut tasks = Vec::new();
        let mut transceivers = None;
        if opts.publish {
            let stream = format!("stream-{}", opts.label);
            let track = |kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec, name: &str| {
                Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                    stream.clone(),
                    format!("{}-{name}", opts.label),
                    format!("{}-{name}", opts.label),
                    kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec,
                        ..Default::default()
                    }],
                )))
            };
            let audio = track(RtpCodecKind::Audio, audio_ssrc, opus_codec(), "audio");
            let video = track(RtpCodecKind::Video, video_ssrc, vp8_codec(), "video");
            let init = || RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            };
            let audio_tr = pc
                .add_transceiver_from_track(audio.clone(), Some(init()))
                .await
                .context("add audio transceiver")?;
            let video_tr = pc
                .add_transceiver_from_track(video.clone(), Some(init()))
                .await
                .context("add video transceiver")?;
            transceivers = Some((audio_tr, video_tr));
            if opts.profile.audio {
                tasks.push(tokio::spawn(publish_audio(
                    Arc::clone(&shared),
                    audio,
                    audio_ssrc,
                )));
            }
            tasks.push(tokio::spawn(publish_video(
                Arc::clone(&shared),
                video,
                video_ssrc,
                opts.profile,
            )));
        }
        Ok(Peer {
            label: opts.label,
            pc,
            shared,
            transceivers,
            tasks: Mutex::new(tasks),
            audio_ssrc,
            video_ssrc,
            candidates: Mutex::new(Some(cand_rx)),
        })
    }

    /// Receivers each published packet should reach (for loss).
    pub fn set_fanout(&self, n: u64) {
        self.shared.fanout.store(n, Ordering::Relaxed);
    }

    /// The moment this participant asked for media (join -> first packet).
    pub fn mark_join(&self) {
        *self.shared.join_at.lock().unwrap() = Some(Instant::now());
    }

    pub fn packets_received(&self) -> u64 {
        self.shared.packets_received.load(Ordering::Relaxed)
    }

    pub fn connected(&self) -> bool {
        self.shared.connected()
    }

    /// "peer connection state / ICE state".
    pub fn state(&self) -> String {
        format!(
            "{} / ICE {}",
            self.shared.state.lock().unwrap(),
            self.shared.ice_state.lock().unwrap()
        )
    }

    /// Applies a remote offer; returns our answer (candidates trickle).
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

    /// Our current local description once ICE gathering is complete (for a
    /// server that does not take trickled candidates).
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

    pub async fn add_candidate(
        &self,
        candidate: &str,
        mid: Option<String>,
        mline: Option<u16>,
    ) -> Result<()> {
        if candidate.is_empty() {
            return Ok(());
        }
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate: candidate.to_owned(),
                sdp_mid: mid,
                sdp_mline_index: mline,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("add_ice_candidate: {e}"))
    }

    async fn refresh_payload_types(&self) {
        let Some((audio, video)) = &self.transceivers else {
            return;
        };
        for (tr, slot, mime) in [
            (audio, &self.shared.audio_pt, MIME_TYPE_OPUS),
            (video, &self.shared.video_pt, MIME_TYPE_VP8),
        ] {
            let Ok(Some(sender)) = tr.sender().await else {
                continue;
            };
            let Ok(params) = sender.get_parameters().await else {
                continue;
            };
            if let Some(pt) = params
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                .map(|c| c.payload_type)
            {
                slot.store(u32::from(pt), Ordering::SeqCst);
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

    /// The local candidates (for a trickling caller), once.
    pub fn take_candidates(&self) -> Option<mpsc::UnboundedReceiver<Option<String>>> {
        self.candidates.lock().unwrap().take()
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

fn ready(shared: &Shared, pt: &AtomicU32) -> Option<u8> {
    if !shared.connected() {
        return None;
    }
    match pt.load(Ordering::SeqCst) {
        0 => None,
        v => Some(v as u8),
    }
}

async fn publish_audio(shared: Arc<Shared>, track: Arc<TrackLocalStaticRTP>, ssrc: u32) {
    let mut tick = tokio::time::interval(AUDIO_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = (random_u32() & 0x7fff) as u16;
    let mut ts = random_u32();
    loop {
        tick.tick().await;
        ts = ts.wrapping_add(960);
        let Some(pt) = ready(&shared, &shared.audio_pt) else {
            continue;
        };
        let pkt = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from(audio_payload(ssrc, seq)),
        };
        seq = seq.wrapping_add(1);
        if track.write_rtp(pkt).await.is_ok() {
            shared
                .metrics
                .on_sent(shared.fanout.load(Ordering::Relaxed));
        }
    }
}

async fn publish_video(
    shared: Arc<Shared>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    profile: MediaProfile,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / profile.fps.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = (random_u32() & 0x7fff) as u16;
    let mut ts = random_u32();
    let mut schedule = FrameSchedule::new(&profile);
    let step = 90_000 / profile.fps.max(1);
    let size = profile.video_payload();
    loop {
        tick.tick().await;
        ts = ts.wrapping_add(step);
        let Some(pt) = ready(&shared, &shared.video_pt) else {
            continue;
        };
        let (key, count) = schedule.next_frame();
        for i in 0..count {
            let pkt = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: i + 1 == count,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(video_payload(size, i == 0, key, ssrc, seq)),
            };
            seq = seq.wrapping_add(1);
            if track.write_rtp(pkt).await.is_ok() {
                shared
                    .metrics
                    .on_sent(shared.fanout.load(Ordering::Relaxed));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A tokio runtime whose UDP sockets stamp RTP packets
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct TapRuntime {
    inner: webrtc::runtime::TokioRuntime,
    recv: Arc<RecvStamps>,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl webrtc::runtime::Runtime for TapRuntime {
    fn spawn(
        &self,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn webrtc::runtime::JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn webrtc::runtime::JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn webrtc::runtime::AsyncUdpSocket>> {
        socket.set_nonblocking(true)?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        crate::stamp::enable(io.as_raw_fd())?;
        let local_ip = io.local_addr().ok().map(|a| a.ip());
        Ok(Arc::new(TapSocket {
            io,
            recv: Arc::clone(&self.recv),
            local_ip,
        }))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> std::io::Result<Arc<dyn webrtc::runtime::AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> BoxFut<'a, std::io::Result<Arc<dyn webrtc::runtime::AsyncTcpStream>>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(&'a self, host: &'a str) -> BoxFut<'a, std::io::Result<Vec<SocketAddr>>> {
        self.inner.resolve_host(host)
    }

    fn sleep(&self, duration: Duration) -> BoxFut<'static, ()> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn webrtc::runtime::AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn name(&self) -> &'static str {
        "tokio-stamps"
    }
}

#[derive(Debug)]
struct TapSocket {
    io: tokio::net::UdpSocket,
    recv: Arc<RecvStamps>,
    local_ip: Option<IpAddr>,
}

impl webrtc::runtime::AsyncUdpSocket for TapSocket {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn poll_send(
        &self,
        cx: &mut std::task::Context<'_>,
        transmit: &webrtc::runtime::Transmit<'_>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        // Stamped before the system call: a receiver in this process may
        // look the stamp up before `send_to` has even returned.
        if let Some((ssrc, seq)) = rtp_id(transmit.contents) {
            SendStamps::global().record(ssrc, seq, crate::stamp::now_ns());
        }
        self.io
            .poll_send_to(cx, transmit.contents, transmit.destination)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [webrtc::runtime::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        if bufs.is_empty() || meta.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            match self.io.poll_recv_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let fd = self.io.as_raw_fd();
            let buf = &mut bufs[0];
            match self.io.try_io(tokio::io::Interest::READABLE, || {
                crate::stamp::recv(fd, buf)
            }) {
                Ok((n, from, stamp)) => {
                    if let Some((ssrc, seq)) = rtp_id(&bufs[0][..n]) {
                        let at = stamp.unwrap_or_else(crate::stamp::now_ns);
                        self.recv.record(ssrc, seq, at);
                    }
                    let mut m = webrtc::runtime::RecvMeta::default();
                    m.addr = from;
                    m.len = n;
                    m.stride = n.max(1);
                    m.dst_ip = self.local_ip;
                    meta[0] = m;
                    return Poll::Ready(Ok(1));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}
