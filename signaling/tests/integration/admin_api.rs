//! The operator API (docs/admin.md), driven the way an operator's tooling
//! would: plain HTTP against an in-process server with real WebRTC
//! participants (support's test client). `/metrics` is in
//! `metrics_exposition.rs`; helpers in `support/admin.rs`.

use crate::support;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;
use support::admin::{
    admin_server, http, overview_until, participants_of, post_ok, published, room_of, SOON, TOKEN,
};
use support::exposition::{scrape, sum};
use support::{is_recent_unix_ms, start_server_with, with_deadline, MediaKind, TestClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_is_disabled_without_a_token() -> Result<()> {
    with_deadline("admin disabled", Duration::from_secs(60), async {
        let server = start_server_with(|_| {}).await?;
        let addr = server.http_addr();
        let (status, body) = http(addr, "GET", "/api/status", None, None).await?;
        ensure!(status == 200, "/api/status: {status} {body}");
        let v: Value = serde_json::from_str(&body)?;
        ensure!(v == json!({"admin_enabled": false}), "/api/status: {body}");
        for token in [None, Some("t0ken"), Some("")] {
            let (status, body) = http(addr, "GET", "/api/overview", token, None).await?;
            ensure!(
                status == 503,
                "overview without admin.token (sent {token:?}): {status} {body}"
            );
            ensure!(
                body.contains("admin.token"),
                "the refusal says how to enable it: {body}"
            );
        }
        let (status, _) = http(
            addr,
            "POST",
            "/api/announce",
            Some(TOKEN),
            Some(&json!({"text": "hi"})),
        )
        .await?;
        ensure!(status == 503, "announce while disabled: {status}");
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_needs_the_token_and_shows_the_live_call_then_kick() -> Result<()> {
    with_deadline("admin overview + kick", Duration::from_secs(150), async {
        let server = admin_server().await?;
        let addr = server.http_addr();
        let room = "ops";
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let ja = a.join_with_media(room, "alice").await?;
        let jb = b.join_with_media(room, "bob").await?;
        for kind in [MediaKind::Audio, MediaKind::Video] {
            a.wait_packets_above(&jb.you, kind, 10, Duration::from_secs(60))
                .await?;
            b.wait_packets_above(&ja.you, kind, 10, Duration::from_secs(60))
                .await?;
        }

        // /api/status needs no token; /api/overview does.
        let (status, body) = http(addr, "GET", "/api/status", None, None).await?;
        ensure!(
            status == 200
                && serde_json::from_str::<Value>(&body)? == json!({"admin_enabled": true}),
            "{status} {body}"
        );
        for token in [None, Some("wrong"), Some("t0ke"), Some("t0ken2"), Some("")] {
            let (status, body) = http(addr, "GET", "/api/overview", token, None).await?;
            ensure!(status == 401, "token {token:?}: {status} {body}");
            ensure!(!body.contains("alice"), "a refusal leaks nothing: {body}");
        }

        // The room, both people by name, connected over a real address, each
        // publishing audio and video.
        let first = overview_until(
            addr,
            "both participants connected with audio+video",
            SOON,
            |o| {
                let people = participants_of(o, room);
                let mut names: Vec<&str> =
                    people.iter().filter_map(|p| p["name"].as_str()).collect();
                names.sort();
                ensure!(names == ["alice", "bob"], "names {names:?}");
                for p in &people {
                    let id = p["id"].as_str().context("id")?;
                    ensure!(id == ja.you || id == jb.you, "unknown id {id}");
                    let m = &p["media"];
                    ensure!(
                        m["state"] == "connected",
                        "{} state {}",
                        p["name"],
                        m["state"]
                    );
                    let remote: SocketAddr = m["remote_addr"]
                        .as_str()
                        .context("remote_addr")?
                        .parse()
                        .context("remote_addr is ip:port")?;
                    ensure!(
                        !remote.ip().is_unspecified() && remote.port() != 0,
                        "remote {remote}"
                    );
                    let kinds: HashSet<&str> = m["published"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t["kind"].as_str())
                        .collect();
                    ensure!(
                        kinds == HashSet::from(["audio", "video"]),
                        "{} publishes {kinds:?}",
                        p["name"]
                    );
                }
                Ok(o.clone())
            },
        )
        .await?;
        let before = published(&first, room);
        ensure!(before.len() == 4, "four published tracks: {before:?}");
        ensure!(
            first["websocket_connections"].as_u64() == Some(2),
            "websocket_connections: {}",
            first["websocket_connections"]
        );

        // A second call: every track's packet count has grown.
        overview_until(
            addr,
            "every published track's packet count growing",
            SOON,
            |o| {
                let now = published(o, room);
                for (key, (kind, n)) in &before {
                    let (_, m) = now
                        .get(key)
                        .with_context(|| format!("{key:?} ({kind}) vanished"))?;
                    ensure!(m > n, "{key:?} ({kind}): {n} -> {m}");
                }
                Ok(())
            },
        )
        .await?;

        // Kick bob: he is told why and his WebSocket closes; alice sees him
        // leave; the overview drops him.
        let path = format!("/api/rooms/{room}/participants/{}/kick", jb.you);
        let reply = post_ok(addr, &path, json!({"reason": "be kind"})).await?;
        ensure!(
            reply == json!({"kicked": jb.you, "room": room, "reason": "be kind"}),
            "kick reply: {reply}"
        );
        let kicked = b.next_push("kicked").await?;
        ensure!(
            kicked == json!({"type": "kicked", "reason": "be kind"}),
            "{kicked}"
        );
        let why = b.wait_closed(SOON).await?;
        let left = a.next_push("participant_left").await?;
        ensure!(left["id"] == jb.you.as_str(), "{left}");
        ensure!(
            a.history_where(|m| m["type"] == "kicked").is_empty(),
            "alice was not told she was kicked"
        );
        overview_until(addr, "bob gone", SOON, |o| {
            let names: Vec<&str> = participants_of(o, room)
                .iter()
                .filter_map(|p| p["name"].as_str())
                .collect();
            ensure!(names == ["alice"], "{names:?}");
            ensure!(o["websocket_connections"].as_u64() == Some(1));
            Ok(())
        })
        .await?;
        tracing::info!("bob's WebSocket closed: {why}");

        // Unknown ids (and a known id in the wrong room) are 404.
        for path in [
            format!("/api/rooms/{room}/participants/pNobody/kick"),
            format!("/api/rooms/{room}/participants/{}/kick", jb.you),
            format!("/api/rooms/elsewhere/participants/{}/kick", ja.you),
        ] {
            let (status, body) = http(
                addr,
                "POST",
                &path,
                Some(TOKEN),
                Some(&json!({"reason": "x"})),
            )
            .await?;
            ensure!(status == 404, "{path}: {status} {body}");
        }
        // Alice is still there and still in the call.
        a.barrier().await?;
        ensure!(a.close_reason().is_none(), "alice's connection survived");

        a.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_reach_exactly_who_they_address() -> Result<()> {
    with_deadline("announcements", Duration::from_secs(90), async {
        let server = admin_server().await?;
        let addr = server.http_addr();
        let mut lobby = TestClient::connect(addr, "lobby").await?;
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let mut o = TestClient::connect(addr, "olga").await?;
        a.join("ops", "alice").await?;
        b.join("ops", "bob").await?;
        o.join("elsewhere", "olga").await?;
        lobby.barrier().await?;

        // To everyone: the lobby and every room member, once each.
        let reply = post_ok(addr, "/api/announce", json!({"text": "all hands"})).await?;
        ensure!(reply == json!({"reached": 4}), "{reply}");
        for c in [&mut lobby, &mut a, &mut b, &mut o] {
            let m = c.next_push("announcement").await?;
            ensure!(m["text"] == "all hands", "{}: {m}", c.label);
            ensure!(is_recent_unix_ms(&m["ts"]), "{}: ts {m}", c.label);
            ensure!(
                m.get("room").is_none(),
                "{}: no room for everyone: {m}",
                c.label
            );
        }

        // To one room: its members only.
        let reply = post_ok(
            addr,
            "/api/announce",
            json!({"text": "ops only", "room": "ops"}),
        )
        .await?;
        ensure!(reply == json!({"reached": 2}), "{reply}");
        for c in [&mut a, &mut b] {
            let m = c.next_push("announcement").await?;
            ensure!(
                m["text"] == "ops only" && m["room"] == "ops",
                "{}: {m}",
                c.label
            );
        }

        // Nothing duplicated, nothing leaked: after a round trip on every
        // connection (the server has flushed what it queued before it).
        for c in [&mut lobby, &mut a, &mut b, &mut o] {
            c.barrier().await?;
        }
        for (c, expect_room) in [(&lobby, false), (&a, true), (&b, true), (&o, false)] {
            let all = c.history_where(|m| m["type"] == "announcement" && m["text"] == "all hands");
            ensure!(
                all.len() == 1,
                "{} got `all hands` {} times",
                c.label,
                all.len()
            );
            let ops = c.history_where(|m| m["type"] == "announcement" && m["text"] == "ops only");
            let want = usize::from(expect_room);
            ensure!(
                ops.len() == want,
                "{} got `ops only` {} times, expected {want}",
                c.label,
                ops.len()
            );
        }

        // An unknown room is 404, an empty text 400, neither sends anything.
        let (status, _) = http(
            addr,
            "POST",
            "/api/announce",
            Some(TOKEN),
            Some(&json!({"text": "x", "room": "nope"})),
        )
        .await?;
        ensure!(status == 404, "announce to an unknown room: {status}");
        let (status, _) =
            http(addr, "POST", "/api/announce", Some(TOKEN), Some(&json!({}))).await?;
        ensure!(status == 400, "announce without text: {status}");
        let (status, body) = http(
            addr,
            "POST",
            "/api/announce",
            Some(TOKEN),
            Some(&json!({"text": " \n\t "})),
        )
        .await?;
        ensure!(
            status == 400 && body.contains("whitespace"),
            "announce of only whitespace: {status} {body}"
        );
        let (status, _) = http(
            addr,
            "POST",
            "/api/announce",
            Some("wrong"),
            Some(&json!({"text": "forged"})),
        )
        .await?;
        ensure!(status == 401, "announce with a wrong token: {status}");
        lobby.barrier().await?;
        ensure!(
            lobby.history_where(|m| m["type"] == "announcement").len() == 1,
            "only the one announcement reached the lobby"
        );

        for c in [lobby, a, b, o] {
            c.close().await;
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_room_kicks_everyone_in_it() -> Result<()> {
    with_deadline("close room", Duration::from_secs(90), async {
        let server = admin_server().await?;
        let addr = server.http_addr();
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let mut o = TestClient::connect(addr, "olga").await?;
        a.join("doomed", "alice").await?;
        b.join("doomed", "bob").await?;
        o.join("safe", "olga").await?;

        let reply = post_ok(
            addr,
            "/api/rooms/doomed/close",
            json!({"reason": "maintenance"}),
        )
        .await?;
        ensure!(
            reply == json!({"closed": "doomed", "participants": 2}),
            "{reply}"
        );
        for c in [&mut a, &mut b] {
            let m = c.next_push("kicked").await?;
            ensure!(m["reason"] == "maintenance", "{}: {m}", c.label);
            c.wait_closed(SOON).await?;
        }
        overview_until(addr, "the closed room gone", SOON, |ov| {
            ensure!(room_of(ov, "doomed").is_none(), "still listed");
            ensure!(participants_of(ov, "safe").len() == 1);
            Ok(())
        })
        .await?;
        // The other room is untouched.
        o.barrier().await?;
        ensure!(o.history_where(|m| m["type"] == "kicked").is_empty());

        let (status, _) = http(
            addr,
            "POST",
            "/api/rooms/doomed/close",
            Some(TOKEN),
            Some(&json!({})),
        )
        .await?;
        ensure!(status == 404, "closing a room that is gone: {status}");
        // Without a body the default reason is used.
        let reply = post_ok(addr, "/api/rooms/safe/close", json!({})).await?;
        ensure!(reply["participants"] == 1, "{reply}");
        let m = o.next_push("kicked").await?;
        ensure!(
            m["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "a default reason: {m}"
        );
        o.wait_closed(SOON).await?;
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// `kick` and `close` check the bearer token before they read their JSON
/// body: a request with no or a wrong token and a malformed body is a 401
/// (not a 400 with a parse error), and it is counted in
/// `noom_admin_auth_failures_total` like any other refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_checked_before_the_body() -> Result<()> {
    with_deadline("token before body", Duration::from_secs(60), async {
        let server = admin_server().await?;
        let addr = server.http_addr();
        let auth = "noom_admin_auth_failures_total";
        let before = sum(&scrape(addr).await?, auth);
        let paths = ["/api/rooms/r/participants/p/kick", "/api/rooms/r/close"];
        // No token, a wrong one: 401. The right one gets as far as the body.
        let tokens = [(None, "401"), (Some("wrong"), "401"), (Some(TOKEN), "400")];
        for path in paths {
            for (token, want) in tokens {
                let authorization = token
                    .map(|t| format!("Authorization: Bearer {t}\r\n"))
                    .unwrap_or_default();
                let exchange = async {
                    let mut s = tokio::net::TcpStream::connect(addr).await?;
                    s.write_all(
                        format!(
                            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
                             {authorization}Content-Type: application/json\r\n\
                             Content-Length: 1\r\n\r\n{{"
                        )
                        .as_bytes(),
                    )
                    .await?;
                    let mut text = String::new();
                    s.read_to_string(&mut text).await?;
                    anyhow::Ok(text)
                };
                let text = tokio::time::timeout(SOON, exchange).await??;
                ensure!(
                    text.starts_with(&format!("HTTP/1.1 {want}")),
                    "{path} with token {token:?} and a malformed body (want {want}): {text}"
                );
            }
        }
        let after = sum(&scrape(addr).await?, auth);
        ensure!(
            after == before + 4.0,
            "{auth}: {before} -> {after} (want 4 more)"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}
