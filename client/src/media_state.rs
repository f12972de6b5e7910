//! What one peer connection records, shared by its event handler, its
//! reading and publishing tasks and the [`crate::Client`] that queries and
//! awaits it; and the options and hooks it is created with.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rtc::rtp;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::rtcp_feedback::FeedbackCounts;
use crate::rtp_synth::{MediaProfile, PayloadTypes, SendGate};
use crate::socket_tap::UdpWrap;
use crate::MediaKind;

/// How a participant's peer connection is set up. The default is a test
/// participant on loopback publishing [`MediaProfile::light`] media, with no
/// diagnostics installed.
#[derive(Debug, Clone, Copy, Default)]
pub struct MediaOptions {
    /// Diagnostics: route the peer connection's UDP through a
    /// [`crate::SocketTap`] that records the RTP sequence numbers arriving on
    /// the wire (SRTP headers are in clear) and can drop chosen packets
    /// before SRTP sees them.
    pub socket_tap: bool,
    /// Diagnostics: mark inbound RTCP `DeliverToApplication` (an interceptor
    /// like the server's `RtcpTap`) and count PLIs/NACKs about our
    /// published tracks.
    pub rtcp_to_app: bool,
    /// `(server media port, relay port)`: rewrite the server's loopback
    /// candidates (in offers and trickled) to point at a relay on
    /// 127.0.0.1, so all media goes through it (a lossy link, say).
    pub candidate_rewrite: Option<(u16, u16)>,
    /// Publish with these (audio, video) SSRCs instead of random ones.
    pub ssrcs: Option<(u32, u32)>,
    /// What to publish; `None` is [`MediaProfile::light`].
    pub profile: Option<MediaProfile>,
    /// Publish nothing, only receive (a recorder, a load subscriber).
    pub receive_only: bool,
    /// Keep per-track counters only, no per-packet logs (sequence counts,
    /// [`crate::Client::track_log`], sent keyframes): for long runs and load.
    pub counters_only: bool,
    /// The address to gather candidates on; `None` is 127.0.0.1 (the tests
    /// and the load generator run server and clients on one machine).
    pub bind_ip: Option<IpAddr>,
    /// Publish the video as three simulcast encodings when the server's
    /// offer asks for them (see [`crate::simulcast_publish`]); otherwise
    /// the offer's simulcast request is ignored and one encoding is sent.
    pub simulcast: bool,
}

/// Per-packet callbacks for code that measures what flows (the load
/// generator's latency and loss counters). Called on the media tasks: keep
/// them short.
pub trait MediaObserver: Send + Sync {
    /// A synthetic packet of ours was handed to its track.
    fn on_sent(&self, _kind: MediaKind) {}
    /// A packet reached one of the remote tracks (after SRTP).
    fn on_received(&self, _kind: MediaKind, _packet: &rtp::Packet) {}
}

/// Hooks that are not plain options (shared objects), given with
/// [`crate::Client::join_with_media_hooks`].
#[derive(Clone, Default)]
pub struct MediaHooks {
    pub observer: Option<Arc<dyn MediaObserver>>,
    /// Wraps the peer connection's UDP socket (instead of a `SocketTap`).
    pub udp: Option<Arc<dyn UdpWrap>>,
}

/// What a client knows about one track the server forwards to it.
#[derive(Debug, Clone)]
pub struct RemoteTrackInfo {
    /// MediaStream id: per the contract, the publisher's participant id.
    pub stream_id: String,
    pub track_id: String,
    pub kind: Option<MediaKind>,
    /// SSRC of the first packet (from `OnOpen`).
    pub ssrc: Option<u32>,
    /// Stream ids the `OnOpen` event carried.
    pub stream_ids_on_open: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
    /// VP8 keyframes seen (first packet of a frame with the key bit clear).
    pub keyframes: u64,
    /// Sender reports about this track (seen only with
    /// `MediaOptions::rtcp_to_app`), and the newest one with the packets
    /// and highest RTP timestamp received when it arrived.
    pub sender_reports: u64,
    /// RTP timestamp of the newest packet received.
    pub last_rtp_timestamp: Option<u32>,
    pub last_sender_report: Option<ReceivedSenderReport>,
    pub payload_types: BTreeSet<u8>,
    pub ssrcs_seen: BTreeSet<u32>,
    pub ended: bool,
}

impl RemoteTrackInfo {
    pub(crate) fn short(&self) -> String {
        format!(
            "[stream={} track={} kind={:?} ssrc={:?} pkts={} kf={} pts={:?}{}]",
            self.stream_id,
            self.track_id,
            self.kind,
            self.ssrc,
            self.packets,
            self.keyframes,
            self.payload_types,
            if self.ended { " ENDED" } else { "" }
        )
    }
}

/// A sender report as a remote track received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedSenderReport {
    pub ntp_time: u64,
    pub rtp_time: u32,
    pub packet_count: u32,
    pub octet_count: u32,
    /// Packets this track had received when the report came.
    pub packets_received: u64,
    /// RTP timestamp of the last packet received before it.
    pub last_rtp_timestamp: Option<u32>,
}

/// One RTP packet as it reached a remote track (after SRTP), in arrival
/// order; see [`crate::Client::track_log`].
#[derive(Debug, Clone, Copy)]
pub struct PacketRecord {
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub marker: bool,
    /// First packet of a VP8 keyframe (video tracks only).
    pub keyframe_start: bool,
    pub at: Instant,
}

/// At most this many packets are kept per remote track in its log
/// (minutes of audio + video at the light profile's rates).
pub(crate) const TRACK_LOG_CAP: usize = 60_000;

/// A VP8 keyframe this client published: first packet's sequence number,
/// RTP timestamp and when it was handed to the track.
#[derive(Debug, Clone, Copy)]
pub struct SentKeyframe {
    pub seq: u16,
    pub ts: u32,
    pub at: Instant,
}

/// What the diagnostics need of one remote track beyond [`RemoteTrackInfo`]
/// (kept apart because `RemoteTrackInfo` is cloned on every wait check).
pub(crate) struct TrackExtra {
    pub(crate) handle: Arc<dyn TrackRemote>,
    /// How many times each RTP sequence number reached the track.
    pub(crate) seq_counts: HashMap<u16, u32>,
    /// The last sequence numbers that reached the track, oldest first.
    pub(crate) recent_seqs: VecDeque<u16>,
    /// Every packet (up to `TRACK_LOG_CAP`), in arrival order.
    pub(crate) log: Vec<PacketRecord>,
}

/// Outgoing candidates are held until the first answer has been sent: the
/// server takes candidates only for a session it has an answer for.
#[derive(Default)]
pub(crate) struct CandidateGate {
    answered: bool,
    sdp_mid: String,
    pending: Vec<Option<String>>,
}

/// Everything the peer connection's callbacks and tasks record.
pub(crate) struct MediaShared {
    pub(crate) label: String,
    pub(crate) opts: MediaOptions,
    pub(crate) observer: Option<Arc<dyn MediaObserver>>,
    pub(crate) tracks: Mutex<Vec<RemoteTrackInfo>>,
    pub(crate) notify: Notify,
    pub(crate) conn_state: Mutex<RTCPeerConnectionState>,
    pub(crate) conn_history: Mutex<Vec<String>>,
    pub(crate) errors: Mutex<Vec<String>>,
    pub(crate) cand_gate: Mutex<CandidateGate>,
    pub(crate) ws_out: mpsc::UnboundedSender<Message>,
    pub(crate) payload_types: PayloadTypes,
    pub(crate) offers_applied: AtomicU64,
    pub(crate) last_offer: Mutex<Option<String>>,
    pub(crate) last_answer: Mutex<Option<String>>,
    pub(crate) audio_sent: AtomicU64,
    pub(crate) video_sent: AtomicU64,
    /// Per remote track (same index as `tracks`): handle and sequence numbers.
    pub(crate) track_extra: Mutex<Vec<TrackExtra>>,
    /// When set, answers are kept in `held_answers` instead of being sent.
    pub(crate) hold_answers: AtomicBool,
    pub(crate) held_answers: Mutex<VecDeque<String>>,
    /// PLIs / NACKs received about our published SSRCs (needs
    /// `MediaOptions::rtcp_to_app`).
    pub(crate) feedback: Arc<FeedbackCounts>,
    /// Keyframes our synthetic video publisher sent.
    pub(crate) keyframes_sent: Mutex<Vec<SentKeyframe>>,
    /// When the peer connection first reached `connected`.
    pub(crate) connected_at: Mutex<Option<Instant>>,
    /// The server's `noom` data channel, once open, and the binary frames
    /// it delivered, in order.
    pub(crate) data_channel: Mutex<Option<Arc<dyn webrtc::data_channel::DataChannel>>>,
    pub(crate) data_frames: Mutex<Vec<Vec<u8>>>,
    /// While set, the client stops reading its data channel (a slow
    /// receiver).
    pub(crate) data_paused: AtomicBool,
    pub(crate) data_resume: Notify,
    /// `OnBufferedAmountLow` events seen on the data channel.
    pub(crate) data_low_events: AtomicU64,
    /// Bytes of the binary frames the application has read.
    pub(crate) data_bytes_read: AtomicU64,
}

impl MediaShared {
    pub(crate) fn new(
        label: &str,
        ws_out: mpsc::UnboundedSender<Message>,
        opts: MediaOptions,
        observer: Option<Arc<dyn MediaObserver>>,
    ) -> MediaShared {
        MediaShared {
            label: label.to_owned(),
            opts,
            observer,
            tracks: Mutex::new(Vec::new()),
            notify: Notify::new(),
            conn_state: Mutex::new(RTCPeerConnectionState::New),
            conn_history: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            cand_gate: Mutex::new(CandidateGate::default()),
            ws_out,
            payload_types: PayloadTypes::default(),
            offers_applied: AtomicU64::new(0),
            last_offer: Mutex::new(None),
            last_answer: Mutex::new(None),
            audio_sent: AtomicU64::new(0),
            video_sent: AtomicU64::new(0),
            track_extra: Mutex::new(Vec::new()),
            hold_answers: AtomicBool::new(false),
            held_answers: Mutex::new(VecDeque::new()),
            feedback: Arc::default(),
            keyframes_sent: Mutex::new(Vec::new()),
            connected_at: Mutex::new(None),
            data_channel: Mutex::new(None),
            data_frames: Mutex::new(Vec::new()),
            data_paused: AtomicBool::new(false),
            data_resume: Notify::new(),
            data_low_events: AtomicU64::new(0),
            data_bytes_read: AtomicU64::new(0),
        }
    }

    pub(crate) fn error(&self, e: String) {
        tracing::warn!(client = %self.label, "media error: {e}");
        self.errors.lock().unwrap().push(e);
        self.notify.notify_waiters();
    }

    fn candidate_message(mid: &str, candidate: Option<String>) -> Message {
        let v = match candidate {
            Some(c) => json!({
                "type": "candidate",
                "candidate": {"candidate": c, "sdpMid": mid, "sdpMLineIndex": 0}
            }),
            None => json!({"type": "candidate", "candidate": Value::Null}),
        };
        Message::text(v.to_string())
    }

    /// A local candidate (`None`: gathering complete) to trickle.
    pub(crate) fn local_candidate(&self, candidate: Option<String>) {
        if self.opts.candidate_rewrite.is_some() {
            // Behind a relay: the server must reach us only through it.
            return;
        }
        let mut gate = self.cand_gate.lock().unwrap();
        if gate.answered {
            let _ = self
                .ws_out
                .send(Self::candidate_message(&gate.sdp_mid, candidate));
        } else {
            gate.pending.push(candidate);
        }
    }

    /// The first answer is out: send the candidates held so far.
    pub(crate) fn open_answer_gate(&self, sdp_mid: String) {
        let mut gate = self.cand_gate.lock().unwrap();
        if gate.answered {
            return;
        }
        gate.answered = true;
        gate.sdp_mid = sdp_mid;
        for c in std::mem::take(&mut gate.pending) {
            let _ = self.ws_out.send(Self::candidate_message(&gate.sdp_mid, c));
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        *self.conn_state.lock().unwrap() == RTCPeerConnectionState::Connected
    }
}

impl SendGate for MediaShared {
    fn payload_type(&self, kind: MediaKind) -> Option<u8> {
        self.payload_types.to_send(self.is_connected(), kind)
    }

    fn on_sent(&self, kind: MediaKind, header: &rtp::header::Header, keyframe_start: bool) {
        match kind {
            MediaKind::Audio => self.audio_sent.fetch_add(1, Ordering::Relaxed),
            MediaKind::Video => self.video_sent.fetch_add(1, Ordering::Relaxed),
        };
        if keyframe_start && !self.opts.counters_only {
            self.keyframes_sent.lock().unwrap().push(SentKeyframe {
                seq: header.sequence_number,
                ts: header.timestamp,
                at: Instant::now(),
            });
        }
        if let Some(o) = &self.observer {
            o.on_sent(kind);
        }
    }
}
