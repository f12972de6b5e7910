//! The Noom side: the `noom` server process and a participant speaking its
//! WebSocket contract (docs/protocol.md) with a [`Peer`] for media.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Peer, PeerOptions};
use crate::media::{MediaProfile, Metrics};

/// A `noom` process on loopback, started for one scenario.
pub struct NoomServer {
    child: Child,
    pub http: SocketAddr,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir> {
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            crate::media::random_u32()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free TCP port on `ip` (bound, read, released).
pub fn free_port(ip: IpAddr) -> Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// The benchmark's configuration: no STUN servers (nothing leaves the
/// machine), limits high enough for 50 subscribers in a room.
const CONFIG: &str = r#"
[ice]
servers = []

[limits]
max_rooms = 10000
max_participants_per_room = 1000
messages_per_second = 10000
message_burst = 10000
joins_per_minute = 1000

[log]
level = "warn"
"#;

impl NoomServer {
    pub async fn start(bin: &Path, shards: usize) -> Result<NoomServer> {
        let dir = TempDir::new("noom-load")?;
        let config = dir.0.join("config.toml");
        std::fs::write(&config, CONFIG)?;
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let http = SocketAddr::new(ip, free_port(ip)?);
        // NOOM_LOAD_WRAPPER runs the server under a profiler, e.g.
        // "valgrind --tool=callgrind --callgrind-out-file=/tmp/noom.cg".
        let wrapper: Vec<String> = std::env::var("NOOM_LOAD_WRAPPER")
            .map(|w| w.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .arg("--config")
            .arg(&config)
            .env("NOOM_HTTP_LISTEN", http.to_string())
            .env("NOOM_MEDIA_BIND_IPS", "127.0.0.1")
            .env("NOOM_MEDIA_PORT", "0")
            .env("NOOM_MEDIA_SHARDS", shards.to_string())
            .env_remove("NOOM_PUBLIC_IP")
            .stdin(Stdio::null())
            // Noom logs to stdout: NOOM_LOAD_SERVER_LOG keeps it.
            .stdout(match std::env::var_os("NOOM_LOAD_SERVER_LOG") {
                Some(path) => Stdio::from(std::fs::File::create(path)?),
                None => Stdio::null(),
            })
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = NoomServer {
            child,
            http,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(body) = http_get(http, "/healthz").await {
                if body.trim() == "ok" {
                    return Ok(server);
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("{} exited at start: {status}", bin.display());
            }
            if std::time::Instant::now() > deadline {
                bail!("{} did not answer /healthz within 60 s", bin.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NoomServer {
    fn drop(&mut self) {
        // SIGTERM first (a profiler wrapper writes its output on exit).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over plain HTTP/1.1; the body.
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
    let text = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow!("GET {path} timed out"))??;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// One participant in a Noom room.
pub struct NoomParticipant {
    pub peer: Arc<Peer>,
    tasks: Vec<JoinHandle<()>>,
    out: mpsc::UnboundedSender<Message>,
}

impl NoomParticipant {
    /// Connects, creates the peer connection, joins `room`; returns once
    /// `joined` arrived (media negotiation goes on in the background).
    pub async fn join(
        http: SocketAddr,
        room: &str,
        name: &str,
        publish: bool,
        profile: MediaProfile,
        metrics: Arc<Metrics>,
    ) -> Result<NoomParticipant> {
        let url = format!("ws://{http}/ws");
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(&url),
        )
        .await
        .map_err(|_| anyhow!("{name}: WebSocket connect timed out"))??;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let peer = Arc::new(
            Peer::new(
                PeerOptions {
                    label: name.to_owned(),
                    bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    publish,
                    profile,
                },
                Arc::clone(&metrics),
            )
            .await?,
        );

        // Our candidates go out once the first answer has.
        let (answered_tx, answered_rx) = oneshot::channel::<()>();
        let mut candidates = peer
            .take_candidates()
            .ok_or_else(|| anyhow!("candidates taken"))?;
        let cand_out = out.clone();
        let trickle = tokio::spawn(async move {
            if answered_rx.await.is_err() {
                return;
            }
            while let Some(c) = candidates.recv().await {
                let v = match c {
                    Some(c) => json!({"type": "candidate",
                        "candidate": {"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0}}),
                    None => json!({"type": "candidate", "candidate": Value::Null}),
                };
                if cand_out.send(Message::text(v.to_string())).is_err() {
                    break;
                }
            }
        });

        let (joined_tx, joined_rx) = oneshot::channel::<Result<()>>();
        let reader = {
            let peer = Arc::clone(&peer);
            let out = out.clone();
            let name = name.to_owned();
            tokio::spawn(async move {
                let mut joined_tx = Some(joined_tx);
                let mut answered_tx = Some(answered_tx);
                while let Some(Ok(frame)) = stream.next().await {
                    let Message::Text(t) = frame else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                        continue;
                    };
                    match v["type"].as_str() {
                        Some("joined") => {
                            if let Some(tx) = joined_tx.take() {
                                let _ = tx.send(Ok(()));
                            }
                        }
                        Some("offer") => {
                            let sdp = v["sdp"].as_str().unwrap_or_default();
                            match peer.answer(sdp).await {
                                Ok(answer) => {
                                    let _ = out.send(Message::text(
                                        json!({"type": "answer", "sdp": answer}).to_string(),
                                    ));
                                    if let Some(tx) = answered_tx.take() {
                                        let _ = tx.send(());
                                    }
                                }
                                Err(e) => metrics.error(format!("{name}: offer: {e:#}")),
                            }
                        }
                        Some("candidate") => {
                            let c = &v["candidate"];
                            if let Some(s) = c["candidate"].as_str() {
                                let mid = c["sdpMid"].as_str().map(str::to_owned);
                                let mline = c["sdpMLineIndex"].as_u64().map(|m| m as u16);
                                if let Err(e) = peer.add_candidate(s, mid, mline).await {
                                    metrics.error(format!("{name}: {e:#}"));
                                }
                            }
                        }
                        Some("error") => {
                            let msg = format!("{name}: server error {v}");
                            match joined_tx.take() {
                                Some(tx) => {
                                    let _ = tx.send(Err(anyhow!(msg)));
                                }
                                None => metrics.error(msg),
                            }
                        }
                        _ => {}
                    }
                }
            })
        };

        peer.mark_join();
        out.send(Message::text(
            json!({"type": "join", "room": room, "name": name, "req": 1}).to_string(),
        ))
        .map_err(|_| anyhow!("{name}: WebSocket writer gone"))?;
        tokio::time::timeout(Duration::from_secs(10), joined_rx)
            .await
            .map_err(|_| anyhow!("{name}: no `joined` within 10 s"))?
            .map_err(|_| anyhow!("{name}: connection closed before `joined`"))??;
        Ok(NoomParticipant {
            peer,
            tasks: vec![reader, writer, trickle],
            out,
        })
    }

    /// [`NoomParticipant::join`], then waits for the peer connection; on a
    /// timeout the participant leaves and the error says why.
    pub async fn join_connected(
        http: SocketAddr,
        room: &str,
        name: &str,
        publish: bool,
        profile: MediaProfile,
        metrics: Arc<Metrics>,
    ) -> Result<NoomParticipant> {
        let p = Self::join(http, room, name, publish, profile, metrics).await?;
        match p.peer.wait_connected(crate::client::CONNECT_TIMEOUT).await {
            Ok(()) => Ok(p),
            Err(e) => {
                let state = p.peer.state();
                p.close().await;
                bail!("{e:#} ({state})")
            }
        }
    }

    pub async fn close(self) {
        self.peer.close().await;
        let _ = self.out.send(Message::Close(None));
        for t in self.tasks {
            t.abort();
        }
    }
}
