//! A session's stays in rooms: joining (here, or handing the client over to
//! the node that hosts the room), rejoining with a known identity after a
//! move or a lost node, moving to another room, and leaving. The rest of the
//! session (reading the client, negotiation, media events) is in the parent
//! module; this part owns `current`, the identity a front node watches, and
//! the ICE ufrags that tell a replaced peer connection's SDP apart.

use super::*;

impl Session {
    pub(super) async fn join(
        &mut self,
        req: &Option<Value>,
        room: String,
        name: String,
        token: Option<String>,
    ) -> Result<(), Refusal> {
        protocol::check_name("room", &room)?;
        protocol::check_name("name", &name)?;
        if self.current.is_some() {
            return Err(Refusal::new(
                ErrorCode::AlreadyInRoom,
                "already in a room; leave first",
            ));
        }
        let auth = &self.state.config.auth;
        if auth.required() {
            crate::auth::check(&auth.secret, token.as_deref(), &room, &name)?;
        }
        if !self.joins.take(std::time::Instant::now()) {
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                "too many joins; wait a little",
            ));
        }
        let identity = Identity {
            room: room.clone(),
            name,
            audio_muted: false,
            video_muted: false,
            ice_ufrags: Vec::new(),
        };
        match self.enter_room(req, identity).await {
            Ok(()) => Ok(()),
            Err(JoinError::Refused(refusal)) => Err(refusal),
            Err(JoinError::Elsewhere { node }) => {
                // The room lives on another node: hand the client over,
                // replaying this `join` there (it is not handled here).
                self.handoff = Some(Handoff {
                    node,
                    room,
                    processed: self.frames_taken - 1,
                    rejoin: None,
                });
                Ok(())
            }
        }
    }

    /// Joins again with a known identity (the client was moved or its
    /// room's node was lost); the client sees a `joined` with no `req`.
    pub(super) async fn rejoin(&mut self, identity: Identity) {
        let stay = Identity {
            ice_ufrags: Vec::new(),
            ..identity.clone()
        };
        match self.enter_room(&None, stay).await {
            Ok(()) => self.replaced_ufrags = identity.ice_ufrags,
            Err(JoinError::Refused(refusal)) => {
                tracing::info!(conn = self.conn, room = %identity.room, reason = %refusal.message, "rejoin refused");
                self.refuse(&None, refusal);
            }
            Err(JoinError::Elsewhere { node }) => {
                self.handoff = Some(Handoff {
                    node,
                    room: identity.room.clone(),
                    processed: self.frames_taken,
                    rejoin: Some(identity),
                });
            }
        }
    }

    /// The session continues on `node`, rejoining the participant's room
    /// there with its identity. A session that left its room meanwhile
    /// goes on in `node`'s lobby, which lists the same rooms (the action
    /// cannot be taken back, and every node serves any client).
    pub(super) fn rehome_ending(&self, node: String, into: Option<String>) -> Ending {
        let mut identity = self
            .identity
            .as_ref()
            .and_then(|watcher| watcher.borrow().clone());
        if let (Some(identity), Some(into)) = (identity.as_mut(), into) {
            identity.room = into;
        }
        let room = identity
            .as_ref()
            .map(|i| i.room.clone())
            .unwrap_or_default();
        tracing::info!(conn = self.conn, %room, %node, "handing the client over to another node");
        Ending::Handoff(Handoff {
            node,
            room,
            processed: self.frames_taken,
            rejoin: identity,
        })
    }

    /// Makes the participant a member of `identity.room` and starts its media.
    pub(super) async fn enter_room(
        &mut self,
        req: &Option<Value>,
        identity: Identity,
    ) -> Result<(), JoinError> {
        let info = ParticipantInfo {
            id: new_participant_id(),
            name: identity.name.clone(),
            audio_muted: identity.audio_muted,
            video_muted: identity.video_muted,
        };
        let room = identity.room.clone();
        let id = info.id.clone();
        let welcome = {
            let (req, room, id) = (req.clone(), room.clone(), id.clone());
            let ice_servers = self.state.ice_servers.for_participant(&id);
            Box::new(move |others: &[ParticipantInfo]| {
                protocol::joined(&req, &room, &id, others, &ice_servers)
            })
        };
        let joined = self
            .state
            .rooms
            .join(JoinRequest {
                room: room.clone(),
                participant: info,
                conn: self.conn,
                delivery: self.delivery.clone(),
                welcome,
            })
            .await?;
        self.tell_identity(Some(identity));
        if self.start_media(room, id, joined.media).is_err() {
            self.leave_room().await;
            return Err(JoinError::Refused(Refusal::new(
                ErrorCode::Internal,
                "the media server is overloaded",
            )));
        }
        Ok(())
    }

    /// Keeps a front node's copy of the identity current.
    pub(super) fn tell_identity(&self, identity: Option<Identity>) {
        if let Some(watcher) = &self.identity {
            watcher.send_replace(identity);
        }
    }

    pub(super) fn change_identity(&self, change: impl FnOnce(&mut Identity)) {
        if let Some(watcher) = &self.identity {
            watcher.send_modify(|identity| {
                if let Some(identity) = identity {
                    change(identity);
                }
            });
        }
    }

    /// Now a member of `room` as `id`: records it and asks the room's media
    /// plane for a fresh peer (whose offer follows the `joined`).
    pub(super) fn start_media(
        &mut self,
        room: String,
        id: String,
        media: Arc<dyn RoomMedia>,
    ) -> Result<(), Refusal> {
        let shard = media.shard();
        let sink = Box::new(MediaSink {
            participant: id.clone(),
            tx: self.media_tx.clone(),
        });
        self.current = Some(InRoom {
            room: room.clone(),
            id: id.clone(),
            media,
        });
        let span = tracing::Span::current();
        span.record("room", room.as_str());
        span.record("participant", id.as_str());
        tracing::info!(conn = self.conn, %room, participant = %id, shard, "join");
        self.to_shard(Command::Join {
            room,
            participant: id,
            sink,
        })
    }

    /// An operator moved this participant's room into `to`: leave the
    /// current room and enter `to` with a fresh participant id and a fresh
    /// media peer (the old one is closed, so its tracks go away); the
    /// client gets `joined` for `to` and then a new offer.
    pub(super) async fn on_move(&mut self, to: String) {
        let Some(here) = self.current.take() else {
            return; // Left meanwhile; its seat was released on leaving.
        };
        let new_id = new_participant_id();
        let welcome = {
            let new_id = new_id.clone();
            let ice_servers = self.state.ice_servers.for_participant(&new_id);
            Box::new(move |room: &str, others: &[ParticipantInfo]| {
                protocol::joined(&None, room, &new_id, others, &ice_servers)
            })
        };
        let arrived = self
            .state
            .rooms
            .follow_move(MoveRequest {
                from: here.room.clone(),
                participant: here.id.clone(),
                new_id: new_id.clone(),
                delivery: self.delivery.clone(),
                welcome,
            })
            .await;
        let arrived = match arrived {
            Ok(arrived) => arrived,
            Err(refusal) => {
                tracing::warn!(conn = self.conn, room = %here.room, participant = %here.id, %to, reason = %refusal.message, "move not made");
                self.current = Some(here);
                return;
            }
        };
        let _ = here.media.send(Command::Leave {
            participant: here.id.clone(),
        });
        tracing::info!(conn = self.conn, from = %here.room, to = %arrived.room, participant = %here.id, new_id = %new_id, "moved");
        self.change_identity(|identity| {
            identity.room = arrived.room.clone();
            identity.ice_ufrags.clear();
        });
        self.grace_deadline = None;
        self.client_offer_req = None;
        self.replaced_ufrags = std::mem::take(&mut self.client_ufrags);
        if self
            .start_media(arrived.room, new_id, arrived.joined.media)
            .is_err()
        {
            self.leave_room().await;
            self.outbox.push(
                serde_json::json!({"type": "left", "reason": "media_failed", "message": "the media server is overloaded"})
                    .to_string(),
            );
            self.state
                .rooms
                .enter_lobby(self.conn, self.delivery.clone())
                .await;
        }
    }

    pub(super) async fn leave_room(&mut self) {
        let Some(here) = self.current.take() else {
            return;
        };
        self.grace_deadline = None;
        self.client_offer_req = None;
        self.tell_identity(None);
        self.client_ufrags.clear();
        self.replaced_ufrags.clear();
        self.state.rooms.leave(&here.room, &here.id).await;
        let _ = here.media.send(Command::Leave {
            participant: here.id.clone(),
        });
        tracing::info!(conn = self.conn, room = %here.room, participant = %here.id, "leave");
    }
}
