//! Several nodes over one real `redis-server`, as users see them: clients
//! on different nodes in one room see and hear each other and chat, the
//! lobby of any node lists every node's rooms, new rooms spread over the
//! nodes. The nodes run in this process (each its own `Server`, its own
//! node id and ports); the process-level failures are in `cluster_failover`.

use crate::redis_server;
use crate::support;

use anyhow::{ensure, Context as _, Result};
use redis_server::RedisServer;
use serde_json::json;
use std::time::Duration;
use support::{
    start_server_with, with_deadline, MediaKind, TestClient, MEDIA_TIMEOUT, MSG_TIMEOUT,
};

/// A node of a cluster on `redis`, with heartbeats fast enough for tests.
async fn node(redis: &RedisServer, id: &str) -> Result<noom_signaling::Server> {
    let url = redis.url();
    start_server_with(|cfg| {
        cfg.cluster.redis_url = url;
        cfg.cluster.node_id = id.to_owned();
        cfg.cluster.heartbeat_ms = 200;
        cfg.cluster.node_timeout_ms = 1000;
    })
    .await
}

/// Who hosts `room`, from Redis.
async fn host_of(redis: &RedisServer, room: &str) -> Result<Option<String>> {
    let client = redis::Client::open(redis.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    Ok(redis::cmd("HGET")
        .arg("noom:room_node")
        .arg(room)
        .query_async(&mut conn)
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_on_two_nodes_see_hear_and_chat() -> Result<()> {
    if !redis_server::available() {
        return Ok(());
    }
    with_deadline("two nodes, one room", Duration::from_secs(60), async {
        let redis = RedisServer::start().await;
        let a = node(&redis, "node-a").await?;
        let b = node(&redis, "node-b").await?;

        let mut ann = TestClient::connect(a.http_addr(), "ann@a").await?;
        let ann_joined = ann.join_with_media("r1", "Ann").await?;
        let host = host_of(&redis, "r1").await?.context("r1 is placed")?;

        // Bob comes in through the node that does not host the room.
        let other = if host == "node-a" { &b } else { &a };
        let mut bob = TestClient::connect(other.http_addr(), "bob@other").await?;
        let bob_joined = bob.join_with_media("r1", "Bob").await?;
        ensure!(
            bob_joined
                .participants
                .iter()
                .any(|p| p.id == ann_joined.you && p.name == "Ann"),
            "Bob's joined should list Ann: {:?}",
            bob_joined.participants
        );
        ann.recv_where("participant_joined for Bob", MSG_TIMEOUT, |m| {
            m["type"] == "participant_joined" && m["participant"]["name"] == "Bob"
        })
        .await?;

        // Media goes both ways, straight to the room's node.
        for kind in [MediaKind::Audio, MediaKind::Video] {
            bob.wait_packets_above(&ann_joined.you, kind, 20, MEDIA_TIMEOUT)
                .await
                .context("Bob receives Ann")?;
            ann.wait_packets_above(&bob_joined.you, kind, 20, MEDIA_TIMEOUT)
                .await
                .context("Ann receives Bob")?;
        }

        // Chat both ways, each message once.
        bob.request_ok(json!({"type": "chat", "text": "hello from the other node"}))
            .await?;
        ann.recv_where("Bob's chat", MSG_TIMEOUT, |m| {
            m["type"] == "chat" && m["text"] == "hello from the other node"
        })
        .await?;
        ann.request_ok(json!({"type": "chat", "text": "hi Bob", "to": bob_joined.you}))
            .await?;
        bob.recv_where("Ann's direct message", MSG_TIMEOUT, |m| {
            m["type"] == "chat" && m["text"] == "hi Bob" && m["to"] == bob_joined.you.as_str()
        })
        .await?;
        bob.barrier().await?;
        ensure!(
            bob.history_where(|m| m["type"] == "chat" && m["text"] == "hi Bob")
                .len()
                == 1,
            "the direct message arrived more than once"
        );

        // A guest in the lobby of either node sees the room with both.
        for (label, server) in [("lobby@a", &a), ("lobby@b", &b)] {
            let mut guest = TestClient::connect(server.http_addr(), label).await?;
            guest
                .wait_rooms_push("r1 with 2 participants", |rooms| {
                    rooms.get("r1") == Some(&2)
                })
                .await?;
        }

        // Bob leaves: Ann hears it, the lobby count drops.
        let mut guest = TestClient::connect(other.http_addr(), "lobby2").await?;
        bob.leave().await?;
        ann.recv_where("participant_left for Bob", MSG_TIMEOUT, |m| {
            m["type"] == "participant_left" && m["id"] == bob_joined.you
        })
        .await?;
        guest
            .wait_rooms_push("r1 with 1 participant", |rooms| rooms.get("r1") == Some(&1))
            .await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_rooms_spread_over_idle_nodes() -> Result<()> {
    if !redis_server::available() {
        return Ok(());
    }
    with_deadline("rooms spread", Duration::from_secs(60), async {
        let redis = RedisServer::start().await;
        let a = node(&redis, "node-a").await?;
        let _b = node(&redis, "node-b").await?;
        let mut clients = Vec::new();
        for n in 0..4 {
            let mut client = TestClient::connect(a.http_addr(), &format!("c{n}")).await?;
            client.join(&format!("room-{n}"), "Solo").await?;
            clients.push(client);
        }
        let mut hosts = Vec::new();
        for n in 0..4 {
            hosts.push(
                host_of(&redis, &format!("room-{n}"))
                    .await?
                    .unwrap_or_default(),
            );
        }
        ensure!(
            hosts.iter().filter(|h| *h == "node-a").count() == 2
                && hosts.iter().filter(|h| *h == "node-b").count() == 2,
            "four one-person rooms opened through node-a should land on both nodes: {hosts:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relayed_flood_is_refused_at_the_front_and_the_client_goes_on() -> Result<()> {
    if !redis_server::available() {
        return Ok(());
    }
    with_deadline("relayed flood", Duration::from_secs(60), async {
        let redis = RedisServer::start().await;
        let a = node(&redis, "node-a").await?;
        let b = node(&redis, "node-b").await?;
        let mut ann = TestClient::connect(a.http_addr(), "ann@a").await?;
        ann.join("flood", "Ann").await?;
        let host = host_of(&redis, "flood").await?.context("placed")?;
        let other = if host == "node-a" { &b } else { &a };
        let mut bob = TestClient::connect(other.http_addr(), "bob@other").await?;
        bob.join("flood", "Bob").await?;
        // Far over the burst (100) at once: the excess is refused with the
        // request's own `req`, every request gets exactly one answer.
        const N: usize = 300;
        for n in 0..N {
            bob.send_json(&json!({"type": "rooms", "req": format!("f{n}")}))?;
        }
        let mut answered = 0;
        let mut limited = 0;
        while answered < N {
            let m = bob
                .recv_where("an answer to the flood", MSG_TIMEOUT, |m| {
                    m["req"].as_str().is_some_and(|r| r.starts_with('f'))
                })
                .await?;
            answered += 1;
            if m["type"] == "error" {
                ensure!(m["code"] == "rate_limited", "unexpected error {m}");
                limited += 1;
            }
        }
        ensure!(
            limited > 0 && limited < N,
            "expected some (not all) of {N} requests refused, {limited} were"
        );
        // Still a member: chat reaches Ann once the bucket refills.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let reply = bob
                .request(json!({"type": "chat", "text": "still here"}))
                .await?;
            if reply["type"] == "ok" {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "never admitted again: {reply}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await; // rate-limit refill
        }
        ann.recv_where("Bob's chat after the flood", MSG_TIMEOUT, |m| {
            m["type"] == "chat" && m["text"] == "still here"
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_first_joins_through_three_nodes_make_one_room() -> Result<()> {
    if !redis_server::available() {
        return Ok(());
    }
    with_deadline(
        "50 concurrent first joins",
        Duration::from_secs(90),
        async {
            let redis = RedisServer::start().await;
            let nodes = [
                node(&redis, "node-a").await?,
                node(&redis, "node-b").await?,
                node(&redis, "node-c").await?,
            ];
            let mut clients = Vec::new();
            for n in 0..50 {
                let addr = nodes[n % 3].http_addr();
                clients.push(TestClient::connect(addr, &format!("c{n}")).await?);
            }
            // All at once: every join is sent before any answer is read.
            for (n, client) in clients.iter().enumerate() {
                client.send_json(&json!({
                    "type": "join", "room": "crowd", "name": format!("P{n}"), "req": "j"
                }))?;
            }
            let mut ids = std::collections::BTreeSet::new();
            for client in &mut clients {
                let joined = client
                    .recv_where("joined", MSG_TIMEOUT, |m| m["req"] == "j")
                    .await?;
                ensure!(joined["type"] == "joined", "{}: {joined}", client.label);
                ids.insert(joined["you"].as_str().unwrap_or_default().to_owned());
            }
            ensure!(
                ids.len() == 50,
                "50 distinct participants, got {}",
                ids.len()
            );
            let host = host_of(&redis, "crowd").await?.context("placed")?;
            // One room, on one node, with all fifty: the lobby of every node says so.
            for (n, server) in nodes.iter().enumerate() {
                let mut guest =
                    TestClient::connect(server.http_addr(), &format!("lobby{n}")).await?;
                guest
                    .wait_rooms_push("crowd with 50", |rooms| rooms.get("crowd") == Some(&50))
                    .await
                    .with_context(|| format!("host {host}"))?;
            }
            // The last joiner was told about the 49 others, wherever it came in.
            let last = clients.last_mut().context("clients")?;
            last.request_ok(json!({"type": "chat", "text": "all here?"}))
                .await?;
            for client in clients.iter_mut().take(49) {
                client
                    .recv_where("the last joiner's chat", MSG_TIMEOUT, |m| {
                        m["type"] == "chat" && m["text"] == "all here?"
                    })
                    .await?;
            }
            Ok(())
        },
    )
    .await
}
