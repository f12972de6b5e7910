//! [`Rooms`] for a single node: the in-process [`Directory`] and this
//! process's media shards.
//!
//! Every method is one short critical section on the directory's `Mutex`
//! and never awaits while holding it; "async" only because other
//! implementations need the network.

use crate::delivery::Delivery;
use crate::directory::{Directory, Limits};
use crate::protocol::{MediaKind, Refusal, RoomInfo};
use crate::rooms::{
    Arrived, ConnId, Counts, JoinError, JoinRequest, Joined, MediaUnavailable, MoveError,
    MoveRequest, ParticipantChange, RoomMedia, RoomOverview, Rooms,
};
use async_trait::async_trait;
use noom_sfu::{Command, MediaPlane};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

pub struct LocalRooms {
    directory: Mutex<Directory>,
    media: Arc<MediaPlane>,
}

impl LocalRooms {
    pub fn new(media: Arc<MediaPlane>, limits: Limits) -> LocalRooms {
        LocalRooms {
            directory: Mutex::new(Directory::new(media.shards().len(), limits)),
            media,
        }
    }

    /// Several nodes: notifies `on_change` when this node's rooms change.
    pub fn watch_changes(&self, on_change: Arc<Notify>) {
        self.directory().watch_changes(on_change);
    }

    /// Several nodes: the rooms other nodes host, for the lobby.
    pub fn set_remote_rooms(&self, remote: BTreeMap<String, usize>) {
        self.directory().set_remote_rooms(remote);
    }

    /// This node's own rooms and sizes (without other nodes').
    pub fn local_room_list(&self) -> Vec<RoomInfo> {
        self.directory().local_room_list()
    }

    /// This node's own totals.
    pub fn local_counts(&self) -> Counts {
        let directory = self.directory();
        Counts {
            rooms: directory.room_count(),
            participants: directory.participant_count(),
        }
    }

    /// Whether this node has a member in `room`.
    pub fn hosts(&self, room: &str) -> bool {
        self.directory().rooms().any(|(name, _)| name == room)
    }

    /// Several nodes: hands every member of `room` over to `node`, where
    /// the room map now puts it. Returns how many members were asked.
    pub fn rehome_room(&self, room: &str, node: &str, into: Option<&str>) -> usize {
        self.directory().rehome_room(room, node, into)
    }

    fn directory(&self) -> MutexGuard<'_, Directory> {
        self.directory
            .lock()
            .expect("rooms directory lock poisoned")
    }
}

impl LocalRooms {
    fn joined(&self, shard: usize) -> Joined {
        Joined {
            media: Arc::new(ShardMedia {
                media: self.media.clone(),
                shard,
            }),
        }
    }
}

/// A room's media on one of this process's shards.
struct ShardMedia {
    media: Arc<MediaPlane>,
    shard: usize,
}

impl RoomMedia for ShardMedia {
    fn send(&self, command: Command) -> Result<(), MediaUnavailable> {
        self.media
            .shard(self.shard)
            .send(command)
            .map_err(|_| MediaUnavailable)
    }

    fn shard(&self) -> usize {
        self.shard
    }
}

#[async_trait]
impl Rooms for LocalRooms {
    async fn enter_lobby(&self, conn: ConnId, delivery: Delivery) {
        self.directory().enter_lobby(conn, delivery);
    }

    async fn leave_lobby(&self, conn: ConnId) {
        self.directory().leave_lobby(conn);
    }

    async fn room_list(&self) -> Vec<RoomInfo> {
        self.directory().room_list()
    }

    async fn join(&self, request: JoinRequest) -> Result<Joined, JoinError> {
        let JoinRequest {
            room,
            participant,
            conn,
            delivery,
            welcome,
        } = request;
        let joined = {
            let mut directory = self.directory();
            let joined = directory.join(&room, participant, conn, delivery.clone())?;
            // Under the lock, so no later message about the room overtakes it.
            delivery.send(welcome(&joined.others));
            joined
        };
        Ok(self.joined(joined.shard))
    }

    async fn move_room(&self, from: &str, to: &str) -> Result<usize, MoveError> {
        self.directory().move_room(from, to)
    }

    async fn follow_move(&self, request: MoveRequest) -> Result<Arrived, Refusal> {
        let MoveRequest {
            from,
            participant,
            new_id,
            delivery,
            welcome,
        } = request;
        let arrival = {
            let mut directory = self.directory();
            let arrival = directory.follow_move(&from, &participant, new_id, delivery.clone())?;
            // Under the lock, so no later message about the room overtakes it.
            delivery.send(welcome(&arrival.room, &arrival.joined.others));
            arrival
        };
        Ok(Arrived {
            joined: self.joined(arrival.joined.shard),
            room: arrival.room,
        })
    }

    async fn leave(&self, room: &str, participant: &str) {
        self.directory().leave(room, participant);
    }

    async fn update(&self, room: &str, participant: &str, change: ParticipantChange) {
        self.directory()
            .update(room, participant, |p| match change {
                ParticipantChange::Name(name) => p.name = name,
                ParticipantChange::Muted {
                    kind: MediaKind::Audio,
                    muted,
                } => p.audio_muted = muted,
                ParticipantChange::Muted {
                    kind: MediaKind::Video,
                    muted,
                } => p.video_muted = muted,
            });
    }

    async fn chat(
        &self,
        room: &str,
        from: &str,
        text: &str,
        to: Option<&str>,
        ts: u64,
    ) -> Result<(), Refusal> {
        self.directory().chat(room, from, text, to, ts)
    }

    async fn kick(&self, room: &str, participant: &str, reason: &str) -> bool {
        self.directory().kick(room, participant, reason)
    }

    async fn close_room(&self, room: &str, reason: &str) -> Option<usize> {
        self.directory().close_room(room, reason)
    }

    async fn announce(&self, text: &str, room: Option<&str>, ts: u64) -> Option<usize> {
        self.directory().announce(text, room, ts)
    }

    async fn overview(&self) -> Vec<RoomOverview> {
        self.directory()
            .rooms()
            .map(|(name, room)| RoomOverview {
                name: name.clone(),
                shard: room.shard,
                participants: room.members.iter().map(|m| m.info.clone()).collect(),
            })
            .collect()
    }

    async fn counts(&self) -> Counts {
        self.local_counts()
    }
}
