//! The shard's media state: rooms, peers, published tracks, and the
//! per-packet forwarding between them.
//!
//! Everything here runs on the shard thread. Input arrives as commands,
//! datagrams and timeouts; output leaves as datagrams through a `send`
//! callback and as events through each peer's sink. Time is always a
//! parameter, never read here.

mod data;
pub use data::Transfer;

use crate::demux::{classify, stun_local_ufrag, DatagramKind};
use crate::engine;
use crate::keyframe_request::KeyframeRequestThrottle;
use crate::peer::Peer;
use crate::rtp_rewriter::RtpRewriter;
use crate::snapshot::{ForwardedSnapshot, PeerSnapshot, ShardSnapshot, TrackSnapshot};
use crate::stats::{add, set, ShardStats};
use crate::track::{ConnKey, DownTrack, PublishedTrack, TrackKey};
use crate::{Command, ConnectionState, MediaEvent, NegotiationError, ParticipantId};
use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::event::{
    RTCDataChannelEvent, RTCPeerConnectionEvent, RTCTrackEvent, RTCTrackEventInit,
};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::report::RTCStatsReportEntry;
use rtc::statistics::StatsSelector;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Router {
    shard: usize,
    shard_rate: crate::rate::RateMeter,
    peers: HashMap<ConnKey, Peer>,
    by_participant: HashMap<ParticipantId, ConnKey>,
    by_ufrag: HashMap<String, ConnKey>,
    by_addr: HashMap<(usize, SocketAddr), ConnKey>,
    tracks: HashMap<TrackKey, PublishedTrack>,
    rooms: HashMap<String, Vec<ConnKey>>,
    /// Peers whose connection may have output to drain.
    dirty: Vec<ConnKey>,
    next_key: u64,
    /// The address each socket announces (its candidate), by socket index.
    announced: Vec<SocketAddr>,
    pli_throttle: Duration,
    keyframe_cache: bool,
    max_file_bytes: u64,
    stats: Arc<ShardStats>,
}

/// Where a datagram goes: socket index, remote address, bytes.
pub type Send<'a> = &'a mut dyn FnMut(usize, SocketAddr, &[u8]);

impl Router {
    pub fn new(
        shard: usize,
        announced: Vec<SocketAddr>,
        settings: &crate::MediaSettings,
        stats: Arc<ShardStats>,
    ) -> Self {
        Router {
            shard,
            shard_rate: Default::default(),
            peers: HashMap::new(),
            by_participant: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            tracks: HashMap::new(),
            rooms: HashMap::new(),
            dirty: Vec::new(),
            next_key: 1,
            announced,
            pli_throttle: settings.pli_throttle,
            keyframe_cache: settings.keyframe_cache,
            max_file_bytes: settings.max_file_bytes,
            stats,
        }
    }

    fn mark_dirty(dirty: &mut Vec<ConnKey>, key: ConnKey) {
        if !dirty.contains(&key) {
            dirty.push(key);
        }
    }

    fn conn_of(&self, participant: &str) -> Result<ConnKey, NegotiationError> {
        self.by_participant
            .get(participant)
            .copied()
            .ok_or(NegotiationError::UnknownParticipant)
    }

    // ----- commands -----

    pub fn handle_command(&mut self, command: Command, now: Instant, send: Send<'_>) {
        match command {
            Command::Join {
                room,
                participant,
                sink,
            } => self.join(room, participant, sink, now),
            Command::Answer {
                participant,
                sdp,
                reply,
            } => {
                let result = self.conn_of(&participant).and_then(|conn| {
                    let peer = self.peers.get_mut(&conn).expect("indexed peer exists");
                    peer.apply_answer(sdp, now)?;
                    Self::mark_dirty(&mut self.dirty, conn);
                    Ok(conn)
                });
                if let Ok(conn) = result {
                    self.refresh_rewriters(conn, now);
                }
                reply(result.map(|_| ()));
            }
            Command::Offer {
                participant,
                sdp,
                reply,
            } => {
                let result = self.conn_of(&participant).and_then(|conn| {
                    let peer = self.peers.get_mut(&conn).expect("indexed peer exists");
                    peer.apply_client_offer(sdp, now)?;
                    Self::mark_dirty(&mut self.dirty, conn);
                    Ok(conn)
                });
                if let Ok(conn) = result {
                    self.refresh_rewriters(conn, now);
                }
                reply(result.map(|_| ()));
            }
            Command::Candidate {
                participant,
                candidate,
                reply,
            } => {
                let result = self.conn_of(&participant).and_then(|conn| {
                    let peer = self.peers.get_mut(&conn).expect("indexed peer exists");
                    peer.add_candidate(candidate)?;
                    Self::mark_dirty(&mut self.dirty, conn);
                    Ok(())
                });
                reply(result);
            }
            Command::RestartMedia { participant, reply } => {
                let result = self
                    .conn_of(&participant)
                    .and_then(|conn| self.restart(conn, now, send));
                reply(result);
            }
            Command::Snapshot { reply } => reply(self.snapshot(now)),
            Command::Leave { participant } => {
                if let Ok(conn) = self.conn_of(&participant) {
                    self.remove_peer(conn, now, send);
                }
            }
        }
        self.flush(now, send);
    }

    fn join(
        &mut self,
        room: String,
        participant: ParticipantId,
        sink: Box<dyn crate::EventSink>,
        now: Instant,
    ) {
        if self.by_participant.contains_key(&participant) {
            tracing::warn!(%participant, "join for a participant already on this shard");
            return;
        }
        let peer = match Peer::new(
            participant.clone(),
            room.clone(),
            sink,
            &self.announced,
            now,
        ) {
            Ok(peer) => peer,
            Err(err) => {
                tracing::error!(%participant, %err, "could not create peer connection");
                return;
            }
        };
        let conn = self.attach(peer);
        self.rooms.entry(room).or_default().push(conn);
        self.subscribe_to_room(conn);
        self.update_gauges();
    }

    /// Indexes a new peer and schedules its first offer.
    fn attach(&mut self, peer: Peer) -> ConnKey {
        let conn = self.next_key;
        self.next_key += 1;
        self.by_ufrag.insert(peer.ufrag.clone(), conn);
        self.by_participant.insert(peer.participant.clone(), conn);
        self.peers.insert(conn, peer);
        Self::mark_dirty(&mut self.dirty, conn);
        conn
    }

    /// Forwards every track published in `conn`'s room (by others) to it.
    fn subscribe_to_room(&mut self, conn: ConnKey) {
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
    fn restart(
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
        let mut peer = Peer::new(participant.clone(), room.clone(), old.sink, &announced, now)?;
        let new_conn = self.next_key;
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

    fn update_gauges(&self) {
        set(&self.stats.peers, self.peers.len() as u64);
        set(&self.stats.rooms, self.rooms.len() as u64);
        set(&self.stats.tracks, self.tracks.len() as u64);
    }

    fn remove_peer(&mut self, conn: ConnKey, now: Instant, send: Send<'_>) {
        let Some(mut peer) = self.detach(conn, send) else {
            return;
        };
        let transfers = std::mem::take(&mut peer.transfers).into_iter().collect();
        self.data_left(conn, &peer.participant, transfers, now);
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
    fn detach(&mut self, conn: ConnKey, send: Send<'_>) -> Option<Peer> {
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
        if let Err(err) = peer.pc.close() {
            tracing::debug!(%err, "close");
        }
        // Let the DTLS close_notify out.
        while let Some(msg) = peer.pc.poll_write() {
            self.send_datagram(msg, send);
        }
        Some(peer)
    }

    fn remove_down_track(&mut self, dt: DownTrack, kind: RtpCodecKind) {
        if let Some(sub) = self.peers.get_mut(&dt.subscriber) {
            match sub.pc.remove_track(dt.sender_id) {
                Ok(()) => sub.free_senders.push((kind, dt.sender_id)),
                Err(err) => tracing::debug!(%err, "remove_track"),
            }
            sub.subscribed.remove(&dt.sender_track_id);
            sub.negotiator.mark_changed();
            Self::mark_dirty(&mut self.dirty, dt.subscriber);
        }
    }

    /// Adds a sendonly m-section for `key` to `subscriber`'s connection.
    fn subscribe(&mut self, subscriber: ConnKey, key: TrackKey) {
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
        let codec = engine::codecs()
            .into_iter()
            .find(|(c, _)| c.rtp_codec.mime_type.eq_ignore_ascii_case(&track.mime_type))
            .map(|(c, _)| c.rtp_codec);
        let Some(codec) = codec else {
            tracing::warn!(mime = %track.mime_type, "published codec not in the shared table");
            return;
        };
        let ssrc = rand::random::<u32>();
        let sender_track_id = format!("t{key}");
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
                codec,
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
        sub.subscribed.insert(sender_track_id.clone(), key);
        sub.negotiator.mark_changed();
        let dt = DownTrack::new(subscriber, sender_id, sender_track_id, ssrc, track);
        track.down_tracks.push(dt);
        Self::mark_dirty(&mut self.dirty, subscriber);
    }

    /// After `conn`'s negotiation changed, recomputes payload types and header
    /// extension ids of everything forwarded to it.
    fn refresh_rewriters(&mut self, conn: ConnKey, _now: Instant) {
        let Router { peers, tracks, .. } = self;
        let Some(sub) = peers.get_mut(&conn) else {
            return;
        };
        for key in sub.subscribed.values() {
            let Some(track) = tracks.get_mut(key) else {
                continue;
            };
            let Some(dt) = track.down_tracks.iter_mut().find(|d| d.subscriber == conn) else {
                continue;
            };
            let Some(mut sender) = sub.pc.rtp_sender(dt.sender_id) else {
                dt.rewriter = None;
                continue;
            };
            let params = &sender.get_parameters().rtp_parameters;
            let payload_type = params
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&track.mime_type))
                .map(|c| c.payload_type);
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
            });
        }
    }

    // ----- datagrams -----

    pub fn handle_datagram(&mut self, socket: usize, from: SocketAddr, data: &[u8], now: Instant) {
        add(&self.stats.datagrams_in, 1);
        add(&self.stats.bytes_in, data.len() as u64);
        let kind = classify(data);
        let conn = match kind {
            DatagramKind::Unknown => None,
            // The address is not learned here: the request is not yet
            // authenticated. It is learned when the connection answers it
            // (see `drive`), which it does only for a valid MESSAGE-INTEGRITY.
            DatagramKind::Stun => match stun_local_ufrag(data) {
                Some(ufrag) => self.by_ufrag.get(ufrag).copied(),
                None => self.by_addr.get(&(socket, from)).copied(),
            },
            DatagramKind::Dtls | DatagramKind::Rtp => self.by_addr.get(&(socket, from)).copied(),
        };
        let Some(conn) = conn else {
            add(&self.stats.dropped_datagrams, 1);
            return;
        };
        let Some(peer) = self.peers.get_mut(&conn) else {
            add(&self.stats.dropped_datagrams, 1);
            return;
        };
        let result = peer.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.announced[socket],
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        });
        if let Err(err) = result {
            add(&self.stats.dropped_datagrams, 1);
            tracing::trace!(%err, "datagram rejected");
        }
        Self::mark_dirty(&mut self.dirty, conn);
    }

    fn learn_route(&mut self, conn: ConnKey, socket: usize, from: SocketAddr) {
        let route = (socket, from);
        if self.by_addr.get(&route) == Some(&conn) {
            return;
        }
        if let Some(old) = self.by_addr.insert(route, conn) {
            if let Some(peer) = self.peers.get_mut(&old) {
                peer.routes.retain(|r| *r != route);
            }
        }
        if let Some(peer) = self.peers.get_mut(&conn) {
            peer.routes.push(route);
        }
    }

    fn socket_for(&self, local: SocketAddr) -> usize {
        self.announced.iter().position(|a| *a == local).unwrap_or(0)
    }

    fn send_datagram(&mut self, msg: TaggedBytesMut, send: Send<'_>) {
        let socket = self.socket_for(msg.transport.local_addr);
        add(&self.stats.datagrams_out, 1);
        add(&self.stats.bytes_out, msg.message.len() as u64);
        send(socket, msg.transport.peer_addr, &msg.message);
    }

    // ----- timers -----

    pub fn next_deadline(&self) -> Option<Instant> {
        let peers = self.peers.values().filter_map(|p| p.next_timeout);
        let keyframes = self.tracks.values().filter_map(|t| t.keyframes.deadline());
        peers.chain(keyframes).min()
    }

    pub fn handle_timeouts(&mut self, now: Instant, send: Send<'_>) {
        for (&conn, peer) in self.peers.iter_mut() {
            if peer.next_timeout.is_some_and(|t| t <= now) {
                if let Err(err) = peer.pc.handle_timeout(now) {
                    tracing::debug!(%err, "handle_timeout");
                }
                Self::mark_dirty(&mut self.dirty, conn);
            }
        }
        let due: Vec<TrackKey> = self
            .tracks
            .iter_mut()
            .filter_map(|(&key, t)| t.keyframes.poll_deferred(now).then_some(key))
            .collect();
        for key in due {
            self.send_keyframe_request(key, now);
        }
        self.flush(now, send);
    }

    // ----- draining connections -----

    /// Drains every dirty connection until none has output left.
    pub fn flush(&mut self, now: Instant, send: Send<'_>) {
        while let Some(conn) = self.dirty.pop() {
            self.drive(conn, now, send);
        }
    }

    fn drive(&mut self, conn: ConnKey, now: Instant, send: Send<'_>) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let mut events = Vec::new();
        while let Some(event) = peer.pc.poll_event() {
            events.push(event);
        }
        for event in events {
            self.handle_peer_event(conn, event, now);
        }
        loop {
            let Some(peer) = self.peers.get_mut(&conn) else {
                return;
            };
            let Some(TaggedRTCMessage { message, .. }) = peer.pc.poll_media_read() else {
                break;
            };
            match message {
                RTCMessage::RtpPacket(track_id, packet) => {
                    self.forward(conn, &track_id, packet, now)
                }
                RTCMessage::RtcpPacket(track_id, packets) => {
                    self.handle_feedback(conn, &track_id, packets, now)
                }
                _ => {}
            }
        }
        self.drain_data(conn, now);
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        peer.offer_if_needed(now);
        let mut out = Vec::new();
        while let Some(msg) = peer.pc.poll_write() {
            out.push(msg);
        }
        peer.refresh_timeout();
        for msg in out {
            // Our binding requests (checks toward the client's candidates)
            // and success responses (to an authenticated request) name a
            // remote address that belongs to this connection: datagrams from
            // there, which carry no USERNAME, are routed back to it.
            if is_stun_binding_request_or_success(&msg.message) {
                let socket = self.socket_for(msg.transport.local_addr);
                self.learn_route(conn, socket, msg.transport.peer_addr);
            }
            self.send_datagram(msg, send);
        }
    }

    fn handle_peer_event(&mut self, conn: ConnKey, event: RTCPeerConnectionEvent, now: Instant) {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let state = match state {
                    RTCPeerConnectionState::Connected => ConnectionState::Connected,
                    RTCPeerConnectionState::Disconnected => ConnectionState::Disconnected,
                    RTCPeerConnectionState::Failed => ConnectionState::Failed,
                    RTCPeerConnectionState::Closed => ConnectionState::Closed,
                    _ => ConnectionState::Connecting,
                };
                if let Some(peer) = self.peers.get_mut(&conn) {
                    peer.connected = state == ConnectionState::Connected;
                    peer.state = state;
                    tracing::debug!(participant = %peer.participant, ?state, "connection state");
                    peer.sink.deliver(MediaEvent::ConnectionState(state));
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.publish(conn, init, now);
            }
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(_)) => {
                self.data_opened(conn);
            }
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnBufferedAmountLow(_)) => {
                self.data_drained(conn);
            }
            RTCPeerConnectionEvent::OnDataChannel(
                RTCDataChannelEvent::OnClose(_) | RTCDataChannelEvent::OnClosing(_),
            ) => {
                if let Some(peer) = self.peers.get_mut(&conn) {
                    peer.data_open = false;
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                self.unpublish(conn, &track_id);
            }
            _ => {}
        }
    }

    /// A track of `conn` started: forward it to everyone else in the room.
    fn publish(&mut self, conn: ConnKey, init: RTCTrackEventInit, _now: Instant) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.published.contains_key(&init.track_id) {
            return;
        }
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
            .collect();
        // A restarted publisher's new track takes the place of its old one
        // of the same kind: subscribers keep their track and SSRC.
        let adopted = peer
            .adoptable
            .iter()
            .position(|k| self.tracks.get(k).is_some_and(|t| t.kind == kind))
            .map(|i| peer.adoptable.remove(i));
        if let Some(key) = adopted {
            peer.published.insert(init.track_id.clone(), key);
            let track = self.tracks.get_mut(&key).expect("adoptable tracks exist");
            track.adopt(
                init.receiver_id,
                init.ssrc,
                mime_type,
                clock_rate,
                extensions,
            );
            tracing::info!(participant = %peer.participant, %kind, ssrc = init.ssrc, "track resumed");
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        peer.published.insert(init.track_id.clone(), key);
        let room = peer.room.clone();
        tracing::info!(participant = %peer.participant, %kind, %mime_type, ssrc = init.ssrc, "track published");
        self.tracks.insert(
            key,
            PublishedTrack {
                publisher: conn,
                receiver_id: init.receiver_id,
                media_ssrc: init.ssrc,
                kind,
                mime_type,
                extensions,
                down_tracks: Vec::new(),
                cache: Default::default(),
                keyframe_cache: Default::default(),
                epoch: 0,
                orphaned: false,
                packets: 0,
                bytes: 0,
                rate: Default::default(),
                clock_rate,
                keyframes: KeyframeRequestThrottle::new(self.pli_throttle),
            },
        );
        let members = self.rooms.get(&room).cloned().unwrap_or_default();
        for member in members {
            self.subscribe(member, key);
        }
        self.update_gauges();
    }

    fn unpublish(&mut self, conn: ConnKey, track_id: &str) {
        let Some(key) = self
            .peers
            .get_mut(&conn)
            .and_then(|p| p.published.remove(track_id))
        else {
            return;
        };
        if let Some(track) = self.tracks.remove(&key) {
            for dt in track.down_tracks {
                self.remove_down_track(dt, track.kind);
            }
        }
        self.update_gauges();
    }

    /// The per-packet path: one publisher packet to every subscriber.
    fn forward(&mut self, conn: ConnKey, track_id: &str, packet: rtp::Packet, now: Instant) {
        let Router {
            peers,
            tracks,
            dirty,
            stats,
            ..
        } = self;
        let Some(key) = peers
            .get(&conn)
            .and_then(|p| p.published.get(track_id))
            .copied()
        else {
            return;
        };
        let Some(track) = tracks.get_mut(&key) else {
            return;
        };
        add(&stats.rtp_in, 1);
        track.observe(&packet, self.keyframe_cache);
        let (view, down_tracks) = track.split();
        let mut want_keyframe = false;
        for dt in down_tracks.iter_mut() {
            let Some(sub) = peers.get_mut(&dt.subscriber) else {
                continue;
            };
            if !sub.connected {
                // No SRTP keys yet: webrtc-rs would drop the packet anyway.
                continue;
            }
            let forwarded = dt.forward(&mut sub.pc, &packet, &view, now);
            want_keyframe |= forwarded.want_keyframe;
            if forwarded.sent > 0 {
                add(&stats.rtp_forwarded, forwarded.sent);
                Self::mark_dirty(dirty, dt.subscriber);
            }
        }
        if want_keyframe {
            self.request_keyframe(key, now);
        }
    }

    fn request_keyframe(&mut self, key: TrackKey, now: Instant) {
        let Some(track) = self.tracks.get_mut(&key) else {
            return;
        };
        if track.keyframes.request(now) {
            self.send_keyframe_request(key, now);
        }
    }

    fn send_keyframe_request(&mut self, key: TrackKey, now: Instant) {
        let Some(track) = self.tracks.get(&key).filter(|t| !t.orphaned) else {
            return;
        };
        let Some(publisher) = self.peers.get_mut(&track.publisher) else {
            return;
        };
        if let Some(mut receiver) = publisher.pc.rtp_receiver(track.receiver_id) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: track.media_ssrc,
            };
            if receiver.write_rtcp(now, vec![Box::new(pli)]).is_ok() {
                add(&self.stats.keyframe_requests_out, 1);
            }
        }
        Self::mark_dirty(&mut self.dirty, track.publisher);
    }

    /// RTCP from `conn` about the forwarded track `track_id` it receives.
    fn handle_feedback(
        &mut self,
        conn: ConnKey,
        track_id: &str,
        packets: Vec<Box<dyn rtcp::Packet>>,
        now: Instant,
    ) {
        let Some(key) = self
            .peers
            .get(&conn)
            .and_then(|p| p.subscribed.get(track_id))
            .copied()
        else {
            return; // RTCP about our own receivers (sender reports): nothing to do.
        };
        for packet in packets {
            let any = packet.as_any();
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                add(&self.stats.keyframe_requests_in, 1);
                self.request_keyframe(key, now);
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                add(&self.stats.nacks_in, 1);
                self.retransmit(conn, key, nack, now);
            }
        }
    }

    fn retransmit(
        &mut self,
        conn: ConnKey,
        key: TrackKey,
        nack: &TransportLayerNack,
        now: Instant,
    ) {
        let Router {
            peers,
            tracks,
            dirty,
            stats,
            ..
        } = self;
        let Some(track) = tracks.get_mut(&key) else {
            return;
        };
        let PublishedTrack {
            down_tracks, cache, ..
        } = track;
        let (Some(dt), Some(sub)) = (
            down_tracks.iter_mut().find(|d| d.subscriber == conn),
            peers.get_mut(&conn),
        ) else {
            return;
        };
        for pair in &nack.nacks {
            for seq in pair.packet_list() {
                if dt.retransmit(&mut sub.pc, seq, cache, now) {
                    add(&stats.retransmissions, 1);
                }
            }
        }
        Self::mark_dirty(dirty, conn);
    }

    /// Describes the shard for operators.
    fn snapshot(&mut self, now: Instant) -> ShardSnapshot {
        let counters = self.stats.snapshot();
        let rates = self
            .shard_rate
            .sample(
                now,
                &[
                    counters.loop_busy_micros,
                    counters.rtp_in,
                    counters.rtp_forwarded,
                ],
            )
            .to_vec();
        let mut peers = Vec::with_capacity(self.peers.len());
        let participant_of: HashMap<ConnKey, ParticipantId> = self
            .peers
            .iter()
            .map(|(&k, p)| (k, p.participant.clone()))
            .collect();
        for (&conn, peer) in self.peers.iter_mut() {
            let report = peer.pc.get_stats(now, StatsSelector::None);
            let rtt_ms = report
                .candidate_pairs()
                .filter(|p| p.current_round_trip_time > 0.0)
                .max_by_key(|p| p.bytes_received)
                .map(|p| p.current_round_trip_time * 1000.0);
            let loss_to_client = report
                .iter()
                .filter_map(|e| match e {
                    RTCStatsReportEntry::RemoteInboundRtp(r) => Some(r.fraction_lost),
                    _ => None,
                })
                .reduce(f64::max);
            let lost_by_ssrc: HashMap<u32, i64> = report
                .inbound_rtp_streams()
                .map(|s| {
                    let received = &s.received_rtp_stream_stats;
                    (received.rtp_stream_stats.ssrc, received.packets_lost)
                })
                .collect();
            let mut published = Vec::new();
            let mut forwarded = Vec::new();
            for track in self.tracks.values_mut() {
                if track.publisher == conn {
                    let rates = track
                        .rate
                        .sample(now, &[track.packets, track.bytes])
                        .to_vec();
                    published.push(TrackSnapshot {
                        kind: track.kind.to_string(),
                        mime_type: track.mime_type.clone(),
                        ssrc: track.media_ssrc,
                        packets: track.packets,
                        bytes: track.bytes,
                        packets_per_second: rates[0],
                        bits_per_second: rates[1] * 8.0,
                        packets_lost: lost_by_ssrc.get(&track.media_ssrc).copied().unwrap_or(0),
                    });
                }
                for dt in track.down_tracks.iter().filter(|d| d.subscriber == conn) {
                    forwarded.push(ForwardedSnapshot {
                        publisher: participant_of
                            .get(&track.publisher)
                            .cloned()
                            .unwrap_or_default(),
                        kind: track.kind.to_string(),
                        ssrc: dt.ssrc,
                        packets: dt.packets_sent,
                    });
                }
            }
            peers.push(PeerSnapshot {
                participant: peer.participant.clone(),
                room: peer.room.clone(),
                state: peer.state,
                remote_addr: peer.routes.last().map(|(_, addr)| *addr),
                rtt_ms,
                loss_to_client,
                published,
                forwarded,
            });
        }
        peers.sort_by(|a, b| (&a.room, &a.participant).cmp(&(&b.room, &b.participant)));
        ShardSnapshot {
            shard: self.shard,
            counters,
            busy_ratio: (rates[0] / 1e6).min(1.0),
            packets_in_per_second: rates[1],
            packets_out_per_second: rates[2],
            peers,
        }
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&mut self, now: Instant, send: Send<'_>) {
        let conns: Vec<ConnKey> = self.peers.keys().copied().collect();
        for conn in conns {
            if let Some(peer) = self.peers.get(&conn) {
                peer.sink
                    .deliver(MediaEvent::ConnectionState(ConnectionState::Closed));
            }
            self.remove_peer(conn, now, send);
        }
    }
}

/// STUN Binding request (0x0001) or Binding success response (0x0101).
fn is_stun_binding_request_or_success(datagram: &[u8]) -> bool {
    matches!(datagram.get(..2), Some([0x00, 0x01]) | Some([0x01, 0x01]))
}
