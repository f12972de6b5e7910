//! A clustered node's part of `/metrics` (a single node shows none of it):
//! the Redis link, the heartbeat, relayed traffic and its queues, the bus
//! round trip, failures healed and messages refused.
//!
//! Everything is read at scrape time from counters the cluster keeps
//! anyway; nothing here runs between scrapes.

use super::node::{ClusterNode, EndKind};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicU64, Ordering};

type Labels = Vec<(String, String)>;

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}

fn gauge(value: i64) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(value);
    gauge
}

fn counter(value: &AtomicU64) -> Counter {
    let counter = Counter::default();
    counter.inc_by(value.load(Ordering::Relaxed));
    counter
}

/// Queued frames over all relayed streams of this node, and the fullest
/// stream's queue (each holds at most `STREAM_QUEUE` before the stream is
/// cut off).
fn relay_queues(node: &ClusterNode) -> (usize, usize, usize) {
    let streams = node.streams();
    let depths: Vec<usize> = streams
        .values()
        .map(|end| match &end.kind {
            EndKind::Front(tx) => tx.max_capacity() - tx.capacity(),
            EndKind::Host(tx) => tx.max_capacity() - tx.capacity(),
        })
        .collect();
    (
        streams.len(),
        depths.iter().sum(),
        depths.iter().copied().max().unwrap_or(0),
    )
}

/// Registers the cluster's metrics under `noom_cluster_*`.
pub(crate) fn register(registry: &mut Registry, node: &ClusterNode) {
    let registry = registry.sub_registry_with_prefix("cluster");
    registry.register(
        "redis_up",
        "1 while this node's Redis link answers, 0 while it is down",
        gauge(i64::from(node.redis_up())),
    );
    let last_beat = node.registry.status().borrow().last_ok;
    let age: Gauge<f64, AtomicU64> = Gauge::default();
    age.set(last_beat.map_or(f64::INFINITY, |t| t.elapsed().as_secs_f64()));
    registry.register_with_unit(
        "heartbeat_age",
        "Time since this node's last heartbeat was written to Redis",
        Unit::Seconds,
        age,
    );
    registry.register(
        "redis_reconnects",
        "Times the Redis link came back after being down",
        counter(&node.link.counters.reconnects),
    );
    let relayed: Family<Labels, Counter> = Family::default();
    relayed
        .get_or_create(&label("direction", "out"))
        .inc_by(node.counters.relayed_out.load(Ordering::Relaxed));
    relayed
        .get_or_create(&label("direction", "in"))
        .inc_by(node.counters.relayed_in.load(Ordering::Relaxed));
    registry.register(
        "relayed_frames",
        "Frames of relayed connections sent to and received from other nodes",
        relayed,
    );
    registry.register(
        "relay_broken_streams",
        "Relayed connections cut off by a lost frame or a full queue",
        counter(&node.counters.broken_streams),
    );
    let (streams, queued, fullest) = relay_queues(node);
    registry.register(
        "relay_streams",
        "Relayed connections this node is an end of",
        gauge(streams as i64),
    );
    registry.register(
        "relay_queue_depth",
        "Relayed frames received and waiting for their connection's task, all streams together",
        gauge(queued as i64),
    );
    registry.register(
        "relay_queue_depth_max",
        "Relayed frames waiting in the fullest stream's queue",
        gauge(fullest as i64),
    );
    registry.register_with_unit(
        "bus_round_trip",
        "Question-to-answer round trips to other nodes over Redis pub/sub (the path relayed frames take, twice): \
         operators' questions and a ping to each live node every 5 s",
        Unit::Seconds,
        node.asks.round_trip.clone(),
    );
    registry.register(
        "ask_timeouts",
        "Questions to other nodes not answered in time",
        counter(&node.asks.counters.timed_out),
    );
    registry.register(
        "ask_unknown_answers",
        "Answers dropped because no question was waiting for them (late or forged)",
        counter(&node.asks.counters.unknown_answers),
    );
    registry.register(
        "ask_dropped_questions",
        "Questions from other nodes dropped because too many were being answered",
        counter(&node.asks.counters.dropped_questions),
    );
    registry.register(
        "participants_rehomed",
        "Participants rejoined on a live node after their room's node was lost",
        counter(&node.counters.rehomed),
    );
    registry.register(
        "rooms_rehomed",
        "Rooms taken over from a lost node (once per room, on the node that moved it)",
        counter(&node.counters.rooms_rehomed),
    );
    let bus = &node.bus.counters;
    let rejected: Family<Labels, Counter> = Family::default();
    for (reason, value) in [
        ("not_json", &bus.not_json),
        ("wrong_version", &bus.wrong_version),
        ("unknown_kind", &bus.unknown_kind),
        ("bad_fields", &bus.bad_fields),
        ("overflow", &bus.overflow),
    ] {
        rejected
            .get_or_create(&label("reason", reason))
            .inc_by(value.load(Ordering::Relaxed));
    }
    registry.register(
        "bus_rejected",
        "Bus messages dropped: garbage or foreign (by reason), or overflow when this node could not keep up",
        rejected,
    );
    registry.register(
        "bus_accepted",
        "Bus messages from other nodes accepted",
        counter(&bus.accepted),
    );
    registry.register(
        "redis_inbox_overflow",
        "Pub/sub messages dropped because this node's inbox was full",
        counter(&node.link.counters.inbox_overflow),
    );
}
