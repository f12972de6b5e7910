//! [`Rooms`] for a node of a cluster: the rooms this node hosts are
//! [`LocalRooms`]; a join for a room placed on another node is answered
//! [`JoinError::Elsewhere`], and the client's session moves there (see
//! `cluster::front`). Every member of a room has its session on the room's
//! node, so chat, notices and media within a room never cross Redis.
//!
//! The lobby lists every live node's rooms (kept current by
//! `cluster::node`), and the room map in Redis says which node hosts each.
//!
//! The operator methods (`kick`, `close_room`, `announce`, `overview`)
//! act on this node's rooms only: they are what a node does when asked.
//! The admin API reaches the whole cluster through `cluster::operators`,
//! which uses them here and asks the room's node otherwise.

use crate::cluster::ask::{Answer, Question};
use crate::cluster::node::ClusterNode;
use crate::cluster::placement::{Claim, PlacementError};
use crate::delivery::Delivery;
use crate::local_rooms::LocalRooms;
use crate::protocol::{ErrorCode, Refusal, RoomInfo};
use crate::rooms::{
    Arrived, ConnId, Counts, JoinError, JoinRequest, Joined, MoveError, MoveRequest,
    ParticipantChange, RoomOverview, Rooms,
};
use async_trait::async_trait;
use std::sync::Arc;

/// How long an operator's move waits for the node hosting the room.
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

pub struct ClusterRooms {
    local: Arc<LocalRooms>,
    node: Arc<ClusterNode>,
}

impl ClusterRooms {
    pub fn new(local: Arc<LocalRooms>, node: Arc<ClusterNode>) -> Self {
        Self { local, node }
    }
}

#[async_trait]
impl Rooms for ClusterRooms {
    async fn enter_lobby(&self, conn: ConnId, delivery: Delivery) {
        self.local.enter_lobby(conn, delivery).await;
    }

    async fn leave_lobby(&self, conn: ConnId) {
        self.local.leave_lobby(conn).await;
    }

    async fn room_list(&self) -> Vec<RoomInfo> {
        self.local.room_list().await
    }

    async fn join(&self, request: JoinRequest) -> Result<Joined, JoinError> {
        // A room with members here is ours: no Redis on that path, unless
        // this node is draining (its rooms are moving away).
        if self.node.is_draining() || !self.local.hosts(&request.room) {
            let claim = self.node.placement.claim(&request.room).await;
            let owner = match claim {
                Ok(claim) => {
                    if let Claim::TakenOver { .. } = claim {
                        self.node
                            .counters
                            .rooms_rehomed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    claim.owner().to_owned()
                }
                Err(PlacementError::NoLiveNode { .. }) => {
                    return Err(JoinError::Refused(Refusal::new(
                        ErrorCode::Internal,
                        "no server can host the room right now; try again",
                    )))
                }
                Err(err) => {
                    tracing::warn!(%err, room = %request.room, "room placement failed");
                    return Err(JoinError::Refused(Refusal::new(
                        ErrorCode::Internal,
                        "the cluster's store cannot be reached; try again",
                    )));
                }
            };
            if owner != self.node.id {
                return Err(JoinError::Elsewhere { node: owner });
            }
        }
        self.local.join(request).await
    }

    async fn leave(&self, room: &str, participant: &str) {
        self.local.leave(room, participant).await;
        if !self.local.hosts(room) {
            // The room ended here: free its place so the next first join
            // goes to the least-loaded node. Not awaited by the leaver.
            let (node, room) = (self.node.clone(), room.to_owned());
            tokio::spawn(async move {
                if let Err(err) = node.placement.release(&room, &node.id).await {
                    tracing::info!(%err, %room, "could not release an ended room");
                }
            });
        }
    }

    async fn update(&self, room: &str, participant: &str, change: ParticipantChange) {
        self.local.update(room, participant, change).await;
    }

    async fn chat(
        &self,
        room: &str,
        from: &str,
        text: &str,
        to: Option<&str>,
        ts: u64,
    ) -> Result<(), Refusal> {
        self.local.chat(room, from, text, to, ts).await
    }

    async fn kick(&self, room: &str, participant: &str, reason: &str) -> bool {
        self.local.kick(room, participant, reason).await
    }

    /// On the node hosting `from` (asked over the bus when that is another
    /// node). Into a room this node hosts, or a new one placed here: the
    /// single-node move (checked as a whole, seats held). Into a room
    /// another node hosts (or places): every member's session is handed
    /// over to that node with its identity, rejoining in `to` there; the
    /// destination's size limit is then checked per arrival, so a member
    /// who finds it full is told so and stays in that node's lobby.
    async fn move_room(&self, from: &str, to: &str) -> Result<usize, MoveError> {
        if from == to {
            return Err(MoveError::SameRoom);
        }
        let unavailable = |err: &dyn std::fmt::Display| MoveError::Unavailable(err.to_string());
        if !self.local.hosts(from) {
            let owner = self.node.placement.owner_of(from).await;
            let owner = match owner.map_err(|e| unavailable(&e))? {
                Some(owner) if owner != self.node.id => owner,
                _ => return Err(MoveError::NoSuchRoom),
            };
            let question = Question::MoveRoom {
                from: from.to_owned(),
                to: to.to_owned(),
            };
            return match self.node.ask(&owner, question, ASK_TIMEOUT).await {
                Ok(Answer::Moved { result }) => result,
                Ok(other) => Err(MoveError::Unavailable(format!(
                    "node {owner} gave an unexpected answer: {other:?}"
                ))),
                Err(err) => Err(MoveError::Unavailable(format!(
                    "node {owner} hosting {from:?} did not answer: {err}"
                ))),
            };
        }
        if self.local.hosts(to) {
            return self.local.move_room(from, to).await;
        }
        let claim = self
            .node
            .placement
            .claim(to)
            .await
            .map_err(|e| unavailable(&e))?;
        if claim.owner() == self.node.id {
            return self.local.move_room(from, to).await;
        }
        Ok(self.local.rehome_room(from, claim.owner(), Some(to)))
    }

    async fn follow_move(&self, request: MoveRequest) -> Result<Arrived, Refusal> {
        self.local.follow_move(request).await
    }

    async fn close_room(&self, room: &str, reason: &str) -> Option<usize> {
        self.local.close_room(room, reason).await
    }

    async fn announce(&self, text: &str, room: Option<&str>, ts: u64) -> Option<usize> {
        self.local.announce(text, room, ts).await
    }

    async fn overview(&self) -> Vec<RoomOverview> {
        self.local.overview().await
    }

    async fn counts(&self) -> Counts {
        self.local.counts().await
    }
}
