//! One encoding (RTP stream, one SSRC) of a published track: a track
//! without simulcast has one, a simulcast camera up to three.
//!
//! Everything that is per SSRC lives here: the packet cache for NACKs, the
//! keyframe cache, keyframe requests (a PLI names one SSRC, so each encoding
//! is asked on its own), the sender report that maps its RTP time to the
//! wall clock, and the size of its pictures.

use crate::decodable_pictures::DecodablePictures;
use crate::keyframe_cache::KeyframeCache;
use crate::keyframe_request::KeyframeRequestThrottle;
use crate::layer_selector::LayerInfo;
use crate::packet_cache::PacketCache;
use crate::simulcast_offer::rid_rank;
use crate::source_pauses::SourcePauses;
use crate::video_codec::VideoCodec;
use crate::vp8_descriptor::Vp8Descriptor;
use rtc::rtp;
use smallvec::SmallVec;
use std::time::{Duration, Instant};

/// An encoding without packets for this long is taken as stopped (a
/// publisher short of bandwidth stops its top encodings).
const LIVE_FOR: Duration = Duration::from_millis(1000);

/// An encoding silent this much longer than the freshest encoding of its
/// track is taken as stopped sooner: the others still arrive, so the
/// publisher dropped this one (its own bandwidth estimate or CPU), and a
/// subscriber forwarded it sees a freeze until the switch down starts. All
/// encodings carry the same captured frames, so 15 missed frames at 30 fps
/// (7 at 15 fps) is no frame dropper's hiccup.
const STOPPED_AMONG_FLOWING: Duration = Duration::from_millis(500);

pub struct Layer {
    /// The track's codec: how keyframes are told (see `video_codec`).
    pub codec: VideoCodec,
    /// The rid (empty without simulcast).
    pub rid: String,
    /// Its rank among the track's rids, lowest first (see
    /// `simulcast_offer::rid_rank`): orders encodings whose size is not
    /// known (yet, or ever: H.264).
    pub rid_rank: usize,
    pub ssrc: u32,
    pub cache: PacketCache,
    pub keyframe_cache: KeyframeCache,
    pub keyframes: KeyframeRequestThrottle,
    /// Highest sequence number seen.
    pub highest_seq: Option<u16>,
    /// The latest sender report: (NTP time, RTP time).
    pub sender_report: Option<(u64, u32)>,
    /// Width and height of the latest keyframe.
    pub size: Option<(u16, u16)>,
    pub last_packet: Option<Instant>,
    pub packets: u64,
    /// Payload bytes received (the allocator measures each layer's rate).
    pub bytes: u64,
    /// Payload bytes and packets received per VP8 temporal layer (TID
    /// 0..=3), for the allocator's steps below a whole encoding; zero for
    /// a stream without temporal layers.
    pub temporal: [(u64, u64); 4],
    /// Notices the encoding resuming after an outage that lost packets.
    pub resume: crate::media_resume::ResumeDetector,
    /// When the latest keyframe's first packet arrived.
    pub keyframe_started: Option<Instant>,
    /// The publisher's recent pauses in this encoding (for operators).
    pub source_pauses: SourcePauses,
    /// Which pictures a receiver decodes (a held one ends no pause).
    pub decodable: DecodablePictures,
}

impl Layer {
    pub fn new(rid: String, ssrc: u32, codec: VideoCodec, pli_throttle: Duration) -> Self {
        Layer {
            codec,
            rid_rank: rid_rank(&rid, &[]),
            rid,
            ssrc,
            cache: PacketCache::default(),
            keyframe_cache: KeyframeCache::for_codec(codec),
            keyframes: KeyframeRequestThrottle::new(pli_throttle),
            highest_seq: None,
            sender_report: None,
            size: None,
            last_packet: None,
            packets: 0,
            bytes: 0,
            temporal: [(0, 0); 4],
            resume: Default::default(),
            keyframe_started: None,
            source_pauses: SourcePauses::default(),
            decodable: DecodablePictures::default(),
        }
    }

    /// A video packet of this encoding arrived.
    pub fn observe_video(&mut self, packet: &rtp::Packet, cache_keyframes: bool, now: Instant) {
        // Padding-only packets (bandwidth probes, which Chromium also sends
        // on an encoding it has stopped) do not make an encoding flowing.
        let vp8 = Vp8Descriptor::parse(&packet.payload).filter(|_| self.codec.is_vp8());
        if !packet.payload.is_empty() {
            self.last_packet = Some(now);
            // A picture a receiver holds back ends no pause.
            if self.decodable.on_packet(vp8.as_ref()) {
                self.source_pauses.on_packet(packet.header.timestamp, now);
            }
        }
        self.packets += 1;
        self.cache.insert(packet);
        if let Some(tid) = vp8.and_then(|d| d.temporal_id) {
            let (bytes, packets) = &mut self.temporal[usize::from(tid)];
            *bytes += packet.payload.len() as u64;
            *packets += 1;
        }
        if self.codec.is_keyframe_start(&packet.payload) {
            self.keyframes.keyframe_arrived();
            self.keyframe_started = Some(now);
            // Picture size from VP8's keyframe header; an H.264 layer's size
            // stays unknown (the layer selector then goes by rid rank).
            if let Some(size) = vp8.and_then(|d| d.keyframe_size(&packet.payload)) {
                self.size = Some(size);
            }
        }
        if cache_keyframes {
            self.keyframe_cache.observe(packet);
        }
    }

    /// What the layer selector needs to know, `freshest` being the latest
    /// media packet of any encoding of the track (see `layer_infos`).
    fn info(&self, now: Instant, freshest: Option<Instant>) -> LayerInfo {
        LayerInfo {
            height: self.size.map(|(_, h)| h),
            rid_rank: self.rid_rank,
            live: self.last_packet.is_some_and(|t| {
                now.saturating_duration_since(t) < LIVE_FOR
                    && freshest
                        .is_none_or(|f| f.saturating_duration_since(t) < STOPPED_AMONG_FLOWING)
            }),
        }
    }

    /// Its place in the order of encodings (`LayerInfo::quality`).
    pub fn quality(&self) -> (u16, usize) {
        (self.size.map_or(0, |(_, h)| h), self.rid_rank)
    }
}

/// How long a keyframe may take to arrive whole (the publisher's pacer
/// spreads a large one over a few hundred milliseconds) before a down
/// track waiting for it asks for another.
pub const KEYFRAME_ASSEMBLY: Duration = Duration::from_millis(500);

impl Layer {
    /// A keyframe is arriving: begun less than `KEYFRAME_ASSEMBLY` ago and
    /// not whole yet (only known where keyframes are cached).
    pub fn keyframe_arriving(&self, now: Instant) -> bool {
        self.keyframe_cache.assembling()
            && self
                .keyframe_started
                .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_ASSEMBLY)
    }
}

/// Encodings one track may have (the contract's "up to three").
pub const MAX_ENCODINGS: usize = 3;

/// What the layer selector knows of a track's encodings: inline, as it is
/// built for every incoming video packet.
pub type LayerInfos = SmallVec<[LayerInfo; MAX_ENCODINGS]>;

/// What the layer selector needs to know of each encoding of a track.
pub fn layer_infos(layers: &[Layer], now: Instant) -> LayerInfos {
    let freshest = layers.iter().filter_map(|l| l.last_packet).max();
    layers.iter().map(|l| l.info(now, freshest)).collect()
}

/// `ts` of encoding `from`, expressed in encoding `to`'s RTP time, by both
/// encodings' sender reports (one wall clock, two RTP clocks); `None`
/// until both have reported.
pub fn map_timestamp(from: &Layer, ts: u32, to: &Layer, clock_rate: u32) -> Option<u32> {
    let (ntp_from, rtp_from) = from.sender_report?;
    let (ntp_to, rtp_to) = to.sender_report?;
    // 32.32 fixed-point seconds between the two reports' instants.
    let ntp_delta = ntp_from.wrapping_sub(ntp_to) as i64 as i128;
    let ticks = (ntp_delta * clock_rate as i128) >> 32;
    let since_report = ts.wrapping_sub(rtp_from) as i32 as i64;
    Some(
        rtp_to
            .wrapping_add(since_report as u32)
            .wrapping_add(ticks as i64 as u32),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_time_between_encodings_by_their_reports() {
        let mut a = Layer::new("q".into(), 1, VideoCodec::Vp8, Duration::from_millis(500));
        let mut b = Layer::new("f".into(), 2, VideoCodec::Vp8, Duration::from_millis(500));
        assert_eq!(map_timestamp(&a, 0, &b, 90_000), None);
        let second = 1u64 << 32;
        // A reported RTP 1000 at NTP 10 s; B reported 4_000_000_000 at 10.5 s.
        a.sender_report = Some((10 * second, 1000));
        b.sender_report = Some((10 * second + second / 2, 4_000_000_000));
        // A's 1000 + 90_000 is NTP 11 s: half a second after B's report.
        let mapped = map_timestamp(&a, 91_000, &b, 90_000).unwrap();
        assert_eq!(mapped, 4_000_000_000u32.wrapping_add(45_000));
        // And back, across B's wrap.
        assert_eq!(map_timestamp(&b, mapped, &a, 90_000), Some(91_000));
        // Before a report (negative distances) works too.
        assert_eq!(
            map_timestamp(&a, 0u32.wrapping_sub(89_000), &b, 90_000),
            Some(4_000_000_000u32.wrapping_sub(135_000))
        );
    }

    #[test]
    fn rank_size_and_liveness() {
        let t0 = Instant::now();
        let mut l = Layer::new("h".into(), 5, VideoCodec::Vp8, Duration::from_millis(500));
        assert_eq!(
            l.info(t0, None),
            LayerInfo {
                height: None,
                rid_rank: 1,
                live: false
            }
        );
        // A keyframe of 640x360.
        let packet = rtp::Packet {
            header: rtp::Header {
                ssrc: 5,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[
                0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01,
            ]),
        };
        l.observe_video(&packet, true, t0);
        assert_eq!(l.size, Some((640, 360)));
        assert!(l.info(t0 + Duration::from_millis(999), None).live);
        assert!(!l.info(t0 + LIVE_FOR, None).live);
        assert_eq!(
            Layer::new("0".into(), 1, VideoCodec::Vp8, LIVE_FOR)
                .info(t0, None)
                .rid_rank,
            3
        );
    }

    fn media(ssrc: u32) -> rtp::Packet {
        rtp::Packet {
            header: rtp::Header {
                ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[0x10, 0x00, 0x00, 0x00, 0x01]),
        }
    }

    #[test]
    fn an_encoding_the_publisher_dropped_stops_counting_before_the_others_do() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut layers: Vec<Layer> = ["q", "h", "f"]
            .iter()
            .zip(1..)
            .map(|(rid, ssrc)| Layer::new((*rid).into(), ssrc, VideoCodec::Vp8, ms(500)))
            .collect();
        // All three flow at 30 fps; then f stops while q and h go on.
        let mut t = t0;
        while t < t0 + ms(1000) {
            for (i, l) in layers.iter_mut().enumerate() {
                l.observe_video(&media(i as u32 + 1), false, t);
            }
            t += ms(33);
        }
        let f_stopped = t - ms(33);
        let live = |layers: &[Layer], now| {
            layer_infos(layers, now)
                .iter()
                .map(|i| i.live)
                .collect::<Vec<_>>()
        };
        assert_eq!(live(&layers, t), [true, true, true]);
        while t < f_stopped + ms(700) {
            for (i, l) in layers.iter_mut().take(2).enumerate() {
                l.observe_video(&media(i as u32 + 1), false, t);
            }
            assert_eq!(
                live(&layers, t)[2],
                t.duration_since(f_stopped) < STOPPED_AMONG_FLOWING,
                "f at {:?} after it stopped",
                t.duration_since(f_stopped)
            );
            t += ms(33);
        }
        // When the whole track pauses, its encodings stay live for LIVE_FOR
        // after their last packets, so a resume finds them where they were.
        let paused = t - ms(33);
        assert_eq!(live(&layers, paused + ms(900)), [true, true, false]);
        assert_eq!(live(&layers, paused + LIVE_FOR), [false, false, false]);
        // f comes back: live at once.
        layers[2].observe_video(&media(3), false, t + ms(1200));
        assert_eq!(live(&layers, t + ms(1200)), [false, false, true]);
    }
}
