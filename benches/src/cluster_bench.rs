//! `noom-load cluster`: what several nodes cost a user and Redis (issue #14,
//! point 11), measured with `noom_client` participants on loopback:
//!
//! - chat latency between two members of one room whose WebSockets are on
//!   two nodes that do not host the room (so each message crosses Redis
//!   twice: sender's front -> host -> receiver's front);
//! - join -> first video packet of a publisher, for a subscriber whose
//!   WebSocket is on the room's node vs on another node;
//! - Redis commands per participant per minute with participants idle in
//!   rooms, from `INFO stats` deltas against an idle cluster.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use noom_client::{ChatMessage, Client, MediaKind, MediaOptions, MEDIA_TIMEOUT, MSG_TIMEOUT};

use crate::cluster::Cluster;
use crate::media::{quantile, random_u32};
use crate::redis_probe;

/// How much of each measurement to do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Chat messages sent for the latency figures.
    pub messages: usize,
    /// Gap between two chat messages (paced: latency, not queueing).
    pub message_gap: Duration,
    /// Subscribers per path (host node, other node) for join -> first frame.
    pub frame_trials: usize,
    /// Participants idle in rooms while Redis commands are counted.
    pub idle_participants: usize,
    /// Participants per room among them.
    pub room_size: usize,
    /// Length of each Redis counting window (idle cluster, then loaded).
    pub window: Duration,
}

/// Runs the three measurements; one JSON object with all figures.
pub async fn run(cluster: &Cluster, plan: &Plan) -> Result<Value> {
    if cluster.nodes.len() < 2 {
        bail!("a cluster bench needs at least 2 nodes");
    }
    let chat = chat_latency(cluster, plan)
        .await
        .context("cross-node chat latency")?;
    let frames = first_frame(cluster, plan)
        .await
        .context("join -> first frame")?;
    let redis = redis_cost(cluster, plan)
        .await
        .context("Redis commands per participant")?;
    Ok(json!({
        "nodes": cluster.nodes.len(),
        "chat": chat,
        "first_frame": frames,
        "redis": redis,
    }))
}

/// One line per figure, for the terminal.
pub fn summary(v: &Value) -> String {
    let f = |p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
    format!(
        "nodes={} chat {} ({} msgs): p50 {:.2} ms p99 {:.2} ms max {:.2} ms\n\
         join -> first video packet p50: via host node {:.0} ms, via other node {:.0} ms ({} trials each)\n\
         redis: idle cluster {:.0} cmds/min; with {} idle participants {:.0} cmds/min -> {:.2} cmds/participant/min above idle ({:.2} counting all)",
        v["nodes"],
        v["chat"]["path"].as_str().unwrap_or("?"),
        v["chat"]["samples"],
        f("/chat/p50_ms"),
        f("/chat/p99_ms"),
        f("/chat/max_ms"),
        f("/first_frame/host_p50_ms"),
        f("/first_frame/other_p50_ms"),
        v["first_frame"]["trials"],
        f("/redis/idle_cmds_per_min"),
        v["redis"]["participants"],
        f("/redis/loaded_cmds_per_min"),
        f("/redis/per_participant_per_min"),
        f("/redis/all_per_participant_per_min"),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The room's host index, after `room` exists.
fn host_index(cluster: &Cluster, room: &str) -> Result<usize> {
    let host = cluster
        .host_of(room)?
        .ok_or_else(|| anyhow!("room {room:?} has no node in Redis"))?;
    cluster
        .index_of(&host)
        .ok_or_else(|| anyhow!("room {room:?} is on {host:?}, not one of the given nodes"))
}

/// Node indexes other than the host first, the host last.
fn fronts_by_distance(cluster: &Cluster, host: usize) -> Vec<usize> {
    (0..cluster.nodes.len())
        .filter(|i| *i != host)
        .chain([host])
        .collect()
}

async fn chat_latency(cluster: &Cluster, plan: &Plan) -> Result<Value> {
    let room = format!("bench-chat-{:08x}", random_u32());
    // The first member places the room; the two measured members then use
    // the nodes furthest from it.
    let mut anchor = Client::connect_url(&cluster.nodes[0].ws_url(), "anchor").await?;
    anchor.join(&room, "anchor").await?;
    let host = host_index(cluster, &room)?;
    let order = fronts_by_distance(cluster, host);
    let (send_at, recv_at) = (order[0], order[1]);
    let mut receiver = Client::connect_url(&cluster.nodes[recv_at].ws_url(), "receiver").await?;
    receiver.join(&room, "receiver").await?;
    let mut sender = Client::connect_url(&cluster.nodes[send_at].ws_url(), "sender").await?;
    let sender_id = sender.join(&room, "sender").await?.you;

    let base = Instant::now();
    let (n, gap) = (plan.messages, plan.message_gap);
    let sending = tokio::spawn(async move {
        let mut tick = tokio::time::interval(gap);
        for seq in 0..n {
            tick.tick().await;
            let sent_us = base.elapsed().as_micros();
            sender.send_json(&json!({"type": "chat", "text": format!("{seq} {sent_us}")}))?;
        }
        sender.barrier().await?;
        anyhow::Ok(sender)
    });
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let msg = receiver
            .recv_where("a chat from the sender", MSG_TIMEOUT, |m| {
                m["type"] == "chat" && m["from"].as_str() == Some(sender_id.as_str())
            })
            .await?;
        let arrived = base.elapsed();
        let chat = ChatMessage::from_json(&msg).ok_or_else(|| anyhow!("not a chat"))??;
        let sent_us: u64 = chat
            .text
            .split_once(' ')
            .and_then(|(_, us)| us.parse().ok())
            .ok_or_else(|| anyhow!("chat text {:?} is not ours", chat.text))?;
        latencies.push(ms(arrived.saturating_sub(Duration::from_micros(sent_us))));
    }
    let sender = sending.await??;
    latencies.sort_by(f64::total_cmp);
    for c in [sender, receiver, anchor] {
        c.close().await;
    }
    let name = |i: usize| cluster.nodes[i].id.clone();
    Ok(json!({
        "path": format!("{} -> host {} -> {}", name(send_at), name(host), name(recv_at)),
        "samples": latencies.len(),
        "gap_ms": ms(gap),
        "p50_ms": quantile(&latencies, 0.5),
        "p99_ms": quantile(&latencies, 0.99),
        "max_ms": latencies.last(),
    }))
}

async fn first_frame(cluster: &Cluster, plan: &Plan) -> Result<Value> {
    let room = format!("bench-media-{:08x}", random_u32());
    let mut publisher = Client::connect_url(&cluster.nodes[0].ws_url(), "publisher").await?;
    let opts = MediaOptions {
        counters_only: true,
        ..MediaOptions::default()
    };
    let publisher_id = publisher
        .join_with_media_opts(&room, "publisher", opts)
        .await?
        .you;
    publisher.wait_connected(MEDIA_TIMEOUT).await?;
    let host = host_index(cluster, &room)?;
    let other = fronts_by_distance(cluster, host)[0];

    let mut host_ms = Vec::new();
    let mut other_ms = Vec::new();
    // Trial 0 (not counted) warms the path and the keyframe cache.
    for trial in 0..=plan.frame_trials {
        for (at, samples) in [(host, &mut host_ms), (other, &mut other_ms)] {
            let label = format!("sub-{trial}-{}", cluster.nodes[at].id);
            let mut sub = Client::connect_url(&cluster.nodes[at].ws_url(), &label).await?;
            let opts = MediaOptions {
                receive_only: true,
                counters_only: true,
                ..MediaOptions::default()
            };
            let start = Instant::now();
            sub.join_with_media_opts(&room, &label, opts).await?;
            sub.wait_media("the publisher's first video packet", MEDIA_TIMEOUT, |c| {
                c.packets_from(&publisher_id, MediaKind::Video) > 0
            })
            .await?;
            if trial > 0 {
                samples.push(ms(start.elapsed()));
            }
            sub.close().await;
        }
    }
    publisher.close().await;
    host_ms.sort_by(f64::total_cmp);
    other_ms.sort_by(f64::total_cmp);
    Ok(json!({
        "host": cluster.nodes[host].id,
        "other": cluster.nodes[other].id,
        "trials": plan.frame_trials,
        "host_p50_ms": quantile(&host_ms, 0.5),
        "host_max_ms": host_ms.last(),
        "other_p50_ms": quantile(&other_ms, 0.5),
        "other_max_ms": other_ms.last(),
        "host_ms": host_ms,
        "other_ms": other_ms,
    }))
}

/// Commands Redis processed during `window`, per command name (our own
/// `INFO` calls left out).
async fn count_commands(cluster: &Cluster, window: Duration) -> Result<(u64, Vec<(String, u64)>)> {
    let before = redis_probe::command_calls(cluster.redis)?;
    let total_before = redis_probe::total_commands(cluster.redis)?;
    tokio::time::sleep(window).await;
    let total_after = redis_probe::total_commands(cluster.redis)?;
    let after = redis_probe::command_calls(cluster.redis)?;
    let mut by_name: Vec<(String, u64)> = after
        .into_iter()
        .filter(|(name, _)| name != "info")
        .map(|(name, calls)| {
            let was = before
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, c)| *c);
            (name, calls - was)
        })
        .filter(|(_, d)| *d > 0)
        .collect();
    by_name.sort_by_key(|(_, calls)| std::cmp::Reverse(*calls));
    // total_commands_processed counts the INFO stats and INFO commandstats
    // calls between the two readings (one each).
    Ok((total_after.saturating_sub(total_before + 2), by_name))
}

async fn redis_cost(cluster: &Cluster, plan: &Plan) -> Result<Value> {
    let minutes = plan.window.as_secs_f64() / 60.0;
    let (idle, idle_by_name) = count_commands(cluster, plan.window).await?;

    let tag = random_u32();
    let mut members = Vec::new();
    for i in 0..plan.idle_participants {
        let node = &cluster.nodes[i % cluster.nodes.len()];
        let room = format!("bench-idle-{tag:08x}-{}", i / plan.room_size.max(1));
        let name = format!("idle-{i}");
        let mut c = Client::connect_url(&node.ws_url(), &name).await?;
        c.join(&room, &name).await?;
        members.push(c);
    }
    // Settle: the joins' own commands and the lobby pushes they cause are
    // over once every member has answered a round trip through its node.
    for c in &mut members {
        c.barrier().await?;
    }
    let (loaded, loaded_by_name) = count_commands(cluster, plan.window).await?;
    for c in members {
        c.close().await;
    }
    let p = plan.idle_participants.max(1) as f64;
    let per_min = |n: u64| n as f64 / minutes;
    Ok(json!({
        "participants": plan.idle_participants,
        "room_size": plan.room_size,
        "window_s": plan.window.as_secs_f64(),
        "idle_cmds_per_min": per_min(idle),
        "loaded_cmds_per_min": per_min(loaded),
        "per_participant_per_min": (per_min(loaded) - per_min(idle)) / p,
        "all_per_participant_per_min": per_min(loaded) / p,
        "idle_by_command": idle_by_name,
        "loaded_by_command": loaded_by_name,
    }))
}
