//! Issue #6, the parts not already covered by `security.rs` (tokens,
//! origins, rate limits, SIGTERM), `abuse.rs` (1,000 connections / rooms, a
//! silent client, stolen SSRCs) and `lifecycle.rs` (grace period, 1,000
//! join/leave cycles): expired tokens end to end, names and rooms in odd
//! Unicode, and a participant whose network vanishes without a word (no
//! DTLS close), with `/metrics` back to the others afterwards.

use crate::support;

use anyhow::{anyhow, ensure, Result};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{
    http_get, metric_sum, rooms_of, start_server_with, with_deadline, MediaKind, MediaOptions,
    TestClient,
};
use tokio_tungstenite::tungstenite::Message;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_join_tokens_are_refused() -> Result<()> {
    with_deadline("expired tokens", Duration::from_secs(30), async {
        let server = start_server_with(|c| c.auth.secret = "hunter2".to_owned()).await?;
        let addr = server.http_addr();
        let mut c = TestClient::connect(addr, "c").await?;
        let token = |exp: u64| {
            let claims = noom_signaling::auth::JoinClaims {
                room: "board".into(),
                name: "ann".into(),
                exp,
            };
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(b"hunter2"),
            )
            .expect("sign")
        };
        let join = |t: String| json!({"type": "join", "room": "board", "name": "ann", "token": t});
        // Long expired, an hour ago, and just past the 5 s leeway.
        let now = unix_now();
        for exp in [1_000, now - 3_600, now - 10] {
            let e = c.request_err(join(token(exp)), "unauthorized").await?;
            println!("exp = now - {} s: {}", now - exp, e["message"]);
        }
        let rooms = c.request(json!({"type": "rooms"})).await?;
        ensure!(
            rooms_of(&rooms)?.is_empty(),
            "a refused join made a room: {rooms}"
        );
        // The same claims, unexpired, get in.
        let joined = c.request(join(token(now + 60))).await?;
        ensure!(joined["type"] == "joined", "{joined}");
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// Names and room names the contract allows (1 to 64 Unicode scalar
/// values, no control characters), chosen to trip up code that counts
/// bytes, normalises, trims or renders.
fn odd_names() -> Vec<(&'static str, String)> {
    vec![
        (
            "RTL marks around Hebrew",
            "\u{200F}שלום עולם\u{200E}".into(),
        ),
        ("Arabic", "مرحبا بالعالم".into()),
        ("RLO override", "\u{202E}gnp.exe\u{202C}".into()),
        (
            "stacked combining marks",
            "Z\u{0351}\u{0352}\u{0353}a\u{0301}\u{0302}\u{0303}l\u{0323}\u{0324}g\u{0330}o".into(),
        ),
        ("decomposed é", "caf\u{0065}\u{0301}".into()),
        ("precomposed é", "caf\u{00E9}".into()),
        (
            "emoji ZWJ sequences and modifiers",
            "👩\u{200D}👩\u{200D}👧\u{200D}👦🏳\u{FE0F}\u{200D}🌈👍🏽".into(),
        ),
        (
            "zero-width characters",
            "a\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}b".into(),
        ),
        ("64 four-byte characters", "𝕏".repeat(64)),
        ("64 emoji", "😀".repeat(64)),
        ("noncharacters", "\u{FFFE}\u{FFFF}\u{10FFFF}".into()),
        ("CJK and Hangul", "会議室 회의실".into()),
        ("JSON-looking", "\"},{\"type\":\"kick\\u0000".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_unicode_names_round_trip_exactly_and_controls_are_refused() -> Result<()> {
    with_deadline("unicode", Duration::from_secs(60), async {
        let server = start_server_with(|_| {}).await?;
        let addr = server.http_addr();
        let cases = odd_names();
        let mut keep = Vec::new();
        for (label, s) in &cases {
            let ctx = |e: anyhow::Error| anyhow!("{label} ({s:?}): {e:#}");
            // An observer is in the room (named `s`) first; then someone
            // named `s` joins it and chats `s`.
            let mut obs = TestClient::connect(addr, "observer").await?;
            obs.join(s, "observer").await.map_err(ctx)?;
            let mut x = TestClient::connect(addr, label).await?;
            let joined = x.join(s, s).await.map_err(ctx)?;
            ensure!(joined.room == *s, "{label}: joined room {:?}", joined.room);
            ensure!(
                joined.participants.iter().any(|p| p.name == "observer"),
                "{label}: {:?}",
                joined.participants
            );
            let pj = obs.next_push("participant_joined").await.map_err(ctx)?;
            ensure!(
                pj["participant"]["name"].as_str() == Some(s.as_str()),
                "{label}: participant_joined carried {:?}",
                pj["participant"]["name"]
            );
            x.request_ok(json!({"type": "chat", "text": s}))
                .await
                .map_err(ctx)?;
            let chat = obs.next_push("chat").await.map_err(ctx)?;
            ensure!(
                chat["name"].as_str() == Some(s.as_str()) && chat["text"].as_str() == Some(s),
                "{label}: chat {chat}"
            );
            keep.push(obs);
            keep.push(x);
        }
        // Every room is listed under its exact name: decomposed and
        // precomposed "café" are two rooms (nothing normalises).
        let mut lobby = TestClient::connect(addr, "lobby").await?;
        let rooms = rooms_of(&lobby.request(json!({"type": "rooms"})).await?)?;
        for (label, s) in &cases {
            ensure!(
                rooms.get(s) == Some(&2),
                "{label}: room {s:?} listed as {:?}",
                rooms.get(s)
            );
        }
        ensure!(
            rooms.len() == cases.len(),
            "{} rooms for {} names",
            rooms.len(),
            cases.len()
        );

        // A rename to an odd name reaches everyone exactly.
        let mut x = keep.pop().expect("a client");
        let renamed = "\u{200F}א\u{0301}🙂";
        x.request_ok(json!({"type": "name", "name": renamed}))
            .await?;
        let upd = x.next_push("participant_updated").await?;
        ensure!(upd["participant"]["name"] == renamed, "{upd}");

        // Limits are in scalar values, not bytes or UTF-16 units.
        let too_long = "𝕏".repeat(65);
        lobby
            .request_err(
                json!({"type": "join", "room": "r", "name": too_long}),
                "bad_request",
            )
            .await?;
        lobby
            .request_err(
                json!({"type": "join", "room": too_long, "name": "n"}),
                "bad_request",
            )
            .await?;

        // Control characters (Unicode category Cc: C0, DEL, C1) are refused
        // in names, room names and renames.
        let controls = [
            "nul\u{0000}",
            "line\nbreak",
            "\ttab",
            "\u{001B}[31mred",
            "del\u{007F}",
            "nel\u{0085}",
            "csi\u{009B}2J",
        ];
        for bad in controls {
            lobby
                .request_err(
                    json!({"type": "join", "room": "r", "name": bad}),
                    "bad_request",
                )
                .await?;
            lobby
                .request_err(
                    json!({"type": "join", "room": bad, "name": "n"}),
                    "bad_request",
                )
                .await?;
            x.request_err(json!({"type": "name", "name": bad}), "bad_request")
                .await?;
        }
        // A lone surrogate escape is not a Unicode scalar value: refused.
        lobby.send_raw(Message::Text(
            r#"{"type":"join","room":"\ud800","name":"n","req":"s"}"#.into(),
        ))?;
        let e = lobby
            .recv_where("surrogate reply", Duration::from_secs(5), |m| {
                m["type"] == "error" || m["type"] == "joined"
            })
            .await?;
        ensure!(e["code"] == "bad_request", "lone surrogate: {e}");
        // None of the refusals made a room.
        let after = rooms_of(&lobby.request(json!({"type": "rooms"})).await?)?;
        ensure!(after.len() == cases.len(), "{after:?}");

        // Allowed but invisible: whitespace-only and zero-width-only names
        // (not control characters). Printed, not asserted: a product choice.
        for odd in [" ", "\u{3000}", "\u{200B}", "\u{202E}"] {
            let mut c = TestClient::connect(addr, "invisible").await?;
            let r = c
                .request(json!({"type": "join", "room": "invisible", "name": odd}))
                .await?;
            println!("name {odd:?}: {}", r["type"].as_str().unwrap_or("?"));
            keep.push(c);
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// Polls `/metrics` until `check` passes (or `limit`); the last text.
async fn wait_metrics<F>(addr: SocketAddr, limit: Duration, check: F) -> Result<String>
where
    F: Fn(&str) -> bool,
{
    let start = Instant::now();
    loop {
        let text = http_get(addr, "/metrics").await?;
        if check(&text) {
            return Ok(text);
        }
        if start.elapsed() > limit {
            return Err(anyhow!(
                "metrics did not settle in {limit:?}: {}",
                gauges(&text)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn gauges(text: &str) -> Value {
    json!({
        "participants": metric_sum(text, "noom_participants"),
        "rooms": metric_sum(text, "noom_rooms"),
        "peers": metric_sum(text, "noom_shard_peers"),
        "shard_rooms": metric_sum(text, "noom_shard_rooms"),
        "tracks": metric_sum(text, "noom_shard_tracks"),
        "websockets": metric_sum(text, "noom_websocket_connections"),
    })
}

/// Bob's network goes away: not a closed peer connection (that sends a DTLS
/// close) but silence in both directions, his WebSocket open and quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_network_vanishes_is_removed_and_metrics_return() -> Result<()> {
    with_deadline("vanish", Duration::from_secs(90), async {
        let server = start_server_with(|c| c.session.grace_period_ms = 1500).await?;
        let addr = server.http_addr();
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let ja = a.join_with_media("v", "alice").await?;
        let jb = b
            .join_with_media_opts(
                "v",
                "bob",
                MediaOptions {
                    socket_tap: true,
                    ..Default::default()
                },
            )
            .await?;
        a.wait_packets_above(&jb.you, MediaKind::Video, 10, Duration::from_secs(30))
            .await?;
        b.wait_packets_above(&ja.you, MediaKind::Video, 10, Duration::from_secs(30))
            .await?;
        let before = wait_metrics(addr, Duration::from_secs(5), |t| {
            metric_sum(t, "noom_shard_tracks") == 4.0
        })
        .await?;
        println!("with both: {}", gauges(&before));
        ensure!(
            metric_sum(&before, "noom_shard_peers") == 2.0,
            "{}",
            gauges(&before)
        );

        b.socket_tap().expect("tap").silence();
        let gone = Instant::now();
        a.recv_where("participant_left for bob", Duration::from_secs(60), |m| {
            m["type"] == "participant_left" && m["id"] == jb.you.as_str()
        })
        .await?;
        let took = gone.elapsed();
        println!("bob removed {took:?} after his network went silent");
        ensure!(
            took >= Duration::from_millis(1400),
            "removed before the grace period ran out"
        );
        let told = b.next_push("left").await?;
        ensure!(told["reason"] == "media_failed", "{told}");

        // Only Alice is left, everywhere.
        let after = wait_metrics(addr, Duration::from_secs(5), |t| {
            metric_sum(t, "noom_participants") == 1.0
                && metric_sum(t, "noom_shard_peers") == 1.0
                && metric_sum(t, "noom_shard_tracks") == 2.0
                && metric_sum(t, "noom_shard_rooms") == 1.0
        })
        .await?;
        println!("after: {}", gauges(&after));
        let rooms = rooms_of(&a.request(json!({"type": "rooms"})).await?)?;
        ensure!(rooms.get("v") == Some(&1), "{rooms:?}");
        // Bob's WebSocket is still usable: he can come back.
        b.close_media().await;
        b.join_with_media("v", "bob again").await?;
        a.wait_packets_above(
            b.id.as_deref().expect("id"),
            MediaKind::Video,
            10,
            Duration::from_secs(30),
        )
        .await?;
        a.close().await;
        b.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}
