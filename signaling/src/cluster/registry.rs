//! Node registry: who is in the cluster, how loaded, and whether alive.
//!
//! Each node writes a heartbeat every second: its record (addresses, load,
//! state) plus the Redis server's own time, taken inside the script with
//! `TIME`, so "alive" is judged on one clock whatever the nodes' clocks say.
//! A node is alive while its last heartbeat is younger than `stale_after`
//! (5 s by default); nothing in Redis expires, so a restarted Redis that
//! comes back empty is refilled by the next heartbeat of every node.
//!
//! A per-process random instance token makes a node id exclusive: the
//! heartbeat script refuses to overwrite an id whose heartbeat is fresh and
//! whose token is not ours, so a second process started with the same id
//! fails with a clear error instead of silently sharing rooms.

use super::keys::Keys;
use super::link::{Link, LinkError};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Serving nodes take new rooms; draining ones keep theirs until they have
/// handed them off, and take none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Serving,
    Draining,
}

/// What one heartbeat publishes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// Random per process: tells a restarted node from its previous life and
    /// a duplicate id from ourselves.
    pub instance: String,
    /// Where other nodes and operators reach this node's HTTP/WebSocket.
    pub http_addr: String,
    /// This node's media addresses (what its offers carry as candidates).
    pub media_addrs: Vec<String>,
    pub rooms: u32,
    pub participants: u32,
    /// Busiest media shard's busy ratio (0..1).
    pub busy_ratio: f64,
    /// Process start, node's wall clock in ms (informational only).
    pub started_at_ms: u64,
    pub state: NodeState,
}

/// The part of the record that changes at run time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeLoad {
    pub rooms: u32,
    pub participants: u32,
    pub busy_ratio: f64,
}

/// The part that is fixed for the life of the process.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub id: String,
    pub http_addr: String,
    pub media_addrs: Vec<String>,
}

/// A node as seen by anyone reading the registry.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub record: NodeRecord,
    /// Age of its last heartbeat on the Redis clock.
    pub heartbeat_age: Duration,
    /// Heartbeat fresh (any state).
    pub alive: bool,
}

impl NodeView {
    /// Alive and taking new rooms.
    pub fn is_live(&self) -> bool {
        self.alive && self.record.state == NodeState::Serving
    }
}

#[derive(Clone, Debug)]
pub struct RegistrySettings {
    pub heartbeat_interval: Duration,
    /// A heartbeat older than this means the node is dead.
    pub stale_after: Duration,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            stale_after: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "node id {id:?} is already used by another live noom process (its last heartbeat is \
         {age:?} old); stop it or give this node another id (NOOM_NODE_ID)"
    )]
    DuplicateNodeId { id: String, age: Duration },
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("unexpected registry reply from Redis: {0}")]
    BadReply(String),
}

/// How the heartbeat loop is doing, for metrics and for tests to await.
#[derive(Clone, Debug, Default)]
pub struct BeatStatus {
    /// Successful heartbeats since start.
    pub beats_ok: u64,
    pub last_ok: Option<Instant>,
    /// Another live process holds our id (we stopped overwriting it).
    pub conflict: bool,
    pub last_error: Option<String>,
}

/// Writes the record, refusing an id held by another live instance.
/// KEYS: nodes, beats, instances. ARGV: id, instance, record, stale_ms.
/// Returns {1, now_ms} when written, {0, age_ms} when the id is taken.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner = redis.call('HGET', KEYS[3], ARGV[1])
if owner and owner ~= ARGV[2] then
  local beat = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') or 0
  if now - beat < tonumber(ARGV[4]) then
    return {0, now - beat}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], string.format('%.0f', now))
if owner ~= ARGV[2] then redis.call('HSET', KEYS[3], ARGV[1], ARGV[2]) end
return {1, now}
"#;

/// Removes the node if it is still ours (graceful stop).
/// KEYS: nodes, beats, instances. ARGV: id, instance.
const DEREGISTER: &str = r#"
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"#;

/// Everything needed to judge liveness in one round trip, on Redis's clock.
/// KEYS: nodes, beats. Returns {now_ms, HGETALL nodes, HGETALL beats}.
const READ_NODES: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {now, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"#;

struct Shared {
    record: Mutex<NodeRecord>,
    status: watch::Sender<BeatStatus>,
}

/// This node's membership. Dropping it stops the heartbeat (the node then
/// looks dead after `stale_after`, as after a crash); call
/// [`Registry::deregister`] first for a graceful exit.
pub struct Registry {
    link: Arc<Link>,
    keys: Keys,
    settings: RegistrySettings,
    shared: Arc<Shared>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Registry {
    /// Registers the node (refusing a duplicate live id) and starts the
    /// heartbeat loop.
    pub async fn start(
        link: Arc<Link>,
        keys: Keys,
        identity: NodeIdentity,
        settings: RegistrySettings,
    ) -> Result<Self, RegistryError> {
        let record = NodeRecord {
            id: identity.id,
            instance: instance_token(),
            http_addr: identity.http_addr,
            media_addrs: identity.media_addrs,
            rooms: 0,
            participants: 0,
            busy_ratio: 0.0,
            started_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            state: NodeState::Serving,
        };
        let (status, _) = watch::channel(BeatStatus::default());
        let shared = Arc::new(Shared {
            record: Mutex::new(record),
            status,
        });
        match beat(&link, &keys, &settings, &shared).await? {
            Beat::Written => {}
            Beat::Taken { age } => {
                let id = lock(&shared.record).id.clone();
                return Err(RegistryError::DuplicateNodeId { id, age });
            }
        }
        let heartbeat = tokio::spawn(heartbeat_loop(
            link.clone(),
            keys.clone(),
            settings.clone(),
            shared.clone(),
        ));
        Ok(Self {
            link,
            keys,
            settings,
            shared,
            heartbeat,
        })
    }

    pub fn id(&self) -> String {
        lock(&self.shared.record).id.clone()
    }

    /// The record as the next heartbeat will publish it.
    pub fn record(&self) -> NodeRecord {
        lock(&self.shared.record).clone()
    }

    /// Published with the next heartbeat.
    pub fn set_load(&self, load: NodeLoad) {
        let mut record = lock(&self.shared.record);
        record.rooms = load.rooms;
        record.participants = load.participants;
        record.busy_ratio = load.busy_ratio;
    }

    /// Published with the next heartbeat (draining: take no new rooms).
    pub fn set_state(&self, state: NodeState) {
        lock(&self.shared.record).state = state;
    }

    pub fn status(&self) -> watch::Receiver<BeatStatus> {
        self.shared.status.subscribe()
    }

    /// All registered nodes, alive or not.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, RegistryError> {
        read_nodes(&self.link, &self.keys, self.settings.stale_after).await
    }

    /// Nodes that are alive and serving.
    pub async fn live_nodes(&self) -> Result<Vec<NodeView>, RegistryError> {
        live_nodes(&self.link, &self.keys, self.settings.stale_after).await
    }

    /// Stops the heartbeat and removes the record if it is still ours.
    pub async fn deregister(self) -> Result<bool, RegistryError> {
        self.withdraw().await
    }

    /// [`Registry::deregister`] for a registry that stays shared (a node
    /// leaving at the end of a drain): no heartbeat follows.
    pub async fn withdraw(&self) -> Result<bool, RegistryError> {
        self.heartbeat.abort();
        let record = self.record();
        let removed: i64 = self
            .link
            .script(
                "deregister",
                redis::Script::new(DEREGISTER)
                    .key(self.keys.nodes())
                    .key(self.keys.beats())
                    .key(self.keys.instances())
                    .arg(&record.id)
                    .arg(&record.instance),
            )
            .await?;
        Ok(removed == 1)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// Reads every node and judges liveness on the Redis clock.
pub async fn read_nodes(
    link: &Link,
    keys: &Keys,
    stale_after: Duration,
) -> Result<Vec<NodeView>, RegistryError> {
    let (now, records, beats): (i64, Vec<String>, Vec<String>) = link
        .script(
            "read nodes",
            redis::Script::new(READ_NODES)
                .key(keys.nodes())
                .key(keys.beats()),
        )
        .await?;
    let beat_of = |id: &str| -> Option<i64> {
        beats
            .chunks_exact(2)
            .find(|pair| pair[0] == id)
            .and_then(|pair| pair[1].parse().ok())
    };
    let mut nodes = Vec::new();
    for pair in records.chunks_exact(2) {
        // A record this version cannot read is not a node we can use.
        let Ok(record) = serde_json::from_str::<NodeRecord>(&pair[1]) else {
            tracing::warn!(node = %pair[0], "unreadable node record in Redis, ignored");
            continue;
        };
        // No beat at all (half-written state): infinitely old.
        let age_ms = beat_of(&pair[0]).map_or(u64::MAX, |beat| (now - beat).max(0) as u64);
        let heartbeat_age = Duration::from_millis(age_ms);
        nodes.push(NodeView {
            alive: heartbeat_age < stale_after,
            heartbeat_age,
            record,
        });
    }
    nodes.sort_by(|a, b| a.record.id.cmp(&b.record.id));
    Ok(nodes)
}

/// Nodes alive and serving.
pub async fn live_nodes(
    link: &Link,
    keys: &Keys,
    stale_after: Duration,
) -> Result<Vec<NodeView>, RegistryError> {
    let mut nodes = read_nodes(link, keys, stale_after).await?;
    nodes.retain(NodeView::is_live);
    Ok(nodes)
}

enum Beat {
    Written,
    Taken { age: Duration },
}

async fn beat(
    link: &Link,
    keys: &Keys,
    settings: &RegistrySettings,
    shared: &Shared,
) -> Result<Beat, RegistryError> {
    let record = lock(&shared.record).clone();
    let json =
        serde_json::to_string(&record).map_err(|e| RegistryError::BadReply(e.to_string()))?;
    let (written, value): (i64, i64) = link
        .script(
            "heartbeat",
            redis::Script::new(HEARTBEAT)
                .key(keys.nodes())
                .key(keys.beats())
                .key(keys.instances())
                .arg(&record.id)
                .arg(&record.instance)
                .arg(json)
                .arg(settings.stale_after.as_millis() as u64),
        )
        .await?;
    match written {
        1 => {
            shared.status.send_modify(|status| {
                status.beats_ok += 1;
                status.last_ok = Some(Instant::now());
                status.conflict = false;
                status.last_error = None;
            });
            Ok(Beat::Written)
        }
        0 => Ok(Beat::Taken {
            age: Duration::from_millis(value.max(0) as u64),
        }),
        other => Err(RegistryError::BadReply(format!(
            "heartbeat returned {other}"
        ))),
    }
}

/// Beats forever. Failures are recorded, never fatal: when Redis returns
/// (even empty after a restart) the next beat registers the node again.
async fn heartbeat_loop(
    link: Arc<Link>,
    keys: Keys,
    settings: RegistrySettings,
    shared: Arc<Shared>,
) {
    let mut ticker = tokio::time::interval(settings.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // `start` just beat
    loop {
        ticker.tick().await;
        match beat(&link, &keys, &settings, &shared).await {
            Ok(Beat::Written) => {}
            Ok(Beat::Taken { age }) => {
                let id = lock(&shared.record).id.clone();
                tracing::error!(node = %id, ?age, "another live process holds this node id; not overwriting it");
                shared.status.send_modify(|status| status.conflict = true);
            }
            Err(err) => {
                tracing::warn!(error = %err, "heartbeat failed");
                shared
                    .status
                    .send_modify(|status| status.last_error = Some(err.to_string()));
            }
        }
    }
}

fn instance_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The record's lock is only held to copy fields; a poisoned lock still
/// holds a consistent record.
fn lock(record: &Mutex<NodeRecord>) -> std::sync::MutexGuard<'_, NodeRecord> {
    record
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
