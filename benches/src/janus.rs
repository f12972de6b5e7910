//! The Janus side: its HTTP API (sessions, the VideoRoom plugin) and
//! participants made of a publisher handle and a subscriber handle, each
//! with its own [`Peer`] (Janus uses one peer connection per handle).
//!
//! Flow (Janus 1.1 VideoRoom): create a session, attach
//! `janus.plugin.videoroom`, `create` a room with a real bitrate cap; a
//! publisher sends `joinandconfigure` with its offer and gets the answer in
//! an event; a subscriber sends `join` (ptype subscriber, streams = the
//! feeds), gets Janus' offer in the `attached` event and replies `start`
//! with its answer. Candidates travel in the SDP (no trickle).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use crate::janus_peer::{Peer, PeerOptions};
use crate::media::{MediaProfile, Metrics};

const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

fn transaction() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!("t{}", N.fetch_add(1, Ordering::Relaxed))
}

/// One HTTP/1.1 exchange (Connection: close); the JSON body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{method} {path}: no HTTP header"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(
            "{method} {path}: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    serde_json::from_str(&body).with_context(|| format!("{method} {path}: body {body:?}"))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A Janus session with one long-poll loop delivering its events.
pub struct Session {
    addr: SocketAddr,
    pub id: u64,
    events: Mutex<mpsc::UnboundedReceiver<Value>>,
    backlog: Mutex<Vec<Value>>,
    poller: JoinHandle<()>,
}

impl Session {
    pub async fn create(addr: SocketAddr) -> Result<Session> {
        let r = http(
            addr,
            "POST",
            "/janus",
            Some(&json!({"janus": "create", "transaction": transaction()})),
        )
        .await?;
        let id = r["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("create session: {r}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let poller = tokio::spawn(async move {
            loop {
                match http(addr, "GET", &format!("/janus/{id}?maxev=10"), None).await {
                    Ok(Value::Array(list)) => {
                        for e in list {
                            if tx.send(e).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Ok(Session {
            addr,
            id,
            events: Mutex::new(rx),
            backlog: Mutex::new(Vec::new()),
            poller,
        })
    }

    pub async fn attach_videoroom(&self) -> Result<u64> {
        let r = self
            .post(
                &format!("/janus/{}", self.id),
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await?;
        r["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("attach: {r}"))
    }

    async fn post(&self, path: &str, mut body: Value) -> Result<Value> {
        body["transaction"] = json!(transaction());
        let r = http(self.addr, "POST", path, Some(&body)).await?;
        if r["janus"] == "error" {
            bail!("{path}: {r}");
        }
        Ok(r)
    }

    /// A plugin message; the synchronous reply (`success` or `ack`).
    pub async fn message(&self, handle: u64, body: Value, jsep: Option<Value>) -> Result<Value> {
        let mut msg = json!({"janus": "message", "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        self.post(&format!("/janus/{}/{handle}", self.id), msg)
            .await
    }

    /// Tells Janus our candidates are all in the SDP already.
    pub async fn trickle_completed(&self, handle: u64) -> Result<()> {
        self.post(
            &format!("/janus/{}/{handle}", self.id),
            json!({"janus": "trickle", "candidate": {"completed": true}}),
        )
        .await
        .map(|_| ())
    }

    /// The next plugin event for `handle` (others are kept for later).
    pub async fn event(&self, handle: u64) -> Result<Value> {
        {
            let mut backlog = self.backlog.lock().await;
            if let Some(i) = backlog.iter().position(|e| is_event_of(e, handle)) {
                return Ok(backlog.remove(i));
            }
        }
        let mut events = self.events.lock().await;
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => bail!("no Janus event for handle {handle} in {EVENT_TIMEOUT:?}"),
                Ok(None) => bail!("Janus event stream ended"),
                Ok(Some(e)) if is_event_of(&e, handle) => return Ok(e),
                Ok(Some(e)) => {
                    if e["janus"] == "event" {
                        self.backlog.lock().await.push(e);
                    }
                }
            }
        }
    }

    pub async fn destroy(&self) {
        let _ = self
            .post(&format!("/janus/{}", self.id), json!({"janus": "destroy"}))
            .await;
        self.poller.abort();
    }
}

fn is_event_of(e: &Value, handle: u64) -> bool {
    e["janus"] == "event" && e["sender"].as_u64() == Some(handle)
}

fn plugin_data(e: &Value) -> &Value {
    &e["plugindata"]["data"]
}

/// Creates a VideoRoom room with a real bitrate cap (the demo room's
/// 128 kbit/s would throttle the publishers' REMB).
pub async fn create_room(addr: SocketAddr, room: u64, publishers: usize) -> Result<()> {
    let session = Session::create(addr).await?;
    let handle = session.attach_videoroom().await?;
    let r = session
        .message(
            handle,
            json!({
                "request": "create",
                "room": room,
                "permanent": false,
                "publishers": publishers.max(1),
                "bitrate": 8_000_000,
                "bitrate_cap": true,
                "fir_freq": 10,
                "audiocodec": "opus",
                "videocodec": "vp8",
                "notify_joining": false,
            }),
            None,
        )
        .await?;
    let data = plugin_data(&r);
    session.destroy().await;
    if data["videoroom"] != "created" {
        bail!("create room {room}: {r}");
    }
    Ok(())
}

/// A publisher: session, handle, peer connection; its feed id.
pub struct JanusPublisher {
    pub session: Session,
    pub peer: Arc<Peer>,
    pub feed: u64,
}

impl JanusPublisher {
    pub async fn join(
        addr: SocketAddr,
        bind_ip: IpAddr,
        room: u64,
        name: &str,
        profile: MediaProfile,
        metrics: Arc<Metrics>,
    ) -> Result<JanusPublisher> {
        let session = Session::create(addr).await?;
        let handle = session.attach_videoroom().await?;
        let peer = Arc::new(
            Peer::new(
                PeerOptions {
                    label: name.to_owned(),
                    bind_ip,
                    publish: true,
                    profile,
                },
                metrics,
            )
            .await?,
        );
        peer.offer().await?;
        let offer = peer.local_sdp_gathered(GATHER_TIMEOUT).await?;
        debug_sdp(name, "offer", &offer);
        session
            .message(
                handle,
                json!({"request": "joinandconfigure", "ptype": "publisher", "room": room,
                       "display": name, "audio": true, "video": true}),
                Some(json!({"type": "offer", "sdp": offer})),
            )
            .await?;
        let e = session.event(handle).await?;
        let data = plugin_data(&e);
        if data["videoroom"] != "joined" {
            bail!("{name}: joinandconfigure: {e}");
        }
        let feed = data["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("{name}: no feed id: {e}"))?;
        let answer = e["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| anyhow!("{name}: no answer: {e}"))?;
        debug_sdp(name, "answer from Janus", answer);
        session.trickle_completed(handle).await?;
        peer.apply_answer(answer).await?;
        // Janus lists the feed for subscribers once its media is up.
        if let Err(e) = peer.wait_connected(crate::media::CONNECT_TIMEOUT).await {
            let state = peer.state();
            peer.close().await;
            session.destroy().await;
            bail!("{e:#} ({state})");
        }
        Ok(JanusPublisher {
            session,
            peer,
            feed,
        })
    }

    pub async fn close(self) {
        self.peer.close().await;
        self.session.destroy().await;
    }
}

/// A subscriber to some feeds of a room, on one peer connection.
pub struct JanusSubscriber {
    pub session: Session,
    pub peer: Arc<Peer>,
}

impl JanusSubscriber {
    pub async fn join(
        addr: SocketAddr,
        bind_ip: IpAddr,
        room: u64,
        name: &str,
        feeds: &[u64],
        profile: MediaProfile,
        metrics: Arc<Metrics>,
    ) -> Result<JanusSubscriber> {
        let session = Session::create(addr).await?;
        let handle = session.attach_videoroom().await?;
        let peer = Arc::new(
            Peer::new(
                PeerOptions {
                    label: name.to_owned(),
                    bind_ip,
                    publish: false,
                    profile,
                },
                metrics,
            )
            .await?,
        );
        peer.mark_join();
        let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
        // A feed whose media has only just started may not be listed yet
        // ("No such feed", 428): retry for a while.
        let mut attempts = 0;
        let e = loop {
            session
                .message(
                    handle,
                    json!({"request": "join", "ptype": "subscriber", "room": room,
                           "streams": streams}),
                    None,
                )
                .await?;
            let e = session.event(handle).await?;
            if plugin_data(&e)["videoroom"] == "attached" {
                break e;
            }
            attempts += 1;
            if plugin_data(&e)["error_code"] != 428 || attempts > 50 {
                bail!("{name}: subscriber join: {e}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let offer = e["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| anyhow!("{name}: no offer: {e}"))?;
        debug_sdp(name, "offer from Janus", offer);
        peer.answer(offer).await?;
        let answer = peer.local_sdp_gathered(GATHER_TIMEOUT).await?;
        debug_sdp(name, "answer", &answer);
        session
            .message(
                handle,
                json!({"request": "start"}),
                Some(json!({"type": "answer", "sdp": answer})),
            )
            .await?;
        session.trickle_completed(handle).await?;
        if let Err(e) = peer.wait_connected(crate::media::CONNECT_TIMEOUT).await {
            let state = peer.state();
            peer.close().await;
            session.destroy().await;
            bail!("{e:#} ({state})");
        }
        Ok(JanusSubscriber { session, peer })
    }

    pub async fn close(self) {
        self.peer.close().await;
        self.session.destroy().await;
    }
}

fn debug_sdp(name: &str, what: &str, sdp: &str) {
    if std::env::var_os("NOOM_LOAD_DEBUG").is_some() {
        eprintln!("--- {name}: {what}\n{sdp}");
    }
}
