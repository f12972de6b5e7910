//! Test participants for the Noom integration tests.
//!
//! A [`TestClient`] is one WebSocket connection speaking the signaling contract
//! (`shared/contract/signaling.md`). With [`TestClient::join_with_media`] it also
//! owns a real WebRTC peer connection (async `webrtc` 0.21.1) that answers every
//! server offer, trickles candidates over the socket, publishes synthetic Opus
//! and VP8 RTP into the `recvonly` m-sections of the first offer, and records
//! every track the server forwards to it.
//!
//! Waiting is always event driven (channel receives, `Notify`) with a deadline;
//! a timeout is an error that says what was awaited and what was seen instead.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

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

/// Default deadline for one awaited signaling message.
pub const MSG_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline for media to start flowing (ICE + DTLS + first packets).
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Process-wide helpers
// ---------------------------------------------------------------------------

/// Installs a tracing subscriber once per test binary. `RUST_LOG` selects the
/// level (default `info`); output goes through the test harness capture, so it
/// is printed for failing tests only (or always with `--nocapture`).
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Starts an in-process server bound to loopback only, on ephemeral ports.
pub async fn start_server() -> Result<noom_signaling::Server> {
    start_server_with(|_| {}).await
}

/// [`start_server`] with configuration changes applied on top (after the
/// loopback-only settings).
pub async fn start_server_with(
    adjust: impl FnOnce(&mut noom_config::Config),
) -> Result<noom_signaling::Server> {
    init_tracing();
    let mut cfg = noom_config::Config::embedded();
    cfg.http.listen = "127.0.0.1:0".parse()?;
    cfg.media.bind_ips = vec!["127.0.0.1".parse()?];
    cfg.media.port = 0;
    cfg.media.shards = 1;
    // No STUN/TURN servers: nothing may leave the machine.
    cfg.ice.servers = vec![];
    adjust(&mut cfg);
    let server = noom_signaling::Server::start(cfg)
        .await
        .context("Server::start failed")?;
    Ok(server)
}

/// Runs a whole test body under one overall deadline, so that a hang becomes a
/// failure naming the test instead of a stuck CI job.
pub async fn with_deadline<F>(what: &str, limit: Duration, fut: F) -> Result<()>
where
    F: Future<Output = Result<()>>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => bail!("{what}: the whole test exceeded its overall deadline of {limit:?}"),
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random u32 without an extra dependency (std's randomly keyed hasher).
fn random_u32() -> u32 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u64(now_unix_ms());
    (h.finish() >> 16) as u32 | 1
}

/// Short, single-line rendering of a JSON message for failure output.
pub fn brief(v: &Value) -> String {
    let mut v = v.clone();
    if let Some(sdp) = v.get_mut("sdp") {
        if let Some(s) = sdp.as_str() {
            let sections = parse_sections(s);
            *sdp = Value::String(format!(
                "<sdp: {} m-sections: {}>",
                sections.len(),
                sections
                    .iter()
                    .map(|m| m.short())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let s = v.to_string();
    if s.len() > 400 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(400).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

// ---------------------------------------------------------------------------
// SDP inspection
// ---------------------------------------------------------------------------

/// The parts of one m-section the tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub index: usize,
    pub kind: String,
    pub port: u16,
    pub mid: Option<String>,
    /// `sendrecv` when the section has no direction attribute.
    pub direction: String,
    /// `(stream id, track id)` from `a=msid:`.
    pub msid: Option<(String, String)>,
}

impl MediaSection {
    /// Rejected (port 0) or inactive: carries no media.
    pub fn is_dead(&self) -> bool {
        self.port == 0 || self.direction == "inactive"
    }

    pub fn short(&self) -> String {
        format!(
            "#{} {} mid={} {} port={}{}",
            self.index,
            self.kind,
            self.mid.as_deref().unwrap_or("-"),
            self.direction,
            self.port,
            self.msid
                .as_ref()
                .map(|(s, t)| format!(" msid={s} {t}"))
                .unwrap_or_default()
        )
    }
}

/// Splits an SDP into its m-sections.
pub fn parse_sections(sdp: &str) -> Vec<MediaSection> {
    let mut out: Vec<MediaSection> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            let mut parts = rest.split_whitespace();
            let kind = parts.next().unwrap_or("").to_owned();
            let port = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            out.push(MediaSection {
                index: out.len(),
                kind,
                port,
                mid: None,
                direction: "sendrecv".to_owned(),
                msid: None,
            });
            continue;
        }
        let Some(m) = out.last_mut() else { continue };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            m.mid = Some(mid.trim().to_owned());
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            let mut parts = msid.split_whitespace();
            let stream = parts.next().unwrap_or("").to_owned();
            let track = parts.next().unwrap_or("").to_owned();
            m.msid = Some((stream, track));
        } else if matches!(
            line,
            "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
        ) {
            m.direction = line[2..].to_owned();
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Contract payloads
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub id: String,
    pub name: String,
    pub audio_muted: bool,
    pub video_muted: bool,
}

impl Participant {
    pub fn from_json(v: &Value) -> Result<Participant> {
        let field = |k: &str| {
            v.get(k)
                .ok_or_else(|| anyhow!("participant object lacks `{k}`: {v}"))
        };
        Ok(Participant {
            id: field("id")?
                .as_str()
                .ok_or_else(|| anyhow!("participant `id` is not a string: {v}"))?
                .to_owned(),
            name: field("name")?
                .as_str()
                .ok_or_else(|| anyhow!("participant `name` is not a string: {v}"))?
                .to_owned(),
            audio_muted: field("audio_muted")?
                .as_bool()
                .ok_or_else(|| anyhow!("participant `audio_muted` is not a bool: {v}"))?,
            video_muted: field("video_muted")?
                .as_bool()
                .ok_or_else(|| anyhow!("participant `video_muted` is not a bool: {v}"))?,
        })
    }
}

/// The `joined` reply.
#[derive(Debug, Clone)]
pub struct Joined {
    pub room: String,
    pub you: String,
    pub participants: Vec<Participant>,
    pub raw: Value,
}

impl Joined {
    fn from_json(v: &Value) -> Result<Joined> {
        if v["type"] != "joined" {
            bail!("expected a `joined` reply, got {}", brief(v));
        }
        let participants = v["participants"]
            .as_array()
            .ok_or_else(|| anyhow!("`joined` without a `participants` array: {}", brief(v)))?
            .iter()
            .map(Participant::from_json)
            .collect::<Result<Vec<_>>>()?;
        if !v["ice_servers"].is_array() {
            bail!("`joined` without an `ice_servers` array: {}", brief(v));
        }
        Ok(Joined {
            room: v["room"]
                .as_str()
                .ok_or_else(|| anyhow!("`joined` without `room`: {}", brief(v)))?
                .to_owned(),
            you: v["you"]
                .as_str()
                .ok_or_else(|| anyhow!("`joined` without `you`: {}", brief(v)))?
                .to_owned(),
            participants,
            raw: v.clone(),
        })
    }
}

/// Rooms listed in a `rooms` message, as `name -> participants`.
pub fn rooms_of(v: &Value) -> Result<HashMap<String, u64>> {
    let list = v["rooms"]
        .as_array()
        .ok_or_else(|| anyhow!("`rooms` message without a `rooms` array: {}", brief(v)))?;
    let mut out = HashMap::new();
    for r in list {
        let name = r["name"]
            .as_str()
            .ok_or_else(|| anyhow!("room entry without a string `name`: {r}"))?;
        let n = r["participants"]
            .as_u64()
            .ok_or_else(|| anyhow!("room entry without a numeric `participants`: {r}"))?;
        out.insert(name.to_owned(), n);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Media bookkeeping
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    fn from_codec_kind(k: RtpCodecKind) -> Option<MediaKind> {
        match k {
            RtpCodecKind::Audio => Some(MediaKind::Audio),
            RtpCodecKind::Video => Some(MediaKind::Video),
            _ => None,
        }
    }

    pub fn sdp_name(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// What a client knows about one track the server forwards to it.
#[derive(Debug, Clone)]
pub struct RemoteTrackInfo {
    /// MediaStream id: per the contract, the publisher's participant id.
    pub stream_id: String,
    pub track_id: String,
    pub kind: Option<MediaKind>,
    /// SSRC of the first packet (from `OnOpen`).
    pub ssrc: Option<u32>,
    /// Stream ids the `OnOpen` event carried.
    pub stream_ids_on_open: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
    /// VP8 keyframes seen (first packet of a frame with the key bit clear).
    pub keyframes: u64,
    pub payload_types: BTreeSet<u8>,
    pub ssrcs_seen: BTreeSet<u32>,
    pub ended: bool,
}

impl RemoteTrackInfo {
    fn short(&self) -> String {
        format!(
            "[stream={} track={} kind={:?} ssrc={:?} pkts={} kf={} pts={:?}{}]",
            self.stream_id,
            self.track_id,
            self.kind,
            self.ssrc,
            self.packets,
            self.keyframes,
            self.payload_types,
            if self.ended { " ENDED" } else { "" }
        )
    }
}

/// One RTP packet as it reached a remote track (after SRTP), in arrival
/// order; see [`TestClient::track_log`].
#[derive(Debug, Clone, Copy)]
pub struct PacketRecord {
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub marker: bool,
    /// First packet of a VP8 keyframe (video tracks only).
    pub keyframe_start: bool,
    pub at: Instant,
}

/// At most this many packets are kept per remote track in its log
/// (minutes of audio + video at the test clients' rates).
const TRACK_LOG_CAP: usize = 60_000;

/// A VP8 keyframe this client published: first packet's sequence number,
/// RTP timestamp and when it was handed to the track.
#[derive(Debug, Clone, Copy)]
pub struct SentKeyframe {
    pub seq: u16,
    pub ts: u32,
    pub at: Instant,
}

/// Everything the peer connection's callbacks and tasks record.
struct MediaShared {
    label: String,
    tracks: Mutex<Vec<RemoteTrackInfo>>,
    notify: Notify,
    conn_state: Mutex<RTCPeerConnectionState>,
    conn_history: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
    /// Outgoing candidates are held until the first answer has been sent.
    cand_gate: Mutex<CandidateGate>,
    ws_out: mpsc::UnboundedSender<Message>,
    /// Negotiated payload types (0 = not known yet).
    audio_pt: AtomicU32,
    video_pt: AtomicU32,
    offers_applied: AtomicU64,
    last_offer: Mutex<Option<String>>,
    last_answer: Mutex<Option<String>>,
    audio_sent: AtomicU64,
    video_sent: AtomicU64,
    /// Per remote track (same index as `tracks`): handle and sequence numbers.
    track_extra: Mutex<Vec<TrackExtra>>,
    /// When set, answers are kept in `held_answers` instead of being sent.
    hold_answers: AtomicBool,
    held_answers: Mutex<VecDeque<String>>,
    /// PLIs / NACKs received for our published video SSRC (needs
    /// `MediaOptions::rtcp_to_app`).
    plis_received: AtomicU64,
    nacks_received: AtomicU64,
    /// Keyframes our synthetic video publisher sent.
    keyframes_sent: Mutex<Vec<SentKeyframe>>,
    /// When the peer connection first reached `connected`.
    connected_at: Mutex<Option<Instant>>,
    candidate_rewrite: Option<(u16, u16)>,
    /// The server's `noom` data channel, once open, and the binary frames
    /// it delivered, in order.
    data_channel: Mutex<Option<Arc<dyn webrtc::data_channel::DataChannel>>>,
    data_frames: Mutex<Vec<Vec<u8>>>,
    /// While set, the client stops reading its data channel (a slow
    /// receiver).
    data_paused: AtomicBool,
    data_resume: Notify,
    /// `OnBufferedAmountLow` events seen on the data channel.
    data_low_events: AtomicU64,
    /// Bytes of the binary frames the application has read.
    data_bytes_read: AtomicU64,
}

/// What the tests need of one remote track beyond [`RemoteTrackInfo`] (kept
/// apart because `RemoteTrackInfo` is cloned on every wait check).
struct TrackExtra {
    handle: Arc<dyn TrackRemote>,
    /// How many times each RTP sequence number reached the track.
    seq_counts: HashMap<u16, u32>,
    /// The last sequence numbers that reached the track, oldest first.
    recent_seqs: VecDeque<u16>,
    /// Every packet (up to `TRACK_LOG_CAP`), in arrival order.
    log: Vec<PacketRecord>,
}

/// Optional test instrumentation of a participant's peer connection. The
/// default (all off) is what [`TestClient::join_with_media`] uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct MediaOptions {
    /// Route the peer connection's UDP through a [`SocketTap`] that records
    /// the RTP sequence numbers arriving on the wire (SRTP headers are in
    /// clear) and can drop chosen packets before SRTP sees them.
    pub socket_tap: bool,
    /// Mark inbound RTCP `DeliverToApplication` (an interceptor like the
    /// server's `RtcpTap`) and count PLIs/NACKs about our published video.
    pub rtcp_to_app: bool,
    /// `(server media port, relay port)`: rewrite the server's loopback
    /// candidates (in offers and trickled) to point at a relay on
    /// 127.0.0.1, so all media goes through it (a lossy link, say).
    pub candidate_rewrite: Option<(u16, u16)>,
    /// Publish with these (audio, video) SSRCs instead of random ones.
    pub ssrcs: Option<(u32, u32)>,
}

/// Behind a relay, our own candidates stay out of the answer.
fn strip_candidates(sdp: &str, rewrite: Option<(u16, u16)>) -> String {
    if rewrite.is_none() {
        return sdp.to_owned();
    }
    sdp.split("\r\n")
        .filter(|l| !l.starts_with("a=candidate:") && !l.starts_with("a=end-of-candidates"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Applies `MediaOptions::candidate_rewrite` to SDP or a candidate line.
pub fn rewrite_candidates(text: &str, rewrite: Option<(u16, u16)>) -> String {
    match rewrite {
        Some((from, to)) => text.replace(
            &format!(" 127.0.0.1 {from} typ"),
            &format!(" 127.0.0.1 {to} typ"),
        ),
        None => text.to_owned(),
    }
}

#[derive(Default)]
struct CandidateGate {
    answered: bool,
    sdp_mid: String,
    pending: Vec<Option<String>>,
}

impl MediaShared {
    fn error(&self, e: String) {
        tracing::warn!(client = %self.label, "media error: {e}");
        self.errors.lock().unwrap().push(e);
        self.notify.notify_waiters();
    }

    fn candidate_message(mid: &str, candidate: Option<String>) -> Message {
        let v = match candidate {
            Some(c) => json!({
                "type": "candidate",
                "candidate": {"candidate": c, "sdpMid": mid, "sdpMLineIndex": 0}
            }),
            None => json!({"type": "candidate", "candidate": Value::Null}),
        };
        Message::text(v.to_string())
    }

    fn local_candidate(&self, candidate: Option<String>) {
        if self.candidate_rewrite.is_some() {
            // Behind a relay: the server must reach us only through it.
            return;
        }
        let mut gate = self.cand_gate.lock().unwrap();
        if gate.answered {
            let _ = self
                .ws_out
                .send(Self::candidate_message(&gate.sdp_mid, candidate));
        } else {
            gate.pending.push(candidate);
        }
    }

    fn open_answer_gate(&self, sdp_mid: String) {
        let mut gate = self.cand_gate.lock().unwrap();
        if gate.answered {
            return;
        }
        gate.answered = true;
        gate.sdp_mid = sdp_mid;
        for c in std::mem::take(&mut gate.pending) {
            let _ = self.ws_out.send(Self::candidate_message(&gate.sdp_mid, c));
        }
    }
}

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

async fn read_data_channel(
    shared: Arc<MediaShared>,
    dc: Arc<dyn webrtc::data_channel::DataChannel>,
) {
    use webrtc::data_channel::DataChannelEvent;
    if dc.label().await.ok().as_deref() != Some("noom") {
        return;
    }
    loop {
        while shared.data_paused.load(Ordering::Acquire) {
            shared.data_resume.notified().await;
        }
        let Some(event) = dc.poll().await else {
            break;
        };
        match event {
            DataChannelEvent::OnOpen => {
                *shared.data_channel.lock().unwrap() = Some(Arc::clone(&dc));
            }
            DataChannelEvent::OnMessage(message) => {
                shared
                    .data_bytes_read
                    .fetch_add(message.data.len() as u64, Ordering::Relaxed);
                shared
                    .data_frames
                    .lock()
                    .unwrap()
                    .push(message.data.to_vec());
            }
            DataChannelEvent::OnBufferedAmountLow => {
                shared.data_low_events.fetch_add(1, Ordering::Relaxed);
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
        shared.notify.notify_waiters();
    }
}

async fn read_remote_track(shared: Arc<MediaShared>, track: Arc<dyn TrackRemote>) {
    let info = RemoteTrackInfo {
        stream_id: track.stream_id().await,
        track_id: track.track_id().await,
        kind: MediaKind::from_codec_kind(track.kind().await),
        ssrc: track.ssrcs().await.first().copied(),
        stream_ids_on_open: Vec::new(),
        packets: 0,
        bytes: 0,
        keyframes: 0,
        payload_types: BTreeSet::new(),
        ssrcs_seen: BTreeSet::new(),
        ended: false,
    };
    tracing::debug!(client = %shared.label, "on_track {}", info.short());
    let idx = {
        let mut tracks = shared.tracks.lock().unwrap();
        tracks.push(info);
        shared.track_extra.lock().unwrap().push(TrackExtra {
            handle: Arc::clone(&track),
            seq_counts: HashMap::new(),
            recent_seqs: VecDeque::new(),
            log: Vec::new(),
        });
        tracks.len() - 1
    };
    shared.notify.notify_waiters();
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnOpen(init) => {
                let mut tracks = shared.tracks.lock().unwrap();
                let t = &mut tracks[idx];
                t.stream_ids_on_open = init.stream_ids.clone();
                if t.ssrc.is_none() {
                    t.ssrc = Some(init.ssrc);
                }
                if t.stream_id.is_empty() {
                    if let Some(s) = init.stream_ids.first() {
                        t.stream_id = s.clone();
                    }
                }
            }
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                let key = t_is_vp8_keyframe(&pkt.payload);
                let mut tracks = shared.tracks.lock().unwrap();
                let t = &mut tracks[idx];
                t.packets += 1;
                t.bytes += pkt.payload.len() as u64;
                t.payload_types.insert(pkt.header.payload_type);
                t.ssrcs_seen.insert(pkt.header.ssrc);
                {
                    let mut extra = shared.track_extra.lock().unwrap();
                    let x = &mut extra[idx];
                    *x.seq_counts.entry(pkt.header.sequence_number).or_insert(0) += 1;
                    x.recent_seqs.push_back(pkt.header.sequence_number);
                    if x.recent_seqs.len() > 200 {
                        x.recent_seqs.pop_front();
                    }
                    if x.log.len() < TRACK_LOG_CAP {
                        x.log.push(PacketRecord {
                            seq: pkt.header.sequence_number,
                            ts: pkt.header.timestamp,
                            ssrc: pkt.header.ssrc,
                            marker: pkt.header.marker,
                            keyframe_start: t.kind == Some(MediaKind::Video) && key,
                            at: Instant::now(),
                        });
                    }
                }
                if t.kind == Some(MediaKind::Video) && key {
                    t.keyframes += 1;
                }
                drop(tracks);
                shared.notify.notify_waiters();
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
    shared.tracks.lock().unwrap()[idx].ended = true;
    shared.notify.notify_waiters();
}

/// True for the first packet of a VP8 keyframe (RFC 7741 payload descriptor,
/// then the frame tag whose lowest bit is 0 for a keyframe).
fn t_is_vp8_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let s = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !s || pid != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            let Some(&pic) = p.get(i) else { return false };
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    matches!(p.get(i), Some(tag) if tag & 0x01 == 0)
}

// ---------------------------------------------------------------------------
// The peer connection of one joined participant
// ---------------------------------------------------------------------------

enum Signal {
    Offer(String),
    Candidate(Value),
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// A publishing and subscribing WebRTC endpoint driven by server offers.
pub struct MediaPeer {
    label: String,
    pc: Arc<dyn PeerConnection>,
    shared: Arc<MediaShared>,
    signal_tx: mpsc::UnboundedSender<Signal>,
    tasks: Vec<JoinHandle<()>>,
    pub audio_ssrc: u32,
    pub video_ssrc: u32,
    pub local_stream_id: String,
    tap: Option<Arc<SocketTap>>,
}

impl MediaPeer {
    async fn new(
        label: &str,
        ws_out: mpsc::UnboundedSender<Message>,
        opts: MediaOptions,
    ) -> Result<MediaPeer> {
        let shared = Arc::new(MediaShared {
            label: label.to_owned(),
            tracks: Mutex::new(Vec::new()),
            notify: Notify::new(),
            conn_state: Mutex::new(RTCPeerConnectionState::New),
            conn_history: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            cand_gate: Mutex::new(CandidateGate::default()),
            ws_out,
            audio_pt: AtomicU32::new(0),
            video_pt: AtomicU32::new(0),
            offers_applied: AtomicU64::new(0),
            last_offer: Mutex::new(None),
            last_answer: Mutex::new(None),
            audio_sent: AtomicU64::new(0),
            video_sent: AtomicU64::new(0),
            track_extra: Mutex::new(Vec::new()),
            hold_answers: AtomicBool::new(false),
            held_answers: Mutex::new(VecDeque::new()),
            plis_received: AtomicU64::new(0),
            nacks_received: AtomicU64::new(0),
            keyframes_sent: Mutex::new(Vec::new()),
            connected_at: Mutex::new(None),
            candidate_rewrite: opts.candidate_rewrite,
            data_channel: Mutex::new(None),
            data_frames: Mutex::new(Vec::new()),
            data_paused: AtomicBool::new(false),
            data_resume: Notify::new(),
            data_low_events: AtomicU64::new(0),
            data_bytes_read: AtomicU64::new(0),
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
        let base = if opts.rtcp_to_app {
            Registry::new().with(
                rtc::interceptor::Slot::from(RTCP_TAP_SLOT),
                RtcpToApp::default(),
            )
        } else {
            Registry::new()
        };
        let registry = register_default_interceptors(base, &mut media_engine)?;

        // Loopback only: one UDP socket on 127.0.0.1 (a concrete address is
        // bound as given, loopback included), IPv4 UDP candidates, no mDNS
        // socket or .local names, no ICE servers.
        let setting_engine = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_network_types(vec![NetworkType::Udp4])
            .with_include_loopback_candidate(true)
            .build();
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(vec![])
            .build();

        let tap = opts.socket_tap.then(|| Arc::new(SocketTap::default()));
        let mut builder = PeerConnectionBuilder::new();
        if let Some(tap) = &tap {
            builder = builder.with_runtime(Arc::new(TapRuntime {
                inner: webrtc::runtime::TokioRuntime,
                tap: Arc::clone(tap),
            }));
        }
        let pc = builder
            .with_configuration(config)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting_engine)
            .with_handler(Arc::new(Handler {
                shared: Arc::clone(&shared),
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let (audio_ssrc, video_ssrc) = opts.ssrcs.unwrap_or_else(|| (random_u32(), random_u32()));
        let local_stream_id = format!("local-{label}");
        let audio = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            local_stream_id.clone(),
            format!("{label}-audio"),
            format!("{label}-audio"),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(audio_ssrc),
                    ..Default::default()
                },
                codec: opus_codec(),
                ..Default::default()
            }],
        )));
        let video = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            local_stream_id.clone(),
            format!("{label}-video"),
            format!("{label}-video"),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(video_ssrc),
                    ..Default::default()
                },
                codec: vp8_codec(),
                ..Default::default()
            }],
        )));

        // Sendonly transceivers without a mid: applying the first server offer
        // pairs them with its `recvonly` audio / video m-sections (and never with
        // the `sendonly` sections that carry other participants' tracks), so the
        // answer is `sendonly` exactly there.
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

        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(negotiation_loop(
                Arc::clone(&pc),
                Arc::clone(&shared),
                signal_rx,
                audio_tr,
                video_tr,
            )),
            tokio::spawn(publish_audio(
                Arc::clone(&shared),
                audio.clone(),
                audio_ssrc,
            )),
            tokio::spawn(publish_video(
                Arc::clone(&shared),
                video.clone(),
                video_ssrc,
            )),
        ];
        let mut tasks = tasks;
        if opts.rtcp_to_app {
            tasks.push(tokio::spawn(count_local_rtcp(
                Arc::clone(&shared),
                video,
                video_ssrc,
            )));
            tasks.push(tokio::spawn(count_local_rtcp(
                Arc::clone(&shared),
                audio,
                audio_ssrc,
            )));
        }

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

    async fn close(&mut self) {
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
    audio_tr: Arc<dyn RtpTransceiver>,
    video_tr: Arc<dyn RtpTransceiver>,
) {
    let mut early_candidates: Vec<Value> = Vec::new();
    let mut have_remote = false;
    let mut n = 0u64;
    while let Some(sig) = rx.recv().await {
        match sig {
            Signal::Offer(sdp) => {
                n += 1;
                match apply_offer(&pc, &shared, &sdp, n, &audio_tr, &video_tr).await {
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
    let candidate = rewrite_candidates(candidate, shared.candidate_rewrite);
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

async fn apply_offer(
    pc: &Arc<dyn PeerConnection>,
    shared: &MediaShared,
    sdp: &str,
    n: u64,
    audio_tr: &Arc<dyn RtpTransceiver>,
    video_tr: &Arc<dyn RtpTransceiver>,
) -> Result<()> {
    let rewritten = rewrite_candidates(sdp, shared.candidate_rewrite);
    let offer = RTCSessionDescription::offer(rewritten).context("parse offer")?;
    pc.set_remote_description(offer)
        .await
        .context("set_remote_description(offer)")?;
    let answer = pc.create_answer(None).await.context("create_answer")?;
    pc.set_local_description(answer.clone())
        .await
        .context("set_local_description(answer)")?;
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
                json!({"type": "answer", "sdp": strip_candidates(&answer.sdp, shared.candidate_rewrite)}).to_string(),
            ))
            .map_err(|_| anyhow!("WebSocket writer is gone"))?;
    }

    let offer_sections = parse_sections(sdp);
    let first_mid = offer_sections
        .iter()
        .find_map(|m| m.mid.clone())
        .unwrap_or_else(|| "0".to_owned());
    shared.open_answer_gate(first_mid);
    *shared.last_offer.lock().unwrap() = Some(sdp.to_owned());
    *shared.last_answer.lock().unwrap() = Some(answer.sdp.clone());

    // Our publishing transceivers must sit on recvonly sections of the offer,
    // and the answer must send there.
    let answer_sections = parse_sections(&answer.sdp);
    for (tr, kind, pt_slot, mime) in [
        (audio_tr, "audio", &shared.audio_pt, MIME_TYPE_OPUS),
        (video_tr, "video", &shared.video_pt, MIME_TYPE_VP8),
    ] {
        let mid = tr.mid().await.context("transceiver mid")?;
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
        let sender = tr
            .sender()
            .await
            .context("transceiver sender")?
            .ok_or_else(|| anyhow!("our {kind} transceiver lost its sender"))?;
        let params = sender
            .get_parameters()
            .await
            .context("sender get_parameters")?;
        let pt = params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            .map(|c| c.payload_type)
            .ok_or_else(|| {
                anyhow!(
                    "offer #{n}: no {mime} negotiated on our {kind} sender; codecs: {:?}",
                    params
                        .rtp_parameters
                        .codecs
                        .iter()
                        .map(|c| format!("{}/{}", c.rtp_codec.mime_type, c.payload_type))
                        .collect::<Vec<_>>()
                )
            })?;
        pt_slot.store(u32::from(pt), Ordering::SeqCst);
    }
    Ok(())
}

fn ready_to_send(shared: &MediaShared, pt: &AtomicU32) -> Option<u8> {
    if *shared.conn_state.lock().unwrap() != RTCPeerConnectionState::Connected {
        return None;
    }
    match pt.load(Ordering::SeqCst) {
        0 => None,
        v => Some(v as u8),
    }
}

/// Opus-sized audio: one 20 ms packet (~80 bytes) every 20 ms.
async fn publish_audio(shared: Arc<MediaShared>, track: Arc<TrackLocalStaticRTP>, ssrc: u32) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq: u16 = (random_u32() & 0x7fff) as u16;
    let mut ts: u32 = random_u32();
    let mut first = true;
    let mut payload = vec![0u8; 80];
    payload[0] = 0xfc; // TOC: CELT FB 20 ms, stereo, one frame
    loop {
        tick.tick().await;
        ts = ts.wrapping_add(960);
        let Some(pt) = ready_to_send(&shared, &shared.audio_pt) else {
            continue;
        };
        payload[1] = seq as u8;
        let pkt = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: first,
                payload_type: pt,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(&payload),
        };
        first = false;
        seq = seq.wrapping_add(1);
        if track.write_rtp(pkt).await.is_ok() {
            shared.audio_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// VP8 at ~30 fps: a keyframe (3 packets) first and every 60 frames, delta
/// frames of 2 packets otherwise; marker on each frame's last packet.
async fn publish_video(shared: Arc<MediaShared>, track: Arc<TrackLocalStaticRTP>, ssrc: u32) {
    let mut tick = tokio::time::interval(Duration::from_micros(33_333));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq: u16 = (random_u32() & 0x7fff) as u16;
    let mut ts: u32 = random_u32();
    let mut frames_sent: u64 = 0;
    loop {
        tick.tick().await;
        ts = ts.wrapping_add(3000);
        let Some(pt) = ready_to_send(&shared, &shared.video_pt) else {
            continue;
        };
        let key = frames_sent.is_multiple_of(60);
        let (count, size) = if key { (3, 1000) } else { (2, 500) };
        for i in 0..count {
            let mut p = vec![0u8; size];
            if i == 0 {
                p[0] = 0x10; // S=1, PID=0
                             // Frame tag: first partition size 100, show_frame, version 0,
                             // P bit 0 for a keyframe.
                let tag: u32 = (100 << 5) | (1 << 4) | u32::from(!key);
                p[1] = tag as u8;
                p[2] = (tag >> 8) as u8;
                p[3] = (tag >> 16) as u8;
                if key {
                    // Start code and 640x480.
                    p[4..11].copy_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
                }
            } else {
                p[0] = 0x00;
            }
            if key && i == 0 {
                shared.keyframes_sent.lock().unwrap().push(SentKeyframe {
                    seq,
                    ts,
                    at: Instant::now(),
                });
            }
            let pkt = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: i == count - 1,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(p),
            };
            seq = seq.wrapping_add(1);
            if track.write_rtp(pkt).await.is_ok() {
                shared.video_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        frames_sent += 1;
    }
}

// ---------------------------------------------------------------------------
// The test participant
// ---------------------------------------------------------------------------

/// One WebSocket connection to `/ws`, optionally with a WebRTC peer.
pub struct TestClient {
    pub label: String,
    out: mpsc::UnboundedSender<Message>,
    inbox: mpsc::UnboundedReceiver<Value>,
    pending: VecDeque<Value>,
    history: Arc<Mutex<Vec<Value>>>,
    close_reason: Arc<Mutex<Option<String>>>,
    media_route: Arc<Mutex<Option<mpsc::UnboundedSender<Signal>>>>,
    media: Option<MediaPeer>,
    tasks: Vec<JoinHandle<()>>,
    next_req: u64,
    /// Our participant id while in a room.
    pub id: Option<String>,
}

impl TestClient {
    /// Connects to `ws://<addr>/ws`.
    pub async fn connect(addr: SocketAddr, label: &str) -> Result<TestClient> {
        let url = format!("ws://{addr}/ws");
        let (ws, _resp) = tokio::time::timeout(MSG_TIMEOUT, tokio_tungstenite::connect_async(&url))
            .await
            .map_err(|_| anyhow!("{label}: WebSocket connect to {url} timed out"))?
            .with_context(|| format!("{label}: WebSocket connect to {url}"))?;
        let (mut sink, mut stream) = ws.split();

        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (in_tx, in_rx) = mpsc::unbounded_channel::<Value>();
        let history = Arc::new(Mutex::new(Vec::new()));
        let close_reason = Arc::new(Mutex::new(None));
        let media_route: Arc<Mutex<Option<mpsc::UnboundedSender<Signal>>>> =
            Arc::new(Mutex::new(None));

        let writer_label = label.to_owned();
        let writer = tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                // Nothing may follow a close frame; and other senders (the
                // peer connection's callbacks) may keep the channel open.
                let closing = matches!(msg, Message::Close(_));
                if let Err(e) = sink.send(msg).await {
                    tracing::debug!(client = %writer_label, "ws send failed: {e}");
                    break;
                }
                if closing {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let reader = {
            let label = label.to_owned();
            let history = Arc::clone(&history);
            let close_reason = Arc::clone(&close_reason);
            let media_route = Arc::clone(&media_route);
            let pong_tx = out_tx.clone();
            tokio::spawn(async move {
                let reason = loop {
                    let Some(frame) = stream.next().await else {
                        break "stream ended".to_owned();
                    };
                    let frame = match frame {
                        Ok(f) => f,
                        Err(e) => break format!("read error: {e}"),
                    };
                    let v = match frame {
                        Message::Text(t) => match serde_json::from_str::<Value>(t.as_str()) {
                            Ok(v) => v,
                            Err(e) => json!({
                                "type": "__not_json__",
                                "error": e.to_string(),
                                "raw": t.as_str(),
                            }),
                        },
                        Message::Binary(b) => {
                            json!({"type": "__binary_frame__", "len": b.len()})
                        }
                        Message::Ping(p) => {
                            let _ = pong_tx.send(Message::Pong(p));
                            continue;
                        }
                        Message::Pong(_) | Message::Frame(_) => continue,
                        Message::Close(c) => {
                            break match c {
                                Some(c) => {
                                    format!("close frame {} {:?}", c.code, c.reason.as_str())
                                }
                                None => "close frame without status".to_owned(),
                            }
                        }
                    };
                    tracing::trace!(client = %label, "<- {}", brief(&v));
                    history.lock().unwrap().push(v.clone());
                    match v["type"].as_str() {
                        Some("offer") => {
                            if let (Some(tx), Some(sdp)) =
                                (media_route.lock().unwrap().as_ref(), v["sdp"].as_str())
                            {
                                let _ = tx.send(Signal::Offer(sdp.to_owned()));
                            }
                        }
                        Some("candidate") => {
                            if let Some(tx) = media_route.lock().unwrap().as_ref() {
                                let _ = tx.send(Signal::Candidate(v["candidate"].clone()));
                            }
                        }
                        _ => {}
                    }
                    if in_tx.send(v).is_err() {
                        break "client dropped".to_owned();
                    }
                };
                tracing::debug!(client = %label, "ws reader finished: {reason}");
                *close_reason.lock().unwrap() = Some(reason);
            })
        };

        Ok(TestClient {
            label: label.to_owned(),
            out: out_tx,
            inbox: in_rx,
            pending: VecDeque::new(),
            history,
            close_reason,
            media_route,
            media: None,
            tasks: vec![reader, writer],
            next_req: 1,
            id: None,
        })
    }

    // ----- sending -----

    /// Sends one JSON object as a text frame.
    pub fn send_json(&self, v: &Value) -> Result<()> {
        tracing::trace!(client = %self.label, "-> {}", brief(v));
        self.send_raw(Message::text(v.to_string()))
    }

    /// Sends any frame (malformed text, binary, ...).
    pub fn send_raw(&self, m: Message) -> Result<()> {
        self.out
            .send(m)
            .map_err(|_| anyhow!("{}: WebSocket writer is gone", self.label))
    }

    /// A fresh numeric `req`.
    pub fn fresh_req(&mut self) -> Value {
        let r = self.next_req;
        self.next_req += 1;
        json!(r)
    }

    /// Sends `msg` with a fresh numeric `req` and awaits the reply echoing it.
    pub async fn request(&mut self, msg: Value) -> Result<Value> {
        let req = self.fresh_req();
        self.request_with_req(msg, req).await
    }

    /// Sends `msg` with the given `req` and awaits the reply echoing it.
    pub async fn request_with_req(&mut self, mut msg: Value, req: Value) -> Result<Value> {
        msg["req"] = req.clone();
        self.send_json(&msg)?;
        let what = format!("the reply to {} (req {req})", brief(&msg));
        self.recv_where(&what, MSG_TIMEOUT, |m| m.get("req") == Some(&req))
            .await
    }

    /// Request that must be answered `ok`.
    pub async fn request_ok(&mut self, msg: Value) -> Result<Value> {
        let sent = brief(&msg);
        let reply = self.request(msg).await?;
        if reply["type"] != "ok" {
            bail!(
                "{}: expected `ok` for {sent}, got {}",
                self.label,
                brief(&reply)
            );
        }
        Ok(reply)
    }

    /// Request that must be answered with an `error` of the given code.
    pub async fn request_err(&mut self, msg: Value, code: &str) -> Result<Value> {
        let sent = brief(&msg);
        let reply = self.request(msg).await?;
        expect_error(&self.label, &reply, code, &sent)?;
        Ok(reply)
    }

    /// A round trip that proves the server has processed everything sent
    /// before it on this connection (a `rooms` request).
    pub async fn barrier(&mut self) -> Result<()> {
        let reply = self.request(json!({"type": "rooms"})).await?;
        if reply["type"] != "rooms" {
            bail!(
                "{}: barrier `rooms` request answered with {}",
                self.label,
                brief(&reply)
            );
        }
        Ok(())
    }

    // ----- receiving -----

    /// Takes the first message (oldest first, including ones skipped by
    /// earlier waits) that satisfies `pred`.
    pub async fn recv_where<F>(&mut self, what: &str, timeout: Duration, pred: F) -> Result<Value>
    where
        F: Fn(&Value) -> bool,
    {
        if let Some(pos) = self.pending.iter().position(&pred) {
            return Ok(self.pending.remove(pos).expect("position is in range"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Err(_) => {
                    let seen = self.pending_summary();
                    bail!(
                        "{}: timed out after {timeout:?} waiting for {what}; seen instead: {seen}",
                        self.label
                    )
                }
                Ok(None) => {
                    let seen = self.pending_summary();
                    let reason = self.close_reason().unwrap_or_else(|| "unknown".to_owned());
                    bail!(
                        "{}: connection closed ({reason}) while waiting for {what}; \
                         seen instead: {seen}",
                        self.label
                    )
                }
                Ok(Some(v)) => {
                    if pred(&v) {
                        return Ok(v);
                    }
                    self.pending.push_back(v);
                }
            }
        }
    }

    /// The next message of a type (oldest unconsumed first).
    pub async fn next_of_type(&mut self, ty: &str) -> Result<Value> {
        self.recv_where(&format!("a `{ty}` message"), MSG_TIMEOUT, |m| {
            m["type"] == ty
        })
        .await
    }

    /// The next message of a type that has no `req` (a push, not a reply).
    pub async fn next_push(&mut self, ty: &str) -> Result<Value> {
        self.recv_where(&format!("a `{ty}` push (without req)"), MSG_TIMEOUT, |m| {
            m["type"] == ty && m.get("req").is_none()
        })
        .await
    }

    /// Waits for a `rooms` push satisfying `pred` (pushes only, no replies).
    pub async fn wait_rooms_push<F>(&mut self, what: &str, pred: F) -> Result<HashMap<String, u64>>
    where
        F: Fn(&HashMap<String, u64>) -> bool,
    {
        let v = self
            .recv_where(&format!("a `rooms` push where {what}"), MSG_TIMEOUT, |m| {
                m["type"] == "rooms"
                    && m.get("req").is_none()
                    && rooms_of(m).map(|r| pred(&r)).unwrap_or(false)
            })
            .await?;
        rooms_of(&v)
    }

    /// Everything received on this connection so far, in order.
    pub fn history(&self) -> Vec<Value> {
        self.history.lock().unwrap().clone()
    }

    /// Messages received so far that satisfy `pred`.
    pub fn history_where<F: Fn(&Value) -> bool>(&self, pred: F) -> Vec<Value> {
        self.history
            .lock()
            .unwrap()
            .iter()
            .filter(|v| pred(v))
            .cloned()
            .collect()
    }

    /// Drops everything received but not yet consumed.
    pub fn clear_pending(&mut self) {
        self.pending.clear();
        while self.inbox.try_recv().is_ok() {}
    }

    /// Why the connection closed, if it did.
    pub fn close_reason(&self) -> Option<String> {
        self.close_reason.lock().unwrap().clone()
    }

    fn pending_summary(&mut self) -> String {
        while let Ok(v) = self.inbox.try_recv() {
            self.pending.push_back(v);
        }
        let mut candidates = 0;
        let mut out = String::new();
        for v in &self.pending {
            if v["type"] == "candidate" {
                candidates += 1;
                continue;
            }
            let _ = write!(out, "\n    {}", brief(v));
        }
        if candidates > 0 {
            let _ = write!(out, "\n    (+{candidates} `candidate` messages)");
        }
        if out.is_empty() {
            "nothing".to_owned()
        } else {
            out
        }
    }

    // ----- rooms -----

    /// `join` without media; returns the `joined` payload.
    pub async fn join(&mut self, room: &str, name: &str) -> Result<Joined> {
        let reply = self
            .request(json!({"type": "join", "room": room, "name": name}))
            .await?;
        let joined = Joined::from_json(&reply)
            .with_context(|| format!("{}: join {room:?} as {name:?}", self.label))?;
        if joined.room != room {
            bail!(
                "{}: joined room {:?}, asked for {room:?}",
                self.label,
                joined.room
            );
        }
        self.id = Some(joined.you.clone());
        Ok(joined)
    }

    /// Creates the peer connection first (so the offer that follows `joined`
    /// is answered), then joins.
    pub async fn join_with_media(&mut self, room: &str, name: &str) -> Result<Joined> {
        self.join_with_media_opts(room, name, MediaOptions::default())
            .await
    }

    /// [`TestClient::join_with_media`] with test instrumentation.
    pub async fn join_with_media_opts(
        &mut self,
        room: &str,
        name: &str,
        opts: MediaOptions,
    ) -> Result<Joined> {
        if let Some(mut old) = self.media.take() {
            old.close().await;
        }
        let peer = MediaPeer::new(&self.label, self.out.clone(), opts).await?;
        *self.media_route.lock().unwrap() = Some(peer.signal_tx.clone());
        self.media = Some(peer);
        self.join(room, name).await
    }

    /// `leave` -> `ok`. The peer connection (if any) keeps running and
    /// publishing, so tests can check that the server stops forwarding it;
    /// later offers are no longer routed to it.
    pub async fn leave(&mut self) -> Result<()> {
        self.request_ok(json!({"type": "leave"}))
            .await
            .with_context(|| format!("{}: leave", self.label))?;
        *self.media_route.lock().unwrap() = None;
        self.id = None;
        Ok(())
    }

    /// Closes the peer connection and the WebSocket.
    pub async fn close(mut self) {
        *self.media_route.lock().unwrap() = None;
        if let Some(mut m) = self.media.take() {
            m.close().await;
        }
        let _ = self.out.send(Message::Close(None));
        // Let the writer flush the close frame; it ends when the channel does.
        let writer = self.tasks.pop();
        drop(std::mem::replace(
            &mut self.out,
            mpsc::unbounded_channel().0,
        ));
        if let Some(w) = writer {
            let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
        }
    }

    pub async fn close_media(&mut self) {
        *self.media_route.lock().unwrap() = None;
        if let Some(mut m) = self.media.take() {
            m.close().await;
        }
    }

    // ----- media -----

    fn media(&self) -> Result<&MediaPeer> {
        self.media
            .as_ref()
            .ok_or_else(|| anyhow!("{}: no peer connection (join_with_media first)", self.label))
    }

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
        F: Fn(&TestClient) -> bool,
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
        let total = |c: &TestClient| {
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
}

impl TestClient {
    // ----- test instrumentation (see `MediaOptions`) -----

    /// While on, answers to server offers are computed and applied locally but
    /// kept back (see [`TestClient::take_held_answer`]) instead of being sent.
    pub fn set_hold_answers(&self, hold: bool) -> Result<()> {
        self.media()?
            .shared
            .hold_answers
            .store(hold, Ordering::SeqCst);
        Ok(())
    }

    /// Waits for an answer held back by [`TestClient::set_hold_answers`].
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

    /// The index (into [`TestClient::remote_tracks`]) of the newest live track
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
                    m.shared.plis_received.load(Ordering::SeqCst),
                    m.shared.nacks_received.load(Ordering::SeqCst),
                )
            })
            .unwrap_or((0, 0))
    }
}

impl TestClient {
    // ----- media restart and packet logs -----

    /// `restart_media` (protocol extension): drops the current peer
    /// connection (as a network loss would: its publishing stops), creates a
    /// new one with new local tracks and new SSRCs, routes the server's fresh
    /// offer to it and awaits the `ok`. Returns the reply.
    pub async fn restart_media(&mut self, opts: MediaOptions) -> Result<Value> {
        let peer = MediaPeer::new(&self.label, self.out.clone(), opts).await?;
        // Route first: the fresh offer may follow the `ok` at once.
        let old_route = self
            .media_route
            .lock()
            .unwrap()
            .replace(peer.signal_tx.clone());
        if old_route.is_none() {
            bail!(
                "{}: restart_media without a joined peer connection",
                self.label
            );
        }
        if let Some(mut old) = self.media.replace(peer) {
            old.close().await;
        }
        let reply = self.request(json!({"type": "restart_media"})).await?;
        if reply["type"] != "ok" {
            bail!(
                "{}: expected `ok` for restart_media, got {}",
                self.label,
                brief(&reply)
            );
        }
        Ok(reply)
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

    /// Waits until the server's `noom` data channel is open.
    pub async fn wait_data_open(&self, timeout: Duration) -> Result<()> {
        let shared = Arc::clone(&self.media()?.shared);
        let deadline = Instant::now() + timeout;
        loop {
            let notified = shared.notify.notified();
            if shared.data_channel.lock().unwrap().is_some() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("{}: data channel not open after {timeout:?}", self.label);
            }
        }
    }

    fn data_channel(&self) -> Result<Arc<dyn webrtc::data_channel::DataChannel>> {
        self.media()?
            .shared
            .data_channel
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| anyhow!("{}: data channel not open", self.label))
    }

    /// Sends one binary frame on the data channel.
    pub async fn send_data(&self, frame: &[u8]) -> Result<()> {
        let dc = self.data_channel()?;
        dc.send(bytes::BytesMut::from(frame))
            .await
            .map_err(|e| anyhow!("{}: data channel send: {e}", self.label))
    }

    /// Sends a text (non-binary) message on the data channel.
    pub async fn send_data_text(&self, text: &str) -> Result<()> {
        self.data_channel()?
            .send_text(text)
            .await
            .map_err(|e| anyhow!("{}: data channel send_text: {e}", self.label))
    }

    /// Bytes queued on our data channel, not yet sent.
    pub async fn data_outstanding(&self) -> Result<usize> {
        self.data_channel()?
            .outstanding_bytes()
            .await
            .map_err(|e| anyhow!("{e}"))
    }

    /// Sets the data channel's `bufferedAmountLowThreshold`: the queue
    /// falling to it raises `OnBufferedAmountLow`.
    pub async fn set_data_low_threshold(&self, bytes: u32) -> Result<()> {
        self.data_channel()?
            .set_buffered_amount_low_threshold(bytes)
            .await
            .map_err(|e| anyhow!("{}: set_buffered_amount_low_threshold: {e}", self.label))
    }

    /// `OnBufferedAmountLow` events seen so far.
    pub fn data_low_events(&self) -> u64 {
        self.media
            .as_ref()
            .map(|m| m.shared.data_low_events.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Sender-side back-pressure: returns once our channel's outstanding
    /// bytes are at most `low` (the threshold set with
    /// [`Self::set_data_low_threshold`]). Wakes on the channel's
    /// `OnBufferedAmountLow` event (any channel event, in fact), with a
    /// 50 ms re-check as a lost-wakeup backstop.
    pub async fn wait_data_buffered_at_most(&self, low: usize, timeout: Duration) -> Result<()> {
        let shared = Arc::clone(&self.media()?.shared);
        let deadline = Instant::now() + timeout;
        loop {
            let notified = shared.notify.notified();
            let queued = self.data_outstanding().await?;
            if queued <= low {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: data channel still has {queued} bytes queued after {timeout:?}",
                    self.label
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Bytes of binary frames the application has read from the channel.
    pub fn data_bytes_read(&self) -> u64 {
        self.media
            .as_ref()
            .map(|m| m.shared.data_bytes_read.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Runs `f` over the frames received so far, without copying them.
    pub fn with_data_frames<R>(&self, f: impl FnOnce(&[Vec<u8>]) -> R) -> R {
        match self.media.as_ref() {
            Some(m) => f(&m.shared.data_frames.lock().unwrap()),
            None => f(&[]),
        }
    }

    /// Every binary frame received on the data channel so far.
    pub fn data_frames(&self) -> Vec<Vec<u8>> {
        self.media
            .as_ref()
            .map(|m| m.shared.data_frames.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Waits until some received frame satisfies `pred`; returns it.
    pub async fn wait_data_frame<F>(
        &self,
        what: &str,
        timeout: Duration,
        pred: F,
    ) -> Result<Vec<u8>>
    where
        F: Fn(&[u8]) -> bool,
    {
        let shared = Arc::clone(&self.media()?.shared);
        let deadline = Instant::now() + timeout;
        loop {
            let notified = shared.notify.notified();
            if let Some(f) = shared.data_frames.lock().unwrap().iter().find(|f| pred(f)) {
                return Ok(f.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("{}: no data frame {what} after {timeout:?}", self.label);
            }
        }
    }

    /// Waits until the frames received so far, as a whole, satisfy `pred`.
    pub async fn wait_data_frames<F>(&self, what: &str, timeout: Duration, pred: F) -> Result<()>
    where
        F: Fn(&[Vec<u8>]) -> bool,
    {
        let shared = Arc::clone(&self.media()?.shared);
        let deadline = Instant::now() + timeout;
        loop {
            let notified = shared.notify.notified();
            if pred(&shared.data_frames.lock().unwrap()) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("{}: data frames never {what} after {timeout:?}", self.label);
            }
        }
    }

    /// Stops (or resumes) reading the data channel, as a slow receiver.
    pub fn set_data_paused(&self, paused: bool) -> Result<()> {
        let shared = &self.media()?.shared;
        shared.data_paused.store(paused, Ordering::Release);
        if !paused {
            // A stored permit: the reader may not be waiting yet.
            shared.data_resume.notify_one();
        }
        Ok(())
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// Checks that `reply` is `{"type":"error","code":code,"message":...}`.
pub fn expect_error(label: &str, reply: &Value, code: &str, sent: &str) -> Result<()> {
    if reply["type"] != "error" || reply["code"] != code {
        bail!(
            "{label}: expected error `{code}` for {sent}, got {}",
            brief(reply)
        );
    }
    if !reply["message"].is_string() {
        bail!(
            "{label}: error reply for {sent} has no string `message`: {}",
            brief(reply)
        );
    }
    Ok(())
}

/// The set of `(stream id, kind)` the live sendonly sections of an offer carry.
pub fn forwarded_in_offer(sdp: &str) -> BTreeSet<(String, String)> {
    parse_sections(sdp)
        .into_iter()
        .filter(|m| m.direction == "sendonly" && m.port != 0)
        .filter_map(|m| m.msid.map(|(s, _)| (s, m.kind)))
        .collect()
}

/// Sanity check for a unix-ms timestamp: within a minute of now.
pub fn is_recent_unix_ms(v: &Value) -> bool {
    match v.as_u64() {
        Some(ts) => ts.abs_diff(now_unix_ms()) < 60_000,
        None => false,
    }
}

// ---------------------------------------------------------------------------
// Test instrumentation: inbound RTCP to the application
// ---------------------------------------------------------------------------

/// Beyond the built-in interceptor slots, as the server's own tap.
const RTCP_TAP_SLOT: usize = 14_000;

/// Marks every inbound RTCP packet `DeliverToApplication`, so feedback about
/// our published tracks (PLI, NACK) reaches `TrackLocal::poll`.
#[derive(Default)]
struct RtcpToApp {
    reads: VecDeque<rtc::interceptor::TaggedPacket>,
    writes: VecDeque<rtc::interceptor::TaggedPacket>,
}

impl rtc::sansio::Protocol<rtc::interceptor::TaggedPacket, rtc::interceptor::TaggedPacket, ()>
    for RtcpToApp
{
    type Rout = rtc::interceptor::TaggedPacket;
    type Wout = rtc::interceptor::TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, rtc::interceptor::Packet::Rtcp(_)) {
            msg.message
                .add(rtc::interceptor::Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.writes.pop_front()
    }

    fn handle_timeout(&mut self, _now: std::time::Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl rtc::interceptor::Interceptor for RtcpToApp {
    fn bind_local_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
}

/// Counts the PLIs and NACKs that reach one of our published tracks.
async fn count_local_rtcp(shared: Arc<MediaShared>, track: Arc<TrackLocalStaticRTP>, ssrc: u32) {
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
    use webrtc::media_stream::track_local::TrackLocalEvent;
    loop {
        // `poll` returns None at once until the track is bound.
        let Some(event) = track.poll().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        #[allow(irrefutable_let_patterns)]
        let TrackLocalEvent::OnRtcpPacket(packets) = event
        else {
            continue;
        };
        for p in packets {
            let any = p.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                if pli.media_ssrc == ssrc {
                    shared.plis_received.fetch_add(1, Ordering::SeqCst);
                }
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                if nack.media_ssrc == ssrc {
                    shared.nacks_received.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        shared.notify.notify_waiters();
    }
}

// ---------------------------------------------------------------------------
// Test instrumentation: a UDP tap below SRTP
// ---------------------------------------------------------------------------

/// Sees every datagram the peer connection receives, before DTLS/SRTP. RTP
/// headers are not encrypted by SRTP, so it can count `(ssrc, seq)` as they
/// arrive on the wire, and drop chosen packets to simulate loss.
#[derive(Debug, Default)]
pub struct SocketTap {
    /// How many times each `(ssrc, seq)` of an RTP packet arrived.
    rtp_seen: Mutex<HashMap<(u32, u16), u32>>,
    /// Drop the next `n` RTP packets of this SSRC.
    drop_plan: Mutex<Option<(u32, usize)>>,
    dropped: Mutex<Vec<u16>>,
    /// Once set, every datagram in either direction is dropped: the peer's
    /// network is gone, without a DTLS close or anything else said.
    silenced: AtomicBool,
}

impl SocketTap {
    /// Times `(ssrc, seq)` arrived on the wire (dropped ones not counted).
    pub fn rtp_arrivals(&self, ssrc: u32, seq: u16) -> u32 {
        self.rtp_seen
            .lock()
            .unwrap()
            .get(&(ssrc, seq))
            .copied()
            .unwrap_or(0)
    }

    /// Drops the next `n` RTP packets carrying `ssrc`.
    pub fn drop_next(&self, ssrc: u32, n: usize) {
        self.dropped.lock().unwrap().clear();
        *self.drop_plan.lock().unwrap() = Some((ssrc, n));
    }

    /// Cuts the peer connection's network: nothing is sent or received
    /// any more (the WebSocket is not affected).
    pub fn silence(&self) {
        self.silenced.store(true, Ordering::SeqCst);
    }

    /// Sequence numbers dropped since the last [`SocketTap::drop_next`].
    pub fn dropped(&self) -> Vec<u16> {
        self.dropped.lock().unwrap().clone()
    }

    /// Records the datagram; true when it must be dropped.
    fn inspect(&self, d: &[u8]) -> bool {
        if self.silenced.load(Ordering::SeqCst) {
            return true;
        }
        // RTP (RFC 7983: first byte 128..=191), not RTCP (payload type 192..=223).
        if d.len() < 12 || !(128..=191).contains(&d[0]) || (192..=223).contains(&d[1]) {
            return false;
        }
        let seq = u16::from_be_bytes([d[2], d[3]]);
        let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        {
            let mut plan = self.drop_plan.lock().unwrap();
            if let Some((s, n)) = plan.as_mut() {
                if *s == ssrc && *n > 0 {
                    *n -= 1;
                    self.dropped.lock().unwrap().push(seq);
                    return true;
                }
            }
        }
        *self
            .rtp_seen
            .lock()
            .unwrap()
            .entry((ssrc, seq))
            .or_insert(0) += 1;
        false
    }
}

/// Tokio runtime whose UDP sockets go through a [`SocketTap`] (one datagram
/// per receive, no GSO/GRO).
#[derive(Debug)]
struct TapRuntime {
    inner: webrtc::runtime::TokioRuntime,
    tap: Arc<SocketTap>,
}

type BoxFut<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl webrtc::runtime::Runtime for TapRuntime {
    fn spawn(
        &self,
        future: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn webrtc::runtime::JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn webrtc::runtime::JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn webrtc::runtime::AsyncUdpSocket>> {
        socket.set_nonblocking(true)?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        Ok(Arc::new(TapSocket {
            io,
            tap: Arc::clone(&self.tap),
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

    fn block_on(&self, future: std::pin::Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn name(&self) -> &'static str {
        "tokio-tap"
    }
}

#[derive(Debug)]
struct TapSocket {
    io: tokio::net::UdpSocket,
    tap: Arc<SocketTap>,
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
        if self.tap.silenced.load(Ordering::SeqCst) {
            return std::task::Poll::Ready(Ok(transmit.contents.len()));
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
            match self.io.try_recv_from(&mut bufs[0]) {
                Ok((n, from)) => {
                    if self.tap.inspect(&bufs[0][..n]) {
                        continue;
                    }
                    let mut m = webrtc::runtime::RecvMeta::default();
                    m.addr = from;
                    m.len = n;
                    m.stride = n.max(1);
                    m.dst_ip = self.io.local_addr().ok().map(|a| a.ip());
                    meta[0] = m;
                    return Poll::Ready(Ok(1));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// `GET path` over plain HTTP/1.1 (no client crate needed); the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        anyhow::Ok(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow!("GET {path} timed out"))??;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// The samples of metric `name` in Prometheus text, summed over label sets.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The largest sample of metric `name` over its label sets.
pub fn metric_max(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .fold(0.0, f64::max)
}
