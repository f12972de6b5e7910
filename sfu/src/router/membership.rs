//! Who is in the shard: joining, leaving and restarting peers, publishing
//! tracks and subscribing everyone else to them.

use super::*;
use crate::remote_codecs::SectionCodec;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpTransceiverId};

impl Router {
    pub(super) fn join(
        &mut self,
        room: String,
        participant: ParticipantId,
        sink: Box<dyn crate::events::EventSink>,
        now: Instant,
    ) {
        if self.by_participant.contains_key(&participant) {
            tracing::warn!(%participant, "join for a participant already on this shard");
            return;
        }
        let mut peer = match Peer::new(
            participant.clone(),
            room.clone(),
            sink,
            &self.announced,
            self.ice_tcp,
            now,
        ) {
            Ok(peer) => peer,
            Err(err) => {
                tracing::error!(%participant, %err, "could not create peer connection");
                return;
            }
        };
        peer.simulcast = self.simulcast;
        peer.start_kbps = self.publisher_start_kbps;
        let conn = self.attach(peer);
        self.rooms.entry(room).or_default().push(conn);
        self.subscribe_to_room(conn);
        self.tell_current_speakers(conn);
        self.update_gauges();
    }

    /// Indexes a new peer and schedules its first offer.
    pub(super) fn attach(&mut self, peer: Peer) -> ConnKey {
        let conn = self.next_key;
        self.next_key += 1;
        self.by_ufrag.insert(peer.ufrag.clone(), conn);
        self.by_participant.insert(peer.participant.clone(), conn);
        self.peers.insert(conn, peer);
        Self::mark_dirty(&mut self.dirty, conn);
        conn
    }

    /// Forwards every track published in `conn`'s room (by others) to it.
    pub(super) fn subscribe_to_room(&mut self, conn: ConnKey) {
        let Some(room) = self.peers.get(&conn).map(|p| p.room.clone()) else {
            return;
        };
        let members = self.rooms.get(&room).cloned().unwrap_or_default();
        let mut keys: Vec<TrackKey> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.publisher != conn && members.contains(&t.publisher))
            .map(|(&k, _)| k)
            .collect();
        keys.sort_unstable(); // Publication order, for a stable SDP.
        for key in keys {
            self.subscribe(conn, key);
        }
    }

    /// Replaces a participant's peer connection (the client lost its
    /// network and starts over) without disturbing anyone else: its
    /// published tracks stay, with the same SSRCs toward every subscriber,
    /// until the new connection's tracks take their place; the new
    /// connection receives everything the old one did.
    pub(super) fn restart(
        &mut self,
        conn: ConnKey,
        now: Instant,
        send: Send<'_>,
    ) -> Result<(), NegotiationError> {
        let announced = self.announced.clone();
        let Some(old) = self.peers.get(&conn) else {
            return Err(NegotiationError::UnknownParticipant);
        };
        let (participant, room) = (old.participant.clone(), old.room.clone());
        let old = self.detach(conn, send).expect("peer exists");
        let mut peer = Peer::new(
            participant.clone(),
            room.clone(),
            old.sink,
            &announced,
            self.ice_tcp,
            now,
        )?;
        peer.simulcast = self.simulcast;
        peer.start_kbps = self.publisher_start_kbps;
        let new_conn = self.next_key;
        // A screen share ends with its connection (the client shares again
        // if it wants to); only the camera and microphone carry over.
        self.end_screen_shares(&old.published);
        for key in old.published.values().chain(old.adoptable.iter()) {
            if let Some(track) = self.tracks.get_mut(key) {
                track.publisher = new_conn;
                track.orphaned = true;
                peer.adoptable.push(*key);
            }
        }
        let conn = self.attach(peer);
        debug_assert_eq!(conn, new_conn);
        if let Some(members) = self.rooms.get_mut(&room) {
            members.push(conn);
        }
        self.subscribe_to_room(conn);
        tracing::info!(%participant, "media connection restarted");
        self.update_gauges();
        Ok(())
    }

    pub(super) fn update_gauges(&self) {
        set(&self.stats.peers, self.peers.len() as u64);
        set(&self.stats.rooms, self.rooms.len() as u64);
        set(&self.stats.tracks, self.tracks.len() as u64);
    }

    pub(super) fn remove_peer(&mut self, conn: ConnKey, now: Instant, send: Send<'_>) {
        let Some(mut peer) = self.detach(conn, send) else {
            return;
        };
        let transfers = std::mem::take(&mut peer.transfers).into_iter().collect();
        self.data_left(conn, &peer.participant, transfers, now);
        self.forget_speaker(&peer.room, &peer.participant, now);
        for key in peer.published.values().chain(peer.adoptable.iter()) {
            if let Some(track) = self.tracks.remove(key) {
                for dt in track.down_tracks {
                    self.remove_down_track(dt, track.kind);
                }
            }
        }
        tracing::debug!(participant = %peer.participant, "peer removed");
        self.update_gauges();
    }

    /// Unindexes a peer, stops forwarding to it and closes its connection.
    /// What it published is left to the caller.
    pub(super) fn detach(&mut self, conn: ConnKey, send: Send<'_>) -> Option<Peer> {
        let mut peer = self.peers.remove(&conn)?;
        for key in peer.subscribed.values() {
            if let Some(track) = self.tracks.get_mut(key) {
                track.down_tracks.retain(|dt| dt.subscriber != conn);
            }
        }
        if let Some(members) = self.rooms.get_mut(&peer.room) {
            members.retain(|&m| m != conn);
            if members.is_empty() {
                self.rooms.remove(&peer.room);
            }
        }
        self.by_participant.remove(&peer.participant);
        self.by_ufrag.remove(&peer.ufrag);
        for route in &peer.routes {
            self.by_addr.remove(route);
        }
        self.dirty.retain(|&d| d != conn);
        let abandoned = peer.early_dtls.abandon() as u64;
        add(&self.stats.early_dtls_dropped, abandoned);
        add(&self.stats.dropped_datagrams, abandoned);
        if let Err(err) = peer.pc.close() {
            tracing::debug!(%err, "close");
        }
        // Let the DTLS close_notify out.
        while let Some(msg) = peer.pc.poll_write() {
            self.send_datagram(msg, send);
        }
        Some(peer)
    }

    pub(super) fn remove_down_track(&mut self, dt: DownTrack, kind: RtpCodecKind) {
        if let Some(sub) = self.peers.get_mut(&dt.subscriber) {
            match sub.pc.remove_track(dt.sender_id) {
                Ok(()) => sub.free_senders.push((kind, dt.sender_id)),
                Err(err) => tracing::debug!(%err, "remove_track"),
            }
            sub.subscribed.remove(&dt.sender_track_id);
            sub.sent.remove(&dt.ssrc);
            sub.negotiator.mark_changed();
            Self::mark_dirty(&mut self.dirty, dt.subscriber);
        }
    }

    /// Adds a sendonly m-section for `key` to `subscriber`'s connection.
    pub(super) fn subscribe(&mut self, subscriber: ConnKey, key: TrackKey) {
        let Some(track) = self.tracks.get_mut(&key) else {
            return;
        };
        if track.publisher == subscriber {
            return;
        }
        let Some(publisher_id) = self
            .peers
            .get(&track.publisher)
            .map(|p| p.participant.clone())
        else {
            return;
        };
        let Some(sub) = self.peers.get_mut(&subscriber) else {
            return;
        };
        let is_track_codec = |c: &RTCRtpCodecParameters| {
            c.rtp_codec.mime_type.eq_ignore_ascii_case(&track.mime_type)
        };
        if !engine::codecs().iter().any(|(c, _)| is_track_codec(c)) {
            tracing::warn!(mime = %track.mime_type, "published codec not in the shared table");
            return;
        }
        let ssrc = rand::random::<u32>();
        let sender_track_id = if track.screen_share {
            format!("screen{key}")
        } else {
            format!("t{key}")
        };
        let media_track = MediaStreamTrack::new(
            publisher_id,
            sender_track_id.clone(),
            format!("{}-{}", track.kind, key),
            track.kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                // No codec here: the section's codecs are set below.
                ..Default::default()
            }],
        );
        // Reuse an m-section a departed track left free (add_track picks
        // the first same-kind transceiver without a sender: one of ours,
        // since the publish sections hold placeholders); otherwise add one.
        let kind = track.kind;
        let sender_id = if sub.free_senders.iter().any(|(k, _)| *k == kind) {
            sub.pc.add_track(media_track).inspect(|id| {
                sub.free_senders.retain(|(_, free)| free != id);
            })
        } else {
            sub.pc
                .add_transceiver_from_track(
                    media_track,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Sendonly,
                        streams: vec![],
                        send_encodings: vec![],
                    }),
                )
                .map(RTCRtpSenderId::from)
        };
        let sender_id = match sender_id {
            Ok(id) => id,
            Err(err) => {
                tracing::warn!(%err, "could not add forwarded track");
                return;
            }
        };
        // The section offers the track's codec first, then the others of its
        // kind: a client that cannot decode the track's codec still accepts
        // the section (with the codecs it can), so it keeps one m-section per
        // track and a reused section can later carry a track of another
        // codec. What it accepted decides whether it gets packets (see
        // `refresh_rewriters`). Only codecs this connection knows can be
        // offered: rtc 0.21.1 keeps, for the connection's life, the video
        // codecs of the first video section the client answered (its publish
        // section), so a client that answered it with VP8 only is offered an
        // H.264 track's section with VP8 only, and refuses the track.
        let mut preferred: Vec<RTCRtpCodecParameters> = engine::codecs_of(kind);
        preferred.sort_by_key(|c| !is_track_codec(c));
        if let Some(mut transceiver) = sub.pc.rtp_transceiver(sender_id.into()) {
            let known: Vec<RTCRtpCodecParameters> = preferred
                .into_iter()
                .filter(|c| transceiver.set_codec_preferences(vec![c.clone()]).is_ok())
                .collect();
            if let Err(err) = transceiver.set_codec_preferences(known) {
                tracing::warn!(%err, "codec preferences of a forwarded track");
            }
        }
        sub.subscribed.insert(sender_track_id.clone(), key);
        sub.sent.insert(
            ssrc,
            SentStream {
                track: key,
                fraction_lost: None,
            },
        );
        sub.negotiator.mark_changed();
        let dt = DownTrack::new(subscriber, sender_id, sender_track_id, ssrc, track);
        track.down_tracks.push(dt);
        Self::mark_dirty(&mut self.dirty, subscriber);
    }

    /// After `conn`'s negotiation changed, recomputes payload types and header
    /// extension ids of everything forwarded to it. A track whose codec the
    /// client did not accept for its section gets no rewriter (so not a
    /// single packet), and the client is told once (`TrackUnsupported`).
    pub(super) fn refresh_rewriters(&mut self, conn: ConnKey, _now: Instant) {
        let Router { peers, tracks, .. } = self;
        let Some(sub) = peers.get_mut(&conn) else {
            return;
        };
        let remote_sdp = sub
            .pc
            .current_remote_description()
            .map(|d| d.sdp.clone())
            .unwrap_or_default();
        let mut refused = Vec::new();
        for key in sub.subscribed.values() {
            let Some(track) = tracks.get_mut(key) else {
                continue;
            };
            let Some(dt) = track.down_tracks.iter_mut().find(|d| d.subscriber == conn) else {
                continue;
            };
            let mid = sub
                .pc
                .rtp_transceiver(dt.sender_id.into())
                .and_then(|t| t.mid().clone());
            let Some(mut sender) = sub.pc.rtp_sender(dt.sender_id) else {
                dt.rewriter = None;
                continue;
            };
            let params = &sender.get_parameters().rtp_parameters;
            let said = mid.as_deref().map_or(SectionCodec::NotNegotiated, |mid| {
                crate::remote_codecs::section_codec(&remote_sdp, mid, &track.mime_type)
            });
            let transport_cc_id = mid.as_deref().and_then(|mid| {
                let uri = rtc::sdp::extmap::TRANSPORT_CC_URI;
                crate::remote_codecs::section_extension_id(&remote_sdp, mid, uri)
            });
            let payload_type = params
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&track.mime_type))
                .map(|c| c.payload_type)
                .filter(|_| said == SectionCodec::Accepted);
            match said {
                SectionCodec::Refused
                    if dt.refused_codec.as_deref() != Some(track.mime_type.as_str()) =>
                {
                    dt.refused_codec = Some(track.mime_type.clone());
                    refused.push((
                        track.publisher,
                        dt.sender_track_id.clone(),
                        track.mime_type.clone(),
                    ));
                }
                SectionCodec::Accepted => dt.refused_codec = None,
                _ => {}
            }
            dt.rewriter = payload_type.map(|payload_type| RtpRewriter {
                ssrc: dt.ssrc,
                payload_type,
                extension_ids: RtpRewriter::map_extensions(
                    track.extensions.iter().map(|(u, i)| (u.as_str(), *i)),
                    params
                        .header_extensions
                        .iter()
                        .map(|h| (h.uri.as_str(), h.id as u8)),
                ),
                transport_cc_id,
            });
        }
        for (publisher, track_id, mime_type) in refused {
            let Some(publisher) = peers.get(&publisher).map(|p| p.participant.clone()) else {
                continue;
            };
            let Some(sub) = peers.get(&conn) else {
                return;
            };
            tracing::info!(participant = %sub.participant, %publisher, %track_id, %mime_type, "subscriber did not accept the track's codec: nothing forwarded");
            sub.sink
                .deliver(crate::events::MediaEvent::TrackUnsupported {
                    publisher,
                    track_id,
                    mime_type,
                });
        }
    }

    // ----- datagrams -----

    /// A track of `conn` started: forward it to everyone else in the room.
    pub(super) fn publish(&mut self, conn: ConnKey, init: RTCTrackEventInit, now: Instant) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let rid = init.rid.clone().unwrap_or_default();
        let rid_rank = own_rid_rank(peer, init.receiver_id, &rid);
        if let Some(&key) = peer.published.get(&init.track_id) {
            // Another simulcast encoding of a track already published.
            let Some(track) = self.tracks.get_mut(&key) else {
                return;
            };
            if !track.add_layer(rid.clone(), init.ssrc) {
                if track.layer_of(init.ssrc).is_none() {
                    tracing::info!(participant = %peer.participant, %rid, ssrc = init.ssrc, "simulcast encoding ignored: the track has its three already");
                }
                return;
            }
            if let Some(layer) = track.layers.last_mut() {
                layer.rid_rank = rid_rank;
            }
            peer.inbound.insert(init.ssrc, key);
            peer.feedback.bind(
                init.ssrc,
                &track.mime_type,
                track.clock_rate,
                &engine::stream_feedback(track.kind),
                &track.extensions,
            );
            peer.refresh_feedback_timeout();
            tracing::info!(participant = %peer.participant, %rid, rid_rank, ssrc = init.ssrc, "simulcast encoding published");
            return;
        }
        let section = RTCRtpTransceiverId::from(init.receiver_id);
        let is_video = peer
            .pc
            .rtp_receiver(init.receiver_id)
            .is_some_and(|r| r.track().kind() == RtpCodecKind::Video);
        let screen_share =
            is_video && super::screen_share::is_screen_share(peer, &self.tracks, section, &rid);
        let Some(mut receiver) = peer.pc.rtp_receiver(init.receiver_id) else {
            return;
        };
        let kind = receiver.track().kind();
        let codec = receiver.track().codec(init.ssrc).cloned().or_else(|| {
            receiver
                .get_parameters()
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.rtp_codec.clone())
        });
        let (mime_type, clock_rate) = codec
            .map(|c| (c.mime_type, c.clock_rate))
            .unwrap_or_default();
        let extensions = receiver
            .get_parameters()
            .rtp_parameters
            .header_extensions
            .iter()
            .map(|h| (h.uri.clone(), h.id as u8))
            .collect::<Vec<_>>();
        // From now on the stream's feedback is the router's, and its packets
        // may be read without rtc (see `Router::read_rtp_directly`).
        peer.feedback.bind(
            init.ssrc,
            &mime_type,
            clock_rate,
            &engine::stream_feedback(kind),
            &extensions,
        );
        peer.feedback_receiver = Some(init.receiver_id);
        peer.refresh_feedback_timeout();
        // A restarted publisher's new track takes the place of its old one
        // of the same kind: subscribers keep their track and SSRC.
        let adopted = peer
            .adoptable
            .iter()
            .filter(|_| !screen_share)
            .position(|k| self.tracks.get(k).is_some_and(|t| t.kind == kind))
            .map(|i| peer.adoptable.remove(i));
        if let Some(key) = adopted {
            peer.published.insert(init.track_id.clone(), key);
            peer.inbound.insert(init.ssrc, key);
            let track = self.tracks.get_mut(&key).expect("adoptable tracks exist");
            let codec_changed = track.adopt(
                init.receiver_id,
                (rid, init.ssrc),
                mime_type,
                clock_rate,
                extensions,
            );
            track.layers[0].rid_rank = rid_rank;
            tracing::info!(participant = %peer.participant, %kind, ssrc = init.ssrc, codec_changed, "track resumed");
            if codec_changed {
                // Same sections, another payload type (or none, for a
                // subscriber that did not accept the new codec).
                let subscribers: Vec<ConnKey> =
                    track.down_tracks.iter().map(|d| d.subscriber).collect();
                for subscriber in subscribers {
                    self.refresh_rewriters(subscriber, now);
                }
            }
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        peer.published.insert(init.track_id.clone(), key);
        peer.inbound.insert(init.ssrc, key);
        let room = peer.room.clone();
        tracing::info!(participant = %peer.participant, %kind, %mime_type, ssrc = init.ssrc, %rid, rid_rank, screen_share, "track published");
        let mut track = PublishedTrack::new(
            conn,
            init.receiver_id,
            kind,
            screen_share,
            mime_type,
            clock_rate,
            extensions,
            (rid, init.ssrc),
            self.pli_throttle,
        );
        track.layers[0].rid_rank = rid_rank;
        self.tracks.insert(key, track);
        let members = self.rooms.get(&room).cloned().unwrap_or_default();
        for member in members {
            self.subscribe(member, key);
        }
        self.update_gauges();
    }

    pub(super) fn unpublish(&mut self, conn: ConnKey, track_id: &str) {
        let Some(key) = self
            .peers
            .get_mut(&conn)
            .and_then(|p| p.published.remove(track_id))
        else {
            return;
        };
        if let Some(track) = self.tracks.remove(&key) {
            if let Some(peer) = self.peers.get_mut(&conn) {
                for layer in &track.layers {
                    peer.inbound.remove(&layer.ssrc);
                    peer.feedback.unbind(layer.ssrc);
                }
            }
            for dt in track.down_tracks {
                self.remove_down_track(dt, track.kind);
            }
        }
        self.update_gauges();
    }
}

/// The rank of encoding `rid` of `receiver`'s track (see
/// `simulcast_offer::rid_rank`): rids other than the server's rank in the
/// order of the client's `a=simulcast` list for that section.
fn own_rid_rank(peer: &mut Peer, receiver: RTCRtpReceiverId, rid: &str) -> usize {
    use crate::simulcast_offer::{rid_rank, simulcast_send_order, RIDS};
    if rid.is_empty() || RIDS.contains(&rid) {
        return rid_rank(rid, &[]);
    }
    let mid = peer
        .pc
        .rtp_transceiver(RTCRtpTransceiverId::from(receiver))
        .and_then(|t| t.mid().clone());
    let sdp = peer.pc.remote_description().map(|d| d.sdp.clone());
    let order = match (mid, sdp) {
        (Some(mid), Some(sdp)) => simulcast_send_order(&sdp, &mid),
        _ => Vec::new(),
    };
    rid_rank(rid, &order)
}
