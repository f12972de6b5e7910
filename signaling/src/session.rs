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
use crate::rooms::{JoinRequest, MoveRequest, ParticipantChange, RoomMedia};
use crate::AppState;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use noom_sfu::{Command, ConnectionState, EventSink, IceCandidate, MediaEvent, NegotiationError};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

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

pub async fn run(socket: WebSocket, state: Arc<AppState>) {
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
    serve(socket, state, conn).instrument(span).await
}

/// Why a session ended, which decides the last things its client hears.
enum Ending {
    /// The client closed or vanished: nothing more to say.
    ClientGone,
    /// One last message (`kicked`, `shutdown`) after everything already
    /// queued, then the close.
    LastWord(String),
    /// A close frame with this status and reason.
    Close(u16, &'static str),
}

/// How long a session's last words may take to reach a client before the
/// connection is dropped regardless (a client that stopped reading).
const FAREWELL_LIMIT: Duration = Duration::from_secs(2);

async fn serve(socket: WebSocket, state: Arc<AppState>, conn: u64) {
    state.metrics.ws_connections.inc();
    let (outbox, out_rx) = outbox();
    let (delivery, mut operator) = delivery(outbox.clone());
    let (ws_tx, mut ws_rx) = socket.split();
    let mut shutdown = state.shutdown.subscribe();
    let (farewell_tx, farewell_rx) = oneshot::channel();
    let mut writer = tokio::spawn(write_loop(ws_tx, out_rx, farewell_rx));

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
        client_ufrags: Vec::new(),
        replaced_ufrags: Vec::new(),
    };
    state.rooms.enter_lobby(conn, delivery.clone()).await;

    let ending = loop {
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
                    break Ending::LastWord(serde_json::json!({"type": "kicked", "reason": reason}).to_string());
                }
                OperatorAction::MoveTo { room } => session.on_move(room).await,
            },
            _ = shutdown.recv() => {
                break Ending::LastWord(serde_json::json!({"type": "shutdown", "message": "the server is shutting down"}).to_string());
            }
            Some((participant, event)) = media_rx.recv() => session.on_media(participant, event),
            _ = tokio::time::sleep_until(grace.unwrap_or_else(Instant::now)), if grace.is_some() => {
                session.on_grace_expired().await;
            }
            message = ws_rx.next() => match message {
                Some(Ok(Message::Text(text))) => session.on_text(text.as_str()).await,
                Some(Ok(Message::Binary(_))) => session.refuse(&None, Refusal::new(ErrorCode::BadRequest, "binary messages are not accepted; send JSON text")),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break Ending::ClientGone,
                Some(Err(err)) if is_message_too_big(&err) => {
                    tracing::info!(conn, %err, "frame far over the message limit: closing");
                    break Ending::Close(1009, "message too big");
                }
                Some(Err(err)) => {
                    tracing::debug!(conn, %err, "websocket read failed");
                    break Ending::ClientGone;
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
    drop(ws_rx);
    state.metrics.ws_connections.dec();
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
    match farewell.await {
        Ok(Ending::LastWord(text)) => {
            let _ = ws_tx.send(Message::Text(text.into())).await;
        }
        Ok(Ending::Close(code, reason)) => {
            let _ = ws_tx
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })))
                .await;
        }
        Ok(Ending::ClientGone) | Err(_) => {}
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
        if text.len() > self.state.config.limits.max_message_bytes {
            self.refuse(
                &None,
                Refusal::new(
                    ErrorCode::TooLarge,
                    format!(
                        "message of {} bytes exceeds the limit of {} bytes",
                        text.len(),
                        self.state.config.limits.max_message_bytes
                    ),
                ),
            );
            return;
        }
        let incoming = protocol::parse(text);
        if !self.rate.take(std::time::Instant::now()) {
            self.refuse(
                &incoming.req,
                Refusal::new(ErrorCode::RateLimited, "too many messages; slow down"),
            );
            return;
        }
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
                self.state
                    .rooms
                    .update(&here.room, &here.id, ParticipantChange::Name(name))
                    .await;
                self.reply_ok(req);
            }
            Request::Mute { kind, muted } => {
                let here = self.in_room()?;
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

    async fn join(
        &mut self,
        req: &Option<Value>,
        room: String,
        name: String,
        token: Option<String>,
    ) -> Result<(), Refusal> {
        protocol::check_name("room", &room)?;
        protocol::check_name("name", &name)?;
        if self.current.is_some() {
            return Err(Refusal::new(
                ErrorCode::AlreadyInRoom,
                "already in a room; leave first",
            ));
        }
        let auth = &self.state.config.auth;
        if auth.required() {
            crate::auth::check(&auth.secret, token.as_deref(), &room, &name)?;
        }
        if !self.joins.take(std::time::Instant::now()) {
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                "too many joins; wait a little",
            ));
        }
        let info = ParticipantInfo {
            id: new_participant_id(),
            name,
            audio_muted: false,
            video_muted: false,
        };
        let id = info.id.clone();
        let welcome = {
            let (req, room, id) = (req.clone(), room.clone(), id.clone());
            let ice_servers = self.state.ice_servers.clone();
            Box::new(move |others: &[ParticipantInfo]| {
                protocol::joined(&req, &room, &id, others, &ice_servers)
            })
        };
        let joined = self
            .state
            .rooms
            .join(JoinRequest {
                room: room.clone(),
                participant: info,
                conn: self.conn,
                delivery: self.delivery.clone(),
                welcome,
            })
            .await?;
        if self.start_media(room, id, joined.media).is_err() {
            self.leave_room().await;
            return Err(Refusal::new(
                ErrorCode::Internal,
                "the media server is overloaded",
            ));
        }
        Ok(())
    }

    /// Now a member of `room` as `id`: records it and asks the room's media
    /// plane for a fresh peer (whose offer follows the `joined`).
    fn start_media(
        &mut self,
        room: String,
        id: String,
        media: Arc<dyn RoomMedia>,
    ) -> Result<(), Refusal> {
        let shard = media.shard();
        let sink = Box::new(MediaSink {
            participant: id.clone(),
            tx: self.media_tx.clone(),
        });
        self.current = Some(InRoom {
            room: room.clone(),
            id: id.clone(),
            media,
        });
        let span = tracing::Span::current();
        span.record("room", room.as_str());
        span.record("participant", id.as_str());
        tracing::info!(conn = self.conn, %room, participant = %id, shard, "join");
        self.to_shard(Command::Join {
            room,
            participant: id,
            sink,
        })
    }

    /// An operator moved this participant's room into `to`: leave the
    /// current room and enter `to` with a fresh participant id and a fresh
    /// media peer (the old one is closed, so its tracks go away); the
    /// client gets `joined` for `to` and then a new offer.
    async fn on_move(&mut self, to: String) {
        let Some(here) = self.current.take() else {
            return; // Left meanwhile; its seat was released on leaving.
        };
        let new_id = new_participant_id();
        let welcome = {
            let new_id = new_id.clone();
            let ice_servers = self.state.ice_servers.clone();
            Box::new(move |room: &str, others: &[ParticipantInfo]| {
                protocol::joined(&None, room, &new_id, others, &ice_servers)
            })
        };
        let arrived = self
            .state
            .rooms
            .follow_move(MoveRequest {
                from: here.room.clone(),
                participant: here.id.clone(),
                new_id: new_id.clone(),
                delivery: self.delivery.clone(),
                welcome,
            })
            .await;
        let arrived = match arrived {
            Ok(arrived) => arrived,
            Err(refusal) => {
                tracing::warn!(conn = self.conn, room = %here.room, participant = %here.id, %to, reason = %refusal.message, "move not made");
                self.current = Some(here);
                return;
            }
        };
        let _ = here.media.send(Command::Leave {
            participant: here.id.clone(),
        });
        tracing::info!(conn = self.conn, from = %here.room, to = %arrived.room, participant = %here.id, new_id = %new_id, "moved");
        self.grace_deadline = None;
        self.client_offer_req = None;
        self.replaced_ufrags = std::mem::take(&mut self.client_ufrags);
        if self
            .start_media(arrived.room, new_id, arrived.joined.media)
            .is_err()
        {
            self.leave_room().await;
            self.outbox.push(
                serde_json::json!({"type": "left", "reason": "media_failed", "message": "the media server is overloaded"})
                    .to_string(),
            );
            self.state
                .rooms
                .enter_lobby(self.conn, self.delivery.clone())
                .await;
        }
    }

    async fn leave_room(&mut self) {
        let Some(here) = self.current.take() else {
            return;
        };
        self.grace_deadline = None;
        self.client_offer_req = None;
        self.client_ufrags.clear();
        self.replaced_ufrags.clear();
        self.state.rooms.leave(&here.room, &here.id).await;
        let _ = here.media.send(Command::Leave {
            participant: here.id.clone(),
        });
        tracing::info!(conn = self.conn, room = %here.room, participant = %here.id, "leave");
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
