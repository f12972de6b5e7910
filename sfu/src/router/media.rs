//! The per-packet path: forwarding a publisher's packets to its down
//! tracks, and the subscribers' feedback (keyframe requests, NACKs).

use super::*;
use crate::down_track::Retransmission;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;

impl Router {
    /// A publisher packet rtc read, tagged with its receiver's track id.
    pub(super) fn forward(
        &mut self,
        conn: ConnKey,
        track_id: &str,
        packet: rtp::Packet,
        now: Instant,
        send: Send<'_>,
    ) {
        let Some(key) = self
            .peers
            .get(&conn)
            .and_then(|p| p.published.get(track_id))
            .copied()
        else {
            return;
        };
        self.forward_track(conn, key, packet, now, send);
    }

    /// The per-packet path: one publisher packet to every subscriber, then
    /// to the publisher's feedback generators, which take it (no copy).
    pub(super) fn forward_track(
        &mut self,
        conn: ConnKey,
        key: TrackKey,
        packet: rtp::Packet,
        now: Instant,
        send: Send<'_>,
    ) {
        if self.check_payload_type(conn, key, packet.header.payload_type, now)
            == codec_change::PayloadTypeCheck::Unknown
        {
            add(&self.stats.dropped_datagrams, 1);
            return;
        }
        if !self.forward_to_down_tracks(conn, key, &packet, now, send) {
            return;
        }
        if let Some(publisher) = self.peers.get_mut(&conn) {
            // The publisher's bandwidth estimate reads these arrival times.
            let arrival = self.datagram_arrival.unwrap_or(now);
            publisher.feedback.on_rtp(packet, arrival);
            if publisher.send_feedback(now) {
                Self::mark_dirty(&mut self.dirty, conn);
            }
            publisher.refresh_feedback_timeout();
        }
    }

    /// Forwards `packet` to the track's subscribers; false when `key` is no
    /// (longer a) published track, and the packet was not looked at.
    fn forward_to_down_tracks(
        &mut self,
        conn: ConnKey,
        key: TrackKey,
        packet: &rtp::Packet,
        now: Instant,
        send: Send<'_>,
    ) -> bool {
        self.observe_audio_level(conn, key, packet, now);
        let Router {
            peers,
            tracks,
            dirty,
            stats,
            ..
        } = self;
        let Some(track) = tracks.get_mut(&key) else {
            return false;
        };
        add(&stats.rtp_in, 1);
        // Which encoding (simulcast: one track, several SSRCs).
        let Some(layer) = track.layer_of(packet.header.ssrc) else {
            tracing::trace!(
                track = key,
                ssrc = packet.header.ssrc,
                "packet of an unknown encoding"
            );
            return true;
        };
        if track.is_video() && packet.header.marker {
            // One line per incoming picture (its last packet): tells a
            // frame the publisher never sent from one not forwarded.
            tracing::trace!(
                target: "noom_sfu::incoming_pictures",
                track = key,
                layer,
                seq = packet.header.sequence_number,
                ts = packet.header.timestamp,
                vp8 = ?crate::vp8_descriptor::Vp8Descriptor::parse(&packet.payload),
                "picture from the publisher"
            );
        }
        if track.is_video() && track.codec.is_keyframe_start(&packet.payload) {
            tracing::debug!(
                track = key,
                layer,
                seq = packet.header.sequence_number,
                "keyframe from the publisher"
            );
        }
        let seq = packet.header.sequence_number;
        if track.is_video()
            && track.layers[layer]
                .highest_seq
                .is_some_and(|h| !crate::seq_newer(seq, h))
        {
            tracing::debug!(
                track = key,
                seq,
                "late packet from the publisher (a repair)"
            );
        }
        let missing = track.observe(layer, packet, self.keyframe_cache, now);
        if missing > 0 {
            add(&stats.rtp_lost, missing);
            track.lost += missing;
        }
        // One bit per encoding a down track waits for a keyframe of.
        let mut want_keyframes = 0u32;
        // Every subscriber's decoder will need a keyframe of this encoding:
        // ask now rather than when their NACKs have gone unanswered.
        if track.layers[layer].resume.arrived(now, missing) && track.is_video() && layer < 32 {
            tracing::info!(
                track = key,
                layer,
                missing,
                "video resumed after an outage; asking for a keyframe"
            );
            want_keyframes |= 1 << layer;
        }
        let (view, down_tracks) = track.split(layer, self.keyframe_cache, now);
        for dt in down_tracks.iter_mut() {
            let Some(sub) = peers.get_mut(&dt.subscriber) else {
                continue;
            };
            if !sub.media_flows() {
                // No SRTP keys on one side yet: the packet would be dropped.
                continue;
            }
            let bytes_before = dt.bytes_sent;
            let mut out = sub.rtp_writer(&mut *send);
            let forwarded = dt.forward(&mut out, packet, &view, now);
            let fast = out.is_fast();
            Self::count_sent(stats, dirty, dt, fast, forwarded.sent, bytes_before);
            if let Some(wanted) = forwarded.want_keyframe.filter(|&l| l < 32) {
                want_keyframes |= 1 << wanted;
            }
            if forwarded.switched {
                add(&stats.layer_switches, 1);
            }
        }
        for layer in 0..32 {
            if want_keyframes & (1 << layer) != 0 {
                self.request_keyframe(key, layer, now);
            }
        }
        true
    }

    /// The subscriber's connection can take media now (see
    /// `Peer::media_flows`): each of its videos starts with its encoding's
    /// cached keyframe at once, and a fresh keyframe is asked for.
    pub(super) fn prime_subscriber(&mut self, conn: ConnKey, now: Instant, send: Send<'_>) {
        if !self.keyframe_cache {
            return;
        }
        let Router {
            peers,
            tracks,
            dirty,
            stats,
            ..
        } = self;
        let Some(sub) = peers.get_mut(&conn).filter(|p| p.media_flows()) else {
            return;
        };
        let keys: Vec<TrackKey> = sub.subscribed.values().copied().collect();
        let mut wanted = Vec::new();
        for key in keys {
            let Some(track) = tracks.get_mut(&key).filter(|t| t.is_video()) else {
                continue;
            };
            let (view, down_tracks) = track.split(0, true, now);
            for dt in down_tracks.iter_mut().filter(|d| d.subscriber == conn) {
                let Some(target) = dt.selector.target(&view.infos) else {
                    continue;
                };
                let bytes_before = dt.bytes_sent;
                let mut out = sub.rtp_writer(&mut *send);
                let primed = dt.prime(&mut out, &view.at_layer(target), now);
                let fast = out.is_fast();
                Self::count_sent(stats, dirty, dt, fast, primed.sent, bytes_before);
                if let Some(layer) = primed.want_keyframe {
                    wanted.push((key, layer));
                }
            }
        }
        for (key, layer) in wanted {
            self.request_keyframe(key, layer, now);
        }
    }

    /// Counts what a down track just sent (`bytes_before`: its byte count
    /// before). Packets the fast path sent are out already; packets given
    /// to rtc's sender wait for a drive of the subscriber's connection.
    fn count_sent(
        stats: &ShardStats,
        dirty: &mut Vec<ConnKey>,
        dt: &DownTrack,
        fast: bool,
        sent: u64,
        bytes_before: u64,
    ) {
        if fast {
            add(&stats.datagrams_out, sent);
            add(&stats.bytes_out, dt.bytes_sent - bytes_before);
        } else if sent > 0 {
            Self::mark_dirty(dirty, dt.subscriber);
        }
        add(&stats.rtp_forwarded, sent);
    }

    pub(super) fn request_keyframe(&mut self, key: TrackKey, layer: usize, now: Instant) {
        let Some(throttle) = self
            .tracks
            .get_mut(&key)
            .and_then(|t| t.layers.get_mut(layer))
            .map(|l| &mut l.keyframes)
        else {
            return;
        };
        if throttle.request(now) {
            self.send_keyframe_request(key, layer, now);
        } else {
            tracing::trace!(track = key, layer, "keyframe request deferred (throttle)");
        }
    }

    pub(super) fn send_keyframe_request(&mut self, key: TrackKey, layer: usize, now: Instant) {
        let Some(track) = self.tracks.get(&key).filter(|t| !t.orphaned) else {
            return;
        };
        let Some(media_ssrc) = track.layers.get(layer).map(|l| l.ssrc) else {
            return;
        };
        let Some(publisher) = self.peers.get_mut(&track.publisher) else {
            return;
        };
        if let Some(mut receiver) = publisher.pc.rtp_receiver(track.receiver_id) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            if receiver.write_rtcp(now, vec![Box::new(pli)]).is_ok() {
                add(&self.stats.keyframe_requests_out, 1);
                tracing::debug!(
                    track = key,
                    ssrc = media_ssrc,
                    "keyframe request (PLI) sent to the publisher"
                );
            }
        }
        Self::mark_dirty(&mut self.dirty, track.publisher);
    }

    /// A publisher's sender reports: each encoding's wall-clock/RTP-time
    /// pair, which maps timestamps between encodings at a layer switch.
    fn note_sender_reports(&mut self, conn: ConnKey, packets: &[Box<dyn rtcp::Packet>]) {
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        for packet in packets {
            let Some(report) = packet.as_any().downcast_ref::<SenderReport>() else {
                continue;
            };
            let Some(track) = peer
                .inbound
                .get(&report.ssrc)
                .and_then(|key| self.tracks.get_mut(key))
            else {
                continue;
            };
            if let Some(layer) = track.layer_of(report.ssrc) {
                track.layers[layer].sender_report = Some((report.ntp_time, report.rtp_time));
            }
        }
    }

    /// RTCP from `conn`, read directly (`read_rtcp_directly`) or surfaced
    /// by rtc. Each packet is handled by the stream it names: a compound
    /// packet may speak of several (rtc tags it with its first one only).
    pub(super) fn handle_rtcp(
        &mut self,
        conn: ConnKey,
        packets: Vec<Box<dyn rtcp::Packet>>,
        now: Instant,
        send: Send<'_>,
    ) {
        self.congestion_feedback(conn, &packets, now);
        let mut sender_reports = false;
        for packet in &packets {
            let any = packet.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                self.keyframe_requested(conn, pli.media_ssrc, now);
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                // RFC 5104 4.3.1: the streams are named by the entries.
                if let Some(entry) = fir.fir.first() {
                    self.keyframe_requested(conn, entry.ssrc, now);
                }
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                if let Some(key) = self.sent_track(conn, nack.media_ssrc) {
                    add(&self.stats.nacks_in, 1);
                    self.retransmit(conn, key, nack, now, send);
                }
            } else if let Some(report) = any.downcast_ref::<ReceiverReport>() {
                self.note_receiver_reports(conn, &report.reports);
            } else if let Some(report) = any.downcast_ref::<SenderReport>() {
                self.note_receiver_reports(conn, &report.reports);
                sender_reports = true;
            }
        }
        if sender_reports {
            // The publisher's sender reports: for layer switches, and quoted
            // by the receiver reports its feedback sends back.
            self.note_sender_reports(conn, &packets);
            if let Some(peer) = self.peers.get_mut(&conn) {
                peer.feedback.on_rtcp(&packets, now);
            }
        }
    }

    /// The forwarded track `conn` receives as `ssrc`.
    fn sent_track(&self, conn: ConnKey, ssrc: u32) -> Option<TrackKey> {
        Some(self.peers.get(&conn)?.sent.get(&ssrc)?.track)
    }

    /// A subscriber's PLI or FIR: a keyframe of the encoding it gets (the
    /// first when none yet).
    fn keyframe_requested(&mut self, conn: ConnKey, ssrc: u32, now: Instant) {
        let Some(key) = self.sent_track(conn, ssrc) else {
            return;
        };
        add(&self.stats.keyframe_requests_in, 1);
        let layer = self
            .tracks
            .get(&key)
            .and_then(|t| t.down_tracks.iter().find(|d| d.subscriber == conn))
            .and_then(|d| d.layer)
            .unwrap_or(0);
        self.request_keyframe(key, layer, now);
    }

    /// The loss a subscriber reports for the streams it receives (the
    /// operator's `loss_to_client`).
    fn note_receiver_reports(&mut self, conn: ConnKey, reports: &[ReceptionReport]) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        for report in reports {
            if let Some(stream) = peer.sent.get_mut(&report.ssrc) {
                stream.fraction_lost = Some(f64::from(report.fraction_lost) / 256.0);
            }
        }
    }

    /// Transport-wide congestion feedback is about everything the fast path
    /// sent this connection, whichever stream the packet names.
    fn congestion_feedback(
        &mut self,
        conn: ConnKey,
        packets: &[Box<dyn rtcp::Packet>],
        now: Instant,
    ) {
        let Some(writer) = self
            .peers
            .get_mut(&conn)
            .and_then(|p| p.fast_writer.as_mut())
        else {
            return;
        };
        for packet in packets {
            if let Some(feedback) = packet.as_any().downcast_ref::<TransportLayerCc>() {
                writer.on_feedback(feedback, now);
            }
        }
    }

    pub(super) fn retransmit(
        &mut self,
        conn: ConnKey,
        key: TrackKey,
        nack: &TransportLayerNack,
        now: Instant,
        send: Send<'_>,
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
            down_tracks,
            layers,
            codec,
            ..
        } = track;
        let codec = *codec;
        let (Some(dt), Some(sub)) = (
            down_tracks.iter_mut().find(|d| d.subscriber == conn),
            peers.get_mut(&conn),
        ) else {
            return;
        };
        let bytes_before = dt.bytes_sent;
        let mut out = sub.rtp_writer(send);
        let fast = out.is_fast();
        if !fast {
            Self::mark_dirty(dirty, conn);
        }
        for pair in &nack.nacks {
            for seq in pair.packet_list() {
                match dt.retransmit(&mut out, seq, layers, codec, now) {
                    Retransmission::Sent => {
                        add(&stats.retransmissions, 1);
                        if fast {
                            add(&stats.datagrams_out, 1);
                        }
                    }
                    Retransmission::OverBudget => add(&stats.retransmissions_skipped, 1),
                    Retransmission::Unavailable => {
                        tracing::debug!(track = key, out_seq = seq, "NACKed packet not resent");
                    }
                }
            }
        }
        add(&stats.bytes_out, dt.bytes_sent - bytes_before);
    }
}
