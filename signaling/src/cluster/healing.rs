//! Keeping the room map true without a restart, and leaving the cluster
//! politely.
//!
//! - Ownership: every few heartbeats a node reads the map entries of the
//!   rooms it actually hosts (one `HMGET`). A room with no live owner
//!   (Redis restarted empty, a release raced a join, the map named a node
//!   that died) is adopted back with an atomic script; a room the map
//!   gives to another LIVE node (this node was cut off from Redis, and the
//!   room was re-homed meanwhile) is handed over to that node, member by
//!   member, so after a partition heals every room has exactly one owner.
//! - Drain (SIGTERM): the node stops taking rooms, moves each of its rooms
//!   to the least-loaded other node and hands every member's session over
//!   there (members get `joined` and a new offer), then leaves the registry.

use super::node::ClusterNode;
use super::placement::{Adoption, Move, PlacementError};
use super::registry::NodeState;
use crate::local_rooms::LocalRooms;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the map is checked against the rooms hosted here, in
/// heartbeats (so tests with fast heartbeats heal fast), at most every
/// two seconds.
fn ownership_period(node: &ClusterNode) -> Duration {
    (node.settings().heartbeat * 2).min(Duration::from_secs(2))
}

/// Runs forever: adopts this node's unmapped rooms and hands over rooms
/// the map gives to another live node.
pub(crate) async fn keep_ownership(node: Arc<ClusterNode>, local: Arc<LocalRooms>) {
    let mut tick = tokio::time::interval(ownership_period(&node));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if node.is_draining() || !node.redis_up() {
            continue;
        }
        if let Err(err) = check_ownership(&node, &local).await {
            tracing::debug!(%err, "room ownership check failed");
        }
    }
}

async fn check_ownership(node: &ClusterNode, local: &LocalRooms) -> Result<(), PlacementError> {
    let rooms: Vec<String> = local
        .local_room_list()
        .into_iter()
        .map(|room| room.name)
        .collect();
    if rooms.is_empty() {
        return Ok(());
    }
    let owners = node.placement.owners_of(&rooms).await?;
    for (room, owner) in rooms.iter().zip(owners) {
        if owner.as_deref() == Some(node.id.as_str()) {
            continue;
        }
        match node.placement.adopt(room, &node.id).await? {
            Adoption::Ours => {}
            Adoption::Adopted => {
                tracing::info!(%room, previous = ?owner, "room map did not name this node: adopted the room");
                node.counters.adopted.fetch_add(1, Ordering::Relaxed);
            }
            Adoption::Elsewhere { owner } => {
                let members = local.rehome_room(room, &owner, None);
                tracing::warn!(%room, %owner, members, "the room is another live node's: handing its members over");
            }
        }
    }
    Ok(())
}

/// How a drain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    /// Rooms handed to other nodes.
    pub rooms_moved: usize,
    /// Participants still here when the drain gave up (no other node, or
    /// the time limit).
    pub left_behind: usize,
}

/// Moves every room of this node elsewhere and hands its members over,
/// within `limit`; then leaves the registry. New joins meanwhile are
/// placed on other nodes (`ClusterRooms::join` asks the map while
/// draining, and placement gives a draining node no rooms).
pub async fn drain(node: &ClusterNode, local: &LocalRooms, limit: Duration) -> Drained {
    node.draining.store(true, Ordering::Relaxed);
    node.registry.set_state(NodeState::Draining);
    let deadline = Instant::now() + limit;
    let mut moved: BTreeSet<String> = BTreeSet::new();
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    loop {
        let rooms: Vec<String> = local
            .local_room_list()
            .into_iter()
            .map(|room| room.name)
            .collect();
        if rooms.is_empty() || Instant::now() >= deadline {
            break;
        }
        for room in &rooms {
            match new_home(node, room).await {
                Ok(Some(to)) => {
                    let members = local.rehome_room(room, &to, None);
                    if moved.insert(room.clone()) {
                        tracing::info!(%room, %to, members, "drain: room moved");
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(%room, %err, "drain: cannot move the room yet"),
            }
        }
        poll.tick().await;
    }
    let left_behind = local.local_counts().participants;
    if let Err(err) = node.registry.withdraw().await {
        tracing::warn!(%err, "drain: could not remove this node from the registry");
    }
    Drained {
        rooms_moved: moved.len(),
        left_behind,
    }
}

/// Where a room of a draining node goes: moved off this node, or the owner
/// the map already names. None: nowhere yet (no other live node).
async fn new_home(node: &ClusterNode, room: &str) -> Result<Option<String>, PlacementError> {
    match node.placement.move_room(room, &node.id).await {
        Ok(Move::Moved { to }) => Ok(Some(to)),
        Ok(Move::NotOwner { owner: Some(owner) }) if owner != node.id => Ok(Some(owner)),
        Ok(Move::NotOwner { .. }) => {
            // Unmapped (a release raced a join): place it anew, elsewhere.
            let claim = node.placement.claim(room).await?;
            Ok((claim.owner() != node.id).then(|| claim.owner().to_owned()))
        }
        Err(PlacementError::NoLiveNode { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}
