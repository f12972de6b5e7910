//! Operators see and act on one cluster (issue #14, points 5 and 9): the
//! admin API of any node shows every node and every room with its media
//! statistics, kicks, closes and announces wherever the room is, and a node
//! that stops answering is shown from Redis, named, within about a second.
//! Nodes run in this process on a real `redis-server`, except the one that
//! must stop answering: a `noom` process, frozen with SIGSTOP.

use crate::redis_server;
use crate::support;

use anyhow::{ensure, Context as _, Result};
use redis_server::RedisServer;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::admin::{http, post_ok, SOON, TOKEN};
use support::{http_get, metric_sum, start_server_with, with_deadline, TestClient, MSG_TIMEOUT};

/// A node of a cluster on `redis` with the admin API on.
async fn node_with(
    redis: &RedisServer,
    id: &str,
    node_timeout_ms: u64,
) -> Result<noom_signaling::Server> {
    let url = redis.url();
    start_server_with(|cfg| {
        cfg.cluster.redis_url = url;
        cfg.cluster.node_id = id.to_owned();
        cfg.cluster.heartbeat_ms = 200;
        cfg.cluster.node_timeout_ms = node_timeout_ms;
        cfg.admin.token = TOKEN.to_owned();
    })
    .await
}

async fn node(redis: &RedisServer, id: &str) -> Result<noom_signaling::Server> {
    node_with(redis, id, 1000).await
}

/// Who hosts `room`, from Redis.
fn host_of(redis: &RedisServer, room: &str) -> String {
    redis.raw(&["HGET", "noom:room_node", room])
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> Result<(u16, Value)> {
    let (status, text) = http(addr, "POST", path, Some(TOKEN), Some(&body)).await?;
    let value = serde_json::from_str(&text).with_context(|| format!("POST {path}: {text}"))?;
    Ok((status, value))
}

async fn overview(addr: SocketAddr) -> Result<Value> {
    let (status, body) = http(addr, "GET", "/api/overview", Some(TOKEN), None).await?;
    ensure!(status == 200, "overview: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Polls the overview of `addr` until `cond` holds (the overview is a
/// snapshot: media statistics and heartbeats catch up on their own clock).
async fn overview_until<F>(addr: SocketAddr, what: &str, cond: F) -> Result<Value>
where
    F: Fn(&Value) -> bool,
{
    let deadline = Instant::now() + SOON;
    loop {
        let view = overview(addr).await?;
        if cond(&view) {
            return Ok(view);
        }
        ensure!(Instant::now() < deadline, "{what}; last overview: {view:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn room<'a>(view: &'a Value, name: &str) -> Option<&'a Value> {
    view["rooms"].as_array()?.iter().find(|r| r["name"] == name)
}

fn node_entry<'a>(view: &'a Value, id: &str) -> Option<&'a Value> {
    view["nodes"].as_array()?.iter().find(|n| n["id"] == id)
}

/// A participant's media statistics show packets published on both tracks.
fn publishing(participant: &Value) -> bool {
    participant["media"]["published"]
        .as_array()
        .is_some_and(|tracks| {
            tracks.len() == 2 && tracks.iter().all(|t| t["packets"].as_u64() > Some(0))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_overview_of_any_node_shows_every_node_and_room_with_media() -> Result<()> {
    if !redis_server::available() {
        return Ok(());
    }
    with_deadline("cluster overview", Duration::from_secs(90), async {
        let redis = RedisServer::start().await;
        let a = node(&redis, "node-a").await?;
        let b = node(&redis, "node-b").await?;
        let mut ann = TestClient::connect(a.http_addr(), "ann@a").await?;
        let ann_joined = ann.join_with_media("r1", "Ann").await?;
        let host = host_of(&redis, "r1");
        let (host_addr, other_addr, other) = if host == "node-a" {
            (a.http_addr(), b.http_addr(), "node-b")
        } else {
            (b.http_addr(), a.http_addr(), "node-a")
        };
        // Bob's WebSocket is on the other node; his session runs on the host.
        let mut bob = TestClient::connect(other_addr, "bob@other").await?;
        let bob_joined = bob.join_with_media("r1", "Bob").await?;

        let view = overview_until(
            other_addr,
            "both publishing, seen from the other node",
            |v| {
                room(v, "r1").is_some_and(|r| {
                    r["participants"]
                        .as_array()
                        .is_some_and(|ps| ps.len() == 2 && ps.iter().all(publishing))
                })
            },
        )
        .await?;
        ensure!(view["node"] == other, "answered by {other}: {view:#}");
        let r1 = room(&view, "r1").context("r1")?;
        ensure!(r1["node"] == host.as_str(), "r1 is on {host}: {r1:#}");
        ensure!(
            r1["participant_count"] == 2 && r1["unanswered_by"].is_null(),
            "{r1:#}"
        );
        let ids: Vec<&str> = r1["participants"]
            .as_array()
            .context("participants")?
            .iter()
            .filter_map(|p| p["id"].as_str())
            .collect();
        ensure!(
            ids.contains(&ann_joined.you.as_str()) && ids.contains(&bob_joined.you.as_str()),
            "{ids:?}"
        );
        for id in ["node-a", "node-b"] {
            let n = node_entry(&view, id).with_context(|| format!("{id} listed: {view:#}"))?;
            ensure!(
                n["alive"] == true
                    && n["state"] == "serving"
                    && n["answered"] == true
                    && n["heartbeat_age_ms"].as_u64().is_some_and(|ms| ms < 1000)
                    && n["busy_ratio"].is_number()
                    && n["shards"].is_array(),
                "{id}: {n:#}"
            );
        }
        ensure!(view["unanswered"] == json!([]), "{view:#}");
        // Both WebSockets count, wherever they are held.
        ensure!(view["websocket_connections"] == 2, "{view:#}");
        // The heartbeats catch up with the load.
        overview_until(host_addr, "the host's heartbeat carries its load", |v| {
            node_entry(v, &host).is_some_and(|n| n["rooms"] == 1 && n["participants"] == 2)
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kick_and_close_issued_at_another_node_reach_the_room() -> Result<()> {
    if !redis_server::available() {
        return Ok(());
    }
    with_deadline("cluster kick and close", Duration::from_secs(90), async {
        let redis = RedisServer::start().await;
        let a = node(&redis, "node-a").await?;
        let b = node(&redis, "node-b").await?;
        let mut ann = TestClient::connect(a.http_addr(), "ann@a").await?;
        let ann_joined = ann.join("r1", "Ann").await?;
        let host = host_of(&redis, "r1");
        let other_addr = if host == "node-a" {
            b.http_addr()
        } else {
            a.http_addr()
        };
        let mut bob = TestClient::connect(other_addr, "bob@other").await?;
        let bob_joined = bob.join("r1", "Bob").await?;
        let mut cid = TestClient::connect(a.http_addr(), "cid@a").await?;
        let cid_joined = cid.join("r1", "Cid").await?;

        // Kick Bob (relayed) from the node that does not host the room.
        let path = format!("/api/rooms/r1/participants/{}/kick", bob_joined.you);
        let reply = post_ok(other_addr, &path, json!({"reason": "be kind"})).await?;
        ensure!(
            reply == json!({"kicked": bob_joined.you, "room": "r1", "reason": "be kind"}),
            "{reply}"
        );
        let kicked = bob.next_push("kicked").await?;
        ensure!(
            kicked == json!({"type": "kicked", "reason": "be kind"}),
            "{kicked}"
        );
        ann.recv_where("Bob left", MSG_TIMEOUT, |m| {
            m["type"] == "participant_left" && m["id"] == bob_joined.you
        })
        .await?;
        overview_until(other_addr, "Bob gone from r1", |v| {
            room(v, "r1").is_some_and(|r| r["participant_count"] == 2)
        })
        .await?;

        // 404s are unchanged: an unknown participant, an unknown room.
        let (status, _) = post(
            other_addr,
            "/api/rooms/r1/participants/nobody/kick",
            json!({}),
        )
        .await?;
        ensure!(status == 404, "unknown participant: {status}");
        let (status, _) = post(other_addr, "/api/rooms/nowhere/close", json!({})).await?;
        ensure!(status == 404, "unknown room: {status}");

        // Close the room from the other node: both remaining members are told.
        let reply = post_ok(
            other_addr,
            "/api/rooms/r1/close",
            json!({"reason": "maintenance"}),
        )
        .await?;
        ensure!(
            reply == json!({"closed": "r1", "participants": 2}),
            "{reply}"
        );
        for c in [&mut ann, &mut cid] {
            let m = c.next_push("kicked").await?;
            ensure!(m["reason"] == "maintenance", "{}: {m}", c.label);
        }
        overview_until(other_addr, "r1 gone", |v| room(v, "r1").is_none()).await?;
        let _ = (ann_joined, cid_joined);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_announcement_reaches_every_connection_of_every_node_once() -> Result<()> {
    if !redis_server::available() {
        return Ok(());
    }
    with_deadline("cluster announcement", Duration::from_secs(90), async {
        let redis = RedisServer::start().await;
        let a = node(&redis, "node-a").await?;
        let b = node(&redis, "node-b").await?;
        let mut ann = TestClient::connect(a.http_addr(), "ann@a").await?;
        ann.join("r1", "Ann").await?;
        let host = host_of(&redis, "r1");
        let (host_addr, other_addr) = if host == "node-a" {
            (a.http_addr(), b.http_addr())
        } else {
            (b.http_addr(), a.http_addr())
        };
        // A member on the host, one relayed through the other node, a lobby
        // guest on each node.
        let mut member = TestClient::connect(host_addr, "member@host").await?;
        member.join("r1", "Member").await?;
        let mut relayed = TestClient::connect(other_addr, "relayed@other").await?;
        relayed.join("r1", "Relayed").await?;
        let mut guest_other = TestClient::connect(other_addr, "guest@other").await?;
        let mut guest_host = TestClient::connect(host_addr, "guest@host").await?;
        for c in [&mut guest_other, &mut guest_host] {
            c.barrier().await?;
        }

        let reply = post_ok(host_addr, "/api/announce", json!({"text": "all hands"})).await?;
        ensure!(reply == json!({"reached": 5, "unanswered": []}), "{reply}");
        let mut everyone = [
            &mut ann,
            &mut member,
            &mut relayed,
            &mut guest_other,
            &mut guest_host,
        ];
        for c in everyone.iter_mut() {
            let m = c.next_push("announcement").await?;
            ensure!(
                m["text"] == "all hands" && m.get("room").is_none(),
                "{}: {m}",
                c.label
            );
        }

        // To the room, issued at the node that does not host it.
        let reply = post_ok(
            other_addr,
            "/api/announce",
            json!({"text": "r1 only", "room": "r1"}),
        )
        .await?;
        ensure!(reply == json!({"reached": 3, "unanswered": []}), "{reply}");
        let (status, _) = post(
            other_addr,
            "/api/announce",
            json!({"text": "x", "room": "nowhere"}),
        )
        .await?;
        ensure!(status == 404, "unknown room: {status}");

        // Exactly once each, nothing leaked to the lobby.
        for c in everyone.iter_mut() {
            c.barrier().await?;
        }
        for (c, member_of_r1) in everyone.iter().zip([true, true, true, false, false]) {
            let all = c.history_where(|m| m["type"] == "announcement" && m["text"] == "all hands");
            ensure!(
                all.len() == 1,
                "{} got `all hands` {} times",
                c.label,
                all.len()
            );
            let r1 = c.history_where(|m| m["type"] == "announcement" && m["text"] == "r1 only");
            ensure!(
                r1.len() == usize::from(member_of_r1),
                "{} got `r1 only` {} times",
                c.label,
                r1.len()
            );
        }
        Ok(())
    })
    .await
}

/// A `noom` process on `redis` (default heartbeat: 1 s, stale after 5 s).
async fn noom_process(
    redis: &RedisServer,
    id: &str,
) -> Result<(tokio::process::Child, SocketAddr)> {
    let bin = std::env::var("NOOM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_noom").to_owned());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = tokio::process::Command::new(bin)
        .env("NOOM_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("NOOM_MEDIA_BIND_IPS", "127.0.0.1")
        .env("NOOM_MEDIA_PORT", "0")
        .env("NOOM_LOG_LEVEL", "warn")
        .env("NOOM_CLUSTER_REDIS_URL", redis.url())
        .env("NOOM_NODE_ID", id)
        .env("NOOM_ADMIN_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let started = Instant::now();
    while http_get(addr, "/readyz")
        .await
        .map_or(true, |b| b != "ready\n")
    {
        ensure!(started.elapsed() < SOON, "{id} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((child, addr))
}

fn signal(child: &tokio::process::Child, signal: &str) -> Result<()> {
    let pid = child.id().context("pid")?;
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill {signal} {pid}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_stops_answering_is_named_within_a_second() -> Result<()> {
    if !redis_server::available() {
        return Ok(());
    }
    with_deadline("silent node", Duration::from_secs(90), async {
        let redis = RedisServer::start().await;
        // node-a judges liveness like a default node (5 s), so the frozen
        // node is still alive, just silent.
        let a = node_with(&redis, "node-a", 5000).await?;
        let (mut frozen, frozen_addr) = noom_process(&redis, "node-p").await?;
        // node-a hosts one room, so the next new room goes to node-p.
        let mut ann = TestClient::connect(a.http_addr(), "ann@a").await?;
        ann.join("busy", "Ann").await?;
        ensure!(host_of(&redis, "busy") == "node-a");
        let mut pia = TestClient::connect(frozen_addr, "pia@p").await?;
        let pia_joined = pia.join("quiet", "Pia").await?;
        ensure!(
            host_of(&redis, "quiet") == "node-p",
            "quiet should be on node-p"
        );
        // node-p has published its room to Redis: node-a's lobby lists it.
        let mut guest = TestClient::connect(a.http_addr(), "guest@a").await?;
        guest
            .wait_rooms_push("quiet with 1 participant", |rooms| {
                rooms.get("quiet") == Some(&1)
            })
            .await?;
        overview_until(a.http_addr(), "node-p answers with its room", |v| {
            room(v, "quiet").is_some_and(|r| r["participant_count"] == 1 && r["node"] == "node-p")
        })
        .await?;

        signal(&frozen, "-STOP")?;
        let asked = Instant::now();
        let view = overview(a.http_addr()).await?;
        let took = asked.elapsed();
        let result = (|| {
            ensure!(
                took < Duration::from_millis(2500),
                "the overview took {took:?} with a silent node"
            );
            let quiet = room(&view, "quiet").with_context(|| format!("quiet listed: {view:#}"))?;
            ensure!(
                quiet["node"] == "node-p"
                    && quiet["unanswered_by"] == "node-p"
                    && quiet["media"].is_null()
                    && quiet["participants"].is_null()
                    && quiet["participant_count"] == 1,
                "{quiet:#}"
            );
            let p = node_entry(&view, "node-p").context("node-p listed")?;
            ensure!(
                p["alive"] == true
                    && p["answered"] == false
                    && p["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("did not answer")),
                "{p:#}"
            );
            ensure!(view["unanswered"] == json!(["node-p"]), "{view:#}");
            // The room on the answering node is whole.
            let busy = room(&view, "busy").context("busy listed")?;
            ensure!(
                busy["participants"].as_array().map(Vec::len) == Some(1),
                "{busy:#}"
            );
            Ok(())
        })();
        // An action for the silent node's room names it, quickly.
        let path = format!("/api/rooms/quiet/participants/{}/kick", pia_joined.you);
        let kick = post(a.http_addr(), &path, json!({})).await;
        signal(&frozen, "-CONT")?;
        result?;
        let (status, reply) = kick?;
        ensure!(
            status == 504 && reply["node"] == "node-p",
            "{status} {reply}"
        );
        let _ = frozen.kill().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_show_the_cluster_and_count_garbage() -> Result<()> {
    if !redis_server::available() {
        return Ok(());
    }
    with_deadline("cluster metrics", Duration::from_secs(90), async {
        // A single node shows no cluster metrics.
        let single = start_server_with(|_| {}).await?;
        let text = http_get(single.http_addr(), "/metrics").await?;
        ensure!(!text.contains("noom_cluster_"), "single node: {text}");

        let redis = RedisServer::start().await;
        let a = node(&redis, "node-a").await?;
        let b = node(&redis, "node-b").await?;
        let mut ann = TestClient::connect(a.http_addr(), "ann@a").await?;
        ann.join("r1", "Ann").await?;
        let other_addr = if host_of(&redis, "r1") == "node-a" {
            b.http_addr()
        } else {
            a.http_addr()
        };
        let mut bob = TestClient::connect(other_addr, "bob@other").await?;
        bob.join("r1", "Bob").await?;
        bob.request_ok(json!({"type": "chat", "text": "relayed"}))
            .await?;
        // One question to the other node, answered.
        overview_until(other_addr, "both nodes answer", |v| {
            v["nodes"].as_array().is_some_and(|n| n.len() == 2) && v["unanswered"] == json!([])
        })
        .await?;
        // Garbage on the bus, and an answer nobody asked for.
        let channel = "noom:bus:node:node-a";
        redis.raw(&["PUBLISH", channel, "\u{1}not json"]);
        redis.raw(&[
            "PUBLISH",
            channel,
            r#"{"v":1,"from":"node-b","kind":"answer","id":999999,"answer":{"a":"pong"}}"#,
        ]);
        let deadline = Instant::now() + SOON;
        let text = loop {
            let text = http_get(a.http_addr(), "/metrics").await?;
            if metric_sum(&text, "noom_cluster_bus_rejected_total") >= 1.0
                && metric_sum(&text, "noom_cluster_ask_unknown_answers_total") >= 1.0
            {
                break text;
            }
            ensure!(Instant::now() < deadline, "garbage not counted: {text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        ensure!(metric_sum(&text, "noom_cluster_redis_up") == 1.0, "{text}");
        ensure!(
            metric_sum(&text, "noom_cluster_heartbeat_age_seconds") < 1.0,
            "{text}"
        );
        let other_text = http_get(other_addr, "/metrics").await?;
        ensure!(
            metric_sum(&other_text, "noom_cluster_relayed_frames_total") > 0.0,
            "{other_text}"
        );
        ensure!(
            metric_sum(&other_text, "noom_cluster_bus_round_trip_seconds_count") >= 1.0,
            "{other_text}"
        );
        for name in [
            "noom_cluster_relay_queue_depth",
            "noom_cluster_relay_streams",
            "noom_cluster_redis_reconnects_total",
            "noom_cluster_participants_rehomed_total",
        ] {
            ensure!(other_text.contains(name), "{name} missing: {other_text}");
        }
        ensure!(
            metric_sum(&other_text, "noom_cluster_relay_streams") >= 1.0,
            "Bob's stream: {other_text}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_moves_into_a_room_on_another_node_from_any_node() -> Result<()> {
    if !redis_server::available() {
        return Ok(());
    }
    with_deadline("move across nodes", Duration::from_secs(90), async {
        use support::{MediaKind, MediaOptions, MEDIA_TIMEOUT};
        let redis = RedisServer::start().await;
        let a = node(&redis, "node-a").await?;
        let b = node(&redis, "node-b").await?;
        let mut ann = TestClient::connect(a.http_addr(), "ann@a").await?;
        ann.join_with_media("standup", "Ann").await?;
        let mut bea = TestClient::connect(b.http_addr(), "bea@b").await?;
        let bea_joined = bea.join_with_media("retro", "Bea").await?;
        // Established calls (an answer to the very first offer of a stay
        // that crosses a move cannot be told from the new one: see
        // docs/protocol.md, "Several nodes").
        ann.wait_connected(MEDIA_TIMEOUT).await?;
        bea.wait_connected(MEDIA_TIMEOUT).await?;
        let (standup_host, retro_host) = (host_of(&redis, "standup"), host_of(&redis, "retro"));
        ensure!(
            standup_host != retro_host,
            "the two rooms should be on two nodes: {standup_host} {retro_host}"
        );

        // Asked at the node hosting neither the source... or the other one:
        // whichever node takes the request, the room's node does the move.
        let asked_at = if standup_host == "node-a" {
            b.http_addr()
        } else {
            a.http_addr()
        };
        let (status, _) = post(asked_at, "/api/rooms/nowhere/move", json!({"to": "retro"})).await?;
        ensure!(
            status == 404,
            "an unknown room is 404 from any node, got {status}"
        );
        let reply = post_ok(asked_at, "/api/rooms/standup/move", json!({"to": "retro"})).await?;
        ensure!(
            reply == json!({"moved": 1, "from": "standup", "to": "retro"}),
            "{reply}"
        );

        let moved = ann.follow_move(SOON, MediaOptions::default()).await?;
        ensure!(moved.room == "retro", "Ann moved into {:?}", moved.room);
        ensure!(
            moved
                .participants
                .iter()
                .any(|p| p.id == bea_joined.you && p.name == "Bea"),
            "Ann's joined should list Bea: {:?}",
            moved.participants
        );
        bea.recv_where("participant_joined for Ann", SOON, |m| {
            m["type"] == "participant_joined" && m["participant"]["id"] == moved.you.as_str()
        })
        .await?;
        for kind in [MediaKind::Audio, MediaKind::Video] {
            bea.wait_packets_above(&moved.you, kind, 20, MEDIA_TIMEOUT)
                .await
                .context("Bea receives Ann after the move")?;
            ann.wait_packets_above(&bea_joined.you, kind, 20, MEDIA_TIMEOUT)
                .await
                .context("Ann receives Bea after the move")?;
        }
        // The source room is gone from every lobby.
        let mut guest = TestClient::connect(a.http_addr(), "lobby").await?;
        guest
            .wait_rooms_push("retro with 2 and no standup", |rooms| {
                rooms.get("retro") == Some(&2) && !rooms.contains_key("standup")
            })
            .await?;
        Ok(())
    })
    .await
}

/// A client's old peer connection may answer an offer just before the
/// client sees a move's `joined`. When the move takes the room to another
/// node, that answer reaches the new node's session, which never saw the
/// old peer connection: it learns its ICE ufrag with the participant's
/// identity, refuses the answer (naming why) while the new offer is
/// outstanding, and the new peer connection then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_that_crosses_a_move_to_another_node_is_refused() -> Result<()> {
    if !redis_server::available() {
        return Ok(());
    }
    with_deadline(
        "stale answer across nodes",
        Duration::from_secs(90),
        async {
            use support::{MediaKind, MediaOptions, MEDIA_TIMEOUT};
            let redis = RedisServer::start().await;
            let a = node(&redis, "node-a").await?;
            let b = node(&redis, "node-b").await?;
            let mut ann = TestClient::connect(a.http_addr(), "ann@a").await?;
            let mut abe = TestClient::connect(a.http_addr(), "abe@a").await?;
            ann.join_with_media("standup", "Ann").await?;
            let abe_id = abe.join_with_media("standup", "Abe").await?.you;
            let mut bea = TestClient::connect(b.http_addr(), "bea@b").await?;
            let bea_joined = bea.join_with_media("retro", "Bea").await?;
            // Ann's peer connection carries Abe's tracks, so his leaving
            // makes the server offer again.
            ann.wait_packets_above(&abe_id, MediaKind::Video, 0, MEDIA_TIMEOUT)
                .await?;
            let (standup_host, retro_host) = (host_of(&redis, "standup"), host_of(&redis, "retro"));
            ensure!(
                standup_host != retro_host,
                "the two rooms should be on two nodes: {standup_host} {retro_host}"
            );

            // Abe leaves: Ann's old peer connection answers the re-offer, and
            // that answer is held back until after the move.
            ann.set_hold_answers(true)?;
            abe.leave().await?;
            let stale = ann.take_held_answer(MEDIA_TIMEOUT).await?;
            post_ok(
                a.http_addr(),
                "/api/rooms/standup/move",
                json!({"to": "retro"}),
            )
            .await?;
            let moved = ann.moved(SOON).await?;
            ensure!(moved.room == "retro", "Ann moved into {:?}", moved.room);
            support::stale_answer_is_refused(&mut ann, stale).await?;
            ann.media_after_move(MediaOptions::default()).await?;
            for kind in [MediaKind::Audio, MediaKind::Video] {
                bea.wait_packets_above(&moved.you, kind, 20, MEDIA_TIMEOUT)
                    .await
                    .context("Bea receives Ann after the move")?;
                ann.wait_packets_above(&bea_joined.you, kind, 20, MEDIA_TIMEOUT)
                    .await
                    .context("Ann receives Bea after the move")?;
            }
            Ok(())
        },
    )
    .await
}
