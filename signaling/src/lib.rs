//! Noom's control plane: the HTTP server, WebSocket signaling (the contract
//! in `docs/protocol.md`), the rooms directory, chat and metrics. It never
//! touches packets: media goes through `noom_sfu` shards.

mod admin;
pub mod auth;
pub mod cluster;
mod cluster_rooms;
mod delivery;
mod directory;
mod ice_servers;
mod local_rooms;
mod metrics;
mod outbox;
mod rate_limit;
mod rooms;
mod session;
mod web;

use anyhow::Context;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt as _;
use axum::Router;
use directory::Limits;
use local_rooms::LocalRooms;
use noom_config::Config;
use noom_sfu::{MediaPlane, MediaSettings};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

pub use metrics::Metrics;
/// The wire contract lives in its own crate (the fuzz targets use it without
/// the server); `crate::protocol` keeps naming it here.
pub use noom_protocol as protocol;

/// Everything the HTTP handlers and sessions share.
pub struct AppState {
    pub config: Config,
    /// Where rooms live and how their members are reached.
    rooms: Arc<dyn rooms::Rooms>,
    /// This process's media shards (rooms reach them through `rooms`;
    /// operators' snapshots and shutdown use them directly).
    media: Arc<MediaPlane>,
    next_conn: AtomicU64,
    /// `ice_servers` of the `joined` message (STUN, and TURN credentials
    /// minted per join).
    ice_servers: ice_servers::IceServers,
    metrics: Metrics,
    shutdown: broadcast::Sender<()>,
    /// WebSockets open on this node: a shutdown waits (bounded) until each
    /// has said its last word, so no client sees the connection reset
    /// before its `shutdown` message.
    open_websockets: watch::Sender<usize>,
    /// This node's membership of a cluster (None: a single node).
    cluster: Option<Arc<cluster::node::ClusterNode>>,
}

/// A running server.
pub struct Server {
    http_addr: SocketAddr,
    state: Arc<AppState>,
    /// This node's own rooms (a drain moves them away).
    local: Arc<LocalRooms>,
    task: tokio::task::JoinHandle<()>,
}

pub fn media_settings(config: &Config) -> MediaSettings {
    MediaSettings {
        shards: config.shard_count(),
        bind_ips: config.resolved_bind_ips(),
        port: config.media.port,
        public_ip: config.media.public_ip,
        ice_tcp: config.media.ice_tcp,
        pli_throttle: Duration::from_millis(config.keyframes.pli_throttle_ms),
        keyframe_cache: config.keyframes.cache,
        max_file_bytes: config.limits.max_file_bytes,
        simulcast: config.media.simulcast,
        bandwidth_allocation: config.media.bandwidth_allocation,
        publisher_start_kbps: config.media.publisher_start_kbps,
    }
}

/// The cluster part of the configuration, with the node id resolved once.
fn cluster_settings(config: &Config) -> cluster::node::ClusterSettings {
    let cluster = &config.cluster;
    cluster::node::ClusterSettings {
        redis_url: cluster.redis_url.clone(),
        node_id: cluster.resolved_node_id(),
        key_prefix: cluster.key_prefix.clone(),
        heartbeat: Duration::from_millis(cluster.heartbeat_ms),
        node_timeout: Duration::from_millis(cluster.node_timeout_ms),
        redis_timeout: Duration::from_millis(cluster.redis_timeout_ms),
    }
}

/// Ready for new users: always on a single node; on a clustered node, only
/// while Redis answers (without it the node cannot place rooms, so a load
/// balancer should send new users elsewhere). `/healthz` stays liveness.
async fn readyz(State(state): State<Arc<AppState>>) -> axum::response::Response {
    match &state.cluster {
        Some(node) if !node.redis_up() => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the cluster's Redis cannot be reached\n",
        )
            .into_response(),
        _ => "ready\n".into_response(),
    }
}

impl Server {
    /// Binds the HTTP listener and the media shards, and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding HTTP {}", config.http.listen))?;
        let http_addr = listener.local_addr()?;
        let settings = media_settings(&config);
        let media = Arc::new(MediaPlane::start(&settings).context("starting media shards")?);
        let ice_servers = ice_servers::IceServers::new(&config.ice.servers, &config.turn)?;
        let (shutdown, _) = broadcast::channel(1);
        let local = Arc::new(LocalRooms::new(
            media.clone(),
            Limits {
                max_rooms: config.limits.max_rooms,
                max_participants_per_room: config.limits.max_participants_per_room,
            },
        ));
        let (cluster, rooms): (_, Arc<dyn rooms::Rooms>) = if config.cluster.enabled() {
            let media_addrs = media
                .shards()
                .iter()
                .flat_map(|s| s.local_addrs().iter().map(|a| a.to_string()))
                .collect();
            let (node, envelopes) = cluster::node::ClusterNode::start(
                cluster_settings(&config),
                http_addr.to_string(),
                media_addrs,
            )
            .await
            .context("joining the cluster")?;
            let rooms = Arc::new(cluster_rooms::ClusterRooms::new(
                local.clone(),
                node.clone(),
            ));
            (Some((node, envelopes)), rooms)
        } else {
            (None, local.clone())
        };
        let state = Arc::new(AppState {
            rooms,
            cluster: cluster.as_ref().map(|(node, _)| node.clone()),
            media,
            next_conn: AtomicU64::new(1),
            ice_servers,
            metrics: Metrics::default(),
            shutdown,
            open_websockets: watch::Sender::new(0),
            config,
        });
        if let Some((node, envelopes)) = cluster {
            node.run(state.clone(), local.clone(), envelopes);
        }
        let app = Router::new()
            .route("/ws", get(ws_upgrade))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics::serve))
            .route(
                "/admin",
                get(|| async { axum::response::Redirect::permanent("/admin.html") }),
            )
            .merge(admin::routes())
            .fallback(web::serve)
            .with_state(state.clone());
        let mut stop = state.shutdown.subscribe();
        let task = tokio::spawn(async move {
            // TCP_NODELAY: signaling is small messages (chat, a `rooms`
            // push, an answer) that must not wait behind Nagle's algorithm
            // for the ACK of the one before, which the peer may delay 40 ms.
            let listener = listener.tap_io(|tcp| {
                if let Err(err) = tcp.set_nodelay(true) {
                    tracing::debug!(%err, "could not set TCP_NODELAY");
                }
            });
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.recv().await;
                })
                .await;
            if let Err(err) = served {
                tracing::error!(%err, "HTTP server failed");
            }
        });
        tracing::info!(%http_addr, "noom listening");
        if state.config.admin.token.is_empty() {
            tracing::info!("admin.token is empty: the admin page and API are disabled");
        }
        let turn = &state.config.turn;
        if turn.enabled() {
            // The URLs only: the secret is never logged.
            tracing::info!(urls = ?turn.urls, ttl_s = turn.ttl_s, "TURN: every joined carries time-limited credentials");
        } else if !turn.urls.is_empty() {
            tracing::warn!("turn.urls is set but turn.secret is empty: no TURN server is handed out (set NOOM_TURN_SECRET)");
        }
        if !state.config.auth.required() {
            tracing::warn!("auth.secret is empty: anyone can join any room (fine for local use; set NOOM_AUTH_SECRET on a public server)");
        }
        Ok(Server {
            http_addr,
            state,
            local,
            task,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Media shards' UDP addresses (for tests and logs).
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.state
            .media
            .shards()
            .iter()
            .flat_map(|s| s.local_addrs().to_vec())
            .collect()
    }

    /// Several nodes: hands this node's rooms and their members over to
    /// other nodes (they get `joined` and a new offer) and leaves the
    /// cluster, within `limit`; call before [`Server::shutdown`]. Does
    /// nothing on a single node. Returns what it did, for the log.
    pub async fn drain(&self, limit: Duration) -> Option<cluster::healing::Drained> {
        let node = self.state.cluster.as_ref()?;
        Some(cluster::healing::drain(node, &self.local, limit).await)
    }

    /// Tells clients, closes WebSockets and peer connections, and stops.
    pub async fn shutdown(self) {
        let _ = self.state.shutdown.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        // The HTTP server's graceful shutdown does not wait for upgraded
        // connections: let every WebSocket hear its last word before the
        // exit (a session that cannot write gives up after its own limit).
        let mut open = self.state.open_websockets.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(3), open.wait_for(|n| *n == 0)).await;
        let state = self.state.clone();
        let _ = tokio::task::spawn_blocking(move || state.media.shutdown()).await;
    }
}

/// Keeps an open WebSocket counted (see `AppState::open_websockets`).
struct WebSocketGuard(Arc<AppState>);

impl WebSocketGuard {
    fn new(state: &Arc<AppState>) -> WebSocketGuard {
        state.open_websockets.send_modify(|n| *n += 1);
        WebSocketGuard(state.clone())
    }
}

impl Drop for WebSocketGuard {
    fn drop(&mut self) {
        self.0
            .open_websockets
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

async fn ws_upgrade(
    ws: WebSocketUpgrade,
    headers: axum::http::HeaderMap,
    State(state): State<Arc<AppState>>,
) -> axum::response::Response {
    let allowed = &state.config.auth.allowed_origins;
    if !allowed.is_empty() {
        // Browsers always send Origin; a client that sends none is not a
        // page on another site, so only a present, unlisted Origin is refused.
        if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !allowed.iter().any(|a| a == origin) {
                tracing::info!(%origin, "WebSocket from a disallowed origin refused");
                return (
                    axum::http::StatusCode::FORBIDDEN,
                    format!("origin {origin} is not allowed\n"),
                )
                    .into_response();
            }
        }
    }
    // Frames over 16 times the message limit close the connection (1009);
    // frames over the limit itself get `too_large` and the connection stays.
    let hard_limit = state.config.limits.max_message_bytes.saturating_mul(16);
    ws.max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| async move {
            let _counted = WebSocketGuard::new(&state);
            match state.cluster.clone() {
                Some(node) => cluster::front::run(socket, state, node).await,
                None => session::run(socket, state).await,
            }
        })
        .into_response()
}
