//! Prometheus metrics at `/metrics` (prometheus-client's text encoder).
//!
//! Control-plane counters live here; media counters are read from the shards'
//! atomics at scrape time, so the packet path never touches this module.

use crate::protocol::ErrorCode;
use crate::rooms::Counts;
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use noom_sfu::ShardStatsSnapshot;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Name, help, unit and reader of a per-shard counter.
type CounterSpec = (
    &'static str,
    &'static str,
    Option<Unit>,
    fn(&ShardStatsSnapshot) -> u64,
);
/// Name, help and reader of a per-shard gauge.
type GaugeSpec = (&'static str, &'static str, fn(&ShardStatsSnapshot) -> u64);

#[derive(Default)]
pub struct Metrics {
    pub ws_connections: Gauge,
    pub admin_auth_failures: Counter,
    errors: Family<Vec<(String, String)>, Counter>,
}

impl Metrics {
    pub fn count_error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&vec![("code".to_owned(), code.as_str().to_owned())])
            .inc();
    }
}

pub async fn serve(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut registry = Registry::with_prefix("noom");
    let Counts {
        rooms,
        participants,
    } = state.rooms.counts().await;
    let gauge = |value: u64| {
        let g: Gauge = Gauge::default();
        g.set(value as i64);
        g
    };
    registry.register(
        "rooms",
        "Rooms with at least one participant",
        gauge(rooms as u64),
    );
    registry.register(
        "participants",
        "Participants in rooms",
        gauge(participants as u64),
    );
    registry.register(
        "websocket_connections",
        "Open WebSocket connections",
        state.metrics.ws_connections.clone(),
    );
    registry.register(
        "signaling_errors",
        "Error replies sent, by contract code",
        state.metrics.errors.clone(),
    );
    type ByShard = Family<Vec<(String, String)>, Counter>;
    type ByShardGauge = Family<Vec<(String, String)>, Gauge>;
    type ByShardSeconds = Family<Vec<(String, String)>, Counter<f64, AtomicU64>>;
    let snapshots: Vec<(String, ShardStatsSnapshot)> = state
        .media
        .shards()
        .iter()
        .map(|shard| (shard.index().to_string(), shard.stats().snapshot()))
        .collect();
    let shard_label = |shard: &str| vec![("shard".to_owned(), shard.to_owned())];
    let counters: [CounterSpec; 27] = [
        (
            "udp_datagrams_received",
            "UDP datagrams received on media ports",
            None,
            |s| s.datagrams_in,
        ),
        (
            "udp_received",
            "UDP payload bytes received on media ports",
            Some(Unit::Bytes),
            |s| s.bytes_in,
        ),
        (
            "udp_datagrams_sent",
            "UDP datagrams sent from media ports",
            None,
            |s| s.datagrams_out,
        ),
        (
            "udp_sent",
            "UDP payload bytes sent from media ports",
            Some(Unit::Bytes),
            |s| s.bytes_out,
        ),
        (
            "udp_datagrams_dropped",
            "Datagrams dropped: unknown protocol or sender, or refused by the connection",
            None,
            |s| s.dropped_datagrams,
        ),
        (
            "dtls_early_replayed",
            "DTLS datagrams that arrived before ICE selected a pair, held and read once it had",
            None,
            |s| s.early_dtls_replayed,
        ),
        (
            "dtls_early_dropped",
            "DTLS datagrams that arrived before ICE selected a pair and were dropped (hold full or connection gone)",
            None,
            |s| s.early_dtls_dropped,
        ),
        (
            "fast_path_connections",
            "Connections whose forwarded media Noom protects and sends itself (SRTP keys recovered)",
            None,
            |s| s.fast_path_connections,
        ),
        (
            "fast_path_refused",
            "Connections whose SRTP keys could not be recovered: forwarded media stays on webrtc-rs' pipeline",
            None,
            |s| s.fast_path_refused,
        ),
        (
            "rtp_packets_received",
            "RTP packets received from publishers",
            None,
            |s| s.rtp_in,
        ),
        (
            "rtp_packets_read_directly",
            "Of the RTP packets received from publishers, those read without webrtc-rs' pipeline (fast path)",
            None,
            |s| s.rtp_in_direct,
        ),
        (
            "rtcp_datagrams_read_directly",
            "RTCP datagrams from clients read without webrtc-rs' pipeline (fast path)",
            None,
            |s| s.rtcp_in_direct,
        ),
        (
            "srtp_rejected",
            "Client RTP and RTCP refused by the fast path's SRTP check (authentication or replay)",
            None,
            |s| s.srtp_rejected,
        ),
        (
            "rtp_packets_forwarded",
            "RTP packets forwarded to subscribers",
            None,
            |s| s.rtp_forwarded,
        ),
        (
            "keyframe_requests_received",
            "PLI and FIR received from subscribers",
            None,
            |s| s.keyframe_requests_in,
        ),
        (
            "keyframe_requests_sent",
            "PLI sent to publishers (after throttling)",
            None,
            |s| s.keyframe_requests_out,
        ),
        (
            "nacks_received",
            "NACK packets received from subscribers",
            None,
            |s| s.nacks_in,
        ),
        (
            "rtp_retransmissions",
            "Packets re-sent from the server's cache for NACKs",
            None,
            |s| s.retransmissions,
        ),
        (
            "rtp_retransmissions_skipped",
            "NACKed packets not re-sent because the subscriber's retransmission budget (a share of its bandwidth estimate) was spent",
            None,
            |s| s.retransmissions_skipped,
        ),
        (
            "simulcast_layer_switches",
            "Simulcast encoding switches made for subscribers (each at a keyframe of the new encoding)",
            None,
            |s| s.layer_switches,
        ),
        (
            "rtp_padding_packets",
            "Padding-only packets sent to subscribers as bandwidth probes (to climb back to a higher simulcast encoding)",
            None,
            |s| s.padding_packets,
        ),
        (
            "rtp_paced_packets",
            "Packets toward congested subscribers that waited in their pacer before leaving (paced at 2.5x the estimate within 10 s of congestion)",
            None,
            |s| s.paced_datagrams,
        ),
        (
            "rtp_packets_lost",
            "RTP packets missing from publishers' streams on arrival (before NACK repair)",
            None,
            |s| s.rtp_lost,
        ),
        (
            "data_messages_received",
            "Data-channel messages received",
            None,
            |s| s.data_messages_in,
        ),
        (
            "data_file_relayed",
            "File bytes relayed over data channels",
            Some(Unit::Bytes),
            |s| s.data_bytes_relayed,
        ),
        (
            "data_frames_refused",
            "Data-channel frames refused with an error",
            None,
            |s| s.data_errors,
        ),
        (
            "ice_tcp_packets_dropped",
            "Packets dropped because an ICE-TCP connection's send queue was full",
            None,
            |s| s.tcp_dropped,
        ),
    ];
    for (name, help, unit, get) in counters {
        let family = ByShard::default();
        for (shard, snapshot) in &snapshots {
            family
                .get_or_create(&shard_label(shard))
                .inc_by(get(snapshot));
        }
        match unit {
            Some(unit) => registry.register_with_unit(name, help, unit, family),
            None => registry.register(name, help, family),
        }
    }
    let busy = ByShardSeconds::default();
    for (shard, snapshot) in &snapshots {
        busy.get_or_create(&shard_label(shard))
            .inc_by(snapshot.loop_busy_micros as f64 / 1e6);
    }
    registry.register_with_unit(
        "shard_busy",
        "Time each shard's event loop spent working (not waiting); its rate is the busy ratio",
        Unit::Seconds,
        busy,
    );
    let gauges: [GaugeSpec; 5] = [
        ("shard_peers", "Peer connections on each shard", |s| s.peers),
        (
            "ice_tcp_connections",
            "ICE-TCP connections open on each shard",
            |s| s.tcp_connections,
        ),
        ("shard_rooms", "Rooms on each shard", |s| s.rooms),
        ("shard_tracks", "Published tracks on each shard", |s| {
            s.tracks
        }),
        (
            "data_channel_queue_peak_bytes",
            "Most bytes ever queued toward one data channel (back-pressure bounds it)",
            |s| s.data_queue_peak_bytes,
        ),
    ];
    for (name, help, get) in gauges {
        let family = ByShardGauge::default();
        for (shard, snapshot) in &snapshots {
            family
                .get_or_create(&shard_label(shard))
                .set(get(snapshot) as i64);
        }
        registry.register(name, help, family);
    }
    // Bandwidth estimates toward subscribers: how many fall in each band
    // (cumulative, like histogram buckets) and their sum, per shard; a
    // series per participant would grow without bound.
    let by_band = Family::<Vec<(String, String)>, Gauge>::default();
    let estimate_sum = ByShardGauge::default();
    for (shard, s) in &snapshots {
        let bands = [
            s.bwe_estimate_le_300k,
            s.bwe_estimate_le_1m,
            s.bwe_estimate_le_3m,
        ];
        for (limit, count) in noom_sfu::BWE_BANDS_BPS.iter().zip(bands) {
            by_band
                .get_or_create(&vec![
                    ("shard".to_owned(), shard.clone()),
                    ("le".to_owned(), limit.to_string()),
                ])
                .set(count as i64);
        }
        by_band
            .get_or_create(&vec![
                ("shard".to_owned(), shard.clone()),
                ("le".to_owned(), "+Inf".to_owned()),
            ])
            .set(s.bwe_subscribers as i64);
        estimate_sum
            .get_or_create(&shard_label(shard))
            .set(s.bwe_estimate_sum_bps as i64);
    }
    registry.register(
        "subscribers_by_bandwidth_estimate",
        "Subscriber connections whose bandwidth estimate (bit/s) is at most le, per shard",
        by_band,
    );
    registry.register(
        "subscriber_bandwidth_estimate_sum_bps",
        "Sum of the bandwidth estimates toward subscriber connections in bit/s, per shard (divide by the +Inf band for the mean)",
        estimate_sum,
    );
    // The encoding each forwarded video gets (rank among the publisher's
    // flowing encodings, 0 = lowest) or paused, counted per shard.
    let by_layer = Family::<Vec<(String, String)>, Gauge>::default();
    for (shard, s) in &snapshots {
        let counts = [
            ("0", s.forwarded_video_layer_0),
            ("1", s.forwarded_video_layer_1),
            ("2", s.forwarded_video_layer_2),
            ("paused", s.forwarded_video_paused),
        ];
        for (layer, count) in counts {
            by_layer
                .get_or_create(&vec![
                    ("shard".to_owned(), shard.clone()),
                    ("layer".to_owned(), layer.to_owned()),
                ])
                .set(count as i64);
        }
    }
    registry.register(
        "forwarded_videos_by_layer",
        "Video streams forwarded to subscribers by the encoding they get (0 = the publisher's lowest flowing one, 2 = third or above) or paused (allocator, or hidden tile), per shard",
        by_layer,
    );
    registry.register(
        "admin_auth_failures",
        "Admin API requests refused for a missing or wrong token",
        state.metrics.admin_auth_failures.clone(),
    );
    if let Some(node) = &state.cluster {
        crate::cluster::metrics::register(&mut registry, node);
    }
    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        text = "# encoding failed\n".to_owned();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
