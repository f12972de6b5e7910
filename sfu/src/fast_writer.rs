//! Sends forwarded RTP to one subscriber without rtc's write pipeline:
//! marshal, protect with the connection's own SRTP context, hand the
//! datagram to the socket.
//!
//! rtc moves every outgoing packet through its handler and interceptor
//! stages by value, which was 29.5 % of a shard's CPU (benches/RESULTS.md).
//! For forwarded media none of those stages has work the router does not
//! already do (sequence numbers, NACK answers and keyframes are the
//! router's), except sender reports: `SenderReportClock` keeps those.
//! RTCP stays on rtc (its own SRTCP context), so each (key, SSRC, index)
//! is protected by exactly one owner: no nonce is ever reused.

use crate::srtp_session::SrtpSession;
use rtc::rtp;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;
use std::net::SocketAddr;

/// Where a datagram goes: socket index, remote address, bytes.
pub type SendDatagram<'a> = &'a mut dyn FnMut(usize, SocketAddr, &[u8]);

/// A connection's outbound SRTP, once its keys are known.
pub struct FastWriter {
    srtp: Context,
    /// Reused between packets: the marshalled plaintext.
    plaintext: Vec<u8>,
}

impl FastWriter {
    /// Takes the outbound half of `session`; the inbound half is returned
    /// for whoever reads the client's SRTP (today rtc does).
    pub fn new(session: SrtpSession) -> (Self, Context) {
        let writer = FastWriter {
            srtp: session.local,
            plaintext: Vec::with_capacity(1500),
        };
        (writer, session.remote)
    }

    /// Protects `packet` and sends it on `route`; the datagram's length.
    pub fn write_rtp(
        &mut self,
        packet: &rtp::Packet,
        route: (usize, SocketAddr),
        send: SendDatagram<'_>,
    ) -> Result<usize, String> {
        let size = packet.marshal_size();
        self.plaintext.resize(size, 0);
        let written = packet
            .marshal_to(&mut self.plaintext[..])
            .map_err(|e| format!("marshal: {e}"))?;
        let protected = self
            .srtp
            .encrypt_rtp_with_header(&self.plaintext[..written], &packet.header)
            .map_err(|e| format!("protect: {e}"))?;
        send(route.0, route.1, &protected);
        Ok(protected.len())
    }
}
