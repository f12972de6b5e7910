//! Switching a connection's forwarded media to the fast path when it comes
//! up, and the sender reports the fast path owes its subscribers.

use super::*;
use crate::fast_writer::FastWriter;
use crate::sender_report::SENDER_REPORT_INTERVAL;
use crate::srtp_session::SrtpSession;
use rtc::crypto::default_provider;

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
                let (writer, _inbound) = FastWriter::new(session);
                peer.fast_writer = Some(writer);
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
    }
}
