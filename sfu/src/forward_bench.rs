//! The forwarding of one published video track, driven packet by packet,
//! for the criterion benchmarks (`benches/benches/per_packet.rs`; not part
//! of the API). Per publisher packet it takes the router's steps (see
//! `Router::forward_rtp`): find the encoding by SSRC, observe the packet
//! (packet and keyframe caches, picture size), build the layer selector's
//! view of the encodings, then `DownTrack::forward` for every subscriber on
//! the fast path: pick the encoding, switch at a keyframe, map sequence
//! number and timestamp, rewrite the VP8 descriptor, marshal and SRTP
//! protect. The datagrams go nowhere. `receive` takes the steps before
//! it as well (`Router::read_rtp_directly`): check and decrypt the
//! publisher's SRTP datagram, parse it, and after forwarding hand it to
//! the publisher's feedback generators (NACK, transport-wide congestion,
//! receiver reports). Not measured here: statistics and the system calls.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

use crate::down_track::{DownTrack, RtpWriter};
use crate::fast_writer::FastWriter;
use crate::publisher_feedback::PublisherFeedback;
use crate::rtp_rewriter::RtpRewriter;
use crate::srtp_session::{InboundSrtp, Outbound, SrtpSession};
use crate::track::PublishedTrack;
use rtc::shared::marshal::Marshal;

/// One VP8 track, its subscribers and their fast-path writers.
pub struct ForwardBench {
    track: PublishedTrack,
    writers: Vec<FastWriter>,
    /// What reads them, as on a publisher's connection.
    inbound: InboundSrtp,
    feedback: PublisherFeedback,
}

/// Seals a publisher's packets into the datagrams `ForwardBench::receive`
/// reads, numbering each with a transport-wide sequence number (extension
/// `PUBLISHER_TRANSPORT_CC_ID`) as browsers do.
pub struct PublisherSide {
    context: Context,
    transport_seq: u16,
}

impl PublisherSide {
    pub fn seal(&mut self, mut packet: rtp::Packet) -> Vec<u8> {
        self.transport_seq = self.transport_seq.wrapping_add(1);
        packet
            .header
            .set_extension(
                PUBLISHER_TRANSPORT_CC_ID,
                bytes::Bytes::copy_from_slice(&self.transport_seq.to_be_bytes()),
            )
            .expect("extension");
        let plain = packet.marshal().expect("marshal");
        self.context.encrypt_rtp(&plain).expect("seal").to_vec()
    }
}

/// The transport-wide sequence number's extension id in the publisher's
/// packets (`receive`).
pub const PUBLISHER_TRANSPORT_CC_ID: u8 = 5;

fn srtp_context(profile: ProtectionProfile) -> Context {
    let provider = rtc::crypto::default_provider().expect("crypto provider");
    let key = vec![7u8; profile.key_len()];
    let salt = vec![9u8; profile.salt_len()];
    Context::new(&key, &salt, profile, None, None, provider.crypto()).expect("srtp context")
}

/// The in-place sealer of the same keys (the fast writer's choice for
/// this profile).
fn srtp_sealer() -> crate::srtp_gcm::GcmSealer {
    let provider = rtc::crypto::default_provider().expect("crypto provider");
    crate::srtp_gcm::GcmSealer::new(provider.crypto(), &[7u8; 16], &[9u8; 12]).expect("sealer")
}

/// The in-place opener of the same keys (a publisher connection's choice
/// for this profile).
fn srtp_opener() -> crate::srtp_gcm_open::GcmOpener {
    let provider = rtc::crypto::default_provider().expect("crypto provider");
    crate::srtp_gcm_open::GcmOpener::new(provider.crypto(), &[7u8; 16], &[9u8; 12]).expect("opener")
}

/// A subscriber's fast writer with AES-128-GCM keys (as webrtc-rs and the
/// browsers negotiate), sealing in place or through rtc's context.
fn writer(in_place: bool) -> FastWriter {
    let profile = ProtectionProfile::AeadAes128Gcm;
    let (writer, _) = FastWriter::new(SrtpSession {
        profile,
        local: if in_place {
            Outbound::InPlace(srtp_sealer())
        } else {
            Outbound::Rtc(srtp_context(profile))
        },
        remote: srtp_context(profile),
        remote_rtp: None,
    });
    writer
}

impl ForwardBench {
    /// A VP8 track with one encoding per `(rid, ssrc)` (one with an empty
    /// rid: no simulcast) forwarded to `subscribers` subscribers whose
    /// answers are negotiated (AES-128-GCM, as webrtc-rs negotiates).
    pub fn new(encodings: &[(&str, u32)], subscribers: usize) -> Self {
        let (first, more) = encodings.split_first().expect("an encoding");
        let mut track = PublishedTrack::new(
            1,
            Default::default(),
            RtpCodecKind::Video,
            false,
            "video/VP8".to_owned(),
            90_000,
            Vec::new(),
            (first.0.to_owned(), first.1),
            Duration::from_millis(500),
        );
        for (rid, ssrc) in more {
            track.add_layer((*rid).to_owned(), *ssrc);
        }
        let mut writers = Vec::new();
        for i in 0..subscribers {
            let ssrc = 0x1000 + i as u32;
            let mut down = DownTrack::new(
                2 + i as u64,
                Default::default(),
                format!("t{i}"),
                ssrc,
                &track,
            );
            down.rewriter = Some(RtpRewriter {
                ssrc,
                payload_type: 96,
                extension_ids: Vec::new(),
                transport_cc_id: None,
            });
            track.down_tracks.push(down);
            writers.push(writer(true));
        }
        let mut feedback = PublisherFeedback::default();
        for (_, ssrc) in encodings {
            feedback.bind(
                *ssrc,
                "video/VP8",
                90_000,
                &[("nack".to_owned(), String::new())],
                &[(
                    rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
                    PUBLISHER_TRANSPORT_CC_ID,
                )],
            );
        }
        let profile = ProtectionProfile::AeadAes128Gcm;
        ForwardBench {
            track,
            writers,
            inbound: InboundSrtp {
                rtp: Some(srtp_opener()),
                context: srtp_context(profile),
            },
            feedback,
        }
    }

    /// The publisher's side of the keys `receive` reads with.
    pub fn publisher() -> PublisherSide {
        PublisherSide {
            context: srtp_context(ProtectionProfile::AeadAes128Gcm),
            transport_seq: 0,
        }
    }

    /// One publisher datagram as the router reads it on the fast path:
    /// checked, decrypted, parsed, forwarded, then fed to the publisher's
    /// feedback generators. The datagrams it made.
    pub fn receive(&mut self, datagram: &[u8], now: Instant) -> u64 {
        let Ok(packet) = self.inbound.open_rtp(datagram) else {
            return 0;
        };
        let sent = self.forward(&packet, now);
        self.feedback.on_rtp(packet, now);
        sent
    }

    /// Protects with rtc-srtp's context instead of the in-place sealer
    /// (`srtp_gcm.rs`), to measure one against the other.
    pub fn use_rtc_srtp(&mut self) {
        for w in &mut self.writers {
            *w = writer(false);
        }
        self.read_with_rtc_srtp();
    }

    /// Reads the publisher's datagrams with rtc-srtp's context instead of
    /// the in-place opener (`srtp_gcm_open.rs`).
    pub fn read_with_rtc_srtp(&mut self) {
        self.inbound.rtp = None;
    }

    /// Numbers every forwarded packet with a transport-wide sequence number
    /// (header extension `id`), as toward a browser.
    pub fn set_transport_cc(&mut self, id: Option<u8>) {
        for down in &mut self.track.down_tracks {
            if let Some(rewriter) = down.rewriter.as_mut() {
                rewriter.transport_cc_id = id;
            }
        }
    }

    /// Subscriber `i` shows the video `height` pixels high (`None`: the
    /// best encoding flowing), as its `layout` message says.
    pub fn set_wanted_height(&mut self, i: usize, height: Option<u32>) {
        self.track.down_tracks[i].selector.wanted_height = height;
    }

    /// One publisher packet through the forwarding path; the datagrams it
    /// made (one per subscriber that gets its encoding).
    pub fn forward(&mut self, packet: &rtp::Packet, now: Instant) -> u64 {
        let Some(layer) = self.track.layer_of(packet.header.ssrc) else {
            return 0;
        };
        self.track.observe(layer, packet, true, now);
        let route = (0, SocketAddr::from((Ipv4Addr::LOCALHOST, 9)));
        let mut bytes = 0usize;
        let mut send = |_: usize, _: SocketAddr, datagram: &[u8]| bytes += datagram.len();
        let (view, down_tracks) = self.track.split(layer, true, now);
        let mut sent = 0;
        for (down, writer) in down_tracks.iter_mut().zip(&mut self.writers) {
            let mut out = RtpWriter::Fast {
                writer,
                route,
                send: &mut send,
            };
            sent += down.forward(&mut out, packet, &view, now).sent;
        }
        sent
    }

    /// Subscriber `i` NACKs its packet `out_seq`.
    #[cfg(test)]
    fn retransmit(
        &mut self,
        i: usize,
        out_seq: u16,
        now: Instant,
    ) -> crate::down_track::Retransmission {
        let route = (0, SocketAddr::from((Ipv4Addr::LOCALHOST, 9)));
        let mut send = |_: usize, _: SocketAddr, _: &[u8]| {};
        let mut out = RtpWriter::Fast {
            writer: &mut self.writers[i],
            route,
            send: &mut send,
        };
        let codec = self.track.codec;
        self.track.down_tracks[i].retransmit(&mut out, out_seq, &self.track.layers, codec, now)
    }

    /// Encoding switches made so far, all subscribers together.
    pub fn layer_switches(&self) -> u64 {
        self.track
            .down_tracks
            .iter()
            .map(|d| d.layer_switches)
            .sum()
    }
}

/// A VP8 RTP packet (payload type 96) for the unit tests that replay
/// packet sequences through a down track.
#[cfg(test)]
pub(crate) fn test_packet(
    ssrc: u32,
    seq: u16,
    ts: u32,
    marker: bool,
    payload: Vec<u8>,
) -> rtp::Packet {
    rtp::Packet {
        header: rtp::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            marker,
            ..Default::default()
        },
        payload: bytes::Bytes::from(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 packet of encoding `ssrc`: a keyframe's first packet (with
    /// the picture size `height` x 16:9), another packet of a frame, or a
    /// delta frame's first packet.
    fn vp8(ssrc: u32, seq: u16, ts: u32, first: Option<(bool, u16)>, marker: bool) -> rtp::Packet {
        let payload = match first {
            Some((true, height)) => {
                let width = height / 9 * 16;
                let [w0, w1] = width.to_le_bytes();
                let [h0, h1] = height.to_le_bytes();
                vec![0x10, 0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, w0, w1, h0, h1]
            }
            Some((false, _)) => vec![0x10, 0x11, 0x00, 0x00, 0xaa],
            None => vec![0x00, 0xbb, 0xbb],
        };
        test_packet(ssrc, seq, ts, marker, payload)
    }

    #[test]
    fn a_switch_between_encodings_keeps_the_old_one_until_the_new_keyframe_is_whole() {
        let (q, h) = (1, 2);
        let mut bench = ForwardBench::new(&[("q", q), ("h", h)], 1);
        let now = Instant::now();
        bench.set_wanted_height(0, Some(180));
        assert_eq!(
            bench.forward(&vp8(q, 100, 0, Some((true, 180)), true), now),
            1
        );
        // h's size becomes known; the 180-high tile stays on q.
        assert_eq!(
            bench.forward(&vp8(h, 500, 0, Some((true, 360)), true), now),
            0
        );

        bench.set_wanted_height(0, Some(360));
        assert_eq!(
            bench.forward(&vp8(q, 101, 3000, Some((false, 0)), true), now),
            1,
            "q until h's keyframe"
        );
        // h's keyframe arrives in three packets, paced out by the publisher:
        // q's pictures keep coming meanwhile.
        assert_eq!(
            bench.forward(&vp8(h, 501, 3000, Some((true, 360)), false), now),
            0
        );
        assert_eq!(bench.forward(&vp8(h, 502, 3000, None, false), now), 0);
        assert_eq!(
            bench.forward(&vp8(q, 102, 6000, Some((false, 0)), true), now),
            1,
            "q while h's keyframe is incomplete"
        );
        // Whole: the keyframe goes out at once, and the switch is made.
        assert_eq!(bench.forward(&vp8(h, 503, 3000, None, true), now), 3);
        assert_eq!(
            bench.forward(&vp8(q, 103, 9000, Some((false, 0)), true), now),
            0,
            "no q after the switch"
        );
        assert_eq!(
            bench.forward(&vp8(h, 504, 6000, Some((false, 0)), true), now),
            1
        );
        assert_eq!(bench.track.down_tracks[0].layer_switches, 1);
    }

    #[test]
    fn nacks_of_an_encoding_left_behind_leave_the_repair_budget_to_the_new_one() {
        use crate::down_track::Retransmission;
        let (q, h) = (1, 2);
        let mut bench = ForwardBench::new(&[("q", q), ("h", h)], 1);
        let now = Instant::now();
        bench.set_wanted_height(0, Some(180));
        bench.forward(&vp8(q, 100, 0, Some((true, 180)), true), now);
        bench.forward(&vp8(h, 500, 0, Some((true, 360)), true), now);
        bench.set_wanted_height(0, Some(360));
        bench.forward(&vp8(h, 501, 3000, Some((true, 360)), true), now);
        assert_eq!(bench.track.down_tracks[0].layer_switches, 1);
        let switched_at = bench.track.down_tracks[0].layer_since().expect("switched");
        let old = switched_at.wrapping_sub(1);
        // The subscriber keeps asking for q's last packet, lost on a link
        // too slow for it: never resent, and never charged (a thousand full
        // packets would be forty times the budget).
        for _ in 0..1000 {
            assert_eq!(bench.retransmit(0, old, now), Retransmission::Unavailable);
        }
        assert_eq!(
            bench.retransmit(0, switched_at, now),
            Retransmission::Sent,
            "h's keyframe is repaired"
        );
    }
}
