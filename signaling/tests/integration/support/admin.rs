//! The operator API as a test drives it: plain HTTP/1.1 requests with the
//! bearer token against a server started with one, and readers for the
//! `/api/overview` JSON (docs/admin.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::server::start_server_with;

pub const TOKEN: &str = "t0ken";
/// How long anything that should happen "now" may take on a loaded machine.
pub const SOON: Duration = Duration::from_secs(20);

pub async fn admin_server() -> Result<noom_signaling::Server> {
    start_server_with(|c| c.admin.token = TOKEN.to_owned()).await
}

/// One HTTP/1.1 request; returns (status, body).
pub async fn http(
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
pub async fn post_ok(addr: SocketAddr, path: &str, body: Value) -> Result<Value> {
    let (status, text) = http(addr, "POST", path, Some(TOKEN), Some(&body)).await?;
    ensure!(status == 200, "POST {path} {body}: {status} {text}");
    serde_json::from_str(&text).with_context(|| format!("POST {path}: {text}"))
}

pub async fn overview(addr: SocketAddr) -> Result<Value> {
    let (status, body) = http(addr, "GET", "/api/overview", Some(TOKEN), None).await?;
    ensure!(status == 200, "overview: {status} {body}");
    serde_json::from_str(&body).with_context(|| format!("overview is not JSON: {body}"))
}

/// Polls the overview until `accept` returns a value (or fails after `limit`,
/// showing the last overview).
pub async fn overview_until<T>(
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

pub fn room_of<'a>(overview: &'a Value, room: &str) -> Option<&'a Value> {
    overview["rooms"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == room)
}

pub fn participants_of<'a>(overview: &'a Value, room: &str) -> Vec<&'a Value> {
    room_of(overview, room)
        .and_then(|r| r["participants"].as_array())
        .map(|ps| ps.iter().collect())
        .unwrap_or_default()
}

/// Packet counts of every published track in a room: (participant, ssrc) ->
/// (kind, packets).
pub fn published(overview: &Value, room: &str) -> BTreeMap<(String, u64), (String, u64)> {
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
