//! One published track's forwarding to one subscriber (LiveKit's
//! `downtrack.go`): encoding choice, keyframe priming, sequence number and
//! timestamp rewriting, and NACK answers, written to the subscriber's
//! connection by the fast path or by rtc's sender.

use crate::fast_writer::{FastWriter, SendDatagram};
use crate::layer_selector::LayerSelector;
use crate::packet_cache::CACHE_SIZE;
use crate::rtp_munger::{seq_newer, RtpMunger};
use crate::rtp_rewriter::RtpRewriter;
use crate::sender_report::SenderReportClock;
use crate::simulcast_layer::{map_timestamp, Layer};
use crate::stream_rewrite::rewrite_packet;
use crate::track::{ConnKey, PublishedTrack, TrackView};
use crate::video_codec::VideoCodec;
use crate::vp8_descriptor::Vp8Munger;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use std::net::SocketAddr;
use std::time::Instant;

/// The forwarding of one published track to one subscriber.
pub struct DownTrack {
    pub subscriber: ConnKey,
    pub sender_id: RTCRtpSenderId,
    /// The id of the sender's track on the subscriber's connection; RTCP
    /// feedback from the subscriber arrives tagged with it.
    pub sender_track_id: String,
    pub ssrc: u32,
    /// The extension list forwarded headers are built in, reused.
    extension_scratch: Vec<rtp::header::Extension>,
    /// `None` until the subscriber's answer negotiated this m-section, and
    /// while it did not accept the track's codec.
    pub rewriter: Option<RtpRewriter>,
    /// The codec (MIME type) the subscriber was told it did not accept, so
    /// it is told once per codec, not after every negotiation.
    pub refused_codec: Option<String>,
    /// Sequence numbers and timestamps of this subscriber's stream.
    pub munger: RtpMunger,
    /// The source epoch this down track is synchronised to.
    pub epoch: u32,
    /// Nothing sent yet: the cached keyframe goes first.
    pub primed: bool,
    /// Video only: the encoding being forwarded; `None` while deltas are
    /// withheld until a keyframe (no corrupt pictures) or while paused.
    pub layer: Option<usize>,
    /// The subscriber's limits (tile size, pause, the allocator's cap).
    pub selector: LayerSelector,
    /// Picture ids, TL0PICIDX and KEYIDX of this subscriber's stream.
    pub vp8: Vp8Munger,
    /// The newest packet sent ended its frame (marker bit).
    last_marker: bool,
    /// First outgoing sequence number of the current encoding: older ones
    /// came from another encoding and cannot be answered from this one's
    /// cache.
    layer_since: Option<u16>,
    /// Encoding switches (simulcast) made for this subscriber.
    pub layer_switches: u64,
    /// Packets handed to the subscriber's connection.
    pub packets_sent: u64,
    /// Bytes sent by the fast path (datagram lengths).
    pub bytes_sent: u64,
    /// What the fast path sent, for this stream's sender reports.
    pub sender_reports: SenderReportClock,
}

/// How a down track's packets reach its subscriber.
pub enum RtpWriter<'a, 'b> {
    /// Through rtc's sender (a connection whose keys the tap could not
    /// recover keeps this for life).
    Rtc(&'a mut RTCPeerConnection),
    /// Protected and sent by the router itself.
    Fast {
        writer: &'a mut FastWriter,
        route: (usize, SocketAddr),
        send: SendDatagram<'b>,
    },
}

impl RtpWriter<'_, '_> {
    /// Packets written here leave as datagrams at once (rtc's sender
    /// queues them on its connection, to be drained by a drive).
    pub fn is_fast(&self) -> bool {
        matches!(self, RtpWriter::Fast { .. })
    }

    /// May a retransmission of `bytes` go out now? (A connection on rtc's
    /// pipeline has no estimate: unbounded as before.)
    fn allow_retransmission(&mut self, bytes: usize, now: Instant) -> bool {
        match self {
            RtpWriter::Fast { writer, .. } => writer.allow_retransmission(bytes, now),
            RtpWriter::Rtc(_) => true,
        }
    }

    /// Drops what the pacer still holds of stream `ssrc` (see
    /// `FastWriter::drop_paced`; rtc's sender has no such queue).
    fn drop_paced(&mut self, ssrc: u32) {
        if let RtpWriter::Fast { writer, .. } = self {
            let dropped = writer.drop_paced(ssrc);
            if dropped > 0 {
                tracing::debug!(ssrc, dropped, "paced packets of the left encoding dropped");
            }
        }
    }
}

/// What one NACKed sequence number costs the subscriber's retransmission
/// budget (a full video packet).
const RETRANSMIT_CHARGE: usize = 1200;

/// What a NACKed packet's retransmission came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retransmission {
    Sent,
    /// Not received yet (lost upstream, its repair still coming: it is
    /// forwarded when it arrives), of an encoding this down track has
    /// left, or too old for the cache.
    Unavailable,
    /// The subscriber's retransmission budget is spent (see
    /// `RetransmitBudget`).
    OverBudget,
}

/// What forwarding one packet to one down track did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// Packets handed to the subscriber's connection.
    pub sent: u64,
    /// The down track needs a keyframe of this encoding from the publisher:
    /// set for every packet it withholds while waiting, so a request that
    /// went unanswered (lost, or its keyframe lost) is repeated (see
    /// `KeyframeRequestThrottle`).
    pub want_keyframe: Option<usize>,
    /// The down track switched to another encoding with this packet.
    pub switched: bool,
}

impl DownTrack {
    /// Forwards one publisher packet (the per-packet path for one
    /// subscriber): resynchronise after a source switch, pick the encoding
    /// (simulcast), prime a new subscriber with the cached keyframe,
    /// withhold deltas until a keyframe, then map sequence number,
    /// timestamp and VP8 picture ids and send.
    pub fn forward(
        &mut self,
        out: &mut RtpWriter<'_, '_>,
        packet: &rtp::Packet,
        track: &TrackView<'_>,
        now: Instant,
    ) -> Forwarded {
        let mut result = Forwarded::default();
        if self.rewriter.is_none() {
            return result;
        }
        if self.epoch != track.epoch {
            self.epoch = track.epoch;
            self.munger.switch_source();
            self.vp8.switch_source();
            self.layer = None;
            if track.is_video {
                // The new source's state is unknown: ask for a keyframe at
                // once, even if this packet starts one (it may be cut).
                result.want_keyframe = Some(track.layer);
            }
        }
        if !track.is_video {
            result.sent += self.send(out, packet, None, now) as u64;
            return result;
        }
        let Some(target) = self.selector.target(&track.infos) else {
            // Paused (hidden tile, no bandwidth) or nothing flowing: no
            // packet at all; a resume starts at a keyframe.
            if self.layer.take().is_some() {
                self.munger.switch_source_mapped(None, !self.last_marker);
                self.vp8.switch_source();
                out.drop_paced(self.ssrc);
            }
            return result;
        };
        if self.layer == Some(track.layer) && self.selector.cap_excludes(&track.infos, track.layer)
        {
            // Over the subscriber's bandwidth: this encoding stops now and
            // the lower one starts at its keyframe.
            self.layer = None;
            self.munger.switch_source_mapped(None, !self.last_marker);
            self.vp8.switch_source();
            out.drop_paced(self.ssrc);
            result.want_keyframe = Some(target);
            return result;
        }
        if self.layer == Some(track.layer) {
            if target != track.layer {
                // Keep this encoding until the target's keyframe arrives.
                result.want_keyframe = Some(target);
            }
            result.sent += self.send(out, packet, Some(track.codec), now) as u64;
            return result;
        }
        if track.layer != target {
            if self.layer.is_none() {
                result.want_keyframe = Some(target);
            }
            return result; // Another encoding than this subscriber's.
        }
        let keyframe_start = track.codec.is_keyframe_start(&packet.payload);
        if !self.primed {
            self.primed = true;
            // Not when this very packet starts a keyframe: it is fresher.
            if !keyframe_start {
                result.sent += self.send_cached_keyframe(out, track, now);
            }
        }
        if let (Some(from), true) = (self.layer, track.keyframes_cached) {
            return self.switch_on_whole_keyframe(out, packet, from, track, now, result);
        }
        if !keyframe_start {
            result.want_keyframe = Some(target);
            return result;
        }
        if let Some(from) = self.layer {
            self.switch_from(from, track, packet.header.timestamp, &mut result);
            out.drop_paced(self.ssrc);
        }
        self.layer = Some(target);
        self.layer_since = None;
        result.sent += self.send(out, packet, Some(track.codec), now) as u64;
        result.sent += self.send_withheld_after(out, packet.header.sequence_number, track, now);
        result
    }

    /// The subscriber's connection has just become able to take media:
    /// its first picture is the cached keyframe of the encoding it is to
    /// get (`track` is viewed at that encoding), sent now rather than when
    /// the encoding's next packet arrives (up to a frame interval later).
    /// Nothing if the down track has sent anything already.
    pub fn prime(
        &mut self,
        out: &mut RtpWriter<'_, '_>,
        track: &TrackView<'_>,
        now: Instant,
    ) -> Forwarded {
        let mut result = Forwarded::default();
        let ready = self.rewriter.is_some()
            && !self.primed
            && self.layer.is_none()
            && self.epoch == track.epoch
            && track.is_video
            && track.keyframes_cached
            && self.selector.target(&track.infos) == Some(track.layer);
        if !ready || track.current().keyframe_cache.packets().is_empty() {
            return result;
        }
        self.primed = true;
        result.sent = self.send_cached_keyframe(out, track, now);
        // Live pictures resume at the encoding's next keyframe.
        result.want_keyframe = Some(track.layer);
        result
    }

    /// Sends the current encoding's cached keyframe, if any, to a
    /// subscriber that has had nothing of it; the live deltas that follow
    /// depend on frames it never got, so they wait for a keyframe.
    fn send_cached_keyframe(
        &mut self,
        out: &mut RtpWriter<'_, '_>,
        track: &TrackView<'_>,
        now: Instant,
    ) -> u64 {
        let cached = track.current().keyframe_cache.packets();
        if cached.is_empty() {
            return 0;
        }
        self.layer_since = None;
        let mut sent = 0;
        for p in cached {
            sent += self.send(out, p, Some(track.codec), now) as u64;
        }
        self.munger.switch_source();
        self.vp8.switch_source();
        sent
    }

    /// A switch between encodings (`from` is forwarded now, `packet` is of
    /// the target): `from` keeps flowing until the target's keyframe is
    /// whole, then that keyframe goes out at once, from the cache. Switching
    /// at the keyframe's first packet stopped the old pictures while the
    /// publisher's pacer spread the new encoding's keyframe out: a 217 ms
    /// freeze at a 640 -> 1280 switch of Firefox's camera. (Without a
    /// current encoding, a paused or new subscriber, the first packet is the
    /// earliest picture there is: see `forward`.)
    fn switch_on_whole_keyframe(
        &mut self,
        out: &mut RtpWriter<'_, '_>,
        packet: &rtp::Packet,
        from: usize,
        track: &TrackView<'_>,
        now: Instant,
        mut result: Forwarded,
    ) -> Forwarded {
        let target = track.layer;
        let layer = track.current();
        let cached = layer.keyframe_cache.packets();
        let seq = packet.header.sequence_number;
        let completes = cached
            .first()
            .is_some_and(|p| p.header.timestamp == packet.header.timestamp)
            && cached.iter().any(|p| p.header.sequence_number == seq);
        if !completes {
            // Not asked again while one is arriving.
            if !layer.keyframe_arriving(now) {
                result.want_keyframe = Some(target);
            }
            return result;
        }
        self.switch_from(from, track, packet.header.timestamp, &mut result);
        out.drop_paced(self.ssrc);
        self.layer = Some(target);
        self.layer_since = None;
        for p in cached {
            result.sent += self.send(out, p, Some(track.codec), now) as u64;
        }
        if let Some(end) = cached.last().map(|p| p.header.sequence_number) {
            // Later packets that arrived before the keyframe was whole.
            result.sent += self.send_withheld_after(out, end, track, now);
        }
        result
    }

    /// Leaves encoding `from` for the packet's (`track.layer`, whose frame
    /// at `timestamp` comes next): one timeline, the timestamps mapped by
    /// both encodings' sender reports, and one picture-id space.
    fn switch_from(
        &mut self,
        from: usize,
        track: &TrackView<'_>,
        timestamp: u32,
        result: &mut Forwarded,
    ) {
        let mapped = map_timestamp(
            track.current(),
            timestamp,
            &track.layers[from],
            track.clock_rate,
        );
        self.munger.switch_source_mapped(mapped, !self.last_marker);
        self.vp8.switch_source();
        self.layer_switches += 1;
        result.switched = true;
    }

    /// A keyframe's first packet came after later ones (reordered, or lost
    /// and repaired by a retransmission): the rest of the keyframe arrived
    /// while this down track still waited, and was withheld. Sends those
    /// packets now, from the cache and in order, so the keyframe is whole
    /// (any still missing follow as retransmissions, mapped as late
    /// packets). Without this the subscriber got a keyframe without its
    /// body: undecodable, and unrepairable by NACK.
    fn send_withheld_after(
        &mut self,
        out: &mut RtpWriter<'_, '_>,
        start: u16,
        track: &TrackView<'_>,
        now: Instant,
    ) -> u64 {
        let layer = track.current();
        let Some(highest) = layer.highest_seq.filter(|&h| seq_newer(h, start)) else {
            return 0;
        };
        let count = highest.wrapping_sub(start).min(CACHE_SIZE as u16);
        let mut sent = 0;
        for i in 1..=count {
            if let Some(withheld) = layer.cache.get(start.wrapping_add(i)) {
                sent += self.send(out, withheld, Some(track.codec), now) as u64;
            }
        }
        sent
    }

    /// Sends one packet; `video` is the codec of a video track (`None` for
    /// audio). Only VP8 payloads have their descriptor rewritten.
    fn send(
        &mut self,
        out: &mut RtpWriter<'_, '_>,
        packet: &rtp::Packet,
        video: Option<VideoCodec>,
        now: Instant,
    ) -> bool {
        let Some(rewriter) = &self.rewriter else {
            return false;
        };
        let vp8 = video.is_some_and(|c| c.is_vp8()).then_some(&mut self.vp8);
        let Some((seq, ts, payload)) = rewrite_packet(&mut self.munger, vp8, packet, now) else {
            return false;
        };
        // The header built afresh in a reused extension list: a clone of
        // the publisher's would allocate its extensions per subscriber.
        let extensions = std::mem::take(&mut self.extension_scratch);
        let mut rewritten = rtp::Packet {
            header: rewriter.rewritten_header(&packet.header, extensions),
            payload,
        };
        rewritten.header.sequence_number = seq;
        rewritten.header.timestamp = ts;
        if video.is_some() {
            tracing::trace!(
                ssrc = self.ssrc,
                layer = ?self.layer,
                in_seq = packet.header.sequence_number,
                seq,
                ts,
                marker = packet.header.marker,
                vp8_in = ?crate::vp8_descriptor::Vp8Descriptor::parse(&packet.payload),
                vp8_out = ?crate::vp8_descriptor::Vp8Descriptor::parse(&rewritten.payload),
                "video packet to a subscriber"
            );
            if rewritten.header.marker {
                tracing::trace!(
                    target: "noom_sfu::forwarded_pictures",
                    ssrc = self.ssrc,
                    layer = ?self.layer,
                    seq,
                    ts,
                    in_ts = packet.header.timestamp,
                    vp8 = ?crate::vp8_descriptor::Vp8Descriptor::parse(&rewritten.payload),
                    "picture to a subscriber"
                );
            }
            let since = *self.layer_since.get_or_insert(seq);
            if seq_newer(seq, since) || seq == since {
                self.last_marker = packet.header.marker;
            }
        }
        let sent = self.write(out, &mut rewritten, now);
        self.extension_scratch = std::mem::take(&mut rewritten.header.extensions);
        self.packets_sent += sent as u64;
        sent
    }

    /// Sends a padding-only packet of `size` bytes of padding (a bandwidth
    /// probe, see `bwe::Prober`) on this stream: only on the fast path, on
    /// a video stream that has started, and between two frames (a receiver
    /// assembling a frame must not find a foreign number inside it). Also
    /// while the video is paused or waits for a keyframe: a video paused
    /// for want of bandwidth can only come back if a probe proves the link
    /// (a frame cut off by the pause keeps its gap, see `RtpMunger::pad`).
    /// Takes the next sequence number; the subscriber's decoder skips
    /// padding. False when it cannot go now.
    pub fn send_padding(&mut self, out: &mut RtpWriter<'_, '_>, size: u8, now: Instant) -> bool {
        let between_frames = self.last_marker || self.layer.is_none();
        let (
            RtpWriter::Fast {
                writer,
                route,
                send,
            },
            Some(rewriter),
            true,
        ) = (out, &self.rewriter, between_frames)
        else {
            return false;
        };
        let Some((seq, ts)) = self.munger.pad() else {
            return false;
        };
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                payload_type: rewriter.payload_type,
                sequence_number: seq,
                timestamp: ts,
                ssrc: rewriter.ssrc,
                ..Default::default()
            },
            payload: crate::fast_writer::padding_payload(size),
        };
        match writer.write_padding(packet, rewriter.transport_cc_id, *route, *send, now) {
            Ok(len) => {
                self.bytes_sent += len as u64;
                true
            }
            Err(err) => {
                tracing::debug!(%err, ssrc = self.ssrc, "padding write");
                false
            }
        }
    }

    /// The first outgoing sequence number of the current encoding.
    #[cfg(test)]
    pub(crate) fn layer_since(&self) -> Option<u16> {
        self.layer_since
    }

    /// Re-sends a cached packet the subscriber reported lost (by its
    /// outgoing sequence number), from the encoding it was sent from.
    pub fn retransmit(
        &mut self,
        out: &mut RtpWriter<'_, '_>,
        out_seq: u16,
        layers: &[Layer],
        codec: VideoCodec,
        now: Instant,
    ) -> Retransmission {
        // Sent before the current encoding took over (or audio, one layer):
        // never answered, and never charged, so NACKs of an encoding just
        // left (its packets lost on a link too slow for it) cannot use up
        // what the new encoding's keyframe needs.
        let layer = match (self.layer, self.layer_since) {
            (Some(layer), Some(since)) if seq_newer(out_seq, since) || out_seq == since => layer,
            (None, _) if layers.len() == 1 => 0,
            _ => return Retransmission::Unavailable,
        };
        // Anything else takes a full packet from the budget first, found in
        // the cache or not: a receiver that keeps asking for packets long
        // gone (webrtc-rs repeats them without limit) is on a link losing
        // most of what it gets, where more repairs would be lost too
        // (tests/netem/bwe.sh: charging only what was resent tripled the
        // repairs into its overrun link and the estimate fell 17 % short).
        if !out.allow_retransmission(RETRANSMIT_CHARGE, now) {
            return Retransmission::OverBudget;
        }
        let Some((input, ts_offset)) = self.munger.input_for(out_seq) else {
            return Retransmission::Unavailable;
        };
        let (Some(rewriter), Some(cached)) = (
            &self.rewriter,
            layers.get(layer).and_then(|l| l.cache.get(input)),
        ) else {
            return Retransmission::Unavailable;
        };
        let mut rewritten = cached.clone();
        rewritten.header.sequence_number = out_seq;
        rewritten.header.timestamp = rewritten.header.timestamp.wrapping_add(ts_offset);
        rewriter.rewrite(&mut rewritten);
        if self.layer.is_some() && codec.is_vp8() {
            rewritten.payload = self.vp8.rewrite(&cached.payload);
        }
        if self.write(out, &mut rewritten, now) {
            Retransmission::Sent
        } else {
            Retransmission::Unavailable
        }
    }

    fn write(
        &mut self,
        out: &mut RtpWriter<'_, '_>,
        packet: &mut rtp::Packet,
        now: Instant,
    ) -> bool {
        let transport_cc_id = self.rewriter.as_ref().and_then(|r| r.transport_cc_id);
        match out {
            RtpWriter::Rtc(pc) => match pc.rtp_sender(self.sender_id) {
                Some(mut sender) => match sender.write_rtp(now, packet.clone()) {
                    Ok(()) => true,
                    Err(err) => {
                        tracing::trace!(%err, "write_rtp");
                        false
                    }
                },
                None => false,
            },
            RtpWriter::Fast {
                writer,
                route,
                send,
            } => match writer.write_rtp(packet, transport_cc_id, *route, *send, now) {
                Ok(len) => {
                    self.bytes_sent += len as u64;
                    self.sender_reports
                        .sent(&packet.header, packet.payload.len(), now);
                    true
                }
                Err(err) => {
                    tracing::debug!(%err, ssrc = self.ssrc, "fast path write");
                    false
                }
            },
        }
    }

    pub fn new(
        subscriber: ConnKey,
        sender_id: RTCRtpSenderId,
        sender_track_id: String,
        ssrc: u32,
        track: &PublishedTrack,
    ) -> Self {
        DownTrack {
            subscriber,
            sender_id,
            sender_track_id,
            ssrc,
            extension_scratch: Vec::new(),
            rewriter: None,
            refused_codec: None,
            munger: RtpMunger::new(track.clock_rate),
            epoch: track.epoch,
            primed: false,
            layer: None,
            selector: LayerSelector::default(),
            vp8: Vp8Munger::default(),
            last_marker: true,
            layer_since: None,
            layer_switches: 0,
            packets_sent: 0,
            bytes_sent: 0,
            sender_reports: SenderReportClock::new(track.clock_rate),
        }
    }
}
