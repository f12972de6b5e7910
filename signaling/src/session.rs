//! One WebSocket connection: the lobby, then at most one room at a time.
//!
//! The session task owns the connection's state (which room, which
//! participant id, the grace timer) and is the only one to change it; other
//! tasks and shard threads reach the client through its [`Outbox`] and the
//! session through its media channel. Everything about rooms goes through
//! [`Rooms`](crate::rooms::Rooms), wherever the rooms live.

use crate::delivery::{delivery, Delivery, OperatorAction};
use crate::outbox::{outbox, Outbox, OutboxReceiver};
use crate::protocol::{self, ErrorCode, ParticipantInfo, Refusal, Request};
use crate::rate_limit::TokenBucket;
use crate::rooms::{JoinError, JoinRequest, MoveRequest, ParticipantChange, RoomMedia};
use crate::AppState;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{BoxStream, SplitSink};
use futures_util::{SinkExt, StreamExt};
use noom_sfu::{
    Command, ConnectionState, EventSink, IceCandidate, MediaEvent, NegotiationError, VideoLayout,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

mod membership;

/// What a client sent, as its session sees it: read from a WebSocket, or
/// relayed by the node that holds the WebSocket (several nodes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "frame", rename_all = "snake_case")]
pub enum ClientFrame {
    Text {
        text: String,
    },
    Binary,
    /// A frame far over the message limit (refused from its header).
    TooBig,
    /// The client closed or vanished.
    Gone,
}

/// Who a participant is, as much as is needed to rejoin it elsewhere with
/// the same face (its room's node was lost, or its room moved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub room: String,
    pub name: String,
    pub audio_muted: bool,
    pub video_muted: bool,
    /// ICE ufrags of the client's peer connections in this stay. A session
    /// that rejoins the participant elsewhere refuses SDP carrying one: it
    /// comes from a peer connection the client was about to replace (its
    /// answer crossed the `joined` on the wire), and must not be taken for
    /// the answer to the new offer. Absent from older nodes' messages.
    #[serde(default)]
    pub ice_ufrags: Vec<String>,
}

/// Starts the task that carries the session's outgoing messages, then its
/// last words, to the client.
pub type Writer =
    Box<dyn FnOnce(OutboxReceiver, oneshot::Receiver<Ending>) -> JoinHandle<()> + Send>;

/// A session's connection to its client, wherever the client's WebSocket is.
pub struct Port {
    pub frames: BoxStream<'static, ClientFrame>,
    pub writer: Writer,
    /// Kept up to date with the participant's identity (None in the lobby),
    /// for a front node that may have to rejoin it elsewhere.
    pub identity: Option<watch::Sender<Option<Identity>>>,
    /// Join this room with this identity at once (moved or re-homed), with
    /// no request of the client's.
    pub rejoin: Option<Identity>,
    /// The front already refused oversized and too frequent messages (so
    /// a relayed client's flood never crosses Redis): skip the rate check.
    pub admitted_upstream: bool,
}

/// Media events queued from the shard to one session; offers and state
/// changes are rare, so a small bound suffices.
const MEDIA_EVENT_QUEUE: usize = 64;

/// Forwards a participant's media events from its shard thread to the session.
struct MediaSink {
    participant: String,
    tx: mpsc::Sender<(String, MediaEvent)>,
}

impl EventSink for MediaSink {
    fn deliver(&self, event: MediaEvent) {
        match self.tx.try_send((self.participant.clone(), event)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(participant = %self.participant, "media event dropped: session not keeping up")
            }
            // The session ended (the client left): nobody to tell.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

struct InRoom {
    room: String,
    id: String,
    media: Arc<dyn RoomMedia>,
}

struct Session {
    conn: u64,
    state: Arc<AppState>,
    outbox: Outbox,
    /// This connection as the rooms reach it.
    delivery: Delivery,
    media_tx: mpsc::Sender<(String, MediaEvent)>,
    current: Option<InRoom>,
    rate: TokenBucket,
    joins: TokenBucket,
    /// When set, the media connection is down and the participant leaves at this instant.
    grace_deadline: Option<Instant>,
    /// `req` of the client's own offer, echoed on the server's answer.
    client_offer_req: Option<Value>,
    /// Frames taken from the client so far (a handoff says how many were
    /// handled, so the front replays the rest at the new node).
    frames_taken: u64,
    /// Set when the room the client asked for lives on another node.
    handoff: Option<Handoff>,
    identity: Option<watch::Sender<Option<Identity>>>,
    admitted_upstream: bool,
    /// The ICE ufrags of the client's SDP in this stay in a room, and those
    /// of the stay a move ended: an answer the client's old peer connection
    /// sent before it heard of the move must not reach the new peer.
    client_ufrags: Vec<String>,
    replaced_ufrags: Vec<String>,
}

/// How many distinct client ICE ufrags a stay remembers (one per peer
/// connection; more only with ICE restarts).
const UFRAGS_KEPT: usize = 4;

/// The first `a=ice-ufrag:` of an SDP.
fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
}

/// The session continues on another node (several nodes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// The node that hosts the room.
    pub node: String,
    /// The room (to find it another node if `node` cannot be reached).
    pub room: String,
    /// How many of the client's frames this session handled; the front
    /// replays the later ones to `node`.
    pub processed: u64,
    /// Rejoin with this identity there (instead of replaying a `join`).
    pub rejoin: Option<Identity>,
}

/// Serves one WebSocket on this node (single node, or the room is here).
pub async fn run(socket: WebSocket, state: Arc<AppState>) {
    let (ws_tx, ws_rx) = socket.split();
    let port = Port {
        frames: ws_frames(ws_rx),
        writer: Box::new(move |out_rx, farewell| tokio::spawn(write_loop(ws_tx, out_rx, farewell))),
        identity: None,
        rejoin: None,
        admitted_upstream: false,
    };
    state.metrics.ws_connections.inc();
    serve_port(port, state.clone()).await;
    state.metrics.ws_connections.dec();
}

/// A WebSocket's incoming side as the frames a session reads.
pub(crate) fn ws_frames(
    ws_rx: futures_util::stream::SplitStream<WebSocket>,
) -> BoxStream<'static, ClientFrame> {
    ws_rx
        .map(|message| match message {
            Ok(Message::Text(text)) => Some(ClientFrame::Text {
                text: text.as_str().to_owned(),
            }),
            Ok(Message::Binary(_)) => Some(ClientFrame::Binary),
            Ok(Message::Ping(_) | Message::Pong(_)) => None,
            Ok(Message::Close(_)) => Some(ClientFrame::Gone),
            Err(err) if is_message_too_big(&err) => Some(ClientFrame::TooBig),
            Err(err) => {
                tracing::debug!(%err, "websocket read failed");
                Some(ClientFrame::Gone)
            }
        })
        .filter_map(std::future::ready)
        .boxed()
}

/// Serves one client through `port`: a WebSocket here, or one relayed from
/// another node.
pub async fn serve_port(port: Port, state: Arc<AppState>) {
    use tracing::Instrument;
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    // Every log line of this connection carries its room and participant
    // (recorded at join) through this span.
    let span = tracing::info_span!(
        "session",
        conn,
        room = tracing::field::Empty,
        participant = tracing::field::Empty
    );
    serve(port, state, conn).instrument(span).await
}

/// Why a session ended, which decides the last things its client hears.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ending", rename_all = "snake_case")]
pub enum Ending {
    /// The client closed or vanished: nothing more to say.
    ClientGone,
    /// One last message (`kicked`, `shutdown`) after everything already
    /// queued, then the close.
    LastWord { text: String },
    /// A close frame with this status and reason.
    Close { code: u16, reason: String },
    /// The client goes on with a session on another node (the connection
    /// stays open).
    Handoff(Handoff),
}

/// How long a session's last words may take to reach a client before the
/// connection is dropped regardless (a client that stopped reading).
const FAREWELL_LIMIT: Duration = Duration::from_secs(2);

async fn serve(port: Port, state: Arc<AppState>, conn: u64) {
    let (outbox, out_rx) = outbox();
    let (delivery, mut operator) = delivery(outbox.clone());
    let Port {
        frames: mut client,
        writer,
        identity,
        rejoin,
        admitted_upstream,
    } = port;
    let mut shutdown = state.shutdown.subscribe();
    let (farewell_tx, farewell_rx) = oneshot::channel();
    let mut writer = writer(out_rx, farewell_rx);

    let (media_tx, mut media_rx) = mpsc::channel(MEDIA_EVENT_QUEUE);
    let limits = &state.config.limits;
    let mut session = Session {
        conn,
        rate: TokenBucket::new(limits.messages_per_second, limits.message_burst),
        joins: TokenBucket::per_minute(limits.joins_per_minute),
        state: state.clone(),
        outbox: outbox.clone(),
        delivery: delivery.clone(),
        media_tx,
        current: None,
        grace_deadline: None,
        client_offer_req: None,
        frames_taken: 0,
        handoff: None,
        identity,
        admitted_upstream,
        client_ufrags: Vec::new(),
        replaced_ufrags: Vec::new(),
    };
    state.rooms.enter_lobby(conn, delivery.clone()).await;
    if let Some(identity) = rejoin {
        session.rejoin(identity).await;
    }

    let ending = loop {
        if let Some(handoff) = session.handoff.take() {
            break Ending::Handoff(handoff);
        }
        let grace = session.grace_deadline;
        // Biased: an operator action or a shutdown is seen at the next turn
        // even while the client floods us; media events are bounded (their
        // sinks drop when full), so they cannot starve the client's messages.
        tokio::select! {
            biased;
            action = operator.next() => match action {
                OperatorAction::Kick { reason } => {
                    if let Some(here) = &session.current {
                        tracing::info!(conn, room = %here.room, participant = %here.id, %reason, "kick");
                    }
                    break Ending::LastWord { text: serde_json::json!({"type": "kicked", "reason": reason}).to_string() };
                }
                OperatorAction::MoveTo { room } => session.on_move(room).await,
                OperatorAction::Rehome { node, into } => break session.rehome_ending(node, into),
            },
            _ = shutdown.recv() => {
                break Ending::LastWord { text: serde_json::json!({"type": "shutdown", "message": "the server is shutting down"}).to_string() };
            }
            Some((participant, event)) = media_rx.recv() => session.on_media(participant, event),
            _ = tokio::time::sleep_until(grace.unwrap_or_else(Instant::now)), if grace.is_some() => {
                session.on_grace_expired().await;
            }
            frame = client.next() => {
                session.frames_taken += 1;
                match frame {
                    Some(ClientFrame::Text { text }) => session.on_text(&text).await,
                    Some(ClientFrame::Binary) => session.refuse(&None, Refusal::new(ErrorCode::BadRequest, "binary messages are not accepted; send JSON text")),
                    Some(ClientFrame::Gone) | None => break Ending::ClientGone,
                    Some(ClientFrame::TooBig) => {
                        tracing::info!(conn, "frame far over the message limit: closing");
                        break Ending::Close { code: 1009, reason: "message too big".into() };
                    }
                }
            },
        }
    };
    session.leave_room().await;
    state.rooms.leave_lobby(conn).await;
    let _ = farewell_tx.send(ending);
    drop(session);
    drop(delivery);
    drop(outbox);
    // The writer ends once every outbox clone is gone (the directory dropped
    // its clones above). A client that stopped reading gets a bounded wait,
    // then the connection is dropped under it: nothing of it stays behind.
    if tokio::time::timeout(FAREWELL_LIMIT, &mut writer)
        .await
        .is_err()
    {
        tracing::info!(
            conn,
            "client not reading its last messages: dropping the connection"
        );
        writer.abort();
    }
    drop(client);
}

/// Sends the outbox to the client, then the session's last words.
async fn write_loop(
    mut ws_tx: SplitSink<WebSocket, Message>,
    mut out_rx: OutboxReceiver,
    farewell: oneshot::Receiver<Ending>,
) {
    loop {
        tokio::select! {
            text = out_rx.rx.recv() => match text {
                Some(text) => if ws_tx.send(Message::Text(text.into())).await.is_err() { return },
                None => break,
            },
            _ = out_rx.overflow_signal.notified() => {
                let _ = ws_tx.send(Message::Close(Some(CloseFrame {
                    code: 1008,
                    reason: "client is not reading its messages".into(),
                }))).await;
                let _ = ws_tx.close().await;
                return;
            }
        }
    }
    say_farewell(&mut ws_tx, farewell.await.unwrap_or(Ending::ClientGone)).await;
}

/// A session's last words on its WebSocket, then the close.
pub(crate) async fn say_farewell(ws_tx: &mut SplitSink<WebSocket, Message>, ending: Ending) {
    match ending {
        Ending::LastWord { text } => {
            let _ = ws_tx.send(Message::Text(text.into())).await;
        }
        Ending::Close { code, reason } => {
            let _ = ws_tx
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })))
                .await;
        }
        // A handoff reaches a WebSocket only when nobody can follow it;
        // closing tells the client to reconnect.
        Ending::ClientGone | Ending::Handoff(_) => {}
    }
    let _ = ws_tx.close().await;
}

/// Whether a read failed because the client's frame (or message) exceeds
/// the hard limit set on the upgrade: tungstenite refuses such a frame from
/// its header, before reading (or buffering) its payload.
fn is_message_too_big(err: &axum::Error) -> bool {
    use std::error::Error as _;
    matches!(
        err.source()
            .and_then(|e| e.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(
            tungstenite::error::CapacityError::MessageTooLong { .. }
        ))
    )
}

/// The checks every client message passes before it is handled: its size,
/// then (with `rate`) the connection's message rate. On refusal, the `req`
/// to answer (None when the message was too large to be read).
pub(crate) fn admit(
    max_bytes: usize,
    rate: Option<&mut TokenBucket>,
    text: &str,
) -> Result<protocol::Incoming, (Option<Value>, Refusal)> {
    if text.len() > max_bytes {
        return Err((
            None,
            Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "message of {} bytes exceeds the limit of {max_bytes} bytes",
                    text.len()
                ),
            ),
        ));
    }
    let incoming = protocol::parse(text);
    if let Some(rate) = rate {
        if !rate.take(std::time::Instant::now()) {
            return Err((
                incoming.req,
                Refusal::new(ErrorCode::RateLimited, "too many messages; slow down"),
            ));
        }
    }
    Ok(incoming)
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn new_participant_id() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!("p{}", Alphanumeric.sample_string(&mut rand::rng(), 11))
}

impl Session {
    fn refuse(&self, req: &Option<Value>, refusal: Refusal) {
        self.state.metrics.count_error(refusal.code);
        self.outbox.push(protocol::error(req, &refusal));
    }

    fn reply_ok(&self, req: &Option<Value>) {
        if req.is_some() {
            self.outbox.push(protocol::ok(req));
        }
    }

    async fn on_text(&mut self, text: &str) {
        let limits = &self.state.config.limits;
        let rate = (!self.admitted_upstream).then_some(&mut self.rate);
        let incoming = match admit(limits.max_message_bytes, rate, text) {
            Ok(incoming) => incoming,
            Err((req, refusal)) => {
                self.refuse(&req, refusal);
                return;
            }
        };
        let req = incoming.req;
        let result = match incoming.request {
            Ok(request) => self.dispatch(&req, request).await,
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = result {
            self.refuse(&req, refusal);
        }
    }

    fn in_room(&self) -> Result<&InRoom, Refusal> {
        self.current
            .as_ref()
            .ok_or_else(|| Refusal::new(ErrorCode::NotInRoom, "join a room first"))
    }

    async fn dispatch(&mut self, req: &Option<Value>, request: Request) -> Result<(), Refusal> {
        match request {
            Request::Rooms => {
                let list = self.state.rooms.room_list().await;
                self.outbox.push(protocol::rooms(req, &list));
            }
            Request::Join { room, name, token } => self.join(req, room, name, token).await?,
            Request::Leave => {
                self.in_room()?;
                self.leave_room().await;
                self.reply_ok(req);
                self.state
                    .rooms
                    .enter_lobby(self.conn, self.delivery.clone())
                    .await;
            }
            Request::Name { name } => {
                protocol::check_name("name", &name)?;
                if self.state.config.auth.required() {
                    return Err(Refusal::new(
                        ErrorCode::Unauthorized,
                        "names come from join tokens on this server",
                    ));
                }
                let here = self.in_room()?;
                self.change_identity(|identity| identity.name = name.clone());
                self.state
                    .rooms
                    .update(&here.room, &here.id, ParticipantChange::Name(name))
                    .await;
                self.reply_ok(req);
            }
            Request::Mute { kind, muted } => {
                let here = self.in_room()?;
                self.change_identity(|identity| match kind {
                    protocol::MediaKind::Audio => identity.audio_muted = muted,
                    protocol::MediaKind::Video => identity.video_muted = muted,
                });
                self.state
                    .rooms
                    .update(
                        &here.room,
                        &here.id,
                        ParticipantChange::Muted { kind, muted },
                    )
                    .await;
                self.reply_ok(req);
            }
            Request::Chat { text, to } => {
                protocol::check_chat_text(&text)?;
                let here = self.in_room()?;
                self.state
                    .rooms
                    .chat(&here.room, &here.id, &text, to.as_deref(), unix_ms())
                    .await?;
                self.reply_ok(req);
            }
            Request::Answer { sdp } => {
                self.check_not_replaced(&sdp)?;
                let here = self.current.as_ref().ok_or_else(|| {
                    Refusal::new(ErrorCode::NegotiationFailed, "no offer is outstanding")
                })?;
                let reply = self.negotiation_reply(req, ErrorCode::NegotiationFailed, true);
                self.to_shard(Command::Answer {
                    participant: here.id.clone(),
                    sdp,
                    reply,
                })?;
            }
            Request::Offer { sdp } => {
                self.check_not_replaced(&sdp)?;
                let here = self.in_room()?;
                let participant = here.id.clone();
                // The server's answer (a MediaEvent) is the success reply.
                self.client_offer_req = req.clone();
                let reply = self.negotiation_reply(req, ErrorCode::NegotiationFailed, false);
                self.to_shard(Command::Offer {
                    participant,
                    sdp,
                    reply,
                })?;
            }
            Request::Layout { videos } => {
                let here = self.in_room()?;
                let participant = here.id.clone();
                // Unknown participants are ignored by the shard: nothing to
                // wait for, the reply is at once.
                self.to_shard(Command::Layout {
                    participant,
                    videos: videos
                        .into_iter()
                        .map(|v| VideoLayout {
                            publisher: v.participant,
                            width: v.width,
                            height: v.height,
                        })
                        .collect(),
                })?;
                self.reply_ok(req);
            }
            Request::RestartMedia => {
                let here = self.in_room()?;
                let participant = here.id.clone();
                self.client_offer_req = None;
                let reply = self.negotiation_reply(req, ErrorCode::Internal, true);
                self.to_shard(Command::RestartMedia { participant, reply })?;
            }
            Request::Candidate { candidate } => {
                let here = self.in_room()?;
                let participant = here.id.clone();
                let reply = self.negotiation_reply(req, ErrorCode::BadRequest, true);
                self.to_shard(Command::Candidate {
                    participant,
                    candidate: candidate.map(|c| IceCandidate {
                        candidate: c.candidate,
                        sdp_mid: c.sdp_mid,
                        sdp_mline_index: c.sdp_mline_index,
                        username_fragment: c.username_fragment,
                    }),
                    reply,
                })?;
            }
        }
        Ok(())
    }

    /// Refuses SDP from the peer connection a move replaced (it crossed the
    /// move's `joined` on the wire), and remembers the ufrag of any other.
    fn check_not_replaced(&mut self, sdp: &str) -> Result<(), Refusal> {
        let Some(ufrag) = ice_ufrag(sdp) else {
            return Ok(());
        };
        if self.replaced_ufrags.iter().any(|u| u == ufrag) {
            return Err(Refusal::new(
                ErrorCode::NegotiationFailed,
                "this SDP is from the peer connection replaced when the room moved",
            ));
        }
        if self.client_ufrags.len() < UFRAGS_KEPT && !self.client_ufrags.iter().any(|u| u == ufrag)
        {
            self.client_ufrags.push(ufrag.to_owned());
            let known = self.client_ufrags.clone();
            self.change_identity(|identity| identity.ice_ufrags = known);
        }
        Ok(())
    }

    /// The completion a shard calls for a negotiation command.
    fn negotiation_reply(
        &self,
        req: &Option<Value>,
        code: ErrorCode,
        ok_on_success: bool,
    ) -> noom_sfu::Reply {
        let outbox = self.outbox.clone();
        let state = self.state.clone();
        let req = req.clone();
        Box::new(move |result: Result<(), NegotiationError>| match result {
            Ok(()) => {
                if ok_on_success && req.is_some() {
                    outbox.push(protocol::ok(&req));
                }
            }
            Err(err) => {
                let code = match err {
                    NegotiationError::UnknownMid(_) => ErrorCode::BadRequest,
                    _ => code,
                };
                state.metrics.count_error(code);
                outbox.push(protocol::error(&req, &Refusal::new(code, err.to_string())));
            }
        })
    }

    fn to_shard(&self, command: Command) -> Result<(), Refusal> {
        let here = self.in_room()?;
        here.media
            .send(command)
            .map_err(|_| Refusal::new(ErrorCode::Internal, "the media server is overloaded"))
    }

    fn on_media(&mut self, participant: String, event: MediaEvent) {
        if self.current.as_ref().map(|c| c.id.as_str()) != Some(participant.as_str()) {
            return; // From a previous stay in a room.
        }
        match event {
            MediaEvent::Offer { sdp } => self.outbox.push(protocol::offer(&sdp)),
            MediaEvent::Answer { sdp } => {
                let req = self.client_offer_req.take();
                self.outbox.push(protocol::answer(&req, &sdp));
            }
            MediaEvent::Candidate(candidate) => self.outbox.push(protocol::candidate(&candidate)),
            MediaEvent::Speakers { participants } => {
                self.outbox.push(protocol::speakers(&participants))
            }
            MediaEvent::TrackUnsupported {
                publisher,
                track_id,
                mime_type,
            } => self.outbox.push(protocol::track_unsupported(
                &publisher, &track_id, &mime_type,
            )),
            MediaEvent::EncodingsWanted {
                track_id,
                mid,
                active,
            } => self
                .outbox
                .push(protocol::encodings(&track_id, mid.as_deref(), &active)),
            MediaEvent::ConnectionState(state) => match state {
                ConnectionState::Connected => self.grace_deadline = None,
                // Closed too: a client that closed its peer connection (DTLS
                // close_notify) without leaving is gone just the same.
                ConnectionState::Disconnected
                | ConnectionState::Failed
                | ConnectionState::Closed => {
                    if self.grace_deadline.is_none() {
                        let grace =
                            Duration::from_millis(self.state.config.session.grace_period_ms);
                        self.grace_deadline = Some(Instant::now() + grace);
                    }
                }
                ConnectionState::Connecting => {}
            },
        }
    }

    async fn on_grace_expired(&mut self) {
        self.grace_deadline = None;
        if let Some(here) = &self.current {
            tracing::info!(conn = self.conn, participant = %here.id, "media connection lost for longer than the grace period");
        }
        self.leave_room().await;
        self.outbox.push(
            serde_json::json!({"type": "left", "reason": "media_failed", "message": "the media connection failed for longer than the grace period"})
                .to_string(),
        );
        self.state
            .rooms
            .enter_lobby(self.conn, self.delivery.clone())
            .await;
    }
}
