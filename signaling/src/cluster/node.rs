//! One node of a cluster at run time: its Redis link, heartbeat, room map
//! and bus, the table of relayed connections it is an end of, and the loops
//! that keep the lobby's room list and the picture of live nodes current.
//!
//! Nothing here touches packets: a room's media stays on the node that
//! hosts it, and Redis load grows with joins and messages, not with media.

use super::bus::{Bus, BusMessage, Envelope};
use super::keys::Keys;
use super::link::{Link, LinkError, LinkSettings, RedisUrl};
use super::placement::Placement;
use super::registry::{NodeIdentity, NodeLoad, Registry, RegistryError, RegistrySettings};
use super::relay::{Received, RelayFrame, RelayReceiver};
use super::stream::{ToFront, ToHost};
use crate::local_rooms::LocalRooms;
use crate::session::ClientFrame;
use crate::AppState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// Everything a node needs to join a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub redis_url: String,
    pub node_id: String,
    pub key_prefix: String,
    pub heartbeat: Duration,
    /// A node whose heartbeat is older is dead.
    pub node_timeout: Duration,
    /// Upper bound of one Redis call.
    pub redis_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Relayed frames sent and received.
    pub relayed_out: AtomicU64,
    pub relayed_in: AtomicU64,
    /// Relayed streams broken by a lost or unexpected frame.
    pub broken_streams: AtomicU64,
    /// Relay frames for no known stream.
    pub stray_frames: AtomicU64,
    /// Participants rejoined on a new node after theirs was lost.
    pub rehomed: AtomicU64,
    /// Rooms taken off a lost node, counted once per room: by the front
    /// that won the compare-and-set move, or by the join that claimed a
    /// room whose owner was dead.
    pub rooms_rehomed: AtomicU64,
    /// Rooms hosted here that the map had lost and this node adopted back.
    pub adopted: AtomicU64,
}

/// One end of a relayed connection that lives on this node.
pub(crate) struct StreamEnd {
    pub receiver: RelayReceiver,
    /// The node at the other end.
    pub peer: String,
    pub kind: EndKind,
}

pub(crate) enum EndKind {
    /// We hold the WebSocket; the session runs on `peer`.
    Front(mpsc::Sender<ToFront>),
    /// We run the session; the WebSocket is on `peer`.
    Host(mpsc::Sender<ClientFrame>),
}

/// A relayed connection's queue bound in either direction: a client (or a
/// session) that gets this far behind is cut off rather than buffered.
pub(crate) const STREAM_QUEUE: usize = 1024;

pub struct ClusterNode {
    pub id: String,
    pub(crate) link: Arc<Link>,
    pub(crate) keys: Keys,
    pub(crate) registry: Registry,
    pub(crate) placement: Placement,
    pub(crate) bus: Bus,
    settings: ClusterSettings,
    streams: Mutex<HashMap<String, StreamEnd>>,
    /// Nodes believed alive (always including this one).
    live: watch::Sender<BTreeSet<String>>,
    /// Another node's room list changed.
    remote_rooms_changed: Notify,
    next_stream: AtomicU64,
    /// Set by a drain: take no new rooms, not even ones with members here.
    pub(crate) draining: AtomicBool,
    pub counters: ClusterCounters,
    /// Questions to other nodes in flight (operators; see `ask`).
    pub asks: super::ask::Asks,
}

impl ClusterNode {
    /// Connects to Redis, registers the node (refusing an id another live
    /// process holds) and subscribes its channels. Fails fast, with a clear
    /// error, when Redis is unreachable: a node never starts half-clustered.
    pub async fn start(
        settings: ClusterSettings,
        http_addr: String,
        media_addrs: Vec<String>,
    ) -> Result<(Arc<ClusterNode>, mpsc::Receiver<Envelope>), ClusterError> {
        let url = RedisUrl::parse(&settings.redis_url)?;
        let link_settings = LinkSettings {
            command_timeout: settings.redis_timeout,
            connect_timeout: settings.redis_timeout.min(Duration::from_secs(1)),
            response_timeout: settings.redis_timeout,
            ..LinkSettings::default()
        };
        let (link, inbox) = Link::connect(url, link_settings).await?;
        let keys = Keys::new(&settings.key_prefix);
        let registry = Registry::start(
            link.clone(),
            keys.clone(),
            NodeIdentity {
                id: settings.node_id.clone(),
                http_addr,
                media_addrs,
            },
            RegistrySettings {
                heartbeat_interval: settings.heartbeat,
                stale_after: settings.node_timeout,
            },
        )
        .await?;
        let placement = Placement::new(link.clone(), keys.clone(), settings.node_timeout);
        let (bus, envelopes) = Bus::start(
            link.clone(),
            inbox,
            keys.clone(),
            &settings.node_id,
            STREAM_QUEUE * 4,
        )
        .await?;
        let (live, _) = watch::channel(BTreeSet::from([settings.node_id.clone()]));
        let node = Arc::new(ClusterNode {
            id: settings.node_id.clone(),
            link,
            keys,
            registry,
            placement,
            bus,
            settings,
            streams: Mutex::new(HashMap::new()),
            live,
            remote_rooms_changed: Notify::new(),
            next_stream: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            counters: ClusterCounters::default(),
            asks: super::ask::Asks::default(),
        });
        node.forget_previous_life().await;
        tracing::info!(node = %node.id, redis = %node.link.url(), "joined the cluster");
        Ok((node, envelopes))
    }

    /// A restarted node with the same id: rooms the map still gives to it
    /// were lost with its previous process (their members rejoin elsewhere
    /// or anew), so the map and the lobby forget them.
    async fn forget_previous_life(&self) {
        if let Ok(rooms) = self.placement.rooms_of(&self.id).await {
            for room in rooms {
                let _ = self.placement.release(&room, &self.id).await;
            }
        }
        let _ = self
            .link
            .query::<()>(
                "forget room sizes",
                redis::cmd("DEL").arg(self.keys.node_room_sizes(&self.id)),
            )
            .await;
    }

    /// Starts the loops that serve the cluster for `state`.
    pub fn run(
        self: &Arc<Self>,
        state: Arc<AppState>,
        local: Arc<LocalRooms>,
        envelopes: mpsc::Receiver<Envelope>,
    ) {
        tokio::spawn(self.clone().dispatch(state.clone(), envelopes));
        tokio::spawn(self.clone().watch_nodes());
        tokio::spawn(self.clone().probe_round_trips());
        let changed = Arc::new(Notify::new());
        local.watch_changes(changed.clone());
        tokio::spawn(self.clone().sync_rooms(local.clone(), changed));
        tokio::spawn(super::healing::keep_ownership(self.clone(), local.clone()));
        tokio::spawn(self.clone().publish_load(state, local));
    }

    /// Whether Redis answers (readiness).
    pub fn redis_up(&self) -> bool {
        self.link.is_up()
    }

    /// Whether this node is handing its rooms off before it exits.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    pub(crate) fn streams(&self) -> MutexGuard<'_, HashMap<String, StreamEnd>> {
        self.streams.lock().expect("stream table lock poisoned")
    }

    pub(crate) fn new_stream_id(&self) -> String {
        let n = self.next_stream.fetch_add(1, Ordering::Relaxed);
        format!("{}/{n}", self.id)
    }

    pub(crate) fn live(&self) -> watch::Receiver<BTreeSet<String>> {
        self.live.subscribe()
    }

    pub fn is_live(&self, node: &str) -> bool {
        self.live.borrow().contains(node)
    }

    /// Sends one frame of a relayed stream to `node`. False when nobody
    /// listens there (the node is gone) or Redis failed.
    pub(crate) async fn send_frame(&self, node: &str, frame: RelayFrame) -> bool {
        self.counters.relayed_out.fetch_add(1, Ordering::Relaxed);
        matches!(
            self.bus.send_to(node, BusMessage::Relay(frame)).await,
            Ok(true)
        )
    }

    async fn dispatch(
        self: Arc<Self>,
        state: Arc<AppState>,
        mut envelopes: mpsc::Receiver<Envelope>,
    ) {
        while let Some(envelope) = envelopes.recv().await {
            match envelope.message {
                BusMessage::Relay(frame) => self.on_relay(&state, &envelope.from, frame),
                BusMessage::RoomsChanged {} => self.remote_rooms_changed.notify_one(),
                BusMessage::Ask { id, question } => {
                    self.answer(&state, &envelope.from, id, question)
                }
                BusMessage::Answer { id, answer } => self.asks.resolve(&envelope.from, id, answer),
            }
        }
    }

    fn on_relay(self: &Arc<Self>, state: &Arc<AppState>, from: &str, frame: RelayFrame) {
        self.counters.relayed_in.fetch_add(1, Ordering::Relaxed);
        let mut streams = self.streams();
        let Some(end) = streams.get_mut(&frame.stream) else {
            drop(streams);
            self.open_hosted(state, from, frame);
            return;
        };
        if end.peer != from {
            self.counters.stray_frames.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let stream = frame.stream.clone();
        let delivered = match end.receiver.accept(frame) {
            Received::Deliver(body) => match &end.kind {
                EndKind::Front(tx) => serde_json::from_value::<ToFront>(body)
                    .ok()
                    .is_some_and(|message| tx.try_send(message).is_ok()),
                EndKind::Host(tx) => match serde_json::from_value::<ToHost>(body) {
                    Ok(ToHost::Frame { frame }) => tx.try_send(frame).is_ok(),
                    _ => false,
                },
            },
            Received::Duplicate { .. } | Received::Refused => true,
            Received::Gap { expected, got } => {
                tracing::warn!(%stream, expected, got, "relayed stream lost frames: closing it");
                false
            }
        };
        if !delivered {
            // Dropping our end tells its task: a front rejoins or closes,
            // a hosted session ends as if its client had gone.
            self.counters.broken_streams.fetch_add(1, Ordering::Relaxed);
            streams.remove(&stream);
        }
    }

    /// The first frame of a stream another node opens to us.
    fn open_hosted(self: &Arc<Self>, state: &Arc<AppState>, from: &str, frame: RelayFrame) {
        let stream = frame.stream.clone();
        let mut receiver = RelayReceiver::new(stream.clone());
        let opened = match receiver.accept(frame) {
            Received::Deliver(body) => serde_json::from_value::<ToHost>(body).ok(),
            _ => None,
        };
        let Some(ToHost::Open { front, rejoin }) = opened else {
            self.counters.stray_frames.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if front != from {
            self.counters.stray_frames.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let frames = super::host::serve(
            self.clone(),
            state.clone(),
            stream.clone(),
            front.clone(),
            rejoin,
        );
        self.streams().insert(
            stream,
            StreamEnd {
                receiver,
                peer: front,
                kind: EndKind::Host(frames),
            },
        );
    }

    /// Keeps the set of live nodes: a fresh heartbeat and a subscribed bus
    /// channel (a killed process's subscription ends with its connection,
    /// well before its heartbeat goes stale). Streams with a node that died
    /// are dropped, which their tasks see at once.
    async fn watch_nodes(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.heartbeat.min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut silent: HashMap<String, u32> = HashMap::new();
        let mut absent: HashMap<String, tokio::time::Instant> = HashMap::new();
        let mut link = self.link.status();
        let mut settled_at = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let Ok(nodes) = self.registry.nodes().await else {
                continue; // Redis is down: keep the last picture.
            };
            let now = tokio::time::Instant::now();
            // Redis came back (maybe empty, maybe after a hang that left
            // every heartbeat stale, ours too): other nodes need a
            // heartbeat and a re-subscription to show up again. Until they
            // have had the time, stale or missing is no evidence of death.
            let we_are_fresh = nodes.iter().any(|n| n.record.id == self.id && n.alive);
            if link.has_changed().unwrap_or(false) || !we_are_fresh {
                link.borrow_and_update();
                settled_at = now + self.settings.node_timeout;
            }
            let ids: Vec<String> = nodes
                .iter()
                .filter(|n| n.alive && n.record.id != self.id)
                .map(|n| n.record.id.clone())
                .collect();
            // Our own channel is asked too: if even we are not subscribed,
            // Redis lost its subscriptions (a restart) and everyone is
            // re-subscribing.
            let mut asked = vec![self.id.clone()];
            asked.extend(ids.iter().cloned());
            let mut subscribed = self.subscriber_counts(&asked).await.into_iter();
            if subscribed.next().flatten() == Some(0) {
                settled_at = now + self.settings.node_timeout;
            }
            let settling = now < settled_at;
            let mut live = BTreeSet::from([self.id.clone()]);
            if settling {
                live.extend(self.live.borrow().iter().cloned());
            }
            // A node missing from the registry altogether (not stale: gone,
            // as after a Redis restart before its next heartbeat) keeps its
            // place for a node timeout; a SIGKILLed node is still listed,
            // with a stale heartbeat or no subscriber, and goes at once.
            for id in self.live.borrow().iter() {
                if nodes.iter().any(|n| n.record.id == *id) {
                    absent.remove(id);
                } else if *id != self.id {
                    let since = *absent.entry(id.clone()).or_insert(now);
                    if now < since + self.settings.node_timeout {
                        live.insert(id.clone());
                    }
                }
            }
            absent.retain(|id, _| self.live.borrow().contains(id));
            for (id, subscribers) in ids.iter().zip(subscribed) {
                let quiet = silent.entry(id.clone()).or_default();
                *quiet = if subscribers == Some(0) && !settling {
                    *quiet + 1
                } else {
                    0
                };
                // Two probes in a row: a node that is just starting (or
                // resubscribing) is not declared dead for one missed look.
                if *quiet < 2 {
                    live.insert(id.clone());
                }
            }
            silent.retain(|id, _| ids.contains(id));
            let previous = self.live.borrow().clone();
            if previous != live {
                let lost: Vec<&String> = previous.difference(&live).collect();
                if !lost.is_empty() {
                    tracing::warn!(?lost, "nodes lost");
                    self.drop_streams_with(&lost);
                    for node in &lost {
                        let _ = self
                            .link
                            .query::<()>(
                                "forget room sizes",
                                redis::cmd("DEL").arg(self.keys.node_room_sizes(node)),
                            )
                            .await;
                    }
                }
                self.live.send_replace(live);
            }
        }
    }

    async fn subscriber_counts(&self, nodes: &[String]) -> Vec<Option<u64>> {
        if nodes.is_empty() {
            return Vec::new();
        }
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("NUMSUB");
        for node in nodes {
            cmd.arg(self.keys.node_channel(node));
        }
        match self
            .link
            .query::<Vec<(String, u64)>>("PUBSUB NUMSUB", &cmd)
            .await
        {
            Ok(pairs) => pairs.into_iter().map(|(_, n)| Some(n)).collect(),
            Err(_) => vec![None; nodes.len()],
        }
    }

    fn drop_streams_with(&self, lost: &[&String]) {
        self.streams()
            .retain(|_, end| !lost.iter().any(|node| **node == end.peer));
    }

    /// Publishes this node's rooms when they change and keeps the lobby's
    /// picture of other nodes' rooms current.
    async fn sync_rooms(self: Arc<Self>, local: Arc<LocalRooms>, changed: Arc<Notify>) {
        let mut live = self.live();
        let mut link = self.link.status();
        let mut dirty = true;
        loop {
            if dirty && self.publish_rooms(&local).await.is_ok() {
                dirty = false;
                let _ = self.bus.broadcast(BusMessage::RoomsChanged {}).await;
            }
            if let Ok(remote) = self.read_remote_rooms().await {
                local.set_remote_rooms(remote);
            }
            tokio::select! {
                _ = changed.notified() => dirty = true,
                _ = self.remote_rooms_changed.notified() => {}
                _ = live.changed() => {}
                // Redis came back (maybe empty): publish again.
                _ = link.changed() => dirty = true,
                // A missed pub/sub message (Redis blip) heals on its own.
                _ = tokio::time::sleep(Duration::from_secs(5)) => dirty = dirty || !self.link.is_up(),
            }
            // Coalesce a burst of joins into one publication.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn publish_rooms(&self, local: &LocalRooms) -> Result<(), LinkError> {
        let key = self.keys.node_room_sizes(&self.id);
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        let rooms = local.local_room_list();
        if !rooms.is_empty() {
            let pairs: Vec<(String, usize)> = rooms
                .into_iter()
                .map(|room| (room.name, room.participants))
                .collect();
            pipe.hset_multiple(&key, &pairs).ignore();
        }
        self.link.pipeline::<()>("publish rooms", &pipe).await
    }

    async fn read_remote_rooms(&self) -> Result<BTreeMap<String, usize>, LinkError> {
        let others: Vec<String> = self
            .live
            .borrow()
            .iter()
            .filter(|id| **id != self.id)
            .cloned()
            .collect();
        let mut all = BTreeMap::new();
        if others.is_empty() {
            return Ok(all);
        }
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.hgetall(self.keys.node_room_sizes(node));
        }
        let maps: Vec<HashMap<String, usize>> = self.link.pipeline("read rooms", &pipe).await?;
        for map in maps {
            for (room, participants) in map {
                *all.entry(room).or_default() += participants;
            }
        }
        Ok(all)
    }

    /// Keeps the heartbeat's load current (placement reads it).
    async fn publish_load(self: Arc<Self>, state: Arc<AppState>, local: Arc<LocalRooms>) {
        let mut tick = tokio::time::interval(self.settings.heartbeat);
        loop {
            tick.tick().await;
            let counts = local.local_counts();
            let busy_ratio = crate::admin::shard_snapshots(&state)
                .await
                .iter()
                .map(|s| s.busy_ratio)
                .fold(0.0, f64::max);
            self.registry.set_load(NodeLoad {
                rooms: counts.rooms as u32,
                participants: counts.participants as u32,
                busy_ratio,
            });
        }
    }
}
