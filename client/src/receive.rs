//! The receiving side of a peer connection: one task per remote track
//! recording what arrives, and one for the server's `noom` data channel.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::media_state::{MediaShared, PacketRecord, RemoteTrackInfo, TrackExtra, TRACK_LOG_CAP};
use crate::rtp_synth::is_vp8_keyframe;
use crate::MediaKind;

/// Reads the server's `noom` data channel until it closes (other labels are
/// ignored), pausing while the client plays a slow receiver.
pub(crate) async fn read_data_channel(
    shared: Arc<MediaShared>,
    dc: Arc<dyn webrtc::data_channel::DataChannel>,
) {
    use webrtc::data_channel::DataChannelEvent;
    if dc.label().await.ok().as_deref() != Some("noom") {
        return;
    }
    loop {
        while shared.data_paused.load(Ordering::Acquire) {
            shared.data_resume.notified().await;
        }
        let Some(event) = dc.poll().await else {
            break;
        };
        match event {
            DataChannelEvent::OnOpen => {
                *shared.data_channel.lock().unwrap() = Some(Arc::clone(&dc));
            }
            DataChannelEvent::OnMessage(message) => {
                shared
                    .data_bytes_read
                    .fetch_add(message.data.len() as u64, Ordering::Relaxed);
                shared
                    .data_frames
                    .lock()
                    .unwrap()
                    .push(message.data.to_vec());
            }
            DataChannelEvent::OnBufferedAmountLow => {
                shared.data_low_events.fetch_add(1, Ordering::Relaxed);
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
        shared.notify.notify_waiters();
    }
}

/// Records one remote track until it ends.
pub(crate) async fn read_remote_track(shared: Arc<MediaShared>, track: Arc<dyn TrackRemote>) {
    let info = RemoteTrackInfo {
        stream_id: track.stream_id().await,
        track_id: track.track_id().await,
        kind: MediaKind::from_codec_kind(track.kind().await),
        ssrc: track.ssrcs().await.first().copied(),
        stream_ids_on_open: Vec::new(),
        packets: 0,
        bytes: 0,
        keyframes: 0,
        sender_reports: 0,
        last_rtp_timestamp: None,
        last_sender_report: None,
        payload_types: BTreeSet::new(),
        ssrcs_seen: BTreeSet::new(),
        ended: false,
    };
    let kind = info.kind;
    tracing::debug!(client = %shared.label, "on_track {}", info.short());
    let idx = {
        let mut tracks = shared.tracks.lock().unwrap();
        tracks.push(info);
        shared.track_extra.lock().unwrap().push(TrackExtra {
            handle: Arc::clone(&track),
            seq_counts: HashMap::new(),
            recent_seqs: VecDeque::new(),
            log: Vec::new(),
        });
        tracks.len() - 1
    };
    shared.notify.notify_waiters();
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnOpen(init) => {
                let mut tracks = shared.tracks.lock().unwrap();
                let t = &mut tracks[idx];
                t.stream_ids_on_open = init.stream_ids.clone();
                if t.ssrc.is_none() {
                    t.ssrc = Some(init.ssrc);
                }
                if t.stream_id.is_empty() {
                    if let Some(s) = init.stream_ids.first() {
                        t.stream_id = s.clone();
                    }
                }
            }
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                let key = is_vp8_keyframe(&pkt.payload);
                if let (Some(o), Some(kind)) = (&shared.observer, kind) {
                    o.on_received(kind, &pkt);
                }
                let mut tracks = shared.tracks.lock().unwrap();
                let t = &mut tracks[idx];
                t.packets += 1;
                t.bytes += pkt.payload.len() as u64;
                t.last_rtp_timestamp = Some(pkt.header.timestamp);
                t.payload_types.insert(pkt.header.payload_type);
                t.ssrcs_seen.insert(pkt.header.ssrc);
                if !shared.opts.counters_only {
                    let mut extra = shared.track_extra.lock().unwrap();
                    let x = &mut extra[idx];
                    *x.seq_counts.entry(pkt.header.sequence_number).or_insert(0) += 1;
                    x.recent_seqs.push_back(pkt.header.sequence_number);
                    if x.recent_seqs.len() > 200 {
                        x.recent_seqs.pop_front();
                    }
                    if x.log.len() < TRACK_LOG_CAP {
                        x.log.push(PacketRecord {
                            seq: pkt.header.sequence_number,
                            ts: pkt.header.timestamp,
                            ssrc: pkt.header.ssrc,
                            marker: pkt.header.marker,
                            keyframe_start: t.kind == Some(MediaKind::Video) && key,
                            at: Instant::now(),
                        });
                    }
                }
                if t.kind == Some(MediaKind::Video) && key {
                    t.keyframes += 1;
                }
                drop(tracks);
                shared.notify.notify_waiters();
            }
            TrackRemoteEvent::OnRtcpPacket(packets) => {
                let mut tracks = shared.tracks.lock().unwrap();
                let t = &mut tracks[idx];
                for p in &packets {
                    let Some(sr) = p
                        .as_any()
                        .downcast_ref::<rtc::rtcp::sender_report::SenderReport>()
                    else {
                        continue;
                    };
                    t.sender_reports += 1;
                    t.last_sender_report = Some(crate::media_state::ReceivedSenderReport {
                        ntp_time: sr.ntp_time,
                        rtp_time: sr.rtp_time,
                        packet_count: sr.packet_count,
                        octet_count: sr.octet_count,
                        packets_received: t.packets,
                        last_rtp_timestamp: t.last_rtp_timestamp,
                    });
                }
                drop(tracks);
                shared.notify.notify_waiters();
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
    shared.tracks.lock().unwrap()[idx].ended = true;
    shared.notify.notify_waiters();
}
