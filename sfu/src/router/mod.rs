//! The shard's media state: rooms, peers, published tracks, and the
//! per-packet forwarding between them.
//!
//! Everything here runs on the shard thread. Input arrives as commands,
//! datagrams and timeouts; output leaves as datagrams through a `send`
//! callback and as events through each peer's sink. Time is always a
//! parameter, never read here.

mod allocation;
mod codec_change;
mod data;
#[cfg(test)]
mod dtls_loss_tests;
mod encodings;
mod fast_path;
mod layout;
#[cfg(test)]
mod mdns_candidate_tests;
mod media;
mod membership;
mod screen_share;
mod snapshot;
mod speakers;
mod temporal_steps;

use crate::command::{Command, NegotiationError};
use crate::demux::{classify, sent_with_client_keys, stun_local_ufrag, DatagramKind};
use crate::down_track::DownTrack;
use crate::early_dtls::Arrival;
use crate::engine;
use crate::events::{ConnectionState, MediaEvent, ParticipantId};
use crate::peer::{Peer, SentStream};
use crate::rtp_rewriter::RtpRewriter;
use crate::snapshot::{ForwardedSnapshot, PeerSnapshot, ShardSnapshot, TrackSnapshot};
use crate::stats::{add, set, ShardStats};
use crate::track::{ConnKey, PublishedTrack, TrackKey};
use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::event::{
    RTCDataChannelEvent, RTCPeerConnectionEvent, RTCTrackEvent, RTCTrackEventInit,
};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Router {
    shard: usize,
    shard_rate: crate::rate::RateMeter,
    peers: crate::FastMap<ConnKey, Peer>,
    by_participant: HashMap<ParticipantId, ConnKey>,
    by_ufrag: HashMap<String, ConnKey>,
    by_addr: crate::FastMap<(usize, SocketAddr), ConnKey>,
    tracks: crate::FastMap<TrackKey, PublishedTrack>,
    rooms: HashMap<String, Vec<ConnKey>>,
    /// Who speaks in each room that sends audio (see `speakers`).
    speakers: HashMap<String, crate::active_speaker::ActiveSpeakers>,
    /// Peers whose connection may have output to drain.
    dirty: Vec<ConnKey>,
    /// A drive's outgoing datagrams, kept between drives (see `drive`).
    write_scratch: Vec<TaggedBytesMut>,
    next_key: u64,
    /// The address each socket announces (its candidate), by socket index.
    announced: Vec<SocketAddr>,
    /// Offer passive ICE-TCP candidates on the same addresses and ports.
    ice_tcp: bool,
    pli_throttle: Duration,
    /// `[media] bandwidth_allocation`: run `allocation` at all.
    bandwidth_allocation: bool,
    keyframe_cache: bool,
    max_file_bytes: u64,
    /// Ask publishers for simulcast (`MediaSettings::simulcast`).
    simulcast: bool,
    /// Where publishers' estimates start (`MediaSettings::publisher_start_kbps`).
    publisher_start_kbps: u32,
    /// Bandwidth allocation and probes per subscriber (see `allocation`).
    allocations: allocation::Allocations,
    /// What each simulcast publisher was told to encode (see `encodings`).
    encoding_demands: encodings::EncodingDemands,
    /// When the fast path's sender reports are next due (`None` while no
    /// connection uses it).
    next_sender_reports: Option<Instant>,
    /// When the datagram being handled reached the host (kernel receive
    /// timestamp, see `arrival_time`); only publisher feedback uses it.
    datagram_arrival: Option<Instant>,
    stats: Arc<ShardStats>,
}

/// Where a datagram goes: socket index, remote address, bytes.
pub type Send<'a> = crate::fast_writer::SendDatagram<'a>;

impl Router {
    pub fn new(
        shard: usize,
        announced: Vec<SocketAddr>,
        settings: &crate::settings::MediaSettings,
        stats: Arc<ShardStats>,
    ) -> Self {
        Router {
            shard,
            shard_rate: Default::default(),
            peers: Default::default(),
            by_participant: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: Default::default(),
            tracks: Default::default(),
            rooms: HashMap::new(),
            speakers: HashMap::new(),
            dirty: Vec::new(),
            write_scratch: Vec::new(),
            next_key: 1,
            announced,
            ice_tcp: settings.ice_tcp,
            pli_throttle: settings.pli_throttle,
            bandwidth_allocation: settings.bandwidth_allocation,
            keyframe_cache: settings.keyframe_cache,
            max_file_bytes: settings.max_file_bytes,
            simulcast: settings.simulcast,
            publisher_start_kbps: settings.publisher_start_kbps,
            allocations: Default::default(),
            encoding_demands: Default::default(),
            next_sender_reports: None,
            datagram_arrival: None,
            stats,
        }
    }

    /// The datagram handled next reached the host at `arrival` (`None`:
    /// unknown, the handling time stands).
    pub fn set_datagram_arrival(&mut self, arrival: Option<Instant>) {
        self.datagram_arrival = arrival;
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

    /// Runs a negotiation step on a participant's peer and schedules its
    /// output; the connection it ran on.
    fn with_peer(
        &mut self,
        participant: &str,
        step: impl FnOnce(&mut Peer) -> Result<(), NegotiationError>,
    ) -> Result<ConnKey, NegotiationError> {
        let conn = self.conn_of(participant)?;
        let peer = self.peers.get_mut(&conn).expect("indexed peer exists");
        step(peer)?;
        Self::mark_dirty(&mut self.dirty, conn);
        Ok(conn)
    }

    pub fn handle_command(&mut self, command: Command, now: Instant, send: Send<'_>) {
        let tiles_may_change = !matches!(
            command,
            Command::Snapshot { .. } | Command::Candidate { .. }
        );
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
                let result = self.with_peer(&participant, |peer| peer.apply_answer(sdp, now));
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
                let applied = sdp.clone();
                let result = self.with_peer(&participant, |peer| peer.apply_client_offer(sdp, now));
                if let Ok(conn) = result {
                    self.refresh_rewriters(conn, now);
                    self.unpublish_stopped(conn, &applied);
                }
                reply(result.map(|_| ()));
            }
            Command::Candidate {
                participant,
                candidate,
                reply,
            } => {
                let result = self.with_peer(&participant, |peer| peer.add_candidate(candidate));
                reply(result.map(|_| ()));
            }
            Command::RestartMedia { participant, reply } => {
                let result = self
                    .conn_of(&participant)
                    .and_then(|conn| self.restart(conn, now, send));
                reply(result);
            }
            Command::Snapshot { reply } => reply(self.snapshot(now)),
            Command::Layout {
                participant,
                videos,
            } => {
                if let Ok(conn) = self.conn_of(&participant) {
                    self.apply_layout(conn, &videos);
                    self.allocate_now(conn, now);
                }
            }
            Command::Leave { participant } => {
                if let Ok(conn) = self.conn_of(&participant) {
                    self.remove_peer(conn, now, send);
                }
            }
        }
        // A tile or a subscription may have changed: a grown tile's
        // encoding is turned on now, not at the next tick.
        if tiles_may_change {
            self.update_encoding_demand(now);
        }
        self.flush(now, send);
    }

    pub fn handle_datagram(
        &mut self,
        socket: usize,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
        send: Send<'_>,
    ) {
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
        if !peer.client_keys_ready && sent_with_client_keys(kind, data) {
            peer.client_keys_ready = true;
            tracing::debug!(participant = %peer.participant, "the client's keys are in use");
            // Media starts now if our side is up too (else when it is: `drive`).
            self.prime_subscriber(conn, now, &mut *send);
        }
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if kind == DatagramKind::Dtls && !peer.client_hellos.admit(data) {
            // Left to the server's retransmission timer (see ClientHelloRepeats).
            add(&self.stats.dropped_datagrams, 1);
            tracing::debug!(participant = %peer.participant, "repeated DTLS ClientHello dropped");
            return;
        }
        if kind == DatagramKind::Dtls {
            match peer.early_dtls.offer(socket, from, data) {
                Arrival::PassOn => {}
                Arrival::Held => {
                    tracing::debug!(participant = %peer.participant, "DTLS before ICE connected: held");
                    return;
                }
                Arrival::Dropped => {
                    tracing::debug!(participant = %peer.participant, "DTLS before ICE connected: hold full, dropped");
                    add(&self.stats.early_dtls_dropped, 1);
                    add(&self.stats.dropped_datagrams, 1);
                    return;
                }
            }
        }
        if kind == DatagramKind::Rtp && self.read_rtp_directly(conn, data, now, send) {
            return;
        }
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let transport = route_transport(&self.announced, socket, from);
        Self::read(peer, transport, BytesMut::from(data), now, &self.stats);
        Self::mark_dirty(&mut self.dirty, conn);
    }

    /// Hands one datagram to a connection; a datagram it rejects is counted.
    fn read(
        peer: &mut Peer,
        transport: TransportContext,
        message: BytesMut,
        now: Instant,
        stats: &ShardStats,
    ) {
        let result = peer.pc.handle_read(TaggedBytesMut {
            now,
            transport,
            message,
        });
        if let Err(err) = result {
            add(&stats.dropped_datagrams, 1);
            tracing::trace!(%err, "datagram rejected");
        }
    }

    /// ICE connected: the connection reads the DTLS datagrams held for it,
    /// from the socket and address each came from. The caller's drive sends
    /// the answers (`drive` polls writes after events).
    fn replay_early_dtls(&mut self, conn: ConnKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let held = peer.early_dtls.release();
        if held.is_empty() {
            return;
        }
        tracing::debug!(participant = %peer.participant, count = held.len(), "early DTLS replayed");
        add(&self.stats.early_dtls_replayed, held.len() as u64);
        for datagram in held {
            let transport = route_transport(&self.announced, datagram.socket, datagram.from);
            Self::read(peer, transport, datagram.data, now, &self.stats);
        }
        // Reading may have queued events as well: drain again.
        Self::mark_dirty(&mut self.dirty, conn);
    }

    /// For fuzzing: route datagrams from `from` to `participant`.
    #[doc(hidden)]
    pub fn fuzz_learn_route(&mut self, participant: &str, socket: usize, from: SocketAddr) {
        if let Ok(conn) = self.conn_of(participant) {
            self.learn_route(conn, socket, from);
        }
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

    /// The route socket index of rtc's `transport` (see `tcp_media::TCP_ROUTE`).
    fn socket_for(&self, transport: &TransportContext) -> usize {
        let index = self
            .announced
            .iter()
            .position(|a| *a == transport.local_addr)
            .unwrap_or(0);
        if transport.transport_protocol == TransportProtocol::TCP {
            index | crate::tcp_media::TCP_ROUTE
        } else {
            index
        }
    }

    fn send_datagram(&mut self, msg: TaggedBytesMut, send: Send<'_>) {
        let socket = self.socket_for(&msg.transport);
        add(&self.stats.datagrams_out, 1);
        add(&self.stats.bytes_out, msg.message.len() as u64);
        send(socket, msg.transport.peer_addr, &msg.message);
    }

    // ----- timers -----

    pub fn next_deadline(&self) -> Option<Instant> {
        let peers = self.peers.values().filter_map(|p| p.next_timeout);
        let keyframes = self
            .tracks
            .values()
            .flat_map(|t| t.layers.iter().filter_map(|l| l.keyframes.deadline()));
        let speakers = self.speakers.values().filter_map(|s| s.next_deadline());
        let paced = self
            .peers
            .values()
            .filter_map(|p| p.fast_writer.as_ref()?.next_paced_release());
        peers
            .chain(paced)
            .chain(keyframes)
            .chain(speakers)
            .chain(self.next_sender_reports)
            .chain(self.allocations.next_deadline())
            .chain(self.encoding_demands.next_deadline())
            .min()
    }

    pub fn handle_timeouts(&mut self, now: Instant, send: Send<'_>) {
        for (&conn, peer) in self.peers.iter_mut() {
            if let Some(writer) = peer.fast_writer.as_mut() {
                if writer.next_paced_release().is_some_and(|t| t <= now) {
                    writer.release_paced(&mut *send, now);
                }
                add(&self.stats.paced_datagrams, writer.take_newly_paced());
            }
            if peer.next_timeout.is_some_and(|t| t <= now) {
                if peer.pc_timeout.is_some_and(|t| t <= now) {
                    if let Err(err) = peer.pc.handle_timeout(now) {
                        tracing::debug!(%err, "handle_timeout");
                    }
                }
                if peer.feedback.poll_timeout().is_some_and(|t| t <= now) {
                    peer.feedback.handle_timeout(now);
                    peer.send_feedback(now);
                }
                Self::mark_dirty(&mut self.dirty, conn);
            }
        }
        let mut due: Vec<(TrackKey, usize)> = Vec::new();
        for (&key, track) in self.tracks.iter_mut() {
            for (layer, l) in track.layers.iter_mut().enumerate() {
                if l.keyframes.poll_deferred(now) {
                    due.push((key, layer));
                }
            }
        }
        for (key, layer) in due {
            self.send_keyframe_request(key, layer, now);
        }
        if self.next_sender_reports.is_some_and(|t| t <= now) {
            self.send_sender_reports(now);
        }
        self.report_speakers(now);
        self.allocate_bandwidth(now, &mut *send);
        if self.encoding_demands.due(now) {
            self.update_encoding_demand(now);
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
        let flowing_before = peer.media_flows();
        for event in events {
            self.handle_peer_event(conn, event, now);
        }
        // Our side of DTLS came up after the client's (its first protected
        // datagram came first): media starts now, as in `handle_datagram`.
        if !flowing_before && self.peers.get(&conn).is_some_and(|p| p.media_flows()) {
            self.prime_subscriber(conn, now, &mut *send);
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
                    self.forward(conn, &track_id, packet, now, send)
                }
                // Handled by the streams each packet names, not by the one
                // track rtc tagged the whole compound packet with.
                RTCMessage::RtcpPacket(_, packets) => self.handle_rtcp(conn, packets, now, send),
                _ => {}
            }
        }
        self.drain_data(conn, now);
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        peer.offer_if_needed(now);
        // Reused between drives: one drive per subscriber per packet.
        let mut out = std::mem::take(&mut self.write_scratch);
        while let Some(msg) = peer.pc.poll_write() {
            out.push(msg);
        }
        peer.refresh_timeout();
        for msg in out.drain(..) {
            // Our binding requests (checks toward the client's candidates)
            // and success responses (to an authenticated request) name a
            // remote address that belongs to this connection: datagrams from
            // there, which carry no USERNAME, are routed back to it.
            let socket = self.socket_for(&msg.transport);
            if is_stun_binding_request_or_success(&msg.message) {
                self.learn_route(conn, socket, msg.transport.peer_addr);
            } else if classify(&msg.message) != DatagramKind::Stun {
                if let Some(peer) = self.peers.get_mut(&conn) {
                    peer.media_route = Some((socket, msg.transport.peer_addr));
                }
            }
            self.send_datagram(msg, send);
        }
        self.write_scratch = out;
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
                if state == ConnectionState::Connected {
                    self.start_fast_path(conn, now);
                }
                if let Some(peer) = self.peers.get_mut(&conn) {
                    peer.connected = state == ConnectionState::Connected;
                    peer.state = state;
                    tracing::debug!(participant = %peer.participant, ?state, "connection state");
                    peer.sink.deliver(MediaEvent::ConnectionState(state));
                }
            }
            // Emitted when the ICE agent selects its pair (rtc-ice
            // `set_selected_pair`); rtc's ICE handler passes DTLS on from
            // then on, so the DTLS held until now can be read.
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                RTCIceConnectionState::Connected,
            ) => self.replay_early_dtls(conn, now),
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

/// What rtc is told about a datagram that arrived on route `(socket, from)`:
/// the announced address it was sent to, and UDP or (ICE-)TCP.
fn route_transport(announced: &[SocketAddr], socket: usize, from: SocketAddr) -> TransportContext {
    let tcp = crate::tcp_media::is_tcp(socket);
    TransportContext {
        local_addr: announced[crate::tcp_media::bind_index(socket)],
        peer_addr: from,
        ecn: None,
        transport_protocol: if tcp {
            TransportProtocol::TCP
        } else {
            TransportProtocol::UDP
        },
    }
}

/// STUN Binding request (0x0001) or Binding success response (0x0101).
fn is_stun_binding_request_or_success(datagram: &[u8]) -> bool {
    matches!(datagram.get(..2), Some([0x00, 0x01]) | Some([0x01, 0x01]))
}
