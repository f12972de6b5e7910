//! Building a `webrtc` peer connection the way every Noom client does:
//! Opus and VP8 only, the default interceptors, UDP over IPv4 on one bound
//! address, no mDNS, no ICE servers; plus the synthetic publishing tracks and
//! the payload types negotiated for them. [`crate::MediaPeer`] uses these, and
//! so can an endpoint whose signaling is not Noom's (the load generator's
//! Janus client).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, Registry, SettingEngineBuilder,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit, RtpTransceiver};

use crate::rtcp_feedback::{RtcpToApp, RTCP_TAP_SLOT};
use crate::rtp_synth::{opus_codec, vp8_codec};
use crate::socket_tap::{UdpWrap, WrappedUdpRuntime};
use crate::MediaKind;

/// How to build one peer connection.
#[derive(Clone)]
pub struct PeerSetup {
    /// The one address to bind and gather on. A concrete address is bound as
    /// given, loopback included (then loopback candidates are offered).
    pub bind_ip: IpAddr,
    /// Deliver inbound RTCP to the application (see
    /// [`crate::rtcp_feedback`]).
    pub rtcp_to_app: bool,
    /// Wrap the UDP socket (diagnostics, kernel stamps).
    pub udp: Option<Arc<dyn UdpWrap>>,
    /// Negotiate the mid and rid header extensions on video, which a
    /// simulcast publisher's first packets carry (see
    /// [`crate::simulcast_publish`]).
    pub simulcast: bool,
}

/// A peer connection with Noom's codecs, events going to `handler`.
pub async fn build_peer_connection(
    setup: &PeerSetup,
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> Result<Arc<dyn PeerConnection>> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus_codec(),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    media_engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: vp8_codec(),
            payload_type: 96,
        },
        RtpCodecKind::Video,
    )?;
    if setup.simulcast {
        rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers(
            &mut media_engine,
        )?;
    }
    let base = if setup.rtcp_to_app {
        Registry::new().with(
            rtc::interceptor::Slot::from(RTCP_TAP_SLOT),
            RtcpToApp::default(),
        )
    } else {
        Registry::new()
    };
    let registry = register_default_interceptors(base, &mut media_engine)?;
    // IPv4 UDP candidates, no mDNS socket or .local names, no ICE servers:
    // nothing leaves the chosen address.
    let setting_engine = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_network_types(vec![NetworkType::Udp4])
        .with_include_loopback_candidate(setup.bind_ip.is_loopback())
        .build();
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(vec![])
        .build();
    let mut builder = PeerConnectionBuilder::new();
    if let Some(udp) = &setup.udp {
        builder = builder.with_runtime(Arc::new(WrappedUdpRuntime::new(Arc::clone(udp))));
    }
    let pc = builder
        .with_configuration(config)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(setting_engine)
        .with_handler(handler)
        .with_udp_addrs(vec![SocketAddr::new(setup.bind_ip, 0).to_string()])
        .build()
        .await?;
    Ok(Arc::new(pc))
}

/// One local track we publish and its transceiver.
pub struct LocalTrack {
    pub kind: MediaKind,
    pub ssrc: u32,
    pub track: Arc<TrackLocalStaticRTP>,
    pub transceiver: Arc<dyn RtpTransceiver>,
}

impl LocalTrack {
    fn mime(&self) -> &'static str {
        match self.kind {
            MediaKind::Audio => rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS,
            MediaKind::Video => rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8,
        }
    }

    /// The payload type negotiated for this track's codec.
    pub async fn negotiated_payload_type(&self) -> Result<u8> {
        let kind = self.kind.sdp_name();
        let sender = self
            .transceiver
            .sender()
            .await
            .context("transceiver sender")?
            .ok_or_else(|| anyhow!("our {kind} transceiver lost its sender"))?;
        let params = sender
            .get_parameters()
            .await
            .context("sender get_parameters")?;
        let mime = self.mime();
        params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            .map(|c| c.payload_type)
            .ok_or_else(|| {
                anyhow!(
                    "no {mime} negotiated on our {kind} sender; codecs: {:?}",
                    params
                        .rtp_parameters
                        .codecs
                        .iter()
                        .map(|c| format!("{}/{}", c.rtp_codec.mime_type, c.payload_type))
                        .collect::<Vec<_>>()
                )
            })
    }
}

/// Adds an audio (Opus) and a video (VP8) track with the given SSRCs, each
/// on a `sendonly` transceiver without a mid. Applying a Noom offer pairs
/// them with its `recvonly` audio / video m-sections (never with the
/// `sendonly` sections that carry other participants' tracks); for an
/// offer we create ourselves they become its first two sections.
pub async fn add_local_tracks(
    pc: &Arc<dyn PeerConnection>,
    label: &str,
    stream_id: &str,
    (audio_ssrc, video_ssrc): (u32, u32),
) -> Result<[LocalTrack; 2]> {
    add_tracks(pc, label, stream_id, audio_ssrc, &[("", video_ssrc)]).await
}

/// [`add_local_tracks`] with the video as one coding per `(rid, ssrc)`
/// (simulcast: rtc then answers the server's rid lines with them).
pub async fn add_tracks(
    pc: &Arc<dyn PeerConnection>,
    label: &str,
    stream_id: &str,
    audio_ssrc: u32,
    video_codings: &[(&str, u32)],
) -> Result<[LocalTrack; 2]> {
    let track = |kind: RtpCodecKind, codings: &[(&str, u32)], codec: RTCRtpCodec, name: &str| {
        Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream_id.to_owned(),
            format!("{label}-{name}"),
            format!("{label}-{name}"),
            kind,
            codings
                .iter()
                .map(|&(rid, ssrc)| RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        rid: rid.into(),
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: codec.clone(),
                    ..Default::default()
                })
                .collect(),
        )))
    };
    let init = || RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Sendonly,
        streams: vec![],
        send_encodings: vec![],
    };
    let audio = track(
        RtpCodecKind::Audio,
        &[("", audio_ssrc)],
        opus_codec(),
        "audio",
    );
    let video = track(RtpCodecKind::Video, video_codings, vp8_codec(), "video");
    let video_ssrc = video_codings.first().map_or(0, |&(_, ssrc)| ssrc);
    let audio_tr = pc
        .add_transceiver_from_track(audio.clone(), Some(init()))
        .await
        .context("add audio transceiver")?;
    let video_tr = pc
        .add_transceiver_from_track(video.clone(), Some(init()))
        .await
        .context("add video transceiver")?;
    Ok([
        LocalTrack {
            kind: MediaKind::Audio,
            ssrc: audio_ssrc,
            track: audio,
            transceiver: audio_tr,
        },
        LocalTrack {
            kind: MediaKind::Video,
            ssrc: video_ssrc,
            track: video,
            transceiver: video_tr,
        },
    ])
}
