//! The Noom side: the `noom` server process, and a participant that is a
//! `noom_client::Client` (the same client the integration tests use) with
//! the load generator's measurements hooked in.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use noom_client::{http_get, Client, MediaHooks, MediaOptions};

use crate::media::{LoadObserver, MediaProfile, Metrics, CONNECT_TIMEOUT};
use crate::stamp_socket::StampingUdp;

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
        Self::start_with_env(bin, shards, &[]).await
    }

    /// [`NoomServer::start`] with extra environment (a cluster node's
    /// `NOOM_CLUSTER_REDIS_URL` and `NOOM_NODE_ID`). Returns once `/readyz`
    /// says `ready` (on a clustered node: registered with Redis).
    pub async fn start_with_env(
        bin: &Path,
        shards: usize,
        env: &[(&str, String)],
    ) -> Result<NoomServer> {
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
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
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
            if let Ok(body) = http_get(http, "/readyz").await {
                if body.trim() == "ready" {
                    return Ok(server);
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("{} exited at start: {status}", bin.display());
            }
            if std::time::Instant::now() > deadline {
                bail!("{} was not ready (/readyz) within 60 s", bin.display());
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

/// One participant in a Noom room.
pub struct NoomParticipant {
    pub client: Client,
    pub observer: Arc<LoadObserver>,
}

impl NoomParticipant {
    /// Connects, creates the peer connection, joins `room` (publishing
    /// three simulcast encodings with `simulcast`); returns once
    /// `joined` arrived (media negotiation goes on in the background).
    pub async fn join(
        http: SocketAddr,
        room: &str,
        name: &str,
        publish: bool,
        profile: MediaProfile,
        simulcast: bool,
        metrics: Arc<Metrics>,
    ) -> Result<NoomParticipant> {
        let mut client = Client::connect(http, name).await?;
        let observer = LoadObserver::new(metrics);
        let opts = MediaOptions {
            profile: Some(profile),
            receive_only: !publish,
            counters_only: true,
            simulcast,
            ..MediaOptions::default()
        };
        let hooks = MediaHooks {
            observer: Some(observer.clone()),
            udp: Some(Arc::new(StampingUdp {
                recv: observer.recv_stamps(),
            })),
        };
        observer.mark_join();
        client
            .join_with_media_hooks(room, name, opts, hooks)
            .await?;
        Ok(NoomParticipant { client, observer })
    }

    #[allow(clippy::too_many_arguments)]
    /// [`NoomParticipant::join`], then waits for the peer connection; on a
    /// timeout the participant leaves and the error says why.
    pub async fn join_connected(
        http: SocketAddr,
        room: &str,
        name: &str,
        publish: bool,
        profile: MediaProfile,
        simulcast: bool,
        metrics: Arc<Metrics>,
    ) -> Result<NoomParticipant> {
        let p = Self::join(http, room, name, publish, profile, simulcast, metrics).await?;
        match p.client.wait_connected(CONNECT_TIMEOUT).await {
            Ok(()) => Ok(p),
            Err(e) => {
                let state = p.describe();
                p.close().await;
                bail!("{e:#} ({state})")
            }
        }
    }

    /// "label (peer connection state)".
    pub fn describe(&self) -> String {
        format!("{} ({})", self.client.label, self.client.connection_state())
    }

    /// Leaves; media errors seen on the way become the run's errors.
    pub async fn close(self) {
        for e in self.client.media_errors() {
            self.observer
                .metrics()
                .error(format!("{}: {e}", self.client.label));
        }
        self.client.close().await;
    }
}
