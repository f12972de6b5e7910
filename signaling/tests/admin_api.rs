//! The operator API (docs/admin.md) and `/metrics`, driven the way an
//! operator's tooling would: plain HTTP against a server with real WebRTC
//! participants.

mod support;

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::{start_server_with, with_deadline, MediaKind, TestClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "s3cret-admin";

/// One HTTP/1.1 request; returns (status, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, String)> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow!("{method} {path} timed out"))??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed response: {text:.200}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:.100}"))?;
    // axum answers JSON with a fixed length; no chunked decoding needed.
    Ok((status, body.to_owned()))
}

async fn overview(addr: SocketAddr) -> Result<Value> {
    let (status, body) = http(addr, "GET", "/api/overview", Some(TOKEN), None).await?;
    ensure!(status == 200, "overview: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

fn participants_of<'a>(overview: &'a Value, room: &str) -> Vec<&'a Value> {
    overview["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["name"] == room)
        .flat_map(|r| r["participants"].as_array().into_iter().flatten())
        .collect()
}

fn packets(p: &Value) -> u64 {
    p["media"]["published"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["packets"].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_is_disabled_without_a_token() -> Result<()> {
    let server = start_server_with(|_| {}).await?;
    let addr = server.http_addr();
    let (status, body) = http(addr, "GET", "/api/status", None, None).await?;
    ensure!(
        status == 200 && body.contains("\"admin_enabled\":false"),
        "{status} {body}"
    );
    let (status, body) = http(addr, "GET", "/api/overview", Some("anything"), None).await?;
    ensure!(
        status == 503,
        "overview without admin.token: {status} {body}"
    );
    ensure!(
        body.contains("admin.token"),
        "the refusal says how to enable it: {body}"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_the_call_and_act_on_it() -> Result<()> {
    with_deadline("admin api", Duration::from_secs(120), async {
        let server = start_server_with(|c| c.admin.token = TOKEN.to_owned()).await?;
        let addr = server.http_addr();
        let room = "ops";
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let mut lobby = TestClient::connect(addr, "lobby").await?;
        let mut other = TestClient::connect(addr, "other-room").await?;
        let ja = a.join_with_media(room, "alice").await?;
        let jb = b.join_with_media(room, "bob").await?;
        other.join("elsewhere", "olga").await?;
        a.wait_packets_above(&jb.you, MediaKind::Video, 30, Duration::from_secs(30))
            .await?;
        b.wait_packets_above(&ja.you, MediaKind::Video, 30, Duration::from_secs(30))
            .await?;

        // Credentials.
        for token in [None, Some("wrong")] {
            let (status, _) = http(addr, "GET", "/api/overview", token, None).await?;
            ensure!(status == 401, "token {token:?}: {status}");
        }

        // The room, both people, connected, with tracks whose counts move.
        let first = overview(addr).await?;
        let people = participants_of(&first, room);
        let mut names: Vec<&str> = people.iter().filter_map(|p| p["name"].as_str()).collect();
        names.sort();
        ensure!(names == ["alice", "bob"], "participants: {first}");
        for p in &people {
            ensure!(p["media"]["state"] == "connected", "state: {p}");
            ensure!(p["media"]["remote_addr"].is_string(), "remote address: {p}");
            let kinds: Vec<&str> = p["media"]["published"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["kind"].as_str())
                .collect();
            ensure!(
                kinds.contains(&"audio") && kinds.contains(&"video"),
                "tracks: {p}"
            );
        }
        tokio::time::sleep(Duration::from_millis(600)).await; // let packets flow between samples
        let second = overview(addr).await?;
        for p in participants_of(&second, room) {
            let before = people
                .iter()
                .find(|q| q["id"] == p["id"])
                .map(|q| packets(q));
            ensure!(
                Some(packets(p)) > before,
                "packets did not move for {}",
                p["name"]
            );
        }

        // Announcements: to everyone (lobby too), then to one room.
        let (status, body) = http(
            addr,
            "POST",
            "/api/announce",
            Some(TOKEN),
            Some(&json!({"text": "all hands"})),
        )
        .await?;
        ensure!(
            status == 200 && body.contains("\"reached\":4"),
            "{status} {body}"
        );
        for c in [&mut a, &mut b, &mut lobby, &mut other] {
            let m = c.next_push("announcement").await?;
            ensure!(m["text"] == "all hands", "{m}");
        }
        let (status, _) = http(
            addr,
            "POST",
            "/api/announce",
            Some(TOKEN),
            Some(&json!({"text": "ops only", "room": room})),
        )
        .await?;
        ensure!(status == 200);
        for c in [&mut a, &mut b] {
            ensure!(c.next_push("announcement").await?["text"] == "ops only");
        }
        lobby.barrier().await?;
        other.barrier().await?;
        for c in [&lobby, &other] {
            let got = c.history_where(|m| m["type"] == "announcement" && m["text"] == "ops only");
            ensure!(got.is_empty(), "{} got the room announcement", c.label);
        }
        let (status, _) = http(
            addr,
            "POST",
            "/api/announce",
            Some(TOKEN),
            Some(&json!({"text": "x", "room": "nope"})),
        )
        .await?;
        ensure!(status == 404);

        // Kick bob: he is told why, alice sees him leave; unknown ids are 404.
        let path = format!("/api/rooms/{room}/participants/{}/kick", jb.you);
        let (status, body) = http(
            addr,
            "POST",
            &path,
            Some(TOKEN),
            Some(&json!({"reason": "be kind"})),
        )
        .await?;
        ensure!(status == 200, "{status} {body}");
        let kicked = b.next_push("kicked").await?;
        ensure!(kicked["reason"] == "be kind", "{kicked}");
        let left = a.next_push("participant_left").await?;
        ensure!(left["id"] == jb.you.as_str(), "{left}");
        let (status, _) = http(
            addr,
            "POST",
            &format!("/api/rooms/{room}/participants/nobody/kick"),
            Some(TOKEN),
            None,
        )
        .await?;
        ensure!(status == 404);

        // Close the other room.
        let (status, body) = http(
            addr,
            "POST",
            "/api/rooms/elsewhere/close",
            Some(TOKEN),
            Some(&json!({"reason": "closing"})),
        )
        .await?;
        ensure!(
            status == 200 && body.contains("\"participants\":1"),
            "{status} {body}"
        );
        ensure!(other.next_push("kicked").await?["reason"] == "closing");

        a.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// Every sample line of a Prometheus text exposition: `name{labels} value`.
fn samples(text: &str) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    let mut described = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            described.insert(rest.split_whitespace().next().unwrap_or("").to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').context(line.to_owned())?;
        let value: f64 = value
            .parse()
            .with_context(|| format!("value in {line:?}"))?;
        let name = series.split('{').next().unwrap_or(series);
        let family = ["_total", "_bytes_total", "_seconds_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s).map(|base| (base, *s)));
        let typed = described.contains(name)
            || family.is_some_and(|(base, suffix)| {
                described.contains(base)
                    || described.contains(&format!("{base}{}", suffix.trim_end_matches("_total")))
            });
        ensure!(typed, "{name} has no # TYPE line");
        out.push((series.to_owned(), value));
    }
    Ok(out)
}

fn sum(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s == name || s.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_media() -> Result<()> {
    with_deadline("metrics", Duration::from_secs(90), async {
        let server = start_server_with(|c| c.admin.token = TOKEN.to_owned()).await?;
        let addr = server.http_addr();
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let ja = a.join_with_media("m", "alice").await?;
        b.join_with_media("m", "bob").await?;
        b.wait_packets_above(&ja.you, MediaKind::Video, 20, Duration::from_secs(30))
            .await?;
        let scrape = || async {
            let (status, body) = http(addr, "GET", "/metrics", None, None).await?;
            ensure!(status == 200);
            samples(&body)
        };
        let m0 = scrape().await?;
        ensure!(sum(&m0, "noom_participants") == 2.0);
        a.request_err(json!({"type": "dance"}), "unknown_type")
            .await?;
        let _ = http(addr, "GET", "/api/overview", Some("nope"), None).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m1 = scrape().await?;
        for counter in [
            "noom_rtp_packets_forwarded_total",
            "noom_udp_received_bytes_total",
            "noom_rtp_packets_received_total",
        ] {
            ensure!(
                sum(&m1, counter) > sum(&m0, counter),
                "{counter} did not move"
            );
        }
        ensure!(
            sum(&m1, "noom_signaling_errors_total{code=\"unknown_type\"}") >= 1.0,
            "unknown_type errors counted"
        );
        ensure!(sum(&m1, "noom_admin_auth_failures_total") >= 1.0);
        a.close().await;
        b.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}
