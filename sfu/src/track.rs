//! A published track and its per-subscriber down tracks (LiveKit's split:
//! the publisher side receives, each `DownTrack` sends to one subscriber).

use crate::down_track::DownTrack;
use crate::simulcast_layer::{Layer, LayerInfos, MAX_ENCODINGS};
use crate::video_codec::VideoCodec;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use std::time::{Duration, Instant};

/// Shard-local identity of a published track.
pub type TrackKey = u64;
/// Shard-local identity of a peer connection.
pub type ConnKey = u64;

pub struct PublishedTrack {
    pub publisher: ConnKey,
    pub receiver_id: RTCRtpReceiverId,
    pub kind: RtpCodecKind,
    /// Published through an m-section of the client's own offer: a screen
    /// share (subscribers see a track id starting with `screen`).
    pub screen_share: bool,
    pub mime_type: String,
    /// What `mime_type` means to the forwarding path.
    pub codec: VideoCodec,
    pub clock_rate: u32,
    /// The publisher's payload type for `mime_type`, from its first packet
    /// (`None` until then): a packet under another one is checked against
    /// the publisher's negotiated codecs (see `router::codec_change`).
    pub payload_type: Option<u8>,
    /// Negotiated (uri, id) of the publisher's header extensions.
    pub extensions: Vec<(String, u8)>,
    /// The track's encodings, in the order rtc bound them: one, or one per
    /// simulcast rid.
    pub layers: Vec<Layer>,
    pub down_tracks: Vec<DownTrack>,
    /// Bumped whenever the source behind the track changes (the publisher
    /// reconnected with new SSRCs); down tracks then resynchronise.
    pub epoch: u32,
    /// The publisher restarted its connection and this track awaits the new
    /// connection's track of the same kind.
    pub orphaned: bool,
    pub packets: u64,
    pub bytes: u64,
    /// Packets missing on arrival (sequence gaps; repairs not subtracted).
    pub lost: u64,
    pub rate: crate::rate::RateMeter,
    pli_throttle: Duration,
}

impl PublishedTrack {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        publisher: ConnKey,
        receiver_id: RTCRtpReceiverId,
        kind: RtpCodecKind,
        screen_share: bool,
        mime_type: String,
        clock_rate: u32,
        extensions: Vec<(String, u8)>,
        first_layer: (String, u32),
        pli_throttle: Duration,
    ) -> Self {
        let codec = VideoCodec::from_mime(&mime_type);
        PublishedTrack {
            publisher,
            receiver_id,
            kind,
            screen_share,
            mime_type,
            codec,
            clock_rate,
            payload_type: None,
            extensions,
            layers: vec![Layer::new(
                first_layer.0,
                first_layer.1,
                codec,
                pli_throttle,
            )],
            down_tracks: Vec::new(),
            epoch: 0,
            orphaned: false,
            packets: 0,
            bytes: 0,
            lost: 0,
            rate: Default::default(),
            pli_throttle,
        }
    }

    /// Another simulcast encoding of this track started; false if known,
    /// or if the track has its `MAX_ENCODINGS` already (the contract allows
    /// three; more would only cost every packet's layer choice).
    pub fn add_layer(&mut self, rid: String, ssrc: u32) -> bool {
        if self.layers.len() >= MAX_ENCODINGS || self.layers.iter().any(|l| l.ssrc == ssrc) {
            return false;
        }
        self.layers
            .push(Layer::new(rid, ssrc, self.codec, self.pli_throttle));
        true
    }

    /// The encoding that SSRC `ssrc` carries.
    pub fn layer_of(&self, ssrc: u32) -> Option<usize> {
        self.layers.iter().position(|l| l.ssrc == ssrc)
    }

    /// The restarted publisher's new stream replaces the old one. Returns
    /// true when its codec differs from the old stream's: subscribers'
    /// payload types must then be looked up again.
    pub fn adopt(
        &mut self,
        receiver_id: RTCRtpReceiverId,
        first_layer: (String, u32),
        mime_type: String,
        clock_rate: u32,
        extensions: Vec<(String, u8)>,
    ) -> bool {
        let codec_changed = !self.mime_type.eq_ignore_ascii_case(&mime_type);
        // Extension ids are the server's own (it always offers the same
        // table), so down tracks' rewriters stay valid.
        self.receiver_id = receiver_id;
        self.codec = VideoCodec::from_mime(&mime_type);
        self.mime_type = mime_type;
        self.clock_rate = clock_rate;
        self.payload_type = None;
        self.extensions = extensions;
        self.orphaned = false;
        self.epoch = self.epoch.wrapping_add(1);
        // The old source's packets are useless to anyone now; its other
        // encodings come back as the new connection binds them.
        self.layers = vec![Layer::new(
            first_layer.0,
            first_layer.1,
            self.codec,
            self.pli_throttle,
        )];
        codec_changed
    }

    /// The publisher switched codec on the same stream (a browser may send
    /// its first packets in the offer's first codec, then the one it was
    /// told to use with `setParameters`): what was cached or learnt of the
    /// old codec's pictures is useless, and down tracks resynchronise from
    /// the new codec's keyframe (a new epoch). The encodings keep their
    /// SSRCs and ranks.
    pub fn change_codec(&mut self, mime_type: String, clock_rate: u32, payload_type: u8) {
        self.codec = VideoCodec::from_mime(&mime_type);
        self.mime_type = mime_type;
        self.clock_rate = clock_rate;
        self.payload_type = Some(payload_type);
        self.epoch = self.epoch.wrapping_add(1);
        for layer in &mut self.layers {
            let mut fresh = Layer::new(
                std::mem::take(&mut layer.rid),
                layer.ssrc,
                self.codec,
                self.pli_throttle,
            );
            fresh.rid_rank = layer.rid_rank;
            *layer = fresh;
        }
    }

    pub fn is_video(&self) -> bool {
        self.kind == RtpCodecKind::Video
    }

    /// Observes a packet of encoding `layer` from the publisher: caches it
    /// for NACKs and keyframe priming.
    /// Returns how many packets this one reveals as missing (a gap after the
    /// highest sequence number seen: loss between publisher and server, as
    /// the publisher's NACKs will try to repair).
    pub fn observe(
        &mut self,
        layer: usize,
        packet: &rtp::Packet,
        cache_keyframes: bool,
        now: Instant,
    ) -> u64 {
        self.packets += 1;
        self.bytes += packet.payload.len() as u64;
        let is_video = self.is_video();
        let Some(layer) = self.layers.get_mut(layer) else {
            return 0;
        };
        layer.bytes += packet.payload.len() as u64;
        let seq = packet.header.sequence_number;
        let missing = match layer.highest_seq {
            Some(highest) if crate::rtp_munger::seq_newer(seq, highest) => {
                layer.highest_seq = Some(seq);
                // A jump of half the space is a new stream, not loss.
                (seq.wrapping_sub(highest) as u64 - 1).min(1000)
            }
            Some(_) => 0,
            None => {
                layer.highest_seq = Some(seq);
                0
            }
        };
        if is_video {
            layer.observe_video(packet, cache_keyframes, now);
        } else {
            layer.last_packet = Some(now);
            layer.packets += 1;
        }
        missing
    }

    /// Splits the track into the read-only view down tracks need and the
    /// down tracks themselves, so both can be borrowed at once.
    /// `keyframes_cached`: the layers' keyframe caches are fed (`observe`
    /// with `cache_keyframes`).
    pub fn split(
        &mut self,
        layer: usize,
        keyframes_cached: bool,
        now: Instant,
    ) -> (TrackView<'_>, &mut Vec<DownTrack>) {
        let infos = crate::simulcast_layer::layer_infos(&self.layers, now);
        (
            TrackView {
                is_video: self.kind == RtpCodecKind::Video,
                codec: self.codec,
                epoch: self.epoch,
                layer,
                keyframes_cached,
                layers: &self.layers,
                infos,
                clock_rate: self.clock_rate,
            },
            &mut self.down_tracks,
        )
    }
}

/// What a down track needs to know of its published track.
pub struct TrackView<'a> {
    pub is_video: bool,
    pub codec: VideoCodec,
    pub epoch: u32,
    /// The encoding the packet at hand belongs to.
    pub layer: usize,
    /// Each layer's `keyframe_cache` holds its latest whole keyframe.
    pub keyframes_cached: bool,
    pub layers: &'a [Layer],
    /// What the layer selector knows of each encoding.
    pub infos: LayerInfos,
    pub clock_rate: u32,
}

impl<'a> TrackView<'a> {
    pub(crate) fn current(&self) -> &Layer {
        &self.layers[self.layer]
    }

    /// The same track viewed at encoding `layer`.
    pub fn at_layer(&self, layer: usize) -> TrackView<'a> {
        TrackView {
            layer,
            infos: self.infos.clone(),
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp8_track() -> PublishedTrack {
        PublishedTrack::new(
            1,
            Default::default(),
            RtpCodecKind::Video,
            false,
            "video/VP8".to_owned(),
            90_000,
            Vec::new(),
            ("q".to_owned(), 1),
            Duration::from_millis(500),
        )
    }

    #[test]
    fn a_track_takes_at_most_three_encodings_each_ssrc_once() {
        let mut track = vp8_track();
        assert!(!track.add_layer("q".to_owned(), 1), "a known SSRC");
        assert!(track.add_layer("h".to_owned(), 2));
        assert!(track.add_layer("f".to_owned(), 3));
        // A client offering more rids than the contract's three.
        assert!(!track.add_layer("x".to_owned(), 4));
        assert_eq!(track.layers.len(), MAX_ENCODINGS);
        assert_eq!(track.layer_of(4), None);
    }

    #[test]
    fn a_codec_change_keeps_the_encodings_and_starts_a_new_epoch_without_the_old_codecs_pictures() {
        let mut track = vp8_track();
        assert!(track.add_layer("h".to_owned(), 2));
        track.layers[1].rid_rank = 7;
        let now = Instant::now();
        let keyframe = rtp::Packet {
            header: rtp::Header {
                ssrc: 2,
                sequence_number: 10,
                marker: true,
                ..Default::default()
            },
            // VP8 descriptor (S=1, PID 0), then a keyframe header (P=0).
            payload: bytes::Bytes::from_static(&[
                0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00,
            ]),
        };
        track.observe(1, &keyframe, true, now);
        assert_eq!(track.layers[1].highest_seq, Some(10));
        let epoch = track.epoch;

        track.change_codec("video/H264".to_owned(), 90_000, 102);

        assert_eq!(track.codec, VideoCodec::from_mime("video/H264"));
        assert_eq!(track.mime_type, "video/H264");
        assert_eq!(track.payload_type, Some(102));
        assert_eq!(
            track.epoch,
            epoch.wrapping_add(1),
            "down tracks resynchronise"
        );
        let kept: Vec<_> = track
            .layers
            .iter()
            .map(|l| (l.rid.as_str(), l.ssrc, l.rid_rank))
            .collect();
        assert_eq!(kept, [("q", 1, track.layers[0].rid_rank), ("h", 2, 7)]);
        let h = &track.layers[1];
        assert_eq!(h.codec, track.codec);
        assert_eq!(
            (h.highest_seq, h.packets, h.size),
            (None, 0, None),
            "nothing of the VP8 stream is kept"
        );
    }
}
