//! The feedback a publisher gets about the media it sends: NACKs for lost
//! packets, transport-wide congestion feedback (its bandwidth estimate) and
//! receiver reports.
//!
//! These were interceptors inside rtc's read pipeline. Publisher packets now
//! reach the router without that pipeline once the connection's SRTP keys
//! are known (`Router::read_rtp_directly`), so the generators run here
//! instead, fed with every publisher packet whichever way it came (the
//! first packets of a stream still pass through rtc, which binds the
//! stream). NACKs and receiver reports are ours ([`NackRequests`],
//! [`ReceiverReports`], which say why); transport-wide feedback is rtc's
//! public interceptor, standalone. Receiver reports also read the
//! publisher's sender reports (they quote them for round-trip time). The
//! RTCP goes out through rtc, on its SRTCP context.

use rtc::interceptor::{
    AttributedPacket, Interceptor, Packet, RTPHeaderExtension, StreamInfo, TaggedPacket,
    TwccReceiverBuilder,
};
use rtc::rtcp;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use std::time::Instant;

use crate::nack_requests::NackRequests;
use crate::receiver_reports::ReceiverReports;

/// One publisher connection's feedback generators.
pub struct PublisherFeedback {
    nacks: NackRequests,
    /// rtc's transport-wide congestion feedback, fed directly rather than
    /// through rtc's `Registry` chain (a no-op stage and a queue allocated
    /// per packet).
    twcc: Box<dyn Interceptor>,
    reports: ReceiverReports,
    /// Our generators' RTCP made at the last timeout, until polled.
    due: Vec<Vec<Box<dyn rtcp::Packet>>>,
    /// Streams bound in `twcc`, to unbind them by SSRC.
    streams: Vec<StreamInfo>,
}

impl Default for PublisherFeedback {
    fn default() -> Self {
        PublisherFeedback {
            nacks: NackRequests::default(),
            twcc: Box::new(TwccReceiverBuilder::new().build()),
            reports: ReceiverReports::default(),
            due: Vec::new(),
            streams: Vec::new(),
        }
    }
}

impl PublisherFeedback {
    /// Starts reporting on a published stream. `feedback` lists the RTCP
    /// feedback its codec negotiated (NACKs only where it says `nack`),
    /// `extensions` its header extensions (transport-wide sequence numbers
    /// by their negotiated id).
    pub fn bind(
        &mut self,
        ssrc: u32,
        mime_type: &str,
        clock_rate: u32,
        feedback: &[(String, String)],
        extensions: &[(String, u8)],
    ) {
        self.unbind(ssrc);
        if feedback
            .iter()
            .any(|(typ, parameter)| typ == "nack" && parameter.is_empty())
        {
            self.nacks.bind(ssrc);
        }
        self.reports.bind(ssrc, clock_rate);
        let info = StreamInfo {
            ssrc,
            mime_type: mime_type.to_owned(),
            clock_rate,
            rtp_header_extensions: extensions
                .iter()
                .map(|(uri, id)| RTPHeaderExtension {
                    uri: uri.clone(),
                    id: *id as u16,
                })
                .collect(),
            ..Default::default()
        };
        self.twcc.bind_remote_stream(&info);
        self.streams.push(info);
    }

    pub fn unbind(&mut self, ssrc: u32) {
        self.nacks.unbind(ssrc);
        self.reports.unbind(ssrc);
        if let Some(i) = self.streams.iter().position(|s| s.ssrc == ssrc) {
            let info = self.streams.swap_remove(i);
            self.twcc.unbind_remote_stream(&info);
        }
    }

    /// A packet from the publisher arrived.
    pub fn on_rtp(&mut self, packet: rtp::Packet, now: Instant) {
        let header = &packet.header;
        self.nacks.on_rtp(header.ssrc, header.sequence_number, now);
        self.reports
            .on_rtp(header.ssrc, header.sequence_number, header.timestamp, now);
        let message = TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)),
        };
        if let Err(err) = self.twcc.handle_read(message) {
            tracing::debug!(%err, "publisher feedback");
        }
        // It hands the packet back as it was; the router has it.
        while self.twcc.poll_read().is_some() {}
    }

    /// RTCP from the publisher: its sender reports count (the generators
    /// read no other RTCP).
    pub fn on_rtcp(&mut self, packets: &[Box<dyn rtcp::Packet>], now: Instant) {
        for report in packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
        {
            self.reports.on_sender_report(report, now);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(err) = self.twcc.handle_timeout(now) {
            tracing::debug!(%err, "publisher feedback timeout");
        }
        for nack in self.nacks.handle_timeout(now) {
            self.due.push(vec![Box::new(nack)]);
        }
        for report in self.reports.handle_timeout(now) {
            self.due.push(vec![Box::new(report)]);
        }
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.nacks.poll_timeout(),
            self.twcc.poll_timeout(),
            self.reports.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// RTCP the generators want sent to the publisher, one message per
    /// generator output (kept apart as rtc sent them).
    pub fn poll_rtcp(&mut self) -> Vec<Vec<Box<dyn rtcp::Packet>>> {
        let mut out = std::mem::take(&mut self.due);
        while let Some(message) = self.twcc.poll_write() {
            if let Packet::Rtcp(packets) = message.message.packet {
                out.push(packets);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
    use std::time::Duration;

    fn packet(seq: u16) -> rtp::Packet {
        rtp::Packet {
            header: rtp::Header {
                version: 2,
                ssrc: 42,
                sequence_number: seq,
                timestamp: seq as u32 * 3000,
                payload_type: 96,
                ..Default::default()
            },
            payload: vec![0u8; 10].into(),
        }
    }

    fn video() -> PublisherFeedback {
        let mut feedback = PublisherFeedback::default();
        feedback.bind(
            42,
            "video/VP8",
            90_000,
            &[("nack".into(), String::new())],
            &[],
        );
        feedback
    }

    /// Runs the generators' timers for `span` from `start`, collecting RTCP.
    fn run(
        f: &mut PublisherFeedback,
        start: Instant,
        span: Duration,
    ) -> Vec<Box<dyn rtcp::Packet>> {
        let mut out = Vec::new();
        let mut now = start;
        while now < start + span {
            now = f.poll_timeout().unwrap_or(now + span).max(now);
            f.handle_timeout(now);
            out.extend(f.poll_rtcp().into_iter().flatten());
            now += Duration::from_millis(1);
        }
        out
    }

    #[test]
    fn a_gap_is_nacked_and_streams_get_receiver_reports() {
        let mut f = video();
        let start = Instant::now();
        for seq in [1u16, 2, 3, 5, 6] {
            f.on_rtp(packet(seq), start);
        }
        let out = run(&mut f, start, Duration::from_secs(2));
        let nacked: Vec<u16> = out
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
            .flat_map(|n| n.nacks.iter().flat_map(|pair| pair.packet_list()))
            .collect();
        assert!(nacked.contains(&4), "NACKed {nacked:?}");
        assert!(!nacked.iter().any(|s| [1, 2, 3, 5, 6].contains(s)));
        let reported = out
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<ReceiverReport>())
            .flat_map(|r| r.reports.iter().map(|b| b.ssrc))
            .any(|ssrc| ssrc == 42);
        assert!(reported, "no receiver report about the stream");
    }

    #[test]
    fn an_unbound_stream_gets_nothing() {
        let mut f = video();
        f.unbind(42);
        let start = Instant::now();
        for seq in [1u16, 3] {
            f.on_rtp(packet(seq), start);
        }
        assert!(run(&mut f, start, Duration::from_secs(2)).is_empty());
    }
}
