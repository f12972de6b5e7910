//! One WebSocket connection speaking the signaling contract: requests and
//! their replies (matched by `req`), pushes, event-driven waits with
//! deadlines, and the room operations (join, leave, close) that create and
//! drop the participant's [`MediaPeer`].
//!
//! Waiting is always event driven (channel receives) with a deadline; a
//! timeout is an error that says what was awaited and what was seen instead.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::contract::{brief, expect_error, rooms_of, Joined};
use crate::media_peer::{MediaPeer, Signal};
use crate::media_route::MediaRoute;
use crate::media_state::{MediaHooks, MediaOptions};
use crate::MSG_TIMEOUT;

/// The received messages kept for [`Client::history`]; older ones are
/// dropped, so a long-running bot does not grow without bound.
const HISTORY_CAP: usize = 100_000;

/// One WebSocket connection to `/ws`, optionally with a WebRTC peer.
pub struct Client {
    pub label: String,
    out: mpsc::UnboundedSender<Message>,
    inbox: mpsc::UnboundedReceiver<Value>,
    pending: VecDeque<Value>,
    history: Arc<Mutex<VecDeque<Value>>>,
    close_reason: Arc<Mutex<Option<String>>>,
    media_route: Arc<Mutex<MediaRoute>>,
    pub(crate) media: Option<MediaPeer>,
    tasks: Vec<JoinHandle<()>>,
    next_req: u64,
    /// Our participant id while in a room.
    pub id: Option<String>,
}

impl Client {
    /// Connects to `ws://<addr>/ws`.
    pub async fn connect(addr: SocketAddr, label: &str) -> Result<Client> {
        Self::connect_url(&format!("ws://{addr}/ws"), label).await
    }

    /// Connects to a signaling URL (`ws://` or `wss://host/ws`); `label`
    /// names this client in logs and errors.
    pub async fn connect_url(url: &str, label: &str) -> Result<Client> {
        // Nagle off (the last argument), as a browser has it: small
        // requests must not wait for the ACK of the one before.
        let connecting = tokio_tungstenite::connect_async_with_config(url, None, true);
        let (ws, _resp) = tokio::time::timeout(MSG_TIMEOUT, connecting)
            .await
            .map_err(|_| anyhow!("{label}: WebSocket connect to {url} timed out"))?
            .with_context(|| format!("{label}: WebSocket connect to {url}"))?;
        let (mut sink, mut stream) = ws.split();

        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (in_tx, in_rx) = mpsc::unbounded_channel::<Value>();
        let history = Arc::new(Mutex::new(VecDeque::new()));
        let close_reason = Arc::new(Mutex::new(None));
        let media_route = Arc::new(Mutex::new(MediaRoute::default()));

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
                    {
                        let mut history = history.lock().unwrap();
                        if history.len() == HISTORY_CAP {
                            history.pop_front();
                        }
                        history.push_back(v.clone());
                    }
                    match v["type"].as_str() {
                        Some("offer") => {
                            if let Some(sdp) = v["sdp"].as_str() {
                                let offer = Signal::Offer(sdp.to_owned());
                                media_route.lock().unwrap().route(offer);
                            }
                        }
                        Some("candidate") => {
                            let candidate = Signal::Candidate(v["candidate"].clone());
                            media_route.lock().unwrap().route(candidate);
                        }
                        // A `joined` nobody asked for: the server moved us.
                        Some("joined") if v.get("req").is_none() => {
                            media_route.lock().unwrap().moved();
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

        Ok(Client {
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
        self.history.lock().unwrap().iter().cloned().collect()
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

    /// Waits until the server closes the WebSocket; returns how it closed
    /// (whatever arrived before stays in [`Client::history`]). Fails after
    /// `timeout`, naming what arrived instead.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Result<String> {
        let result = self
            .recv_where("the server to close the WebSocket", timeout, |_| false)
            .await;
        match (result, self.close_reason()) {
            (Err(_), Some(reason)) => Ok(reason),
            (Err(e), None) => Err(e),
            (Ok(_), _) => unreachable!("the predicate accepts nothing"),
        }
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

    /// [`Client::join_with_media`] with options (diagnostics, profile, ...).
    pub async fn join_with_media_opts(
        &mut self,
        room: &str,
        name: &str,
        opts: MediaOptions,
    ) -> Result<Joined> {
        self.join_with_media_hooks(room, name, opts, MediaHooks::default())
            .await
    }

    /// [`Client::join_with_media_opts`] with per-packet observers or a UDP
    /// wrapper (the load generator's measurements).
    pub async fn join_with_media_hooks(
        &mut self,
        room: &str,
        name: &str,
        opts: MediaOptions,
        hooks: MediaHooks,
    ) -> Result<Joined> {
        if let Some(mut old) = self.media.take() {
            old.close().await;
        }
        let peer = MediaPeer::new(&self.label, self.out.clone(), opts, hooks).await?;
        self.media_route
            .lock()
            .unwrap()
            .attach(peer.signal_tx.clone());
        self.media = Some(peer);
        self.join(room, name).await
    }

    /// The server moved this participant (several nodes: its room's node
    /// was lost or drained, or an operator moved the room): awaits the
    /// `joined` nobody asked for, then answers the offer that follows with
    /// a new peer connection (new tracks and SSRCs), as the contract says.
    /// Offers that arrived before this call were parked for the new peer.
    pub async fn follow_move(&mut self, timeout: Duration, opts: MediaOptions) -> Result<Joined> {
        let joined = self.moved(timeout).await?;
        self.media_after_move(opts).await?;
        Ok(joined)
    }

    /// The first half of [`Client::follow_move`]: awaits the move's `joined`
    /// (what the server sends after it is parked for the new peer).
    pub async fn moved(&mut self, timeout: Duration) -> Result<Joined> {
        let joined = self
            .recv_where("a `joined` without req (moved)", timeout, |m| {
                m["type"] == "joined" && m.get("req").is_none()
            })
            .await?;
        let joined = Joined::from_json(&joined)
            .with_context(|| format!("{}: the `joined` of a move", self.label))?;
        self.id = Some(joined.you.clone());
        Ok(joined)
    }

    /// The second half of [`Client::follow_move`]: replaces the peer
    /// connection (when the client had media), which then answers the
    /// parked offer.
    pub async fn media_after_move(&mut self, opts: MediaOptions) -> Result<()> {
        let Some(mut old) = self.media.take() else {
            return Ok(()); // No media before the move: none after.
        };
        old.close().await;
        let peer =
            MediaPeer::new(&self.label, self.out.clone(), opts, MediaHooks::default()).await?;
        self.media_route
            .lock()
            .unwrap()
            .attach(peer.signal_tx.clone());
        self.media = Some(peer);
        Ok(())
    }

    /// `leave` -> `ok`. The peer connection (if any) keeps running and
    /// publishing, so tests can check that the server stops forwarding it;
    /// later offers are no longer routed to it.
    pub async fn leave(&mut self) -> Result<()> {
        self.request_ok(json!({"type": "leave"}))
            .await
            .with_context(|| format!("{}: leave", self.label))?;
        self.media_route.lock().unwrap().detach();
        self.id = None;
        Ok(())
    }

    /// Closes the peer connection and the WebSocket.
    pub async fn close(mut self) {
        self.media_route.lock().unwrap().detach();
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

    /// Closes the peer connection only; the WebSocket stays.
    pub async fn close_media(&mut self) {
        self.media_route.lock().unwrap().detach();
        if let Some(mut m) = self.media.take() {
            m.close().await;
        }
    }

    /// `restart_media` (protocol extension): drops the current peer
    /// connection (as a network loss would: its publishing stops), creates a
    /// new one with new local tracks and new SSRCs, routes the server's fresh
    /// offer to it and awaits the `ok`. Returns the reply.
    pub async fn restart_media(&mut self, opts: MediaOptions) -> Result<Value> {
        let peer =
            MediaPeer::new(&self.label, self.out.clone(), opts, MediaHooks::default()).await?;
        // Route first: the fresh offer may follow the `ok` at once.
        {
            let mut route = self.media_route.lock().unwrap();
            if !route.is_attached() {
                bail!(
                    "{}: restart_media without a joined peer connection",
                    self.label
                );
            }
            route.attach(peer.signal_tx.clone());
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

    pub(crate) fn media(&self) -> Result<&MediaPeer> {
        self.media
            .as_ref()
            .ok_or_else(|| anyhow!("{}: no peer connection (join_with_media first)", self.label))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}
