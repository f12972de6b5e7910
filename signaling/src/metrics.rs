//! Prometheus metrics at `/metrics` (prometheus-client's text encoder).
//!
//! Control-plane counters live here; media counters are read from the shards'
//! atomics at scrape time, so the packet path never touches this module.

use crate::protocol::ErrorCode;
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

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
    let (rooms, participants) = {
        let directory = state.directory.lock().unwrap();
        (directory.room_count(), directory.participant_count())
    };
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
    let shard_counters: Family<Vec<(String, String)>, Counter> = Family::default();
    let shard_gauges: Family<Vec<(String, String)>, Gauge> = Family::default();
    for shard in state.media.shards() {
        let s = shard.stats().snapshot();
        let label = |name: &str| {
            vec![
                ("shard".to_owned(), shard.index().to_string()),
                ("counter".to_owned(), name.to_owned()),
            ]
        };
        for (name, value) in [
            ("datagrams_in", s.datagrams_in),
            ("bytes_in", s.bytes_in),
            ("datagrams_out", s.datagrams_out),
            ("bytes_out", s.bytes_out),
            ("dropped_datagrams", s.dropped_datagrams),
            ("rtp_in", s.rtp_in),
            ("rtp_forwarded", s.rtp_forwarded),
            ("keyframe_requests_in", s.keyframe_requests_in),
            ("keyframe_requests_out", s.keyframe_requests_out),
            ("nacks_in", s.nacks_in),
            ("retransmissions", s.retransmissions),
            ("loop_busy_micros", s.loop_busy_micros),
        ] {
            shard_counters.get_or_create(&label(name)).inc_by(value);
        }
        for (name, value) in [("peers", s.peers), ("rooms", s.rooms), ("tracks", s.tracks)] {
            shard_gauges.get_or_create(&label(name)).set(value as i64);
        }
    }
    registry.register("shard", "Media shard counters", shard_counters);
    registry.register("shard_state", "Media shard gauges", shard_gauges);
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
