//! One encoding (RTP stream, one SSRC) of a published track: a track
//! without simulcast has one, a simulcast camera up to three.
//!
//! Everything that is per SSRC lives here: the packet cache for NACKs, the
//! keyframe cache, keyframe requests (a PLI names one SSRC, so each encoding
//! is asked on its own), the sender report that maps its RTP time to the
//! wall clock, and the size of its pictures.

use crate::keyframe_cache::KeyframeCache;
use crate::keyframe_request::KeyframeRequestThrottle;
use crate::layer_selector::LayerInfo;
use crate::packet_cache::PacketCache;
use crate::simulcast_offer::rid_rank;
use crate::video_codec::VideoCodec;
use crate::vp8_descriptor::Vp8Descriptor;
use rtc::rtp;
use std::time::{Duration, Instant};

/// An encoding without packets for this long is taken as stopped (a
/// publisher short of bandwidth stops its top encodings).
const LIVE_FOR: Duration = Duration::from_millis(1000);

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
        }
    }

    /// A video packet of this encoding arrived.
    pub fn observe_video(&mut self, packet: &rtp::Packet, cache_keyframes: bool, now: Instant) {
        // Padding-only packets (bandwidth probes, which Chromium also sends
        // on an encoding it has stopped) do not make an encoding flowing.
        if !packet.payload.is_empty() {
            self.last_packet = Some(now);
        }
        self.packets += 1;
        self.cache.insert(packet);
        let vp8 = Vp8Descriptor::parse(&packet.payload).filter(|_| self.codec.is_vp8());
        if let Some(tid) = vp8.and_then(|d| d.temporal_id) {
            let (bytes, packets) = &mut self.temporal[usize::from(tid)];
            *bytes += packet.payload.len() as u64;
            *packets += 1;
        }
        if self.codec.is_keyframe_start(&packet.payload) {
            self.keyframes.keyframe_arrived();
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

    /// What the layer selector needs to know.
    pub fn info(&self, now: Instant) -> LayerInfo {
        LayerInfo {
            height: self.size.map(|(_, h)| h),
            rid_rank: self.rid_rank,
            live: self
                .last_packet
                .is_some_and(|t| now.saturating_duration_since(t) < LIVE_FOR),
        }
    }
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
            l.info(t0),
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
        assert!(l.info(t0 + Duration::from_millis(999)).live);
        assert!(!l.info(t0 + LIVE_FOR).live);
        assert_eq!(
            Layer::new("0".into(), 1, VideoCodec::Vp8, LIVE_FOR)
                .info(t0)
                .rid_rank,
            3
        );
    }
}
