//! The cluster's Redis fails under a call in progress (issue #14 point 7),
//! with real `noom` processes: Redis is SIGKILLed (and comes back empty),
//! or hangs (SIGSTOP) and comes back. Users in a call keep their media,
//! members of the room on its own node keep chatting, a join that needs
//! Redis fails fast with a clear error, `/readyz` says not ready; when
//! Redis returns the nodes re-register and re-publish their rooms without
//! a restart, and relayed members are back in their room.
//! Everything binds 127.0.0.1.

use crate::node_process;
use crate::redis_server;
use crate::support;

use anyhow::{ensure, Context as _, Result};
use node_process::{host_of, media_flows, NodeProcess};
use redis_server::RedisServer;
use serde_json::json;
use std::time::{Duration, Instant};
use support::{
    http_get, with_deadline, MediaKind, MediaOptions, TestClient, MEDIA_TIMEOUT, MSG_TIMEOUT,
};

/// What the issue allows for anything that needs Redis while it is gone.
const FAIL_FAST: Duration = Duration::from_secs(3);
/// What the issue allows for the cluster to heal once Redis is back.
const HEAL_LIMIT: Duration = Duration::from_secs(10);

/// Polls `/readyz` of `node` (bounded) until it says `ready` or not.
async fn wait_ready(node: &NodeProcess, ready: bool, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let body = http_get(node.http_addr, "/readyz").await?;
        if body.starts_with("ready") == ready {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < limit,
            "{}: /readyz still {body:?} after {limit:?}",
            node.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Packets from `from` keep arriving at `client` (it receives `more`
/// beyond what it had).
async fn media_keeps_flowing(client: &TestClient, from: &str, more: u64) -> Result<()> {
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let now = client.packets_from(from, kind);
        client
            .wait_packets_above(from, kind, now + more, Duration::from_secs(10))
            .await
            .with_context(|| format!("{}: {kind:?} from {from} during the outage", client.label))?;
    }
    Ok(())
}

/// A call on two nodes: Ann and Carl on the room's node, Bob relayed
/// through the other; Ann and Bob with media.
struct Call {
    nodes: Vec<NodeProcess>,
    host: usize,
    other: usize,
    ann: TestClient,
    bob: TestClient,
    carl: TestClient,
}

async fn call(redis: &RedisServer) -> Result<Call> {
    let nodes = vec![
        NodeProcess::start(&redis.url(), "node-a").await?,
        NodeProcess::start(&redis.url(), "node-b").await?,
    ];
    let mut ann = TestClient::connect_url(&nodes[0].ws_url(), "ann").await?;
    ann.join_with_media("r1", "Ann").await?;
    let host_id = host_of(redis, "r1").context("r1 is placed")?;
    // Idle nodes: the room goes to the least loaded, ties by id.
    ensure!(
        host_id == "node-a",
        "r1 should go to node-a, went to {host_id}"
    );
    let host = 0;
    let other = 1 - host;
    let mut carl = TestClient::connect_url(&nodes[host].ws_url(), "carl").await?;
    carl.join("r1", "Carl").await?;
    let mut bob = TestClient::connect_url(&nodes[other].ws_url(), "bob").await?;
    bob.join_with_media("r1", "Bob").await?;
    let (ann_id, bob_id) = (ann.id.clone().unwrap(), bob.id.clone().unwrap());
    media_flows(&ann, &ann_id, &bob, &bob_id, MEDIA_TIMEOUT).await?;
    Ok(Call {
        nodes,
        host,
        other,
        ann,
        bob,
        carl,
    })
}

/// What must hold while Redis is gone.
async fn during_outage(call: &mut Call, what: &str) -> Result<()> {
    for node in &call.nodes {
        let took = wait_ready(node, false, FAIL_FAST).await?;
        println!("{what}: {} /readyz 503 after {took:?}", node.id);
    }
    // The call goes on: media never touches Redis.
    let (ann_id, bob_id) = (call.ann.id.clone().unwrap(), call.bob.id.clone().unwrap());
    media_keeps_flowing(&call.ann, &bob_id, 50).await?;
    media_keeps_flowing(&call.bob, &ann_id, 50).await?;
    // Members on the room's node chat as before.
    call.ann
        .request_ok(json!({"type": "chat", "text": "can you read me?"}))
        .await?;
    call.carl
        .recv_where("Ann's chat during the outage", MSG_TIMEOUT, |m| {
            m["type"] == "chat" && m["text"] == "can you read me?"
        })
        .await?;
    // A join that needs Redis fails fast, saying why.
    let mut dan = TestClient::connect_url(&call.nodes[call.other].ws_url(), "dan").await?;
    let started = Instant::now();
    let reply = dan
        .request(json!({"type": "join", "room": "r2", "name": "Dan"}))
        .await?;
    let took = started.elapsed();
    println!("{what}: a join needing Redis answered in {took:?}: {reply}");
    ensure!(
        reply["type"] == "error"
            && reply["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot be reached")),
        "the join should fail with a clear error: {reply}"
    );
    ensure!(took < FAIL_FAST, "the join took {took:?} to fail");
    Ok(())
}

/// What must hold once Redis is back (maybe empty).
async fn after_outage(call: &mut Call, redis: &RedisServer, what: &str) -> Result<()> {
    let back = Instant::now();
    for node in &call.nodes {
        wait_ready(node, true, HEAL_LIMIT).await?;
    }
    // Bob's relayed stream was renewed: `joined` and a new offer.
    let bob_joined = call
        .bob
        .follow_move(HEAL_LIMIT, MediaOptions::default())
        .await?;
    let ann_id = call.ann.id.clone().unwrap();
    media_flows(&call.ann, &ann_id, &call.bob, &bob_joined.you, HEAL_LIMIT).await?;
    println!(
        "{what}: relayed member's media back {:?} after Redis returned",
        back.elapsed()
    );
    // Nodes re-registered, the room is mapped to its node again, and the
    // lobby of the other node lists it with its members.
    let host_id = call.nodes[call.host].id.clone();
    for node in &call.nodes {
        ensure!(
            redis.raw(&["HEXISTS", "noom:nodes", &node.id]) == ":1",
            "{} is not registered again",
            node.id
        );
    }
    let mut guest = TestClient::connect_url(&call.nodes[call.other].ws_url(), "guest").await?;
    guest
        .wait_rooms_push("r1 with 3 participants", |r| r.get("r1") == Some(&3))
        .await?;
    let deadline = back + HEAL_LIMIT;
    while host_of(redis, "r1").as_deref() != Some(host_id.as_str()) {
        ensure!(
            Instant::now() < deadline,
            "r1 is not mapped to {host_id} again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{what}: healed (registry, room map, lobby) {:?} after Redis returned",
        back.elapsed()
    );
    ensure!(back.elapsed() < HEAL_LIMIT);
    // Chat reaches the relayed member again.
    call.ann
        .request_ok(json!({"type": "chat", "text": "all good again"}))
        .await?;
    call.bob
        .recv_where("Ann's chat after the outage", MSG_TIMEOUT, |m| {
            m["type"] == "chat" && m["text"] == "all good again"
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_empty() -> Result<()> {
    if !redis_server::available() {
        return Ok(());
    }
    with_deadline("Redis SIGKILL + restart", Duration::from_secs(120), async {
        let mut redis = RedisServer::start().await;
        let mut call = call(&redis).await?;
        redis.kill();
        during_outage(&mut call, "REDIS KILLED").await?;
        redis.restart().await;
        after_outage(&mut call, &redis, "REDIS RESTARTED EMPTY").await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_hangs_then_returns() -> Result<()> {
    if !redis_server::available() {
        return Ok(());
    }
    with_deadline("Redis hang (SIGSTOP)", Duration::from_secs(120), async {
        let redis = RedisServer::start().await;
        let mut call = call(&redis).await?;
        redis.pause();
        during_outage(&mut call, "REDIS HUNG").await?;
        redis.resume();
        after_outage(&mut call, &redis, "REDIS RESUMED").await
    })
    .await
}
