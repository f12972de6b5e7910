//! Metrics scrapes and two-party call helpers shared by the media tests
//! (media_robustness.rs, media_feedback.rs).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use crate::support::{MediaKind, MediaOptions, TestClient, MEDIA_TIMEOUT, MSG_TIMEOUT};

pub const KINDS: [MediaKind; 2] = [MediaKind::Audio, MediaKind::Video];

// ---------------------------------------------------------------------------
// /metrics
// ---------------------------------------------------------------------------

/// One scrape of `/metrics`: metric name -> value, summed over shards.
#[derive(Debug, Clone, Default)]
pub struct Scrape(pub HashMap<String, f64>);

impl Scrape {
    /// A per-shard counter by its short name, summed over shards.
    pub fn counter(&self, name: &str) -> u64 {
        let metric = match name {
            "datagrams_in" => "noom_udp_datagrams_received_total",
            "dropped_datagrams" => "noom_udp_datagrams_dropped_total",
            "keyframe_requests_in" => "noom_keyframe_requests_received_total",
            "keyframe_requests_out" => "noom_keyframe_requests_sent_total",
            "retransmissions" => "noom_rtp_retransmissions_total",
            "nacks_in" => "noom_nacks_received_total",
            "rtp_in" => "noom_rtp_packets_received_total",
            "rtp_in_direct" => "noom_rtp_packets_read_directly_total",
            "rtcp_in_direct" => "noom_rtcp_datagrams_read_directly_total",
            "srtp_rejected" => "noom_srtp_rejected_total",
            other => panic!("no metric mapped for {other}"),
        };
        self.get(metric)
    }

    /// A per-shard gauge (`peers`, `rooms`, `tracks`), summed over shards.
    pub fn gauge(&self, name: &str) -> u64 {
        self.get(&format!("noom_shard_{name}"))
    }

    pub fn get(&self, metric: &str) -> u64 {
        self.0.get(metric).copied().unwrap_or(0.0) as u64
    }
}

/// Parses `name{shard="x"} value` lines; other lines are ignored.
pub fn parse_metrics(text: &str) -> Scrape {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        if labels.contains("shard=") {
            *out.entry(name.to_owned()).or_insert(0.0) += value;
        }
    }
    Scrape(out)
}

/// `GET /metrics` over a plain HTTP/1.1 connection.
pub async fn scrape(addr: SocketAddr) -> Result<Scrape> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(MSG_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("GET /metrics timed out"))??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response: {text:.200}"))?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET /metrics: {}",
        head.lines().next().unwrap_or("")
    );
    let scrape = parse_metrics(body);
    ensure!(
        !scrape.0.is_empty(),
        "no noom_shard_* lines in /metrics: {body:.400}"
    );
    Ok(scrape)
}

/// Scrapes until `cond` holds or `timeout` passes; returns the last scrape.
pub async fn wait_metrics<F>(
    addr: SocketAddr,
    what: &str,
    timeout: Duration,
    cond: F,
) -> Result<Scrape>
where
    F: Fn(&Scrape) -> bool,
{
    let deadline = Instant::now() + timeout;
    loop {
        let s = scrape(addr).await?;
        if cond(&s) {
            return Ok(s);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for /metrics: {what}; last: {s:?}");
        }
        // Counters do not notify: poll.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Two participants in `room` exchanging audio and video.
pub async fn two_party(
    addr: SocketAddr,
    room: &str,
    a_opts: MediaOptions,
    b_opts: MediaOptions,
) -> Result<(TestClient, String, TestClient, String)> {
    let mut a = TestClient::connect(addr, "alice").await?;
    let mut b = TestClient::connect(addr, "bob").await?;
    let ja = a.join_with_media_opts(room, "alice", a_opts).await?;
    let jb = b.join_with_media_opts(room, "bob", b_opts).await?;
    a.wait_for_tracks(2, MEDIA_TIMEOUT).await?;
    b.wait_for_tracks(2, MEDIA_TIMEOUT).await?;
    Ok((a, ja.you, b, jb.you))
}

/// Packet counts from `publisher` (audio and video) at `c` grow by `n` each.
pub async fn expect_flowing(c: &TestClient, publisher: &str, n: u64) -> Result<()> {
    for k in KINDS {
        let before = c.packets_from(publisher, k);
        c.wait_packets_above(publisher, k, before + n - 1, Duration::from_secs(15))
            .await
            .with_context(|| {
                format!(
                    "{}: {k:?} from {publisher} should keep flowing (had {before})",
                    c.label
                )
            })?;
    }
    Ok(())
}
