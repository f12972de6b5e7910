//! The cluster under test: either one the bench starts itself (a
//! `redis-server` on a free loopback port without persistence, and N `noom`
//! nodes sharing it, as `scripts/cluster.sh` does), or one already running,
//! given by its nodes' URLs and its Redis address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

use crate::noom::{free_port, NoomServer, TempDir};
use crate::redis_probe;

/// Debian's `redis-server` (package `redis-server`).
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// One node: its id in the cluster and its HTTP address.
#[derive(Clone, Debug)]
pub struct Node {
    pub id: String,
    pub http: SocketAddr,
}

impl Node {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }
}

/// The nodes and Redis of a running cluster.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub redis: SocketAddr,
    pub key_prefix: String,
    /// What the bench started (dropped = stopped); empty for an external one.
    _started: Option<Started>,
}

struct Started {
    // Field order: nodes stop before Redis.
    _nodes: Vec<NoomServer>,
    _redis: RedisProcess,
}

impl Cluster {
    /// Starts Redis and `nodes` noom nodes (`node-1`..) from `bin`, one
    /// media shard each, media on 127.0.0.1.
    pub async fn start(bin: &Path, nodes: usize) -> Result<Cluster> {
        if !bin.exists() {
            bail!("{} not found (build it, or set NOOM_BIN)", bin.display());
        }
        let redis = RedisProcess::start().await?;
        let url = format!("redis://{}/", redis.addr);
        let mut servers = Vec::new();
        let mut list = Vec::new();
        for i in 1..=nodes {
            let id = format!("node-{i}");
            let env = [
                ("NOOM_CLUSTER_REDIS_URL", url.clone()),
                ("NOOM_NODE_ID", id.clone()),
            ];
            let server = NoomServer::start_with_env(bin, 1, &env)
                .await
                .with_context(|| format!("starting {id}"))?;
            list.push(Node {
                id,
                http: server.http,
            });
            servers.push(server);
        }
        Ok(Cluster {
            nodes: list,
            redis: redis.addr,
            key_prefix: "noom".to_owned(),
            _started: Some(Started {
                _nodes: servers,
                _redis: redis,
            }),
        })
    }

    /// A running cluster: node URLs (`http://host:port`) and its Redis
    /// (`host:port`, no password). Node ids come from the registry in Redis
    /// (each heartbeat record carries the node's HTTP address).
    pub fn external(urls: &[String], redis: SocketAddr, key_prefix: &str) -> Result<Cluster> {
        let records = redis_probe::hgetall(redis, &format!("{key_prefix}:nodes"))?;
        let mut nodes = Vec::new();
        for url in urls {
            let hostport = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
            let http: SocketAddr = hostport
                .parse()
                .with_context(|| format!("--node {url}: expected http://IP:PORT"))?;
            let id = records
                .iter()
                .filter_map(|(_, json)| serde_json::from_str::<Value>(json).ok())
                .find(|r| r["http_addr"].as_str() == Some(hostport.as_str()))
                .and_then(|r| r["id"].as_str().map(str::to_owned))
                .ok_or_else(|| {
                    anyhow!("no node registered in Redis {redis} with http_addr {hostport}")
                })?;
            nodes.push(Node { id, http });
        }
        Ok(Cluster {
            nodes,
            redis,
            key_prefix: key_prefix.to_owned(),
            _started: None,
        })
    }

    /// The node hosting `room` (from the room -> node map in Redis).
    pub fn host_of(&self, room: &str) -> Result<Option<String>> {
        redis_probe::hget(self.redis, &format!("{}:room_node", self.key_prefix), room)
    }

    /// Index of the node with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }
}

/// A `redis-server` child on a free loopback port, no persistence.
struct RedisProcess {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl RedisProcess {
    async fn start() -> Result<RedisProcess> {
        if !Path::new(REDIS_SERVER).exists() {
            bail!("{REDIS_SERVER} not found (apt-get install redis-server)");
        }
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let addr = SocketAddr::new(ip, free_port(ip)?);
        let dir = TempDir::new("noom-load-redis")?;
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        let mut redis = RedisProcess {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(addr).is_ok()
                && redis_probe::command(addr, &["PING"]).is_ok_and(|r| r.text() == Some("PONG"))
            {
                return Ok(redis);
            }
            if let Ok(Some(status)) = redis.child.try_wait() {
                bail!("redis-server exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("redis-server on {addr} did not answer PING within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
