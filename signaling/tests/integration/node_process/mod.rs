//! A `noom` node as a real process (the binary operators run), for the
//! failures only a process has: SIGKILL, SIGTERM, a restart with the same
//! id. Loopback only: HTTP on 127.0.0.1:0 (the process logs the port it
//! got), media on 127.0.0.1, no STUN servers; fast heartbeats so a test
//! sees a dead node in a fraction of a second.
//!
//! The binary is `NOOM_BIN` when set (scripts/test.sh), else the one cargo
//! built for this test. Test files using it also declare `mod support;`
//! and `mod redis_server;`.

#![allow(dead_code)] // not every helper has a caller yet

use anyhow::{bail, Context as _, Result};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

use crate::redis_server::RedisServer;
use crate::support::{MediaKind, TestClient};

/// Heartbeat and liveness of test nodes (the defaults are 1 s and 5 s).
pub const HEARTBEAT_MS: u64 = 200;
pub const NODE_TIMEOUT_MS: u64 = 1000;

fn binary() -> PathBuf {
    std::env::var_os("NOOM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_noom")))
}

pub struct NodeProcess {
    pub id: String,
    pub http_addr: SocketAddr,
    child: Option<Child>,
    /// Every line the process printed (JSON log lines and errors).
    log: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

impl NodeProcess {
    /// Starts node `id` on `redis_url` and waits until it listens.
    pub async fn start(redis_url: &str, id: &str) -> Result<NodeProcess> {
        let dir = std::env::temp_dir().join(format!(
            "noom-node-{}-{id}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("noom.toml");
        std::fs::write(
            &config,
            format!(
                r#"[http]
listen = "127.0.0.1:0"
[media]
bind_ips = ["127.0.0.1"]
port = 0
shards = 1
[ice]
servers = []
[cluster]
redis_url = "{redis_url}"
node_id = "{id}"
heartbeat_ms = {HEARTBEAT_MS}
node_timeout_ms = {NODE_TIMEOUT_MS}
[log]
format = "json"
level = "info"
"#
            ),
        )?;
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary().display()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, mut lines_rx) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for reader in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let (log, lines_tx) = (log.clone(), lines_tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line.clone());
                    let _ = lines_tx.send(line);
                }
            });
        }
        drop(lines_tx);
        let mut node = NodeProcess {
            id: id.to_owned(),
            http_addr: "0.0.0.0:0".parse()?,
            child: Some(child),
            log,
            dir,
        };
        // The process logs its address once it listens; it prints an error
        // and exits if it cannot start. Both are events: no polling.
        let listening = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines_rx.recv().await {
                if let Some(addr) = listening_addr(&line) {
                    return Some(addr);
                }
            }
            None
        })
        .await;
        match listening {
            Ok(Some(addr)) => node.http_addr = addr,
            Ok(None) => bail!("node {id} exited before listening:\n{}", node.log_text()),
            Err(_) => bail!("node {id} did not listen within 20 s:\n{}", node.log_text()),
        }
        Ok(node)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL: no goodbye, no drain.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (the node drains, then exits).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut child = self.child.take().context("not running")?;
        // A child has no async wait here; a bounded poll of its status.
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "node {} did not exit within {limit:?}:\n{}",
                    self.id,
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process logged a line containing `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The lines the process logged that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    pub fn log_text(&self) -> String {
        let log = self.log.lock().unwrap();
        let start = log.len().saturating_sub(80);
        log[start..].join("\n")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http_addr)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("NOOM_TEST_NODE_LOGS").is_some() {
            eprintln!("--- log of node {} ---\n{}", self.id, self.log_text());
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Who hosts `room`, straight from Redis.
pub fn host_of(redis: &RedisServer, room: &str) -> Option<String> {
    let script = "return redis.call('HGET', KEYS[1], ARGV[1]) or ''";
    let owner = redis.raw(&["EVAL", script, "1", "noom:room_node", room]);
    (!owner.is_empty()).then_some(owner)
}

/// Age of `node`'s heartbeat on Redis's clock, in ms.
pub fn beat_age_ms(redis: &RedisServer, node: &str) -> i64 {
    let script = "local t = redis.call('TIME') \
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
        local beat = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') or 0 \
        return now - beat";
    let reply = redis.raw(&["EVAL", script, "1", "noom:node_beat", node]);
    reply
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("beat age reply {reply:?}"))
}

/// Both directions of audio and video between `a` and `b` (ids `a_id`,
/// `b_id`) carry packets.
pub async fn media_flows(
    a: &TestClient,
    a_id: &str,
    b: &TestClient,
    b_id: &str,
    limit: Duration,
) -> Result<()> {
    for kind in [MediaKind::Audio, MediaKind::Video] {
        a.wait_packets_above(b_id, kind, 5, limit)
            .await
            .with_context(|| format!("{} receives {kind:?} from {b_id}", a.label))?;
        b.wait_packets_above(a_id, kind, 5, limit)
            .await
            .with_context(|| format!("{} receives {kind:?} from {a_id}", b.label))?;
    }
    Ok(())
}

/// The address of a JSON log line `noom listening`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value["fields"]["message"] != "noom listening" {
        return None;
    }
    value["fields"]["http_addr"].as_str()?.parse().ok()
}
