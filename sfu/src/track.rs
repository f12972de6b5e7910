//! A published track and its per-subscriber down tracks (LiveKit's split:
//! the publisher side receives, each `DownTrack` sends to one subscriber).

use crate::fast_writer::{FastWriter, SendDatagram};
use crate::keyframe_cache::KeyframeCache;
use crate::keyframe_request::KeyframeRequestThrottle;
use crate::packet_cache::{PacketCache, CACHE_SIZE};
use crate::rtp_munger::{seq_newer, RtpMunger};
use crate::rtp_rewriter::RtpRewriter;
use crate::sender_report::SenderReportClock;
use crate::vp8;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use std::net::SocketAddr;
use std::time::Instant;

/// Shard-local identity of a published track.
pub type TrackKey = u64;
/// Shard-local identity of a peer connection.
pub type ConnKey = u64;

pub struct PublishedTrack {
    pub publisher: ConnKey,
    pub receiver_id: RTCRtpReceiverId,
    /// The publisher's SSRC, target of our keyframe requests.
    pub media_ssrc: u32,
    pub kind: RtpCodecKind,
    /// Published through an m-section of the client's own offer: a screen
    /// share (subscribers see a track id starting with `screen`).
    pub screen_share: bool,
    pub mime_type: String,
    pub clock_rate: u32,
    /// Negotiated (uri, id) of the publisher's header extensions.
    pub extensions: Vec<(String, u8)>,
    pub down_tracks: Vec<DownTrack>,
    pub cache: PacketCache,
    pub keyframe_cache: KeyframeCache,
    pub keyframes: KeyframeRequestThrottle,
    /// Bumped whenever the source behind the track changes (the publisher
    /// reconnected with new SSRCs); down tracks then resynchronise.
    pub epoch: u32,
    /// The publisher restarted its connection and this track awaits the new
    /// connection's track of the same kind.
    pub orphaned: bool,
    pub packets: u64,
    pub bytes: u64,
    /// Highest publisher sequence number seen (for loss counting).
    pub highest_seq: Option<u16>,
    /// Packets missing on arrival (sequence gaps; repairs not subtracted).
    pub lost: u64,
    pub rate: crate::rate::RateMeter,
    /// Notices the stream resuming after an outage that lost packets.
    pub resume: crate::media_resume::ResumeDetector,
}

impl PublishedTrack {
    /// The restarted publisher's new stream replaces the old one.
    pub fn adopt(
        &mut self,
        receiver_id: RTCRtpReceiverId,
        media_ssrc: u32,
        mime_type: String,
        clock_rate: u32,
        extensions: Vec<(String, u8)>,
    ) {
        // Extension ids are the server's own (it always offers the same
        // table), so down tracks' rewriters stay valid.
        self.receiver_id = receiver_id;
        self.media_ssrc = media_ssrc;
        self.mime_type = mime_type;
        self.clock_rate = clock_rate;
        self.extensions = extensions;
        self.orphaned = false;
        self.epoch = self.epoch.wrapping_add(1);
        self.highest_seq = None;
        // The old source's packets are useless to anyone now.
        self.cache = PacketCache::default();
        self.keyframe_cache = KeyframeCache::default();
    }

    pub fn is_video(&self) -> bool {
        self.kind == RtpCodecKind::Video
    }

    /// Observes a packet from the publisher: caches it for NACKs and
    /// keyframe priming.
    /// Returns how many packets this one reveals as missing (a gap after the
    /// highest sequence number seen: loss between publisher and server, as
    /// the publisher's NACKs will try to repair).
    pub fn observe(&mut self, packet: &rtp::Packet, cache_keyframes: bool) -> u64 {
        self.packets += 1;
        self.bytes += packet.payload.len() as u64;
        let seq = packet.header.sequence_number;
        let missing = match self.highest_seq {
            Some(highest) if crate::rtp_munger::seq_newer(seq, highest) => {
                self.highest_seq = Some(seq);
                // A jump of half the space is a new stream, not loss.
                (seq.wrapping_sub(highest) as u64 - 1).min(1000)
            }
            Some(_) => 0,
            None => {
                self.highest_seq = Some(seq);
                0
            }
        };
        if self.is_video() {
            self.cache.insert(packet);
            if vp8::is_keyframe_start(&packet.payload) {
                self.keyframes.keyframe_arrived();
            }
            if cache_keyframes {
                self.keyframe_cache.observe(packet);
            }
        }
        missing
    }

    /// Splits the track into the read-only view down tracks need and the
    /// down tracks themselves, so both can be borrowed at once.
    pub fn split(&mut self) -> (TrackView<'_>, &mut Vec<DownTrack>) {
        (
            TrackView {
                is_video: self.kind == RtpCodecKind::Video,
                epoch: self.epoch,
                keyframe_cache: &self.keyframe_cache,
                cache: &self.cache,
                highest_seq: self.highest_seq,
            },
            &mut self.down_tracks,
        )
    }
}

/// What a down track needs to know of its published track.
pub struct TrackView<'a> {
    pub is_video: bool,
    pub epoch: u32,
    pub keyframe_cache: &'a KeyframeCache,
    /// Recent packets, for sending what was withheld before a late keyframe
    /// start.
    pub cache: &'a PacketCache,
    /// Highest sequence number received from the publisher (this packet
    /// included).
    pub highest_seq: Option<u16>,
}

/// The forwarding of one published track to one subscriber.
pub struct DownTrack {
    pub subscriber: ConnKey,
    pub sender_id: RTCRtpSenderId,
    /// The id of the sender's track on the subscriber's connection; RTCP
    /// feedback from the subscriber arrives tagged with it.
    pub sender_track_id: String,
    pub ssrc: u32,
    /// `None` until the subscriber's answer negotiated this m-section.
    pub rewriter: Option<RtpRewriter>,
    /// Sequence numbers and timestamps of this subscriber's stream.
    pub munger: RtpMunger,
    /// The source epoch this down track is synchronised to.
    pub epoch: u32,
    /// Nothing sent yet: the cached keyframe goes first.
    pub primed: bool,
    /// Video only: deltas are withheld until a keyframe (no corrupt pictures).
    pub waiting_for_keyframe: bool,
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
}

/// What forwarding one packet to one down track did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// Packets handed to the subscriber's connection.
    pub sent: u64,
    /// The down track needs a keyframe from the publisher: set for every
    /// packet it withholds while waiting, so a request that went unanswered
    /// (lost, or its keyframe lost) is repeated (see `KeyframeRequestThrottle`).
    pub want_keyframe: bool,
}

impl DownTrack {
    /// Forwards one publisher packet (the per-packet path for one
    /// subscriber): resynchronise after a source switch, prime a new
    /// subscriber with the cached keyframe, withhold deltas until a
    /// keyframe, then map sequence number and timestamp and send.
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
            if track.is_video {
                self.waiting_for_keyframe = true;
                result.want_keyframe = true;
            }
        }
        if !self.primed {
            self.primed = true;
            if track.is_video {
                result.want_keyframe = true;
                let cached = track.keyframe_cache.packets();
                // Not when this very packet starts a keyframe: it is fresher.
                if !cached.is_empty() && !vp8::is_keyframe_start(&packet.payload) {
                    for p in cached {
                        result.sent += self.send(out, p, now) as u64;
                    }
                    // Live deltas depend on frames the subscriber never got.
                    self.munger.switch_source();
                    self.waiting_for_keyframe = true;
                }
            }
        }
        if self.waiting_for_keyframe {
            if !vp8::is_keyframe_start(&packet.payload) {
                self.munger.drop_packet(
                    packet.header.sequence_number,
                    packet.header.timestamp,
                    now,
                );
                result.want_keyframe = true;
                return result;
            }
            self.waiting_for_keyframe = false;
            result.sent += self.send(out, packet, now) as u64;
            result.sent += self.send_withheld_after(out, packet.header.sequence_number, track, now);
            return result;
        }
        result.sent += self.send(out, packet, now) as u64;
        result
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
        let Some(highest) = track.highest_seq.filter(|&h| seq_newer(h, start)) else {
            return 0;
        };
        let count = highest.wrapping_sub(start).min(CACHE_SIZE as u16);
        let mut sent = 0;
        for i in 1..=count {
            if let Some(withheld) = track.cache.get(start.wrapping_add(i)) {
                sent += self.send(out, withheld, now) as u64;
            }
        }
        sent
    }

    fn send(&mut self, out: &mut RtpWriter<'_, '_>, packet: &rtp::Packet, now: Instant) -> bool {
        let (Some(rewriter), Some((seq, ts))) = (
            &self.rewriter,
            self.munger
                .map(packet.header.sequence_number, packet.header.timestamp, now),
        ) else {
            return false;
        };
        let mut rewritten = packet.clone();
        rewritten.header.sequence_number = seq;
        rewritten.header.timestamp = ts;
        rewriter.rewrite(&mut rewritten);
        let sent = self.write(out, rewritten, now);
        self.packets_sent += sent as u64;
        sent
    }

    /// Re-sends a cached packet the subscriber reported lost (by its
    /// outgoing sequence number).
    pub fn retransmit(
        &mut self,
        out: &mut RtpWriter<'_, '_>,
        out_seq: u16,
        cache: &crate::packet_cache::PacketCache,
        now: Instant,
    ) -> bool {
        let Some((input, ts_offset)) = self.munger.input_for(out_seq) else {
            return false;
        };
        let (Some(rewriter), Some(cached)) = (&self.rewriter, cache.get(input)) else {
            return false;
        };
        let mut rewritten = cached.clone();
        rewritten.header.sequence_number = out_seq;
        rewritten.header.timestamp = rewritten.header.timestamp.wrapping_add(ts_offset);
        rewriter.rewrite(&mut rewritten);
        self.write(out, rewritten, now)
    }

    fn write(
        &mut self,
        out: &mut RtpWriter<'_, '_>,
        mut packet: rtp::Packet,
        now: Instant,
    ) -> bool {
        match out {
            RtpWriter::Rtc(pc) => match pc.rtp_sender(self.sender_id) {
                Some(mut sender) => match sender.write_rtp(now, packet) {
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
            } => match writer.write_rtp(&mut packet, *route, *send, now) {
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
            rewriter: None,
            munger: RtpMunger::new(track.clock_rate),
            epoch: track.epoch,
            primed: false,
            waiting_for_keyframe: track.is_video(),
            packets_sent: 0,
            bytes_sent: 0,
            sender_reports: SenderReportClock::new(track.clock_rate),
        }
    }
}
