//! The feedback a publisher gets about the media it sends: NACKs for lost
//! packets, transport-wide congestion feedback (its bandwidth estimate) and
//! receiver reports.
//!
//! These were interceptors inside rtc's read pipeline. Publisher packets now
//! reach the router without that pipeline once the connection's SRTP keys
//! are known (`Router::read_rtp_directly`), so the same public rtc
//! interceptors run here instead, standalone, fed with every publisher
//! packet whichever way it came (the first packets of a stream still pass
//! through rtc, which binds the stream), and with the publisher's sender
//! reports (receiver reports quote them for round-trip time). Their RTCP
//! goes out through rtc, on its SRTCP context.

use rtc::interceptor::{
    AttributedPacket, Interceptor, NackGeneratorBuilder, Packet, RTCPFeedback, RTPHeaderExtension,
    ReceiverReportBuilder, StreamInfo, TaggedPacket, TwccReceiverBuilder,
};
use rtc::rtcp;
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use std::time::Instant;

/// One publisher connection's feedback generators.
///
/// Each is fed directly, not through rtc's `Registry` chain: the chain
/// moved every packet through a fourth, no-op stage and a queue allocated
/// per packet, about a third of what the generators cost (perf, rooms of
/// 4, 2026-12-03); none of the three changes or holds what it reads, and
/// none reads what another writes.
pub struct PublisherFeedback {
    generators: [Box<dyn Interceptor>; 3],
    /// Bound streams, to unbind them by SSRC.
    streams: Vec<StreamInfo>,
}

impl Default for PublisherFeedback {
    fn default() -> Self {
        PublisherFeedback {
            generators: [
                Box::new(NackGeneratorBuilder::new().build()),
                Box::new(TwccReceiverBuilder::new().build()),
                Box::new(ReceiverReportBuilder::new().build()),
            ],
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
        let info = StreamInfo {
            ssrc,
            mime_type: mime_type.to_owned(),
            clock_rate,
            rtcp_feedback: feedback
                .iter()
                .map(|(typ, parameter)| RTCPFeedback {
                    typ: typ.clone(),
                    parameter: parameter.clone(),
                })
                .collect(),
            rtp_header_extensions: extensions
                .iter()
                .map(|(uri, id)| RTPHeaderExtension {
                    uri: uri.clone(),
                    id: *id as u16,
                })
                .collect(),
            ..Default::default()
        };
        for generator in &mut self.generators {
            generator.bind_remote_stream(&info);
        }
        self.streams.push(info);
    }

    pub fn unbind(&mut self, ssrc: u32) {
        if let Some(i) = self.streams.iter().position(|s| s.ssrc == ssrc) {
            let info = self.streams.swap_remove(i);
            for generator in &mut self.generators {
                generator.unbind_remote_stream(&info);
            }
        }
    }

    /// A packet from the publisher arrived.
    pub fn on_rtp(&mut self, packet: rtp::Packet, now: Instant) {
        self.read(Packet::Rtp(packet), now);
    }

    /// RTCP from the publisher (its sender reports).
    pub fn on_rtcp(&mut self, packets: Vec<Box<dyn rtcp::Packet>>, now: Instant) {
        self.read(Packet::Rtcp(packets), now);
    }

    fn read(&mut self, packet: Packet, now: Instant) {
        let mut message = TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(packet),
        };
        for generator in &mut self.generators {
            if let Err(err) = generator.handle_read(message) {
                tracing::debug!(%err, "publisher feedback");
            }
            // Each hands the packet back as it was; the router has it.
            match generator.poll_read() {
                Some(back) => message = back,
                None => return,
            }
            while generator.poll_read().is_some() {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for generator in &mut self.generators {
            if let Err(err) = generator.handle_timeout(now) {
                tracing::debug!(%err, "publisher feedback timeout");
            }
        }
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.generators
            .iter_mut()
            .filter_map(|g| g.poll_timeout())
            .min()
    }

    /// RTCP the generators want sent to the publisher, one message per
    /// generator output (kept apart as rtc sent them).
    pub fn poll_rtcp(&mut self) -> Vec<Vec<Box<dyn rtcp::Packet>>> {
        let mut out = Vec::new();
        for generator in &mut self.generators {
            while let Some(message) = generator.poll_write() {
                if let Packet::Rtcp(packets) = message.message.packet {
                    out.push(packets);
                }
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
