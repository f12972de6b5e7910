//! The rooms directory: who is in which room, on which shard, and who is
//! waiting in the lobby for room-list updates.
//!
//! One `Mutex` guards it. Every operation is a short, synchronous critical
//! section (never held across `.await`): a join must check the room and
//! server limits and insert atomically, and the lobby must see one
//! consistent room list, which per-entry locking (dashmap) cannot give.

use crate::delivery::{Delivery, OperatorAction};
use crate::protocol::{self, ErrorCode, ParticipantInfo, Refusal, RoomInfo};
use crate::rooms::{ConnId, MoveError};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::Notify;

pub struct Member {
    pub info: ParticipantInfo,
    /// How to reach the member's session: messages and operator actions.
    pub delivery: Delivery,
}

pub struct Room {
    pub shard: usize,
    pub members: Vec<Member>,
}

pub struct Limits {
    pub max_rooms: usize,
    pub max_participants_per_room: usize,
}

pub struct Directory {
    rooms: BTreeMap<String, Room>,
    lobby: HashMap<ConnId, Delivery>,
    /// Members asked to move (participant id -> destination room), each
    /// holding a seat there until its session arrives or it leaves.
    moving: HashMap<String, String>,
    shard_load: Vec<usize>,
    limits: Limits,
    /// Rooms hosted by other nodes, with their sizes (several nodes): the
    /// lobby lists them with ours.
    remote_rooms: BTreeMap<String, usize>,
    /// Told whenever this node's own room list changes (several nodes: the
    /// cluster publishes it).
    on_change: Option<Arc<Notify>>,
}

/// What a successful join returns to the joining connection.
pub struct Joined {
    pub shard: usize,
    pub others: Vec<ParticipantInfo>,
}

/// A moved member in its destination.
pub struct Arrival {
    pub room: String,
    pub joined: Joined,
}

impl Directory {
    pub fn new(shards: usize, limits: Limits) -> Self {
        Directory {
            rooms: BTreeMap::new(),
            lobby: HashMap::new(),
            moving: HashMap::new(),
            shard_load: vec![0; shards.max(1)],
            limits,
            remote_rooms: BTreeMap::new(),
            on_change: None,
        }
    }

    /// Notifies `on_change` whenever this node's own rooms or their sizes change.
    pub fn watch_changes(&mut self, on_change: Arc<Notify>) {
        self.on_change = Some(on_change);
    }

    /// This node's rooms and their sizes.
    pub fn local_room_list(&self) -> Vec<RoomInfo> {
        self.rooms
            .iter()
            .map(|(name, room)| RoomInfo {
                name: name.clone(),
                participants: room.members.len(),
            })
            .collect()
    }

    /// The lobby's list: this node's rooms and other nodes' (a room found
    /// on two nodes for a moment, while it moves, counts both).
    pub fn room_list(&self) -> Vec<RoomInfo> {
        if self.remote_rooms.is_empty() {
            return self.local_room_list();
        }
        let mut all = self.remote_rooms.clone();
        for (name, room) in &self.rooms {
            *all.entry(name.clone()).or_default() += room.members.len();
        }
        all.into_iter()
            .map(|(name, participants)| RoomInfo { name, participants })
            .collect()
    }

    /// Replaces what other nodes host; the lobby hears of a difference.
    pub fn set_remote_rooms(&mut self, remote: BTreeMap<String, usize>) {
        if remote != self.remote_rooms {
            self.remote_rooms = remote;
            self.push_lobby();
        }
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn participant_count(&self) -> usize {
        self.rooms.values().map(|r| r.members.len()).sum()
    }

    /// A connection enters the lobby and gets the room list at once.
    pub fn enter_lobby(&mut self, conn: ConnId, delivery: Delivery) {
        delivery.send(protocol::rooms(&None, &self.room_list()));
        self.lobby.insert(conn, delivery);
    }

    pub fn leave_lobby(&mut self, conn: ConnId) {
        self.lobby.remove(&conn);
    }

    /// This node's list changed: the lobby and the cluster hear of it.
    fn push_room_list(&self) {
        if let Some(on_change) = &self.on_change {
            on_change.notify_one();
        }
        self.push_lobby();
    }

    fn push_lobby(&self) {
        if self.lobby.is_empty() {
            return;
        }
        let text = protocol::rooms(&None, &self.room_list());
        for guest in self.lobby.values() {
            guest.send(text.clone());
        }
    }

    /// Adds a participant to `room` (creating it), tells the others, and
    /// takes the connection out of the lobby.
    pub fn join(
        &mut self,
        room_name: &str,
        info: ParticipantInfo,
        conn: ConnId,
        delivery: Delivery,
    ) -> Result<Joined, Refusal> {
        let creating = !self.rooms.contains_key(room_name);
        if creating && self.rooms.len() >= self.limits.max_rooms {
            return Err(Refusal::new(
                ErrorCode::RoomFull,
                "the server has reached its limit of rooms",
            ));
        }
        let taken = self.seats_taken(room_name);
        if taken >= self.limits.max_participants_per_room {
            return Err(Refusal::new(
                ErrorCode::RoomFull,
                format!("room {room_name:?} is full ({taken} participants)"),
            ));
        }
        let joined = self.admit(room_name, info, delivery);
        self.lobby.remove(&conn);
        self.push_room_list();
        Ok(joined)
    }

    /// Members of `room` plus the seats held there for members on their way.
    fn seats_taken(&self, room_name: &str) -> usize {
        let members = self.rooms.get(room_name).map_or(0, |r| r.members.len());
        members + self.moving.values().filter(|to| *to == room_name).count()
    }

    /// Puts a participant into `room` (creating it on the least-loaded
    /// shard) and tells the others; limits are the caller's business.
    fn admit(&mut self, room_name: &str, info: ParticipantInfo, delivery: Delivery) -> Joined {
        let shard = match self.rooms.get(room_name) {
            Some(room) => room.shard,
            None => {
                // The least-loaded shard, by participants.
                let (shard, _) = self
                    .shard_load
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, load)| **load)
                    .expect("at least one shard");
                shard
            }
        };
        let room = self.rooms.entry(room_name.to_owned()).or_insert(Room {
            shard,
            members: Vec::new(),
        });
        let others: Vec<ParticipantInfo> = room.members.iter().map(|m| m.info.clone()).collect();
        let announcement = protocol::participant_joined(&info);
        for member in &room.members {
            member.delivery.send(announcement.clone());
        }
        room.members.push(Member { info, delivery });
        self.shard_load[shard] += 1;
        Joined { shard, others }
    }

    /// Operator: asks every member of `from` to move to `to`. Checked as a
    /// whole before anyone is asked: `to` must have room for all of them
    /// (seats are held for them until they arrive), and neither room may be
    /// part of a move still under way.
    pub fn move_room(&mut self, from: &str, to: &str) -> Result<usize, MoveError> {
        let room = self.rooms.get(from).ok_or(MoveError::NoSuchRoom)?;
        if from == to {
            return Err(MoveError::SameRoom);
        }
        let in_room = |name: &str, id: &String| {
            self.rooms
                .get(name)
                .is_some_and(|r| r.members.iter().any(|m| &m.info.id == id))
        };
        let busy = self
            .moving
            .iter()
            .any(|(id, dest)| dest == from || dest == to || in_room(from, id) || in_room(to, id));
        if busy {
            return Err(MoveError::Busy);
        }
        let would_be = self.seats_taken(to) + room.members.len();
        let limit = self.limits.max_participants_per_room;
        if would_be > limit {
            return Err(MoveError::DestinationFull { would_be, limit });
        }
        for member in &room.members {
            member.delivery.act(OperatorAction::MoveTo {
                room: to.to_owned(),
            });
        }
        let movers: Vec<String> = room.members.iter().map(|m| m.info.id.clone()).collect();
        for id in &movers {
            self.moving.insert(id.clone(), to.to_owned());
        }
        Ok(movers.len())
    }

    /// A member asked to move arrives: it leaves `from` (the others there
    /// get `participant_left`) and enters its destination on the seat held
    /// for it, as `new_id` with its name and mute state. Refused when no
    /// move is pending for it (it left or was kicked meanwhile).
    pub fn follow_move(
        &mut self,
        from: &str,
        participant: &str,
        new_id: String,
        delivery: Delivery,
    ) -> Result<Arrival, Refusal> {
        let not_moving =
            || Refusal::new(ErrorCode::NotFound, "no move pending for this participant");
        let to = self
            .moving
            .get(participant)
            .cloned()
            .ok_or_else(not_moving)?;
        let mut info = self
            .rooms
            .get(from)
            .and_then(|r| r.members.iter().find(|m| m.info.id == participant))
            .map(|m| m.info.clone())
            .ok_or_else(not_moving)?;
        // Releases the held seat too.
        self.remove_member(from, participant);
        info.id = new_id;
        let joined = self.admit(&to, info, delivery);
        self.push_room_list();
        Ok(Arrival { room: to, joined })
    }

    /// Removes a participant, tells the others, drops an empty room.
    pub fn leave(&mut self, room_name: &str, participant: &str) {
        if self.remove_member(room_name, participant) {
            self.push_room_list();
        }
    }

    /// [`Directory::leave`] without the lobby update; whether it was there.
    fn remove_member(&mut self, room_name: &str, participant: &str) -> bool {
        self.moving.remove(participant);
        let Some(room) = self.rooms.get_mut(room_name) else {
            return false;
        };
        let before = room.members.len();
        room.members.retain(|m| m.info.id != participant);
        if room.members.len() == before {
            return false;
        }
        self.shard_load[room.shard] = self.shard_load[room.shard].saturating_sub(1);
        let notice = protocol::participant_left(participant);
        for member in &room.members {
            member.delivery.send(notice.clone());
        }
        if room.members.is_empty() {
            self.rooms.remove(room_name);
        }
        true
    }

    /// Applies `change` to a participant and tells everyone in the room
    /// (the participant included).
    pub fn update(
        &mut self,
        room_name: &str,
        participant: &str,
        change: impl FnOnce(&mut ParticipantInfo),
    ) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(member) = room.members.iter_mut().find(|m| m.info.id == participant) else {
            return;
        };
        change(&mut member.info);
        let notice = protocol::participant_updated(&member.info);
        for member in &room.members {
            member.delivery.send(notice.clone());
        }
    }

    /// Delivers a chat message; `to` restricts it to one participant.
    pub fn chat(
        &self,
        room_name: &str,
        from: &str,
        text: &str,
        to: Option<&str>,
        ts: u64,
    ) -> Result<(), Refusal> {
        let room = self
            .rooms
            .get(room_name)
            .ok_or_else(|| Refusal::new(ErrorCode::NotInRoom, "not in a room"))?;
        let sender = room
            .members
            .iter()
            .find(|m| m.info.id == from)
            .ok_or_else(|| Refusal::new(ErrorCode::NotInRoom, "not in a room"))?;
        if let Some(to) = to {
            if to == from {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "a direct message cannot be sent to oneself",
                ));
            }
            let recipient = room
                .members
                .iter()
                .find(|m| m.info.id == to)
                .ok_or_else(|| {
                    Refusal::new(
                        ErrorCode::NotFound,
                        format!("no participant {to:?} in this room"),
                    )
                })?;
            recipient
                .delivery
                .send(protocol::chat(from, &sender.info.name, text, ts, Some(to)));
        } else {
            let message = protocol::chat(from, &sender.info.name, text, ts, None);
            for member in room.members.iter().filter(|m| m.info.id != from) {
                member.delivery.send(message.clone());
            }
        }
        Ok(())
    }

    /// Rooms with their members, for operators.
    pub fn rooms(&self) -> impl Iterator<Item = (&String, &Room)> {
        self.rooms.iter()
    }

    /// Asks a member's session to leave with `reason`.
    pub fn kick(&self, room_name: &str, participant: &str, reason: &str) -> bool {
        let member = self
            .rooms
            .get(room_name)
            .and_then(|r| r.members.iter().find(|m| m.info.id == participant));
        match member {
            Some(member) => {
                member.delivery.act(OperatorAction::Kick {
                    reason: reason.to_owned(),
                });
                true
            }
            None => false,
        }
    }

    /// Kicks everyone in a room; returns how many were asked to leave.
    pub fn close_room(&self, room_name: &str, reason: &str) -> Option<usize> {
        let room = self.rooms.get(room_name)?;
        for member in &room.members {
            member.delivery.act(OperatorAction::Kick {
                reason: reason.to_owned(),
            });
        }
        Some(room.members.len())
    }

    /// Several nodes: asks every member's session to continue on `node`
    /// (the room moved there), in room `into` if given (an operator's move
    /// into a room `node` hosts); returns how many were asked.
    pub fn rehome_room(&self, room_name: &str, node: &str, into: Option<&str>) -> usize {
        let Some(room) = self.rooms.get(room_name) else {
            return 0;
        };
        for member in &room.members {
            member.delivery.act(OperatorAction::Rehome {
                node: node.to_owned(),
                into: into.map(str::to_owned),
            });
        }
        room.members.len()
    }

    /// Sends `text` to everyone connected (lobby included), or to one room.
    /// Returns the number of connections reached.
    pub fn announce(&self, text: &str, room_name: Option<&str>, ts: u64) -> Option<usize> {
        let mut message = serde_json::json!({"type": "announcement", "text": text, "ts": ts});
        if let Some(room) = room_name {
            message["room"] = serde_json::json!(room);
        }
        let message = message.to_string();
        let mut reached = 0;
        match room_name {
            Some(room_name) => {
                for member in &self.rooms.get(room_name)?.members {
                    member.delivery.send(message.clone());
                    reached += 1;
                }
            }
            None => {
                for delivery in self.lobby.values().chain(
                    self.rooms
                        .values()
                        .flat_map(|r| r.members.iter().map(|m| &m.delivery)),
                ) {
                    delivery.send(message.clone());
                    reached += 1;
                }
            }
        }
        Some(reached)
    }
}
