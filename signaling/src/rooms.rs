//! Where rooms live and how their members are reached: the one interface
//! through which sessions and the operator API touch rooms.
//!
//! Today [`LocalRooms`](crate::local_rooms::LocalRooms) keeps every room in
//! this process (the [`Directory`](crate::directory::Directory) plus the local
//! media shards). Several nodes sharing a store will implement the same trait
//! (the directory in the store, messages fanned out over pub/sub to the node
//! that holds each member's connection), and the sessions will not change.
//! Hence:
//!
//! - every method that would need the network in such an implementation is
//!   `async`; implementations must not hold a lock across an `.await`;
//! - a member is reached only through the [`Delivery`] handed over at
//!   [`Rooms::enter_lobby`] / [`Rooms::join`], never through its session;
//! - a room's media is reached through the [`RoomMedia`] handle returned by
//!   [`Rooms::join`], never by shard index.
//!
//! Ordering guarantees every implementation gives (clients rely on them):
//!
//! - a joiner receives its `joined` message (rendered by
//!   [`JoinRequest::welcome`]) before any other message about the room, so
//!   no `participant_joined` / `participant_left` / `chat` overtakes it;
//! - messages caused by one session's calls reach each member in the order
//!   of those calls (a member sees `participant_updated` after the
//!   `participant_joined` it refers to, `participant_left` last);
//! - a lobby guest gets the room list at once on entering and again after
//!   every change to the list, until it leaves the lobby or joins a room.

use crate::delivery::Delivery;
use crate::protocol::{MediaKind, ParticipantInfo, Refusal, RoomInfo};
use async_trait::async_trait;
use noom_sfu::Command;
use std::sync::Arc;

/// A WebSocket connection's identity (unique within this process).
pub type ConnId = u64;

/// Renders the joiner's `joined` message from the others already in the
/// room; called exactly once, by the implementation, at the moment the
/// joiner becomes a member (see the ordering guarantees above).
pub type Welcome = Box<dyn FnOnce(&[ParticipantInfo]) -> String + Send>;

/// A participant asking to become a member of `room`.
pub struct JoinRequest {
    pub room: String,
    pub participant: ParticipantInfo,
    /// The connection, which leaves the lobby on joining.
    pub conn: ConnId,
    /// How the room reaches the new member from now on.
    pub delivery: Delivery,
    pub welcome: Welcome,
}

/// A successful join (the members already in the room went to the
/// [`JoinRequest::welcome`]).
pub struct Joined {
    /// Where the session sends its participant's media commands.
    pub media: Arc<dyn RoomMedia>,
}

/// Renders a mover's `joined` from its destination's name and the others
/// already there; called like [`Welcome`].
pub type MoveWelcome = Box<dyn FnOnce(&str, &[ParticipantInfo]) -> String + Send>;

/// A member's session completing an operator's move (see
/// [`Rooms::follow_move`]).
pub struct MoveRequest {
    /// The room it is in now.
    pub from: String,
    /// Its participant id there.
    pub participant: String,
    /// Its participant id in the destination: a fresh one, as its media
    /// starts afresh there.
    pub new_id: String,
    pub delivery: Delivery,
    pub welcome: MoveWelcome,
}

/// A moved member in its destination.
pub struct Arrived {
    pub room: String,
    pub joined: Joined,
}

/// The media plane serving one room, as a member's session reaches it.
pub trait RoomMedia: Send + Sync {
    /// Queues a command; never blocks. Fails when the media plane is gone
    /// or overloaded (its queue is full).
    fn send(&self, command: Command) -> Result<(), MediaUnavailable>;
    /// Where the room's media is handled, for logs and operators (a shard
    /// index today).
    fn shard(&self) -> usize;
}

/// Why a join did not make the participant a member here.
#[derive(Debug)]
pub enum JoinError {
    /// Refused for a reason the client is told (full, bad name...).
    Refused(Refusal),
    /// The room lives on another node (several nodes): the client's
    /// session continues there.
    Elsewhere { node: String },
}

impl From<Refusal> for JoinError {
    fn from(refusal: Refusal) -> Self {
        JoinError::Refused(refusal)
    }
}

/// The media plane did not take a command (shut down or overloaded).
#[derive(Debug)]
pub struct MediaUnavailable;

/// A change to a participant that its whole room is told about
/// (`participant_updated`).
pub enum ParticipantChange {
    Name(String),
    Muted { kind: MediaKind, muted: bool },
}

/// A room as operators see it.
pub struct RoomOverview {
    pub name: String,
    /// The shard handling the room's media.
    pub shard: usize,
    pub participants: Vec<ParticipantInfo>,
}

/// Why an operator's move did not happen (nobody was moved). It crosses
/// the bus when the room lives on another node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveError {
    NoSuchRoom,
    SameRoom,
    /// The destination would hold `would_be` participants, over `limit`.
    DestinationFull {
        would_be: usize,
        limit: usize,
    },
    /// One of the rooms is part of a move whose members have not all
    /// arrived yet.
    Busy,
    /// Several nodes: the move cannot be made now (the reason says why).
    Unavailable(String),
}

/// Totals for `/metrics`.
pub struct Counts {
    pub rooms: usize,
    pub participants: usize,
}

#[async_trait]
pub trait Rooms: Send + Sync {
    /// A connection waits in the lobby: it gets the room list now and after
    /// every change. Called on connecting and after leaving a room.
    async fn enter_lobby(&self, conn: ConnId, delivery: Delivery);

    /// The connection is gone; no more room lists.
    async fn leave_lobby(&self, conn: ConnId);

    /// The current rooms with their sizes (the `rooms` request).
    async fn room_list(&self) -> Vec<RoomInfo>;

    /// Adds a participant to a room, creating it, within the server's room
    /// and room-size limits (checked and applied atomically: two joiners
    /// cannot both take the last seat). Delivers the welcome first, then
    /// tells the others (`participant_joined`) and the lobby.
    async fn join(&self, request: JoinRequest) -> Result<Joined, JoinError>;

    /// Removes a participant (it left, was kicked, or its media failed):
    /// the others get `participant_left`, an empty room disappears. Idempotent.
    async fn leave(&self, room: &str, participant: &str);

    /// Applies a change to a participant and tells its whole room.
    async fn update(&self, room: &str, participant: &str, change: ParticipantChange);

    /// Delivers a chat message from `from` to the rest of its room, or only
    /// to `to`. Refuses a recipient that is not in the room, or the sender.
    async fn chat(
        &self,
        room: &str,
        from: &str,
        text: &str,
        to: Option<&str>,
        ts: u64,
    ) -> Result<(), Refusal>;

    /// Operator: asks a member's session to leave with `reason` (it is told
    /// `kicked`, then its connection closes). False if no such member.
    /// The action cannot be lost (see [`Delivery::act`]).
    async fn kick(&self, room: &str, participant: &str, reason: &str) -> bool;

    /// Operator: moves everyone in room `from` into room `to` (created if
    /// need be): each member's session is asked (an action that cannot be
    /// lost, see [`Delivery::act`]) and completes its own move with
    /// [`Rooms::follow_move`]. Checked as a whole first: when it fails,
    /// nobody moves. Returns how many were asked.
    async fn move_room(&self, from: &str, to: &str) -> Result<usize, MoveError>;

    /// A session asked to move arrives in its destination: it leaves
    /// `request.from` (the others get `participant_left`) and becomes a
    /// member of the destination as `request.new_id`, keeping its name and
    /// mute state, on the seat held for it; the join's ordering guarantees
    /// hold (the welcome first). Refused when no move is pending for it.
    async fn follow_move(&self, request: MoveRequest) -> Result<Arrived, Refusal>;

    /// Operator: kicks everyone in a room; how many, or None if no such room.
    async fn close_room(&self, room: &str, reason: &str) -> Option<usize>;

    /// Operator: sends an `announcement` to one room or, without `room`, to
    /// every connection (the lobby included). How many connections it
    /// reached, or None if no such room.
    async fn announce(&self, text: &str, room: Option<&str>, ts: u64) -> Option<usize>;

    /// Operator: every room with its members.
    async fn overview(&self) -> Vec<RoomOverview>;

    /// Operator: totals for `/metrics`.
    async fn counts(&self) -> Counts;
}
