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
//!
//! Every packet leaving here carries the connection's transport-wide
//! sequence number (when the subscriber negotiated the extension) and is
//! remembered by the connection's bandwidth estimator, whose feedback the
//! router hands in (see `bwe`).
//!
//! While the subscriber's link shows congestion, packets wait in its
//! `Pacer` as marshalled plaintext; the transport-wide sequence number and
//! SRTP are applied when a packet leaves, so the estimator sees the real
//! send times and SRTP indexes go out in order.

use crate::bwe::{RetransmitBudget, SendSideBwe};
use crate::pacer::{Pacer, CONGESTION_LOSS};
use crate::srtp_session::{InboundSrtp, Outbound, SrtpSession};
use bytes::Bytes;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtp;
use rtc::rtp::header::{Extension, EXTENSION_PROFILE_ONE_BYTE, EXTENSION_PROFILE_TWO_BYTE};
use rtc::shared::marshal::{Marshal, MarshalSize};
use std::net::SocketAddr;
use std::time::Instant;

/// IPv4 and UDP headers: the link carries them too, so the estimate counts
/// them (a link limited to 500 kbit/s delivers about 470 kbit/s of 1,200-byte
/// datagrams).
const IP_UDP_OVERHEAD: usize = 28;

/// Where a datagram goes: socket index, remote address, bytes.
pub type SendDatagram<'a> = &'a mut dyn FnMut(usize, SocketAddr, &[u8]);

/// A connection's outbound SRTP, once its keys are known.
pub struct FastWriter {
    srtp: Outbound,
    /// Reused between packets: the marshalled plaintext.
    plaintext: Vec<u8>,
    /// Reused between packets: a header extension list with room for the
    /// transport-wide slot (a forwarded header's own list is usually
    /// empty, and growing it allocated once per packet and subscriber).
    extensions: Vec<Extension>,
    /// The estimate toward this subscriber, fed by what is sent here and
    /// by its transport-wide feedback.
    pub bwe: SendSideBwe,
    /// What NACK answers toward this subscriber may still send.
    pub retransmit_budget: RetransmitBudget,
    pacer: Pacer<PacedPacket>,
    /// Buffers of packets that left the pacer, reused for the next ones.
    spare: Vec<Vec<u8>>,
    /// Of the pacer's total, what `take_newly_paced` has reported.
    paced_counted: u64,
}

/// A packet waiting in the pacer: marshalled, not yet numbered or
/// protected.
struct PacedPacket {
    plaintext: Vec<u8>,
    /// The header as marshalled (with the sequence number slot, if any):
    /// SRTP takes the stream and index from it.
    header: rtp::Header,
    /// Where the transport-wide sequence number goes, if stamped.
    stamp_at: Option<usize>,
    route: (usize, SocketAddr),
}

/// At most this many spare buffers are kept.
const MAX_SPARE: usize = 64;

impl FastWriter {
    /// Takes the outbound half of `session`; the inbound half is returned
    /// for whoever reads the client's SRTP.
    pub fn new(session: SrtpSession) -> (Self, InboundSrtp) {
        let writer = FastWriter {
            srtp: session.local,
            plaintext: Vec::with_capacity(1500),
            extensions: Vec::with_capacity(8),
            bwe: SendSideBwe::default(),
            retransmit_budget: RetransmitBudget::default(),
            pacer: Pacer::default(),
            spare: Vec::new(),
            paced_counted: 0,
        };
        let inbound = InboundSrtp {
            rtp: session.remote_rtp,
            context: session.remote,
        };
        (writer, inbound)
    }

    /// Takes the subscriber's transport-wide feedback into the estimate,
    /// and turns pacing on if the link shows congestion.
    pub fn on_feedback(&mut self, feedback: &TransportLayerCc, now: Instant) {
        self.bwe.on_feedback(feedback, now);
        let stats = self.bwe.stats();
        let congested = stats.usage == crate::bwe::Usage::Overusing
            || stats.loss.is_some_and(|l| l > CONGESTION_LOSS);
        self.pacer
            .on_estimate(stats.estimate_bps, congested && crate::pacer::ENABLED, now);
    }

    /// When paced packets are next due (None: none waiting).
    pub fn next_paced_release(&self) -> Option<Instant> {
        self.pacer.next_release()
    }

    /// Packets the pacer held back since the last call (for a counter).
    pub fn take_newly_paced(&mut self) -> u64 {
        let total = self.pacer.queued_total();
        let new = total - self.paced_counted;
        self.paced_counted = total;
        new
    }

    /// Drops the packets of stream `ssrc` still waiting in the pacer; how
    /// many. For a down track that leaves an encoding: what is queued of
    /// the old one would only delay the new encoding's keyframe on a link
    /// already too slow for it, and is never repaired (see
    /// `DownTrack::retransmit`).
    pub fn drop_paced(&mut self, ssrc: u32) -> usize {
        let spare = &mut self.spare;
        self.pacer.drop_where(
            |p| p.header.ssrc == ssrc,
            |p| {
                if spare.len() < MAX_SPARE {
                    spare.push(p.plaintext);
                }
            },
        )
    }

    /// Sends the paced packets that are due; how many left.
    pub fn release_paced(&mut self, send: SendDatagram<'_>, now: Instant) -> usize {
        let mut released = 0;
        while let Some(mut paced) = self.pacer.pop(now) {
            released += 1;
            let outgoing = Outgoing {
                plaintext: &mut paced.plaintext,
                header: &paced.header,
                stamp_at: paced.stamp_at,
                route: paced.route,
            };
            let sealed = seal_and_send(&mut self.srtp, &mut self.bwe, outgoing, send, now);
            if let Err(err) = sealed {
                tracing::debug!(%err, "paced write");
            }
            if self.spare.len() < MAX_SPARE {
                self.spare.push(paced.plaintext);
            }
        }
        released
    }

    /// May a NACK answer of about `bytes` go out now (see
    /// `RetransmitBudget`)?
    pub fn allow_retransmission(&mut self, bytes: usize, now: Instant) -> bool {
        let estimate = self.bwe.estimate_bps();
        self.retransmit_budget.take(bytes, estimate, now)
    }

    /// Stamps `packet` with the next transport-wide sequence number (as
    /// header extension `transport_cc_id`, the subscriber's id for it in the
    /// packet's m-section; None stamps nothing), protects it and sends it
    /// on `route`; the datagram's length. The packet is left as it came.
    pub fn write_rtp(
        &mut self,
        packet: &mut rtp::Packet,
        transport_cc_id: Option<u8>,
        route: (usize, SocketAddr),
        send: SendDatagram<'_>,
        now: Instant,
    ) -> Result<usize, String> {
        let Some(id) = transport_cc_id else {
            return self.marshal_and_protect(packet, None, false, route, send, now);
        };
        // The packet's extensions, in our list that has room for the slot.
        let mut extensions = std::mem::take(&mut self.extensions);
        extensions.clear();
        extensions.extend(packet.header.extensions.iter().cloned());
        let own = std::mem::replace(&mut packet.header.extensions, extensions);
        let stamp = TransportSeqSlot::insert(&mut packet.header, id);
        let result = self.marshal_and_protect(packet, stamp.as_ref(), false, route, send, now);
        if let Some(slot) = stamp {
            slot.remove(&mut packet.header);
        }
        self.extensions = std::mem::replace(&mut packet.header.extensions, own);
        result
    }

    /// Sends a padding-only packet (a bandwidth probe): `packet`'s payload
    /// is the padding (see [`padding_payload`]) and the header's padding
    /// bit is set on the wire. rtc's marshaller cannot write it: it pads
    /// only to a multiple of four after a payload.
    pub fn write_padding(
        &mut self,
        mut packet: rtp::Packet,
        transport_cc_id: Option<u8>,
        route: (usize, SocketAddr),
        send: SendDatagram<'_>,
        now: Instant,
    ) -> Result<usize, String> {
        packet.header.padding = false;
        let stamp = transport_cc_id.and_then(|id| TransportSeqSlot::insert(&mut packet.header, id));
        self.marshal_and_protect(&packet, stamp.as_ref(), true, route, send, now)
    }

    fn marshal_and_protect(
        &mut self,
        packet: &rtp::Packet,
        stamp: Option<&TransportSeqSlot>,
        padding_only: bool,
        route: (usize, SocketAddr),
        send: SendDatagram<'_>,
        now: Instant,
    ) -> Result<usize, String> {
        let size = packet.marshal_size();
        self.plaintext.resize(size, 0);
        let written = packet
            .marshal_to(&mut self.plaintext[..])
            .map_err(|e| format!("marshal: {e}"))?;
        if padding_only {
            self.plaintext[0] |= 0x20;
        }
        let stamp_at = stamp.map(|slot| slot.payload_offset(&packet.header));
        self.plaintext.truncate(written);
        if self.pacer.is_pacing(now) {
            let mut plaintext = self.spare.pop().unwrap_or_default();
            plaintext.clear();
            plaintext.extend_from_slice(&self.plaintext[..written]);
            let paced = PacedPacket {
                plaintext,
                header: packet.header.clone(),
                stamp_at,
                route,
            };
            self.pacer.push(paced, written + IP_UDP_OVERHEAD, now);
            self.release_paced(send, now);
            return Ok(written);
        }
        let outgoing = Outgoing {
            plaintext: &mut self.plaintext,
            header: &packet.header,
            stamp_at,
            route,
        };
        seal_and_send(&mut self.srtp, &mut self.bwe, outgoing, send, now)
    }
}

/// A marshalled packet on its way out.
struct Outgoing<'a> {
    /// The marshalled packet, exactly; protected in place when the
    /// profile allows (the buffer then holds the datagram).
    plaintext: &'a mut Vec<u8>,
    /// The header as marshalled: SRTP takes the stream and index from it.
    header: &'a rtp::Header,
    /// Where the transport-wide sequence number goes, if stamped.
    stamp_at: Option<usize>,
    route: (usize, SocketAddr),
}

/// Numbers (when `stamp_at` says where), protects and sends one marshalled
/// packet, and tells the estimator; the datagram's length.
fn seal_and_send(
    srtp: &mut Outbound,
    bwe: &mut SendSideBwe,
    out: Outgoing<'_>,
    send: SendDatagram<'_>,
    now: Instant,
) -> Result<usize, String> {
    let Outgoing {
        plaintext,
        header,
        stamp_at,
        route,
    } = out;
    let seq = stamp_at.map(|at| {
        let seq = bwe.next_sequence();
        plaintext[at..at + 2].copy_from_slice(&(seq as u16).to_be_bytes());
        seq
    });
    let sealed = srtp.protect(plaintext, header);
    let protected: &[u8] = match &sealed {
        Ok(Some(protected)) => protected,
        Ok(None) => plaintext.as_slice(),
        Err(e) => {
            if let Some(seq) = seq {
                bwe.on_sent(seq, 0, now);
            }
            return Err(format!("protect: {e}"));
        }
    };
    send(route.0, route.1, protected);
    if let Some(seq) = seq {
        bwe.on_sent(seq, (protected.len() + IP_UDP_OVERHEAD) as u32, now);
    }
    Ok(protected.len())
}

/// The payload of a padding-only packet with `size` bytes of padding: zeros,
/// the last byte their count (RFC 3550, section 5.1).
pub fn padding_payload(size: u8) -> Bytes {
    let size = size.max(1);
    let mut bytes = vec![0u8; size as usize];
    bytes[size as usize - 1] = size;
    Bytes::from(bytes)
}

/// The transport-wide sequence number extension put first in a header
/// (so its bytes sit at a fixed offset) with a placeholder value that is
/// overwritten in the marshalled bytes: no allocation per packet.
struct TransportSeqSlot {
    had_extension: bool,
    profile: u16,
}

impl TransportSeqSlot {
    fn insert(header: &mut rtp::Header, id: u8) -> Option<Self> {
        let slot = TransportSeqSlot {
            had_extension: header.extension,
            profile: header.extension_profile,
        };
        if !header.extension {
            header.extension = true;
            header.extension_profile = EXTENSION_PROFILE_ONE_BYTE;
        }
        let fits = match header.extension_profile {
            EXTENSION_PROFILE_ONE_BYTE => (1..=14).contains(&id),
            EXTENSION_PROFILE_TWO_BYTE => id >= 1,
            _ => false,
        };
        if !fits {
            header.extension = slot.had_extension;
            header.extension_profile = slot.profile;
            return None;
        }
        header.extensions.insert(
            0,
            Extension {
                id,
                payload: Bytes::from_static(&[0, 0]),
            },
        );
        Some(slot)
    }

    /// Where the sequence number's two bytes are in the marshalled packet.
    fn payload_offset(&self, header: &rtp::Header) -> usize {
        let element_header = match header.extension_profile {
            EXTENSION_PROFILE_ONE_BYTE => 1,
            _ => 2,
        };
        12 + 4 * header.csrc.len() + 4 + element_header
    }

    fn remove(self, header: &mut rtp::Header) {
        header.extensions.remove(0);
        header.extension = self.had_extension;
        header.extension_profile = self.profile;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Unmarshal;

    fn stamped(mut packet: rtp::Packet, id: u8, seq: u16) -> (rtp::Packet, rtp::Packet) {
        let original = packet.clone();
        let slot = TransportSeqSlot::insert(&mut packet.header, id).expect("fits");
        let mut buf = vec![0u8; packet.marshal_size()];
        packet.marshal_to(&mut buf).unwrap();
        let at = slot.payload_offset(&packet.header);
        buf[at..at + 2].copy_from_slice(&seq.to_be_bytes());
        slot.remove(&mut packet.header);
        assert_eq!(packet, original, "the packet is left as it came");
        (rtp::Packet::unmarshal(&mut &buf[..]).unwrap(), original)
    }

    #[test]
    fn stamps_the_sequence_number_with_and_without_other_extensions() {
        let bare = rtp::Packet {
            header: rtp::Header {
                ssrc: 7,
                sequence_number: 100,
                csrc: vec![1, 2],
                ..Default::default()
            },
            payload: Bytes::from_static(b"video"),
        };
        let (wire, _) = stamped(bare, 5, 0xABCD);
        assert_eq!(
            wire.header.get_extension(5).unwrap().as_ref(),
            &[0xAB, 0xCD]
        );
        assert_eq!(wire.payload.as_ref(), b"video");

        let mut with_level = rtp::Packet {
            header: rtp::Header {
                ssrc: 7,
                ..Default::default()
            },
            payload: Bytes::from_static(b"opus"),
        };
        with_level
            .header
            .set_extension(1, Bytes::from_static(&[0x85]))
            .unwrap();
        let (wire, _) = stamped(with_level, 3, 42);
        assert_eq!(wire.header.get_extension(3).unwrap().as_ref(), &[0, 42]);
        assert_eq!(wire.header.get_extension(1).unwrap().as_ref(), &[0x85]);
    }

    #[test]
    fn a_padding_packet_reads_back_as_padding_only() {
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                ssrc: 7,
                sequence_number: 9,
                ..Default::default()
            },
            payload: padding_payload(255),
        };
        let mut buf = vec![0u8; packet.marshal_size()];
        packet.marshal_to(&mut buf).unwrap();
        buf[0] |= 0x20; // As `marshal_and_protect` does for padding.
        assert_eq!(buf.len(), 12 + 255);
        let read = rtp::Packet::unmarshal(&mut &buf[..]).unwrap();
        assert!(read.header.padding);
        assert!(read.payload.is_empty(), "no payload: a decoder skips it");
        assert_eq!(read.header.sequence_number, 9);
    }

    #[test]
    fn an_id_the_one_byte_form_cannot_carry_is_not_stamped() {
        let mut header = rtp::Header::default();
        assert!(TransportSeqSlot::insert(&mut header, 15).is_none());
        assert_eq!(header, rtp::Header::default());
    }
}
