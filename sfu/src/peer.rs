//! One participant's server-side peer connection and its negotiation.

use crate::client_hello_repeats::ClientHelloRepeats;
use crate::command::NegotiationError;
use crate::down_track::RtpWriter;
use crate::early_dtls::EarlyDtls;
use crate::engine;
use crate::events::{ConnectionState, EventSink, IceCandidate, MediaEvent, ParticipantId};
use crate::fast_writer::{FastWriter, SendDatagram};
use crate::negotiator::Negotiator;
use crate::publisher_feedback::PublisherFeedback;
use crate::srtp_key_tap::TappedKeys;
use crate::srtp_session::InboundSrtp;
use crate::track::TrackKey;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverId};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

pub struct Peer {
    pub participant: ParticipantId,
    pub room: String,
    pub pc: RTCPeerConnection,
    pub ufrag: String,
    pub sink: Box<dyn EventSink>,
    pub negotiator: Negotiator,
    /// Tracks this participant publishes, by the receiver track id webrtc-rs
    /// tags their packets with.
    pub published: HashMap<String, TrackKey>,
    /// The server's recvonly sections for the microphone and camera; a video
    /// track arriving on any other section (a client's own offer) is a
    /// screen share, or the camera of a client that offers its own
    /// (`router::screen_share::is_screen_share`).
    pub publish_sections: Vec<RTCRtpTransceiverId>,
    /// The `noom` data channel the server created in its first offer.
    pub data_channel: Option<rtc::data_channel::RTCDataChannelId>,
    pub data_open: bool,
    /// A data message read while a receiver was behind, relayed first once
    /// the room drains (see `Router::drain_data`).
    pub held_data: Option<rtc::data_channel::RTCDataChannelMessage>,
    /// File transfers this participant is sending, by transfer id.
    pub transfers: HashMap<u32, crate::transfer::Transfer>,
    /// Tracks of this participant's previous connection, waiting for this
    /// connection's tracks of the same kind (see `Router::restart`).
    pub adoptable: Vec<TrackKey>,
    /// Forwarding m-sections whose track went away, free for the next
    /// forwarded track of the same kind (keeps the SDP from growing with
    /// every join and leave).
    pub free_senders: Vec<(RtpCodecKind, RTCRtpSenderId)>,
    /// Tracks forwarded to this participant, by sender track id.
    pub subscribed: HashMap<String, TrackKey>,
    /// Remote addresses learned for this connection (socket index, address).
    pub routes: Vec<(usize, SocketAddr)>,
    pub next_timeout: Option<Instant>,
    /// Our host candidates, trickled once after the first offer (they are in
    /// the SDP as well, for clients that do not trickle).
    untrickled_candidates: Vec<RTCIceCandidateInit>,
    /// ClientHellos this connection has taken in, so repeats stay out of
    /// rtc-dtls (see `ClientHelloRepeats`).
    pub client_hellos: ClientHelloRepeats,
    /// DTLS datagrams that came before ICE selected a pair, for the
    /// connection to read once it has (see `EarlyDtls`).
    pub early_dtls: EarlyDtls,
    /// The DTLS/ICE connection is up on our side.
    pub connected: bool,
    /// The client has sent SRTP, SRTCP or DTLS application data, so its
    /// side of the handshake is done too (see `media_flows`).
    pub client_keys_ready: bool,
    /// The SRTP master keys rtc derived (see `srtp_key_tap`).
    pub srtp_keys: TappedKeys,
    /// Forwarded media goes out here once the keys are known; `None` keeps
    /// it on rtc's sender (before `connected`, or for life if the keys could
    /// not be recovered).
    pub fast_writer: Option<FastWriter>,
    /// Where rtc last sent a non-STUN datagram for this connection: the
    /// selected ICE pair (rtc addresses DTLS, SCTP and RTCP by it), which the
    /// fast path follows.
    pub media_route: Option<(usize, SocketAddr)>,
    /// Checks the client's SRTP once the keys are known, so its RTP is read
    /// without rtc's pipeline (see `Router::read_rtp_directly`).
    pub inbound_srtp: Option<InboundSrtp>,
    /// Consecutive packets that failed authentication with `inbound_srtp`
    /// (replays excluded): too many and the connection's RTP goes back to
    /// rtc, in case the recovered keys were wrong after all.
    pub inbound_failures: u32,
    /// The published track behind each SSRC the client sends, for RTP read
    /// directly.
    pub inbound: crate::FastMap<u32, TrackKey>,
    /// The forwarded track behind each SSRC the server sends this client,
    /// which its RTCP names (NACK, PLI, FIR, receiver reports).
    pub sent: crate::FastMap<u32, SentStream>,
    /// NACKs, congestion feedback and receiver reports for what this
    /// participant publishes.
    pub feedback: PublisherFeedback,
    /// A receiver of this connection to write that feedback through.
    pub feedback_receiver: Option<RTCRtpReceiverId>,
    /// rtc's own next timeout (`next_timeout` includes the feedback's).
    pub pc_timeout: Option<Instant>,
    pub state: ConnectionState,
    /// Ask this participant to publish its camera as simulcast (see
    /// `simulcast_offer`).
    pub simulcast: bool,
    /// Where the client's send-side estimate starts, in kbit/s; 0 = its own
    /// (see `start_bitrate`).
    pub start_kbps: u32,
}

/// A stream the server sends a client, as the client's RTCP names it.
pub struct SentStream {
    pub track: TrackKey,
    /// The loss the client reported for it last (receiver report, 0-1).
    pub fraction_lost: Option<f64>,
}

/// The `a=msid` line of the recvonly section the client publishes its camera
/// into (the placeholder sender's stream and track ids, see `Peer::new`).
const PUBLISH_VIDEO_MSID: &str = "a=msid:- publish-video";

fn random_token(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

impl Peer {
    /// May forwarded media go to this client? Both sides must hold the SRTP
    /// keys. As the DTLS server we finish when the client's Finished
    /// arrives, before the client has read ours: packets sent at once can
    /// reach a client that cannot decrypt them yet, and a client that reads
    /// a burst of datagrams before it applies the handshake's outcome
    /// (webrtc-rs' driver) or that lost our Finished drops them. Losing the
    /// cached keyframe that way left a new subscriber black until the
    /// publisher's next keyframe. Every client sends something protected as
    /// soon as it is done (its SCTP INIT for the room's data channel, its
    /// media, its RTCP), so this waits about one round trip at most.
    pub fn media_flows(&self) -> bool {
        self.connected && self.client_keys_ready
    }

    pub fn new(
        participant: ParticipantId,
        room: String,
        sink: Box<dyn EventSink>,
        announced: &[SocketAddr],
        ice_tcp: bool,
        now: Instant,
    ) -> Result<Peer, NegotiationError> {
        let ufrag = random_token(16);
        let pwd = random_token(32);
        let engine::BuiltConnection {
            mut pc,
            candidates: local_candidates,
            srtp_keys,
        } = engine::build_peer_connection(&ufrag, &pwd, announced, ice_tcp, now)
            .map_err(|e| NegotiationError::Rejected(e.to_string()))?;
        // The m-sections the client publishes its microphone and camera into.
        // Each gets a placeholder sender that never sends (the section stays
        // recvonly): webrtc-rs' `add_track` reuses the first same-kind
        // transceiver without a sender, and these must never be the ones
        // reused for a forwarded track (see `Router::subscribe`).
        let mut publish_sections = Vec::new();
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            let codec = engine::codecs()
                .into_iter()
                .find(|(_, k)| *k == kind)
                .map(|(c, _)| c.rtp_codec)
                .expect("one codec per kind");
            let placeholder = MediaStreamTrack::new(
                "-".to_owned(),
                format!("publish-{kind}"),
                format!("publish-{kind}"),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(rand::random::<u32>()),
                        ..Default::default()
                    },
                    codec,
                    ..Default::default()
                }],
            );
            let id = pc
                .add_transceiver_from_track(
                    placeholder,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Sendrecv,
                        streams: vec![],
                        send_encodings: vec![],
                    }),
                )
                .map_err(|e| NegotiationError::Rejected(e.to_string()))?;
            if let Some(mut transceiver) = pc.rtp_transceiver(id) {
                transceiver.set_direction(RTCRtpTransceiverDirection::Recvonly);
                // Every codec of the kind, in the table's order (VP8 before
                // H.264): the placeholder's encoding alone would offer one.
                transceiver
                    .set_codec_preferences(engine::codecs_of(kind))
                    .map_err(|e| NegotiationError::Rejected(e.to_string()))?;
            }
            publish_sections.push(id);
        }
        // The room's data channel (chat and files, relayed by the server).
        let data_channel = pc
            .create_data_channel("noom", None)
            .map(|dc| dc.id())
            .map_err(|e| NegotiationError::Rejected(e.to_string()))?;
        let mut negotiator = Negotiator::default();
        negotiator.mark_changed();
        Ok(Peer {
            participant,
            room,
            pc,
            ufrag,
            sink,
            negotiator,
            published: HashMap::new(),
            publish_sections,
            free_senders: Vec::new(),
            data_channel: Some(data_channel),
            data_open: false,
            held_data: None,
            transfers: HashMap::new(),
            adoptable: Vec::new(),
            subscribed: HashMap::new(),
            routes: Vec::new(),
            next_timeout: None,
            untrickled_candidates: local_candidates,
            client_hellos: ClientHelloRepeats::default(),
            early_dtls: EarlyDtls::default(),
            connected: false,
            client_keys_ready: false,
            srtp_keys,
            fast_writer: None,
            media_route: None,
            inbound_srtp: None,
            inbound_failures: 0,
            inbound: Default::default(),
            sent: Default::default(),
            feedback: PublisherFeedback::default(),
            feedback_receiver: None,
            pc_timeout: None,
            state: ConnectionState::Connecting,
            simulcast: false,
            start_kbps: 0,
        })
    }

    /// Sends an offer if changes are pending and none is outstanding.
    pub fn offer_if_needed(&mut self, now: Instant) {
        if !self.negotiator.should_offer() {
            return;
        }
        let offer = match self.pc.create_offer(None) {
            Ok(offer) => offer,
            Err(err) => {
                tracing::warn!(participant = %self.participant, %err, "create_offer failed");
                return;
            }
        };
        if let Err(err) = self.pc.set_local_description(now, offer.clone()) {
            tracing::warn!(participant = %self.participant, %err, "set_local_description failed");
            return;
        }
        let mut sdp = self
            .pc
            .local_description()
            .map(|d| d.sdp)
            .unwrap_or(offer.sdp);
        if self.simulcast {
            // rtc accepts only its own text as the local offer, and needs
            // the rid lines only in the answer (which binds the encodings):
            // the client's copy carries them. Every offer does, not only
            // the first: an offer without them would take simulcast away.
            sdp = crate::simulcast_offer::add_simulcast_recv(&sdp, PUBLISH_VIDEO_MSID);
        }
        // Also only in the client's copy: rtc has no use for it.
        sdp = crate::start_bitrate::add_start_bitrate(&sdp, PUBLISH_VIDEO_MSID, self.start_kbps);
        self.negotiator.offer_sent();
        self.sink.deliver(MediaEvent::Offer { sdp });
        for candidate in std::mem::take(&mut self.untrickled_candidates) {
            self.sink.deliver(MediaEvent::Candidate(IceCandidate {
                candidate: candidate.candidate,
                // One BUNDLE transport: every candidate belongs to the first
                // m-section (webrtc-rs leaves the mid empty here).
                sdp_mid: Some(
                    candidate
                        .sdp_mid
                        .filter(|mid| !mid.is_empty())
                        .unwrap_or_else(|| "0".to_owned()),
                ),
                sdp_mline_index: Some(candidate.sdp_mline_index.unwrap_or(0)),
                username_fragment: Some(self.ufrag.clone()),
            }));
        }
    }

    pub fn apply_answer(&mut self, sdp: String, now: Instant) -> Result<(), NegotiationError> {
        if !self.negotiator.offer_outstanding() {
            return Err(NegotiationError::NoOfferOutstanding);
        }
        // webrtc-rs accepts an answer whose m-sections differ from the
        // offer (a stale answer to an earlier offer, say); the contract needs
        // it refused so the real answer can still be applied.
        let offer = self
            .pc
            .local_description()
            .map(|d| d.sdp)
            .unwrap_or_default();
        if !answers_offer(&offer, &sdp) {
            return Err(NegotiationError::Rejected(format!(
                "the answer's m-sections {:?} do not match the outstanding offer's {:?}",
                mids(&sdp),
                mids(&offer)
            )));
        }
        // Only the server's own offers ask for simulcast.
        let sdp = if self.simulcast {
            crate::simulcast_offer::drop_unbacked_simulcast(&sdp)
        } else {
            sdp
        };
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| NegotiationError::Rejected(e.to_string()))?;
        self.pc
            .set_remote_description(now, answer)
            .map_err(|e| NegotiationError::Rejected(e.to_string()))?;
        self.negotiator.answered();
        Ok(())
    }

    /// Answers an offer the client made. The server's own offer wins glare.
    pub fn apply_client_offer(
        &mut self,
        sdp: String,
        now: Instant,
    ) -> Result<(), NegotiationError> {
        if self.negotiator.offer_outstanding() {
            return Err(NegotiationError::Glare);
        }
        let offer = RTCSessionDescription::offer(sdp)
            .map_err(|e| NegotiationError::Rejected(e.to_string()))?;
        let setup = crate::dtls_setup::server_setup(
            self.pc.local_description().as_ref(),
            self.pc.remote_description(),
        );
        self.pc
            .set_remote_description(now, offer)
            .map_err(|e| NegotiationError::Rejected(e.to_string()))?;
        let answer = self
            .pc
            .create_answer(None)
            .map_err(|e| NegotiationError::Rejected(e.to_string()))?;
        self.pc
            .set_local_description(now, answer.clone())
            .map_err(|e| NegotiationError::Rejected(e.to_string()))?;
        let sdp = self
            .pc
            .local_description()
            .map(|d| d.sdp)
            .unwrap_or(answer.sdp);
        let sdp = match setup {
            Some(setup) => crate::dtls_setup::with_setup(&sdp, setup),
            None => sdp,
        };
        self.sink.deliver(MediaEvent::Answer { sdp });
        Ok(())
    }

    pub fn add_candidate(
        &mut self,
        candidate: Option<IceCandidate>,
    ) -> Result<(), NegotiationError> {
        let Some(candidate) = candidate else {
            return Ok(()); // End of candidates: nothing to do for a full-ICE server.
        };
        if let Some(mid) = &candidate.sdp_mid {
            let known = self
                .pc
                .local_description()
                .map(|d| {
                    d.sdp
                        .lines()
                        .any(|l| l.strip_prefix("a=mid:") == Some(mid.as_str()))
                })
                .unwrap_or(false);
            if !known {
                return Err(NegotiationError::UnknownMid(mid.clone()));
            }
        }
        if candidate.candidate.is_empty() {
            return Ok(()); // An empty candidate string also ends the candidates.
        }
        self.pc
            .add_remote_candidate(RTCIceCandidateInit {
                candidate: candidate.candidate,
                sdp_mid: candidate.sdp_mid,
                sdp_mline_index: candidate.sdp_mline_index,
                username_fragment: candidate.username_fragment,
                ..Default::default()
            })
            .map_err(|e| NegotiationError::Rejected(e.to_string()))
    }

    pub fn refresh_timeout(&mut self) {
        self.pc_timeout = self.pc.poll_timeout();
        self.refresh_feedback_timeout();
    }

    /// After the feedback generators saw a packet (rtc's timeout unchanged).
    pub fn refresh_feedback_timeout(&mut self) {
        self.next_timeout = match (self.pc_timeout, self.feedback.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// How forwarded packets reach this participant: the fast path once its
    /// keys and route are known, rtc's sender otherwise.
    pub fn rtp_writer<'a, 'b>(&'a mut self, send: SendDatagram<'b>) -> RtpWriter<'a, 'b> {
        match (&mut self.fast_writer, self.media_route) {
            (Some(writer), Some(route)) => RtpWriter::Fast {
                writer,
                route,
                send,
            },
            _ => RtpWriter::Rtc(&mut self.pc),
        }
    }

    /// Writes the feedback generators' RTCP through rtc; true if any.
    pub fn send_feedback(&mut self, now: Instant) -> bool {
        let messages = self.feedback.poll_rtcp();
        if messages.is_empty() {
            return false;
        }
        let Some(mut receiver) = self
            .feedback_receiver
            .and_then(|id| self.pc.rtp_receiver(id))
        else {
            return false;
        };
        for packets in messages {
            if let Err(err) = receiver.write_rtcp(now, packets) {
                tracing::debug!(%err, "publisher feedback RTCP");
            }
        }
        true
    }
}

/// An answer matches an offer when it has as many m-sections and every mid
/// it names is the offer's mid at the same position (a rejected section may
/// omit its mid).
fn answers_offer(offer: &str, answer: &str) -> bool {
    let sections = |sdp: &str| -> Vec<Option<String>> {
        let mut out: Vec<Option<String>> = Vec::new();
        for line in sdp.lines().map(str::trim_end) {
            if line.starts_with("m=") {
                out.push(None);
            } else if let (Some(mid), Some(last)) = (line.strip_prefix("a=mid:"), out.last_mut()) {
                *last = Some(mid.to_owned());
            }
        }
        out
    };
    let (offered, answered) = (sections(offer), sections(answer));
    offered.len() == answered.len()
        && offered
            .iter()
            .zip(&answered)
            .all(|(o, a)| a.is_none() || a == o)
}

/// The `a=mid` values of an SDP, in order.
fn mids(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|line| line.trim_end().strip_prefix("a=mid:"))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_must_match_the_offer_sections() {
        let offer =
            "v=0\r\nm=audio 9 x\r\na=mid:0\r\nm=video 9 x\r\na=mid:1\r\nm=audio 9 x\r\na=mid:2\r\n";
        assert!(answers_offer(offer, offer));
        let rejected_without_mid =
            "v=0\r\nm=audio 9 x\r\na=mid:0\r\nm=video 9 x\r\na=mid:1\r\nm=audio 0 x\r\n";
        assert!(answers_offer(offer, rejected_without_mid));
        let stale = "v=0\r\nm=audio 9 x\r\na=mid:0\r\nm=video 9 x\r\na=mid:1\r\n";
        assert!(!answers_offer(offer, stale));
        let reordered =
            "v=0\r\nm=audio 9 x\r\na=mid:1\r\nm=video 9 x\r\na=mid:0\r\nm=audio 9 x\r\na=mid:2\r\n";
        assert!(!answers_offer(offer, reordered));
        assert!(!answers_offer(offer, "garbage"));
    }
}
