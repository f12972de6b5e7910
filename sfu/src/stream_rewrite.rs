//! What one subscriber's stream makes of one publisher packet: the
//! temporal layer filter (VP8), then the sequence-number and timestamp
//! mapping, then the VP8 descriptor's picture ids. One function for the
//! packet path (`DownTrack::send`) and for the tests that replay recorded
//! packet sequences through it (`temporal_layer_tests`).

use crate::rtp_munger::RtpMunger;
use crate::vp8_descriptor::{Vp8Descriptor, Vp8Munger};
use bytes::Bytes;
use rtc::rtp;
use std::time::Instant;

/// The outgoing sequence number, timestamp and payload of `packet`, or
/// `None` when this subscriber does not get it. `vp8`: the subscriber's
/// VP8 state, for a VP8 video (`None` for audio and other codecs).
pub fn rewrite_packet(
    munger: &mut RtpMunger,
    vp8: Option<&mut Vp8Munger>,
    packet: &rtp::Packet,
    now: Instant,
) -> Option<(u16, u32, Bytes)> {
    let header = &packet.header;
    let Some(vp8) = vp8 else {
        let (seq, ts) = munger.map(header.sequence_number, header.timestamp, now)?;
        return Some((seq, ts, packet.payload.clone()));
    };
    let descriptor = Vp8Descriptor::parse(&packet.payload);
    if !vp8.admit(descriptor.as_ref()) {
        // Above the subscriber's temporal layer: its number is left out
        // (no gap), and a retransmission of it is refused too.
        munger.drop_packet(header.sequence_number, header.timestamp, now);
        return None;
    }
    let (seq, ts) = munger.map(header.sequence_number, header.timestamp, now)?;
    Some((
        seq,
        ts,
        vp8.rewrite_parsed(&packet.payload, descriptor.as_ref()),
    ))
}
