//! Participants that vanish, and whether anything of them stays behind:
//! the grace period, and RSS and shard state across 1,000 join/leave cycles
//! of the real binary.

use crate::support;

use anyhow::{ensure, Context, Result};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{http_get, metric_sum, start_server_with, with_deadline, MediaKind, TestClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_participant_is_removed_after_the_grace_period() -> Result<()> {
    with_deadline("grace", Duration::from_secs(90), async {
        let server = start_server_with(|c| c.session.grace_period_ms = 1500).await?;
        let addr = server.http_addr();
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let ja = a.join_with_media("g", "alice").await?;
        let jb = b.join_with_media("g", "bob").await?;
        a.wait_packets_above(&jb.you, MediaKind::Video, 10, Duration::from_secs(30))
            .await?;
        // Bob's media goes away; his WebSocket stays open and silent.
        b.close_media().await;
        let gone = Instant::now();
        let left = a
            .recv_where("participant_left for bob", Duration::from_secs(60), |m| {
                m["type"] == "participant_left" && m["id"] == jb.you.as_str()
            })
            .await?;
        println!(
            "bob removed {:?} after his media vanished: {left}",
            gone.elapsed()
        );
        ensure!(
            gone.elapsed() >= Duration::from_millis(1400),
            "removed before the grace period ran out"
        );
        let told = b.next_push("left").await?;
        ensure!(told["reason"] == "media_failed", "{told}");
        // Alice carries on, alone in the room.
        let rooms = a.request(json!({"type": "rooms"})).await?;
        ensure!(rooms["rooms"][0]["participants"] == 1, "{rooms}");
        let _ = ja;
        a.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_grace_period_keeps_the_participant() -> Result<()> {
    with_deadline("long grace", Duration::from_secs(60), async {
        let server = start_server_with(|c| c.session.grace_period_ms = 60_000).await?;
        let addr = server.http_addr();
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        a.join_with_media("g", "alice").await?;
        let jb = b.join_with_media("g", "bob").await?;
        a.wait_packets_above(&jb.you, MediaKind::Video, 10, Duration::from_secs(30))
            .await?;
        b.close_media().await;
        tokio::time::sleep(Duration::from_secs(3)).await; // well past the 1.5 s case above
        a.barrier().await?;
        ensure!(
            a.history_where(|m| m["type"] == "participant_left")
                .is_empty(),
            "bob was removed inside a 60 s grace period"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

/// 1,000 join/leave cycles (each builds a server-side peer connection and
/// sends an offer; every 20th also connects ICE/DTLS and receives media)
/// leave RSS within 10 % of where it was after the first 100, and no
/// per-connection state behind: once the last participant leaves too, every
/// gauge is back to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_cycles_leave_nothing_behind() -> Result<()> {
    with_deadline("memory", Duration::from_secs(240), async {
        let bin =
            std::env::var("NOOM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_noom").to_owned());
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = tokio::process::Command::new(bin)
            .env("NOOM_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("NOOM_MEDIA_BIND_IPS", "127.0.0.1")
            .env("NOOM_MEDIA_PORT", "0")
            .env("NOOM_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("pid")?;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let ready = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            ensure!(
                ready.elapsed() < Duration::from_secs(20),
                "noom did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Someone stays in the room throughout, publishing.
        let mut stayer = TestClient::connect(addr, "stayer").await?;
        stayer.join_with_media("churn", "stayer").await?;
        let mut after_100 = 0;
        let started = Instant::now();
        // Media cycles cost ~0.3 s each against ~25 ms for plain ones: one in
        // 20 keeps the whole loop near 45 s.
        const MEDIA_EVERY: usize = 20;
        let (mut media_time, mut plain_time) = (Duration::ZERO, Duration::ZERO);
        for i in 1..=1000 {
            let t0 = Instant::now();
            let mut c = TestClient::connect(addr, "cycler").await?;
            if i % MEDIA_EVERY == 0 {
                c.join_with_media("churn", &format!("c{i}")).await?;
                c.wait_for_tracks(2, Duration::from_secs(30)).await?;
            } else {
                c.join("churn", &format!("c{i}")).await?;
            }
            c.request_ok(json!({"type": "leave"})).await?;
            c.close().await;
            if i % MEDIA_EVERY == 0 {
                media_time += t0.elapsed();
            } else {
                plain_time += t0.elapsed();
            }
            if i % 100 == 0 {
                println!(
                    "{i} cycles: {:?} in media cycles, {:?} in plain ones",
                    media_time, plain_time
                );
            }
            if i == 100 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                after_100 = rss_kib(pid)?;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after_1000 = rss_kib(pid)?;
        let metrics = http_get(addr, "/metrics").await?;
        println!(
            "1000 cycles in {:?}: RSS after 100 = {after_100} KiB, after 1000 = {after_1000} KiB",
            started.elapsed()
        );
        ensure!(
            (after_1000 as f64) <= after_100 as f64 * 1.10,
            "RSS grew from {after_100} KiB to {after_1000} KiB"
        );
        ensure!(
            metric_sum(&metrics, "noom_participants") == 1.0,
            "participants: {metrics}"
        );
        ensure!(
            metric_sum(&metrics, "noom_shard_peers") == 1.0,
            "peers left behind"
        );
        ensure!(
            metric_sum(&metrics, "noom_shard_rooms") == 1.0,
            "rooms left behind"
        );
        ensure!(
            metric_sum(&metrics, "noom_shard_tracks") <= 2.0,
            "tracks left behind"
        );
        ensure!(
            metric_sum(&metrics, "noom_websocket_connections") == 1.0,
            "connections left behind"
        );
        // The stayer's SDP did not grow with the churn.
        let sections = stayer
            .last_offer_sdp()
            .map(|sdp| sdp.lines().filter(|l| l.starts_with("m=")).count())
            .unwrap_or(0);
        ensure!(
            sections <= 5,
            "the stayer's offer has {sections} m-sections"
        );
        // The last one leaves: nothing at all is left.
        stayer.close().await;
        let start = Instant::now();
        loop {
            let m = http_get(addr, "/metrics").await?;
            let left: Vec<(&str, f64)> = [
                "noom_participants",
                "noom_rooms",
                "noom_shard_peers",
                "noom_shard_rooms",
                "noom_shard_tracks",
                "noom_websocket_connections",
            ]
            .into_iter()
            .map(|n| (n, metric_sum(&m, n)))
            .filter(|&(_, v)| v != 0.0)
            .collect();
            if left.is_empty() {
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "gauges not back to zero after everyone left: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("RSS with nobody left: {} KiB", rss_kib(pid)?);
        let _ = child.kill().await;
        Ok(())
    })
    .await
}
