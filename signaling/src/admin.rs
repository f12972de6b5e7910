//! The operator API under `/api/` (bearer token from `admin.token`) and the
//! live feed behind the admin page (`/admin`).
//!
//! Data comes from the rooms (names, mute state, through [`Rooms`](crate::rooms::Rooms)) joined with each
//! media shard's snapshot (addresses, connection state, RTT, loss, tracks,
//! rates), gathered on demand: nothing here runs while nobody watches.

use crate::rooms::MoveError;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use noom_sfu::{Command, ConnectionState, ShardSnapshot};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/overview", get(overview))
        .route("/api/events", get(events))
        .route("/api/rooms/{room}/participants/{id}/kick", post(kick))
        .route("/api/rooms/{room}/close", post(close_room))
        .route("/api/rooms/{room}/move", post(move_room))
        .route("/api/announce", post(announce))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// Checks the bearer token; the refusal to send when it is wrong.
fn refusal(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let expected = &state.config.admin.token;
    if expected.is_empty() {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the admin API is disabled: set admin.token (or NOOM_ADMIN_TOKEN)",
        ));
    }
    // The scheme name is case-insensitive (RFC 9110).
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    // Constant-time comparison: the token is a password.
    let matches = given.is_some_and(|g| {
        g.len() == expected.len()
            && g.bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if matches {
        None
    } else {
        state.metrics.admin_auth_failures.inc();
        Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

async fn status(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"admin_enabled": !state.config.admin.token.is_empty()}))
}

/// Every shard's snapshot (a shard that does not answer within a second is
/// left out rather than stalling the page).
pub async fn shard_snapshots(state: &AppState) -> Vec<ShardSnapshot> {
    let mut waits = Vec::new();
    for shard in state.media.shards() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let command = Command::Snapshot {
            reply: Box::new(move |snapshot| {
                let _ = tx.send(snapshot);
            }),
        };
        if shard.send(command).is_ok() {
            waits.push(rx);
        }
    }
    let mut snapshots = Vec::new();
    for rx in waits {
        if let Ok(Ok(snapshot)) = tokio::time::timeout(Duration::from_secs(1), rx).await {
            snapshots.push(snapshot);
        }
    }
    snapshots
}

fn state_name(state: ConnectionState) -> &'static str {
    match state {
        ConnectionState::Connecting => "connecting",
        ConnectionState::Connected => "connected",
        ConnectionState::Disconnected => "disconnected",
        ConnectionState::Failed => "failed",
        ConnectionState::Closed => "closed",
    }
}

/// The whole picture as JSON (documented in docs/admin.md): this node's,
/// or on a node of a cluster every node's.
pub async fn overview_json(state: &AppState) -> Value {
    match &state.cluster {
        Some(node) => crate::cluster::operators::overview(state, node).await,
        None => node_overview_json(state).await,
    }
}

/// This node's rooms, shards and media statistics (what a single node
/// shows, and what a node of a cluster answers when another asks).
pub async fn node_overview_json(state: &AppState) -> Value {
    let snapshots = shard_snapshots(state).await;
    let mut media: HashMap<&str, Value> = HashMap::new();
    for snapshot in &snapshots {
        for peer in &snapshot.peers {
            media.insert(
                peer.participant.as_str(),
                json!({
                    "state": state_name(peer.state),
                    "remote_addr": peer.remote_addr.map(|a| a.to_string()),
                    "rtt_ms": peer.rtt_ms,
                    "loss_to_client": peer.loss_to_client,
                    "bandwidth": peer.bandwidth.map(|b| json!({
                        "estimate_bps": b.estimate_bps,
                        "acknowledged_bps": b.acknowledged_bps,
                        "loss": b.loss,
                        "feedbacks": b.feedbacks,
                    })),
                    "probe_bps": peer.probe_bps,
                    "published": peer.published.iter().map(|t| json!({
                        "kind": t.kind, "codec": t.mime_type, "ssrc": t.ssrc,
                        "packets": t.packets, "bytes": t.bytes,
                        "packets_per_second": t.packets_per_second,
                        "bits_per_second": t.bits_per_second,
                        "packets_lost": t.packets_lost,
                        "layers": t.layers,
                        "source_pauses": t.source_pauses.iter().map(|p| json!({
                            "rid": p.rid,
                            "ended_at_ms": p.ended_at.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0),
                            "ms": p.length.as_millis() as u64,
                        })).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "forwarded": peer.forwarded.iter().map(|f| json!({
                        "publisher": f.publisher, "kind": f.kind, "ssrc": f.ssrc, "packets": f.packets,
                        "layer": f.layer, "paused": f.paused, "layer_switches": f.layer_switches,
                        "max_layer": f.max_layer, "max_temporal_layer": f.max_temporal_layer,
                    })).collect::<Vec<_>>(),
                }),
            );
        }
    }
    let rooms: Vec<Value> = state
        .rooms
        .overview()
        .await
        .into_iter()
        .map(|room| {
            json!({
                "name": room.name,
                "shard": room.shard,
                "participants": room.participants.iter().map(|p| json!({
                    "id": p.id,
                    "name": p.name,
                    "audio_muted": p.audio_muted,
                    "video_muted": p.video_muted,
                    "media": media.get(p.id.as_str()).cloned().unwrap_or(Value::Null),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let shards: Vec<Value> = snapshots
        .iter()
        .map(|s| {
            json!({
                "shard": s.shard,
                "rooms": s.counters.rooms,
                "participants": s.counters.peers,
                "tracks": s.counters.tracks,
                "busy_ratio": s.busy_ratio,
                "packets_in_per_second": s.packets_in_per_second,
                "packets_out_per_second": s.packets_out_per_second,
                "dropped_datagrams": s.counters.dropped_datagrams,
            })
        })
        .collect();
    json!({
        "rooms": rooms,
        "shards": shards,
        "websocket_connections": state.metrics.ws_connections.get(),
    })
}

async fn overview(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(response) = refusal(&state, &headers) {
        return response;
    }
    Json(overview_json(&state).await).into_response()
}

/// Server-sent events: the overview once a second.
async fn events(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(response) = refusal(&state, &headers) {
        return response;
    }
    let stream = futures_util::stream::unfold((state, true), |(state, first)| async move {
        if !first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let event = Event::default()
            .event("overview")
            .json_data(overview_json(&state).await)
            .map_err(axum::Error::new);
        Some((event, (state, false)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize, Default)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

/// The optional `{"reason": ...}` body, read only after the token check.
fn reason_body(bytes: &[u8]) -> Result<ReasonBody, serde_json::Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(ReasonBody::default());
    }
    serde_json::from_slice(bytes)
}

async fn kick(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((room, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(response) = refusal(&state, &headers) {
        return response;
    }
    let Ok(body) = reason_body(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a JSON body {\"reason\": \"...\"} or none",
        );
    };
    let reason = body
        .reason
        .unwrap_or_else(|| "removed by the operator".to_owned());
    let kicked = match &state.cluster {
        Some(node) => crate::cluster::operators::kick(&state, node, &room, &id, &reason).await,
        None => Ok(state.rooms.kick(&room, &id, &reason).await),
    };
    match kicked {
        Ok(true) => Json(json!({"kicked": id, "room": room, "reason": reason})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "no such participant in that room"),
        Err(err) => cluster_error(err),
    }
}

async fn close_room(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(response) = refusal(&state, &headers) {
        return response;
    }
    let Ok(body) = reason_body(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a JSON body {\"reason\": \"...\"} or none",
        );
    };
    let reason = body
        .reason
        .unwrap_or_else(|| "the room was closed by the operator".to_owned());
    let closed = match &state.cluster {
        Some(node) => crate::cluster::operators::close_room(&state, node, &room, &reason).await,
        None => Ok(state.rooms.close_room(&room, &reason).await),
    };
    match closed {
        Ok(Some(n)) => Json(json!({"closed": room, "participants": n})).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such room"),
        Err(err) => cluster_error(err),
    }
}

#[derive(Deserialize)]
struct MoveBody {
    to: String,
}

/// Moves everyone in `room` into `to` (docs/admin.md): each member gets
/// `joined` for `to` and a new offer; nobody moves when it is refused.
async fn move_room(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Result<Json<MoveBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Some(response) = refusal(&state, &headers) {
        return response;
    }
    let Ok(Json(MoveBody { to })) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a JSON body {\"to\": \"<room>\"}",
        );
    };
    if let Err(refusal) = crate::protocol::check_name("to", &to) {
        return error(StatusCode::BAD_REQUEST, &refusal.message);
    }
    match state.rooms.move_room(&room, &to).await {
        Ok(moved) => {
            tracing::info!(from = %room, %to, moved, "room moved");
            Json(json!({"moved": moved, "from": room, "to": to})).into_response()
        }
        Err(MoveError::NoSuchRoom) => error(StatusCode::NOT_FOUND, "no such room"),
        Err(MoveError::SameRoom) => error(
            StatusCode::BAD_REQUEST,
            "the destination is the room itself",
        ),
        Err(MoveError::DestinationFull { would_be, limit }) => error(
            StatusCode::CONFLICT,
            &format!(
                "the destination would hold {would_be} participants, over the limit of {limit}; nobody was moved"
            ),
        ),
        Err(MoveError::Busy) => error(
            StatusCode::CONFLICT,
            "a move into or out of one of these rooms is still under way; nobody was moved",
        ),
        Err(MoveError::Unavailable(reason)) => error(StatusCode::SERVICE_UNAVAILABLE, &reason),
    }
}

#[derive(Deserialize)]
struct AnnounceBody {
    text: String,
    #[serde(default)]
    room: Option<String>,
}

async fn announce(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<AnnounceBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Some(response) = refusal(&state, &headers) {
        return response;
    }
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a JSON body {\"text\": \"...\", \"room\": optional}",
        );
    };
    if let Err(refusal) = crate::protocol::check_chat_text(&body.text) {
        return error(StatusCode::BAD_REQUEST, &refusal.message);
    }
    // Everyone in the room would see a blank line from the operator.
    if body.text.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "text must not be only whitespace");
    }
    let ts = crate::session::unix_ms();
    let room = body.room.as_deref();
    let Some(node) = &state.cluster else {
        return match state.rooms.announce(&body.text, room, ts).await {
            Some(reached) => {
                tracing::info!(?room, reached, "announcement");
                Json(json!({"reached": reached})).into_response()
            }
            None => error(StatusCode::NOT_FOUND, "no such room"),
        };
    };
    match crate::cluster::operators::announce(&state, node, &body.text, room, ts).await {
        Ok(announced) => match announced.reached {
            Some(reached) => {
                let unanswered = announced.unanswered;
                tracing::info!(?room, reached, ?unanswered, "announcement");
                Json(json!({"reached": reached, "unanswered": unanswered})).into_response()
            }
            None => error(StatusCode::NOT_FOUND, "no such room"),
        },
        Err(err) => cluster_error(err),
    }
}

/// A cluster-wide action that could not be carried out: 504 naming the
/// node that did not answer, 503 when Redis cannot be reached. Nothing was
/// done (or, for an unanswered node, it may have been: never repeated).
fn cluster_error(err: crate::cluster::operators::OperatorError) -> Response {
    use crate::cluster::operators::OperatorError;
    match &err {
        OperatorError::Unanswered { node, .. } => (
            StatusCode::GATEWAY_TIMEOUT,
            Json(json!({"error": err.to_string(), "node": node})),
        )
            .into_response(),
        OperatorError::Store(_) => error(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()),
    }
}
