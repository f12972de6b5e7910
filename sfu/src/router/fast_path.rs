//! Switching a connection's forwarded media to the fast path when it comes
//! up, and the sender reports the fast path owes its subscribers.

use super::*;
use crate::fast_writer::FastWriter;
use crate::sender_report::SENDER_REPORT_INTERVAL;
use crate::srtp_gcm_open::{self, OpenError};
use crate::srtp_session::SrtpSession;
use rtc::crypto::default_provider;

/// Consecutive authentication failures after which a connection's RTP goes
/// back to rtc's pipeline (see `Peer::inbound_failures`). A client never
/// sends that many bad packets in a row unless our keys are wrong.
const INBOUND_FAILURE_LIMIT: u32 = 32;

impl Router {
    /// The connection is up, so DTLS has derived its SRTP keys: rebuild them
    /// for the fast path. A connection whose keys cannot be recovered keeps
    /// rtc's pipeline for life (switching later would risk protecting one
    /// packet index twice), and is counted.
    pub(super) fn start_fast_path(&mut self, conn: ConnKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.fast_writer.is_some() {
            return; // Connected again after a disconnection: same keys.
        }
        let records = peer.srtp_keys.take();
        let session = match (records, default_provider()) {
            (Some(records), Ok(provider)) => SrtpSession::from_records(&records, provider.crypto()),
            (None, _) => Err("more key derivations than one handshake makes".to_owned()),
            (_, Err(err)) => Err(err.to_string()),
        };
        match session {
            Ok(session) => {
                tracing::debug!(participant = %peer.participant, profile = ?session.profile, "fast path on");
                let (writer, inbound) = FastWriter::new(session);
                peer.fast_writer = Some(writer);
                peer.inbound_srtp = Some(inbound);
                add(&self.stats.fast_path_connections, 1);
                self.next_sender_reports
                    .get_or_insert(now + SENDER_REPORT_INTERVAL);
            }
            Err(reason) => {
                tracing::warn!(participant = %peer.participant, %reason, "SRTP keys not recovered: forwarded media stays on rtc's pipeline");
                add(&self.stats.fast_path_refused, 1);
            }
        }
    }

    /// Reads an RTP datagram from a publisher without rtc's pipeline when the
    /// connection's keys are known and its SSRC is a published stream's:
    /// check and decrypt it with our own context (replay window as rtc's),
    /// then forward it. False leaves the datagram to rtc: RTCP, a stream rtc
    /// has not bound yet (rtc binds it and tells the router, see `publish`),
    /// or a connection without recovered keys. A datagram refused here is
    /// dropped and counted, as rtc would have.
    pub(super) fn read_rtp_directly(
        &mut self,
        conn: ConnKey,
        data: &[u8],
        now: Instant,
        send: Send<'_>,
    ) -> bool {
        // RTCP packet types 192-223 share the RTP range (RFC 5761).
        match data.get(1) {
            Some(192..=223) => return self.read_rtcp_directly(conn, data, now, send),
            None => return false,
            Some(_) => {}
        }
        let Some(peer) = self.peers.get_mut(&conn) else {
            return false;
        };
        let Some(srtp) = peer.inbound_srtp.as_mut() else {
            return false;
        };
        let Some(&key) = srtp_gcm_open::rtp_ssrc(data).and_then(|ssrc| peer.inbound.get(&ssrc))
        else {
            return false;
        };
        let opened = srtp.open_rtp(data);
        if let Some(packet) = Self::inbound_checked(peer, &self.stats, opened) {
            add(&self.stats.rtp_in_direct, 1);
            self.forward_track(conn, key, packet, now, send);
        }
        true
    }

    /// Reads an SRTCP datagram from a connection whose keys are known,
    /// without rtc's pipeline: about 1 datagram in 10 a shard reads at a
    /// fan-out of 50 is a subscriber's transport-wide feedback or receiver
    /// report, and rtc moved each through its read pipeline and a drive of
    /// the connection. rtc keeps none of it: its interceptors here only tap
    /// RTCP for us and write sender reports, and its statistics of the
    /// reports are replaced by `SentStream::fraction_lost`.
    fn read_rtcp_directly(
        &mut self,
        conn: ConnKey,
        data: &[u8],
        now: Instant,
        send: Send<'_>,
    ) -> bool {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return false;
        };
        let Some(srtp) = peer.inbound_srtp.as_mut() else {
            return false;
        };
        let opened = srtp.open_rtcp(data);
        let Some(plain) = Self::inbound_checked(peer, &self.stats, opened) else {
            return true;
        };
        match rtcp::packet::unmarshal(&mut &plain[..]) {
            Ok(packets) => {
                add(&self.stats.rtcp_in_direct, 1);
                self.handle_rtcp(conn, packets, now, send);
            }
            Err(err) => {
                add(&self.stats.dropped_datagrams, 1);
                tracing::trace!(%err, "RTCP refused");
            }
        }
        true
    }

    /// The outcome of our SRTP check of a client datagram. One it refused
    /// (authentication or replay) is dropped and counted; keys that keep
    /// failing send the connection's RTP and RTCP back to rtc's pipeline,
    /// in case they were wrong after all.
    fn inbound_checked<T>(
        peer: &mut Peer,
        stats: &ShardStats,
        opened: Result<T, OpenError>,
    ) -> Option<T> {
        let err = match opened {
            Ok(plain) => {
                peer.inbound_failures = 0;
                return Some(plain);
            }
            Err(err) => err,
        };
        add(&stats.dropped_datagrams, 1);
        match err {
            // Authentic: not a sign of wrong keys, and no SRTP refusal.
            OpenError::Unparsable => peer.inbound_failures = 0,
            OpenError::Replay => add(&stats.srtp_rejected, 1),
            OpenError::Refused => {
                add(&stats.srtp_rejected, 1);
                peer.inbound_failures += 1;
                if peer.inbound_failures >= INBOUND_FAILURE_LIMIT {
                    tracing::warn!(participant = %peer.participant, "SRTP keeps failing with the recovered keys: RTP and RTCP back to rtc's pipeline");
                    peer.inbound_srtp = None;
                    add(&stats.fast_path_refused, 1);
                }
            }
        }
        tracing::trace!(?err, "SRTP refused");
        None
    }

    /// Every stream the fast path sends gets its sender report, written
    /// through rtc (all RTCP is protected by rtc's context).
    pub(super) fn send_sender_reports(&mut self, now: Instant) {
        let Router {
            peers,
            tracks,
            dirty,
            ..
        } = self;
        for track in tracks.values() {
            for dt in &track.down_tracks {
                let Some(sub) = peers.get_mut(&dt.subscriber) else {
                    continue;
                };
                if sub.fast_writer.is_none() {
                    continue;
                }
                let Some(report) = dt.sender_reports.report(dt.ssrc, now) else {
                    continue;
                };
                if let Some(mut sender) = sub.pc.rtp_sender(dt.sender_id) {
                    if let Err(err) = sender.write_rtcp(now, vec![Box::new(report)]) {
                        tracing::debug!(%err, "sender report");
                    }
                    Self::mark_dirty(dirty, dt.subscriber);
                }
            }
        }
        let any = peers.values().any(|p| p.fast_writer.is_some());
        self.next_sender_reports = any.then_some(now + SENDER_REPORT_INTERVAL);
        self.publish_bandwidth_gauges(now);
    }
}
