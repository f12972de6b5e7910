//! How every server-side peer connection is built: codecs, header extensions,
//! interceptors, ICE credentials and host candidates.
//!
//! All connections share one codec table, so a track published on one
//! connection can be forwarded on any other without transcoding: Opus for
//! audio; VP8 for video (the codec every WebRTC browser sends and decodes),
//! then H.264 constrained baseline in packetization mode 1 for a publisher
//! that cannot send VP8 (or prefers H.264, e.g. for a hardware encoder).
//! Offers list them in that order, so a browser that can do both publishes
//! VP8; each published track keeps the codec its publisher chose (see
//! `video_codec` and docs/protocol.md, "Video codecs").

use crate::rtcp_tap::RtcpTap;
use crate::srtp_key_tap::{KeyTap, TappedKeys};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::{Registry, SenderReportBuilder, Slot};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::{
    SctpMaxMessageSize, SettingEngineBuilder,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sdp::extmap::{
    AUDIO_LEVEL_URI, SDES_MID_URI, SDES_RTP_STREAM_ID_URI, TRANSPORT_CC_URI, VIDEO_ORIENTATION_URI,
};
use rtc::shared::error::Result;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Beyond the built-in slots (the sender-report interceptor is at 11,000), so
/// the tap sees RTCP after the chain has done its own bookkeeping.
const RTCP_TAP_SLOT: usize = 14_000;

/// How often the ICE agent runs its connectivity checks while connecting
/// (rtc-ice's default is 200 ms): a nomination waits for the next tick, and
/// the server reads the browser's DTLS only after it (see `early_dtls`). Only
/// while connecting: once connected, rtc-ice ticks every 200 ms at most.
/// 20 ms instead of 50 took the Chromium join -> first frame median from
/// 227 to 206 ms and p90 from 290 to 274 ms (benches/RESULTS.md, "Join ->
/// first frame: early ClientHello").
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);
/// Unanswered checks before a pair is given up: ten times rtc-ice's 7, so
/// the faster ticks still allow the same 1.4 s for a slow path.
const ICE_MAX_BINDING_REQUESTS: u16 = 70;

/// H.264 as every WebRTC browser can decode it: constrained baseline
/// (42e0), level 3.1, non-interleaved (FU-A/STAP-A) packetization.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// RTCP feedback type of transport-wide congestion control.
const TYPE_TRANSPORT_CC: &str = "transport-cc";

fn feedback(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    }
}

/// The RTCP feedback (type, parameter) a publisher's stream of `kind`
/// negotiates: the codec's, and transport-wide congestion feedback.
pub fn stream_feedback(kind: RtpCodecKind) -> Vec<(String, String)> {
    let mut feedback: Vec<(String, String)> = Vec::new();
    let all = codecs()
        .into_iter()
        .filter(|(_, k)| *k == kind)
        .flat_map(|(c, _)| c.rtp_codec.rtcp_feedback)
        .map(|f| (f.typ, f.parameter))
        .chain([(TYPE_TRANSPORT_CC.to_owned(), String::new())]);
    // Both video codecs negotiate the same feedback: list it once.
    for f in all {
        if !feedback.contains(&f) {
            feedback.push(f);
        }
    }
    feedback
}

/// RTCP feedback every video codec negotiates.
fn video_feedback() -> Vec<RTCPFeedback> {
    vec![
        feedback("goog-remb", ""),
        feedback("ccm", "fir"),
        feedback("nack", ""),
        feedback("nack", "pli"),
    ]
}

/// The table's codecs of `kind`, in offer order.
pub fn codecs_of(kind: RtpCodecKind) -> Vec<RTCRtpCodecParameters> {
    codecs()
        .into_iter()
        .filter(|(_, k)| *k == kind)
        .map(|(c, _)| c)
        .collect()
}

/// The codec table shared by every connection.
pub fn codecs() -> Vec<(RTCRtpCodecParameters, RtpCodecKind)> {
    vec![
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        ),
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_VP8.to_owned(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: video_feedback(),
                },
                payload_type: 96,
            },
            RtpCodecKind::Video,
        ),
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_H264.to_owned(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: H264_FMTP.to_owned(),
                    rtcp_feedback: video_feedback(),
                },
                payload_type: 102,
            },
            RtpCodecKind::Video,
        ),
    ]
}

fn media_engine_and_interceptors() -> Result<(MediaEngine, Registry)> {
    let mut media_engine = MediaEngine::default();
    for (codec, kind) in codecs() {
        media_engine.register_codec(codec, kind)?;
    }
    for (uri, kind) in [
        (AUDIO_LEVEL_URI, RtpCodecKind::Audio),
        (VIDEO_ORIENTATION_URI, RtpCodecKind::Video),
        (TRANSPORT_CC_URI, RtpCodecKind::Audio),
        (TRANSPORT_CC_URI, RtpCodecKind::Video),
        // Simulcast: rtc binds a layer by the mid and rid its first packets
        // carry (no a=ssrc lines describe rid-based encodings).
        (SDES_MID_URI, RtpCodecKind::Video),
        (SDES_RTP_STREAM_ID_URI, RtpCodecKind::Video),
    ] {
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            kind,
            None,
        )?;
    }
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        media_engine.register_feedback(feedback(TYPE_TRANSPORT_CC, ""), kind);
    }
    // Only what rtc's own pipeline still carries: our RTCP tap (subscribers'
    // feedback reaches the router) and sender reports for a connection
    // whose forwarded media stays on rtc (see `srtp_key_tap`). Feedback to
    // publishers (NACKs, transport-wide congestion feedback, receiver
    // reports) is generated by the router for every publisher packet,
    // whichever path it took (see `PublisherFeedback`); NACKs from
    // subscribers are answered from our own cache (see `PacketCache`).
    let registry = Registry::new()
        .with(Slot::from(RTCP_TAP_SLOT), RtcpTap::default())
        .with(Slot::SenderReport, SenderReportBuilder::new().build());
    Ok((media_engine, registry))
}

/// SRTP profiles the server accepts, most preferred first (rtc's default
/// order). The 32-bit-tag profile is left out: its key derivation cannot be
/// told from the 80-bit one's, and the key tap must know the profile (see
/// `srtp_session`); every browser offers one of these.
fn srtp_profiles() -> Vec<SrtpProtectionProfile> {
    vec![
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
    ]
}

/// A server-side connection and what it needs beside it.
pub struct BuiltConnection {
    pub pc: RTCPeerConnection,
    /// Our host candidates, for trickling.
    pub candidates: Vec<RTCIceCandidateInit>,
    /// The SRTP master keys, once DTLS derived them (see `srtp_key_tap`).
    pub srtp_keys: TappedKeys,
}

/// Builds a peer connection answering STUN for `ufrag`/`pwd`, with one host
/// candidate per announced address, and with `ice_tcp` a passive TCP one on
/// the same address and port (the shard listens there, see `tcp_media`).
pub fn build_peer_connection(
    ufrag: &str,
    pwd: &str,
    announced: &[SocketAddr],
    ice_tcp: bool,
    now: Instant,
) -> Result<BuiltConnection> {
    let (media_engine, registry) = media_engine_and_interceptors()?;
    let (crypto_provider, srtp_keys) =
        KeyTap::provider().map_err(|e| rtc::shared::error::Error::Other(e.to_string()))?;
    // The server has host candidates only and nothing better will turn up:
    // nominate the first working pair at once. (`None` here means
    // rtc-ice's default wait, one second for peer-reflexive candidates,
    // which is what a browser's first check creates when it arrives
    // before its trickled candidate; that second was most of a join.)
    let setting_engine = SettingEngineBuilder::new()
        .with_ice_credentials(ufrag.to_owned(), pwd.to_owned())
        .with_crypto_provider(crypto_provider)
        .with_srtp_protection_profiles(srtp_profiles())
        .with_host_acceptance_min_wait(Some(Duration::ZERO))
        .with_srflx_acceptance_min_wait(Some(Duration::ZERO))
        .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
        .with_relay_acceptance_min_wait(Some(Duration::ZERO))
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_BINDING_REQUESTS))
        // A client's `<uuid>.local` host candidate (Firefox's default) is left
        // alone: its checks reach us and become a peer-reflexive candidate.
        // rtc-ice's default would multicast an mDNS query from the media
        // socket for it, whose answer goes to 224.0.0.251:5353 where we do
        // not listen: it never resolves and ends as an ERROR log per query.
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        // Small data-channel messages keep what a blocked sender can make
        // the server hold small in bytes (data_frame::MAX_MESSAGE_BYTES).
        .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(
            crate::data_frame::MAX_SERVER_FRAME_BYTES as u32,
        ))
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)?;
    let mut candidates = Vec::with_capacity(announced.len() * 2);
    let networks: &[&str] = if ice_tcp { &["udp", "tcp"] } else { &["udp"] };
    for network in networks {
        for addr in announced {
            let candidate = CandidateHostConfig {
                base_config: CandidateConfig {
                    network: (*network).to_owned(),
                    address: addr.ip().to_string(),
                    port: addr.port(),
                    component: 1,
                    ..Default::default()
                },
                tcp_type: if *network == "tcp" {
                    TcpType::Passive
                } else {
                    TcpType::Unspecified
                },
            }
            .new_candidate_host()?;
            let init = RTCIceCandidate::from(&candidate).to_json()?;
            pc.add_local_candidate(init.clone())?;
            candidates.push(init);
        }
    }
    Ok(BuiltConnection {
        pc,
        candidates,
        srtp_keys,
    })
}
