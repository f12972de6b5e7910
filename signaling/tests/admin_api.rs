//! The operator API (docs/admin.md) and `/metrics`, driven the way an
//! operator's tooling would: plain HTTP against an in-process server with
//! real WebRTC participants (support's test client).

mod support;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{is_recent_unix_ms, start_server_with, with_deadline, MediaKind, TestClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "t0ken";
/// How long anything that should happen "now" may take on a loaded machine.
const SOON: Duration = Duration::from_secs(20);

async fn admin_server() -> Result<noom_signaling::Server> {
    start_server_with(|c| c.admin.token = TOKEN.to_owned()).await
}

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
    if method == "POST" || !body.is_empty() {
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
    let text = tokio::time::timeout(SOON, exchange)
        .await
        .map_err(|_| anyhow!("{method} {path} timed out"))??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed response: {text:.200}"))?;
    ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{method} {path}: chunked response, not decoded here: {head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:.100}"))?;
    Ok((status, body.to_owned()))
}

/// An authorised POST that must answer 200 with JSON.
async fn post_ok(addr: SocketAddr, path: &str, body: Value) -> Result<Value> {
    let (status, text) = http(addr, "POST", path, Some(TOKEN), Some(&body)).await?;
    ensure!(status == 200, "POST {path} {body}: {status} {text}");
    serde_json::from_str(&text).with_context(|| format!("POST {path}: {text}"))
}

async fn overview(addr: SocketAddr) -> Result<Value> {
    let (status, body) = http(addr, "GET", "/api/overview", Some(TOKEN), None).await?;
    ensure!(status == 200, "overview: {status} {body}");
    serde_json::from_str(&body).with_context(|| format!("overview is not JSON: {body}"))
}

/// Polls the overview until `accept` returns a value (or fails after `limit`,
/// showing the last overview).
async fn overview_until<T>(
    addr: SocketAddr,
    what: &str,
    limit: Duration,
    accept: impl Fn(&Value) -> Result<T>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        let o = overview(addr).await?;
        match accept(&o) {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                bail!("overview never showed {what} within {limit:?}: {e:#}\nlast overview: {o:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn room_of<'a>(overview: &'a Value, room: &str) -> Option<&'a Value> {
    overview["rooms"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == room)
}

fn participants_of<'a>(overview: &'a Value, room: &str) -> Vec<&'a Value> {
    room_of(overview, room)
        .and_then(|r| r["participants"].as_array())
        .map(|ps| ps.iter().collect())
        .unwrap_or_default()
}

/// Packet counts of every published track in a room: (participant, ssrc) ->
/// (kind, packets).
fn published(overview: &Value, room: &str) -> BTreeMap<(String, u64), (String, u64)> {
    let mut out = BTreeMap::new();
    for p in participants_of(overview, room) {
        for t in p["media"]["published"].as_array().into_iter().flatten() {
            out.insert(
                (
                    p["name"].as_str().unwrap_or("?").to_owned(),
                    t["ssrc"].as_u64().unwrap_or(0),
                ),
                (
                    t["kind"].as_str().unwrap_or("?").to_owned(),
                    t["packets"].as_u64().unwrap_or(0),
                ),
            );
        }
    }
    out
}

/// Waits until the connection is closed by the server (whatever is still
/// queued is kept in the client's history).
async fn wait_closed(c: &mut TestClient) -> Result<String> {
    let result = c
        .recv_where("the server to close the WebSocket", SOON, |_| false)
        .await;
    match (result, c.close_reason()) {
        (Err(_), Some(reason)) => Ok(reason),
        (Err(e), None) => Err(e),
        (Ok(_), _) => unreachable!("the predicate accepts nothing"),
    }
}

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
        let why = wait_closed(&mut b).await?;
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
            wait_closed(c).await?;
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
        wait_closed(&mut o).await?;
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

// ------------------------------------------------------------------ metrics

/// A Prometheus/OpenMetrics text exposition, checked line by line: every
/// sample line is `name{labels} value` or `name value` with a float value,
/// and every sample belongs to a family with both `# HELP` and `# TYPE`.
/// Returns `series -> value` (series is the sample line without its value).
fn parse_exposition(text: &str) -> Result<BTreeMap<String, f64>> {
    fn valid_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    /// Parses `{a="x",b="y"}` (with escapes); returns the rest of the line.
    fn labels(s: &str) -> Result<&str> {
        let mut rest = s.strip_prefix('{').context("labels start with {")?;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                return Ok(after);
            }
            let eq = rest.find('=').context("label without =")?;
            ensure!(valid_name(&rest[..eq]), "label name {:?}", &rest[..eq]);
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .context("label value quoted")?;
            let mut escaped = false;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    let end = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map(|(i, _)| i)
                .context("unterminated label value")?;
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    let mut helped = HashSet::new();
    let mut typed = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let mut sample_names = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            match words.next() {
                Some("HELP") => {
                    let name = words.next().context(line.to_owned())?;
                    ensure!(words.next().is_some(), "empty help: {line}");
                    helped.insert(name.to_owned());
                }
                Some("TYPE") => {
                    let name = words.next().context(line.to_owned())?;
                    let kind = words.next().context(line.to_owned())?;
                    typed.insert(name.to_owned(), kind.to_owned());
                }
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .with_context(|| format!("no value in {line:?}"))?;
        let name = &line[..name_end];
        ensure!(valid_name(name), "metric name {name:?} in {line:?}");
        let rest = if line[name_end..].starts_with('{') {
            labels(&line[name_end..]).with_context(|| format!("labels in {line:?}"))?
        } else {
            &line[name_end..]
        };
        let value = rest
            .strip_prefix(' ')
            .with_context(|| format!("one space before the value in {line:?}"))?;
        ensure!(
            !value.contains(' '),
            "`series value`, nothing after: {line:?}"
        );
        let value: f64 = value
            .parse()
            .with_context(|| format!("float value in {line:?}"))?;
        let series = &line[..line.len() - rest.len()];
        ensure!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
        sample_names.push(name.to_owned());
    }
    ensure!(!samples.is_empty(), "no samples at all");
    for name in sample_names {
        // A sample belongs to the family it is named after, or to one whose
        // name it extends with a standard suffix (counter `_total`, ...).
        let family = [
            "", "_total", "_created", "_count", "_sum", "_bucket", "_info",
        ]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|f| typed.contains_key(*f))
        .with_context(|| format!("{name} has no # TYPE line"))?;
        ensure!(helped.contains(family), "{family} has no # HELP line");
        if typed[family] == "counter" {
            ensure!(
                name.ends_with("_total") || name.ends_with("_created"),
                "counter sample {name}"
            );
        }
    }
    Ok(samples)
}

/// The sum over label sets of metric `name`, or of the one series given in
/// full (`name{labels}`).
fn sum(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| {
            *s == series || (!series.contains('{') && s.starts_with(&format!("{series}{{")))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(addr: SocketAddr) -> Result<BTreeMap<String, f64>> {
    let (status, body) = http(addr, "GET", "/metrics", None, None).await?;
    ensure!(status == 200, "/metrics: {status}");
    parse_exposition(&body).with_context(|| format!("/metrics is not Prometheus text:\n{body}"))
}

#[test]
fn the_exposition_checker_rejects_what_it_should() {
    let ok = "# HELP x things\n# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"}\"} 3\n# HELP g a gauge\n# TYPE g gauge\ng 1.5\n# EOF\n";
    let s = parse_exposition(ok).expect("valid text");
    assert_eq!(sum(&s, "x_total"), 3.0);
    assert_eq!(sum(&s, "g"), 1.5);
    for bad in [
        "# TYPE g gauge\ng 1\n",                         // no HELP
        "# HELP g h\ng 1\n",                             // no TYPE
        "# HELP g h\n# TYPE g gauge\ng one\n",           // not a float
        "# HELP g h\n# TYPE g gauge\ng{a=\"1\" 1\n",     // broken labels
        "# HELP g h\n# TYPE g gauge\ng 1 2 3\n",         // trailing garbage
        "# HELP g h\n# TYPE g gauge\n# HELP h h\nh 1\n", // h untyped
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_media() -> Result<()> {
    with_deadline("metrics", Duration::from_secs(120), async {
        let server = admin_server().await?;
        let addr = server.http_addr();
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let ja = a.join_with_media("m", "alice").await?;
        let jb = b.join_with_media("m", "bob").await?;
        b.wait_packets_above(&ja.you, MediaKind::Video, 20, Duration::from_secs(60))
            .await?;
        a.wait_packets_above(&jb.you, MediaKind::Video, 20, Duration::from_secs(60))
            .await?;

        let m0 = scrape(addr).await?;
        ensure!(sum(&m0, "noom_participants") == 2.0, "participants: {m0:?}");
        ensure!(sum(&m0, "noom_rooms") == 1.0);
        ensure!(sum(&m0, "noom_websocket_connections") == 2.0);
        for name in [
            "noom_rtp_packets_forwarded_total",
            "noom_udp_received_bytes_total",
            "noom_rtp_packets_received_total",
            "noom_admin_auth_failures_total",
            "noom_shard_busy_seconds_total",
        ] {
            ensure!(
                m0.keys()
                    .any(|s| s == name || s.starts_with(&format!("{name}{{"))),
                "{name} missing"
            );
        }

        // While media flows, the packet and byte counters grow.
        let deadline = Instant::now() + SOON;
        loop {
            let m = scrape(addr).await?;
            let grown: Vec<&str> = [
                "noom_rtp_packets_forwarded_total",
                "noom_udp_received_bytes_total",
                "noom_rtp_packets_received_total",
            ]
            .into_iter()
            .filter(|c| sum(&m, c) <= sum(&m0, c))
            .collect();
            if grown.is_empty() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "did not grow within {SOON:?}: {grown:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // Counted refusals: an unknown message type, a wrong admin token.
        // Both are counted before the reply is sent, so one scrape after the
        // replies sees them.
        let unknown = "noom_signaling_errors_total{code=\"unknown_type\"}";
        let auth = "noom_admin_auth_failures_total";
        let before = scrape(addr).await?;
        a.request_err(json!({"type": "dance"}), "unknown_type")
            .await?;
        let (status, _) = http(addr, "GET", "/api/overview", Some("nope"), None).await?;
        ensure!(status == 401);
        let (status, _) = http(addr, "GET", "/api/overview", None, None).await?;
        ensure!(status == 401);
        let after = scrape(addr).await?;
        ensure!(
            sum(&after, unknown) == sum(&before, unknown) + 1.0,
            "{unknown}: {} -> {}",
            sum(&before, unknown),
            sum(&after, unknown)
        );
        ensure!(
            sum(&after, auth) == sum(&before, auth) + 2.0,
            "{auth}: {} -> {}",
            sum(&before, auth),
            sum(&after, auth)
        );
        // A right token is not a failure.
        overview(addr).await?;
        ensure!(sum(&scrape(addr).await?, auth) == sum(&after, auth));

        a.close().await;
        b.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}
