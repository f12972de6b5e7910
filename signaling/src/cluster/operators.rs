//! The operator API across a cluster: one picture and one set of actions
//! from whichever node the operator reaches.
//!
//! A room's members all have their sessions on the room's node, so an
//! action on a room is carried out there: this node tries its own rooms
//! first (no Redis on that path), then asks the room's owner (the room map)
//! over the bus. An announcement to everyone is carried out by every live
//! node for the sessions it runs (lobby guests and room members alike; a
//! relayed client's session runs on its room's node, not where its
//! WebSocket is), so each connection gets it exactly once.
//!
//! The overview joins the registry (every node's heartbeat) with each live
//! node's own overview; a node that does not answer within a second is
//! shown from what Redis knows (its rooms and their sizes), without media.

use super::ask::{Answer, Question, OPERATOR_TIMEOUT};
use super::node::ClusterNode;
use super::registry::{NodeState, NodeView};
use crate::AppState;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Why a cluster-wide action could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("node {node:?} hosts the room but {error}")]
    Unanswered { node: String, error: String },
    #[error("the cluster's store cannot be reached: {0}")]
    Store(String),
}

/// An announcement's outcome across nodes.
pub struct Announced {
    /// Sessions reached; None: no such room.
    pub reached: Option<usize>,
    /// Live nodes that did not confirm (their sessions may or may not have
    /// got it: an announcement is never sent twice).
    pub unanswered: Vec<String>,
}

/// Answers another node's question about this node alone.
pub(crate) async fn answer_here(state: &AppState, question: Question) -> Answer {
    let rooms = &state.rooms;
    match question {
        Question::Ping {} => Answer::Pong {},
        Question::Overview {} => Answer::Overview {
            overview: crate::admin::node_overview_json(state).await,
        },
        Question::Kick {
            room,
            participant,
            reason,
        } => Answer::Kicked {
            found: rooms.kick(&room, &participant, &reason).await,
        },
        Question::MoveRoom { from, to } => Answer::Moved {
            result: match (
                crate::protocol::check_name("room", &from),
                crate::protocol::check_name("room", &to),
            ) {
                (Ok(()), Ok(())) => rooms.move_room(&from, &to).await,
                _ => Err(crate::rooms::MoveError::Unavailable(
                    "invalid room name".to_owned(),
                )),
            },
        },
        Question::CloseRoom { room, reason } => Answer::Closed {
            participants: rooms.close_room(&room, &reason).await,
        },
        Question::Announce { text, room, ts } => {
            // The asker checked it; a forged message is held to the same rules.
            if let Err(refusal) = crate::protocol::check_chat_text(&text) {
                return Answer::Refused {
                    error: refusal.message,
                };
            }
            if text.trim().is_empty() {
                return Answer::Refused {
                    error: "text must not be only whitespace".to_owned(),
                };
            }
            Answer::Announced {
                reached: rooms.announce(&text, room.as_deref(), ts).await,
            }
        }
    }
}

/// The node hosting `room` when it is not this one (None: no such room).
async fn other_owner(node: &ClusterNode, room: &str) -> Result<Option<String>, OperatorError> {
    let owner = node
        .placement
        .owner_of(room)
        .await
        .map_err(|err| OperatorError::Store(err.to_string()))?;
    Ok(owner.filter(|owner| *owner != node.id))
}

async fn ask_owner(
    node: &ClusterNode,
    owner: String,
    question: Question,
) -> Result<Answer, OperatorError> {
    match node.ask(&owner, question, OPERATOR_TIMEOUT).await {
        Ok(Answer::Refused { error }) => Err(OperatorError::Unanswered {
            node: owner,
            error: format!("refused: {error}"),
        }),
        Ok(answer) => Ok(answer),
        Err(err) => Err(OperatorError::Unanswered {
            node: owner,
            error: err.to_string(),
        }),
    }
}

fn unexpected(owner: &str, answer: &Answer) -> OperatorError {
    OperatorError::Unanswered {
        node: owner.to_owned(),
        error: format!("gave an unexpected answer: {answer:?}"),
    }
}

/// Kicks a participant on the node hosting its room.
pub(crate) async fn kick(
    state: &AppState,
    node: &ClusterNode,
    room: &str,
    participant: &str,
    reason: &str,
) -> Result<bool, OperatorError> {
    if state.rooms.kick(room, participant, reason).await {
        return Ok(true);
    }
    let Some(owner) = other_owner(node, room).await? else {
        return Ok(false);
    };
    let question = Question::Kick {
        room: room.to_owned(),
        participant: participant.to_owned(),
        reason: reason.to_owned(),
    };
    match ask_owner(node, owner.clone(), question).await? {
        Answer::Kicked { found } => Ok(found),
        other => Err(unexpected(&owner, &other)),
    }
}

/// Closes a room on the node hosting it.
pub(crate) async fn close_room(
    state: &AppState,
    node: &ClusterNode,
    room: &str,
    reason: &str,
) -> Result<Option<usize>, OperatorError> {
    if let Some(n) = state.rooms.close_room(room, reason).await {
        return Ok(Some(n));
    }
    let Some(owner) = other_owner(node, room).await? else {
        return Ok(None);
    };
    let question = Question::CloseRoom {
        room: room.to_owned(),
        reason: reason.to_owned(),
    };
    match ask_owner(node, owner.clone(), question).await? {
        Answer::Closed { participants } => Ok(participants),
        other => Err(unexpected(&owner, &other)),
    }
}

/// An announcement to one room (on its node) or to every session of every
/// live node.
pub(crate) async fn announce(
    state: &AppState,
    node: &ClusterNode,
    text: &str,
    room: Option<&str>,
    ts: u64,
) -> Result<Announced, OperatorError> {
    if let Some(room) = room {
        if let Some(n) = state.rooms.announce(text, Some(room), ts).await {
            return Ok(Announced {
                reached: Some(n),
                unanswered: Vec::new(),
            });
        }
        let Some(owner) = other_owner(node, room).await? else {
            return Ok(Announced {
                reached: None,
                unanswered: Vec::new(),
            });
        };
        let question = Question::Announce {
            text: text.to_owned(),
            room: Some(room.to_owned()),
            ts,
        };
        return match ask_owner(node, owner.clone(), question).await? {
            Answer::Announced { reached } => Ok(Announced {
                reached,
                unanswered: Vec::new(),
            }),
            other => Err(unexpected(&owner, &other)),
        };
    }
    // Everyone: read the live nodes first, so a store outage changes nothing.
    let views = node
        .registry
        .nodes()
        .await
        .map_err(|err| OperatorError::Store(err.to_string()))?;
    let others: Vec<String> = views
        .iter()
        .filter(|v| v.alive && v.record.id != node.id)
        .map(|v| v.record.id.clone())
        .collect();
    let question = Question::Announce {
        text: text.to_owned(),
        room: None,
        ts,
    };
    let asks = others
        .iter()
        .map(|other| node.ask(other, question.clone(), OPERATOR_TIMEOUT));
    let (here, answers) = tokio::join!(
        state.rooms.announce(text, None, ts),
        futures_util::future::join_all(asks)
    );
    let mut reached = here.unwrap_or(0);
    let mut unanswered = Vec::new();
    for (other, answer) in others.into_iter().zip(answers) {
        match answer {
            Ok(Answer::Announced { reached: Some(n) }) => reached += n,
            Ok(answer) => {
                tracing::warn!(node = %other, ?answer, "unexpected answer to an announcement");
                unanswered.push(other);
            }
            Err(err) => {
                tracing::warn!(node = %other, %err, "a node did not confirm an announcement");
                unanswered.push(other);
            }
        }
    }
    Ok(Announced {
        reached: Some(reached),
        unanswered,
    })
}

/// What one node's entry says about its own overview.
enum Heard {
    Answered(Value),
    Unanswered(String),
}

/// The whole cluster's picture (the shape is in docs/admin.md).
pub(crate) async fn overview(state: &AppState, node: &ClusterNode) -> Value {
    let (views, cluster_error) = match node.registry.nodes().await {
        Ok(views) => (views, None),
        Err(err) => (Vec::new(), Some(err.to_string())),
    };
    let others: Vec<&NodeView> = views
        .iter()
        .filter(|v| v.alive && v.record.id != node.id)
        .collect();
    let asks = others
        .iter()
        .map(|v| node.ask(&v.record.id, Question::Overview {}, OPERATOR_TIMEOUT));
    let (mine, answers) = tokio::join!(
        crate::admin::node_overview_json(state),
        futures_util::future::join_all(asks)
    );
    let mut heard: BTreeMap<String, Heard> = BTreeMap::new();
    for (view, answer) in others.iter().zip(answers) {
        let entry = match answer {
            Ok(Answer::Overview { overview }) => Heard::Answered(overview),
            Ok(other) => Heard::Unanswered(format!("gave an unexpected answer: {other:?}")),
            Err(err) => Heard::Unanswered(err.to_string()),
        };
        heard.insert(view.record.id.clone(), entry);
    }
    let silent: Vec<String> = heard
        .iter()
        .filter(|(_, h)| matches!(h, Heard::Unanswered(_)))
        .map(|(id, _)| id.clone())
        .collect();
    let sizes = room_sizes(node, &silent).await;
    heard.insert(node.id.clone(), Heard::Answered(mine.clone()));

    let mut nodes: Vec<Value> = views
        .iter()
        .map(|v| node_entry(v, heard.get(&v.record.id)))
        .collect();
    if !views.iter().any(|v| v.record.id == node.id) {
        // Not in the registry (Redis down or wiped): still show ourselves.
        nodes.insert(0, own_entry(node, &mine));
    }

    let mut rooms = Vec::new();
    let mut websocket_connections = 0;
    for (id, h) in &heard {
        match h {
            Heard::Answered(overview) => {
                websocket_connections += overview["websocket_connections"].as_u64().unwrap_or(0);
                for room in overview["rooms"].as_array().into_iter().flatten() {
                    let mut room = room.clone();
                    let count = room["participants"].as_array().map_or(0, Vec::len);
                    room["node"] = json!(id);
                    room["participant_count"] = json!(count);
                    room["unanswered_by"] = Value::Null;
                    rooms.push(room);
                }
            }
            Heard::Unanswered(_) => {
                for (name, count) in sizes.get(id).into_iter().flatten() {
                    rooms.push(json!({
                        "name": name,
                        "node": id,
                        "shard": null,
                        "participant_count": count,
                        "participants": null,
                        "media": null,
                        "unanswered_by": id,
                    }));
                }
            }
        }
    }
    rooms.sort_by(|a, b| {
        (a["name"].as_str(), a["node"].as_str()).cmp(&(b["name"].as_str(), b["node"].as_str()))
    });
    json!({
        "node": node.id,
        "nodes": nodes,
        "rooms": rooms,
        "shards": mine["shards"],
        "websocket_connections": websocket_connections,
        "unanswered": silent,
        "cluster_error": cluster_error,
    })
}

fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Serving => "serving",
        NodeState::Draining => "draining",
    }
}

/// Heartbeat age in ms; null when the node never beat.
fn age_ms(age: Duration) -> Value {
    if age.as_millis() >= u128::from(u64::MAX) {
        Value::Null
    } else {
        json!(age.as_millis() as u64)
    }
}

fn node_entry(view: &NodeView, heard: Option<&Heard>) -> Value {
    let record = &view.record;
    let (answered, error, overview) = match heard {
        Some(Heard::Answered(overview)) => (true, None, Some(overview)),
        Some(Heard::Unanswered(error)) => (false, Some(error.clone()), None),
        None => (false, Some("not alive: not asked".to_owned()), None),
    };
    json!({
        "id": record.id,
        "alive": view.alive,
        "state": state_name(record.state),
        "rooms": record.rooms,
        "participants": record.participants,
        "busy_ratio": record.busy_ratio,
        "heartbeat_age_ms": age_ms(view.heartbeat_age),
        "http_addr": record.http_addr,
        "answered": answered,
        "error": error,
        "websocket_connections": overview.map(|o| o["websocket_connections"].clone()),
        "shards": overview.map(|o| o["shards"].clone()),
    })
}

/// This node when the registry could not be read.
fn own_entry(node: &ClusterNode, mine: &Value) -> Value {
    let record = node.registry.record();
    let last_ok = node.registry.status().borrow().last_ok;
    let age = last_ok.map_or(Duration::MAX, |t| t.elapsed());
    json!({
        "id": record.id,
        "alive": age < node.settings().node_timeout,
        "state": state_name(record.state),
        "rooms": record.rooms,
        "participants": record.participants,
        "busy_ratio": record.busy_ratio,
        "heartbeat_age_ms": age_ms(age),
        "http_addr": record.http_addr,
        "answered": true,
        "error": null,
        "websocket_connections": mine["websocket_connections"],
        "shards": mine["shards"],
    })
}

/// The room sizes the given nodes last published to Redis (empty when
/// Redis cannot be read either).
async fn room_sizes(node: &ClusterNode, nodes: &[String]) -> HashMap<String, Vec<(String, u64)>> {
    if nodes.is_empty() {
        return HashMap::new();
    }
    let mut pipe = redis::pipe();
    for id in nodes {
        pipe.hgetall(node.keys.node_room_sizes(id));
    }
    let maps: Vec<HashMap<String, u64>> = match node.link.pipeline("read rooms", &pipe).await {
        Ok(maps) => maps,
        Err(err) => {
            tracing::info!(%err, "could not read the silent nodes' rooms");
            return HashMap::new();
        }
    };
    nodes
        .iter()
        .cloned()
        .zip(maps.into_iter().map(|map| {
            let mut rooms: Vec<(String, u64)> = map.into_iter().collect();
            rooms.sort();
            rooms
        }))
        .collect()
}
