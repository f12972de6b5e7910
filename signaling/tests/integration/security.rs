//! Access control and clean shutdown: join tokens, allowed origins, the join
//! rate limit, message floods, and SIGTERM on the real binary.

use crate::support;

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{start_server_with, with_deadline, TestClient};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_need_a_valid_token_when_a_secret_is_set() -> Result<()> {
    let server = start_server_with(|c| c.auth.secret = "hunter2".to_owned()).await?;
    let addr = server.http_addr();
    let mut c = TestClient::connect(addr, "c").await?;
    let join = |token: Option<String>| {
        let mut m = json!({"type": "join", "room": "board", "name": "ann"});
        if let Some(t) = token {
            m["token"] = json!(t);
        }
        m
    };
    c.request_err(join(None), "unauthorized").await?;
    let other_room = noom_signaling::auth::issue("hunter2", "lobby", "ann", 60);
    c.request_err(join(Some(other_room)), "unauthorized")
        .await?;
    let other_name = noom_signaling::auth::issue("hunter2", "board", "bob", 60);
    c.request_err(join(Some(other_name)), "unauthorized")
        .await?;
    let wrong_secret = noom_signaling::auth::issue("guess", "board", "ann", 60);
    c.request_err(join(Some(wrong_secret)), "unauthorized")
        .await?;
    c.request_err(join(Some("not.a.jwt".to_owned())), "unauthorized")
        .await?;
    // Refused joins changed nothing: no room exists.
    let rooms = c.request(json!({"type": "rooms"})).await?;
    ensure!(
        rooms["rooms"].as_array().is_some_and(|r| r.is_empty()),
        "{rooms}"
    );
    let good = noom_signaling::auth::issue("hunter2", "board", "ann", 60);
    let joined = c.request(join(Some(good))).await?;
    ensure!(joined["type"] == "joined", "{joined}");
    // The token names the participant: renaming is refused.
    c.request_err(json!({"type": "name", "name": "mallory"}), "unauthorized")
        .await?;
    server.shutdown().await;
    Ok(())
}

/// A raw WebSocket upgrade with an Origin header; the HTTP status line.
async fn upgrade_status(addr: std::net::SocketAddr, origin: Option<&str>) -> Result<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status: {head}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_origins_can_be_restricted() -> Result<()> {
    let server =
        start_server_with(|c| c.auth.allowed_origins = vec!["https://meet.example.com".to_owned()])
            .await?;
    let addr = server.http_addr();
    ensure!(upgrade_status(addr, Some("https://evil.example")).await? == 403);
    ensure!(upgrade_status(addr, Some("https://meet.example.com")).await? == 101);
    ensure!(
        upgrade_status(addr, None).await? == 101,
        "non-browser clients send no Origin"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_loops_and_floods_are_rate_limited() -> Result<()> {
    let server = start_server_with(|c| {
        c.limits.joins_per_minute = 3;
        c.limits.messages_per_second = 5;
        c.limits.message_burst = 10;
    })
    .await?;
    let addr = server.http_addr();
    let mut c = TestClient::connect(addr, "looper").await?;
    for i in 0..3 {
        c.join("r", &format!("n{i}")).await?;
        c.request_ok(json!({"type": "leave"})).await?;
    }
    c.request_err(
        json!({"type": "join", "room": "r", "name": "again"}),
        "rate_limited",
    )
    .await?;

    // A flood: everything over the bucket is refused, and changes nothing.
    let mut f = TestClient::connect(addr, "flooder").await?;
    for i in 0..40 {
        f.send_json(&json!({"type": "rooms", "req": i}))?;
    }
    let mut limited = 0;
    for _ in 0..40 {
        let m = f
            .recv_where("reply", Duration::from_secs(5), |m| m.get("req").is_some())
            .await?;
        if m["code"] == "rate_limited" {
            limited += 1;
        }
    }
    ensure!((20..=35).contains(&limited), "{limited} of 40 rate limited");
    // The connection stays usable once the bucket refills.
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.request(json!({"type": "rooms"})).await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_clients_and_exits_promptly() -> Result<()> {
    with_deadline("sigterm", Duration::from_secs(60), async {
        let bin =
            std::env::var("NOOM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_noom").to_owned());
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let mut child = tokio::process::Command::new(bin)
            .env("NOOM_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("NOOM_MEDIA_BIND_IPS", "127.0.0.1")
            .env("NOOM_MEDIA_PORT", "0")
            .env("NOOM_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawning noom")?;
        // Drain the server's log so it never blocks on a full pipe.
        let mut log = BufReader::new(child.stderr.take().expect("stderr")).lines();
        tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let ready = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            ensure!(
                ready.elapsed() < Duration::from_secs(20),
                "noom did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let ja = a.join_with_media("s", "alice").await?;
        b.join_with_media("s", "bob").await?;
        b.wait_packets_above(
            &ja.you,
            support::MediaKind::Video,
            10,
            Duration::from_secs(30),
        )
        .await?;

        let pid = child.id().context("pid")? as i32;
        let started = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM failed");
        for c in [&mut a, &mut b] {
            let m = c.next_push("shutdown").await?;
            ensure!(m["message"].is_string(), "{m}");
        }
        // Then the server closes the WebSocket.
        for c in [&mut a, &mut b] {
            let end = c
                .recv_where("the connection to close", Duration::from_secs(5), |_| false)
                .await;
            ensure!(end.is_err(), "after shutdown: {end:?}");
            let reason = c.close_reason();
            ensure!(
                reason.is_some(),
                "{}: WebSocket still open after shutdown",
                c.label
            );
            println!("{}: WebSocket {}", c.label, reason.unwrap_or_default());
        }
        let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .map_err(|_| anyhow!("noom did not exit within 5 s of SIGTERM"))??;
        ensure!(exit.success(), "exit status {exit}");
        println!("SIGTERM -> exit in {:?}", started.elapsed());
        Ok(())
    })
    .await
}
