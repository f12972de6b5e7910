//! The `noom` data channel relay (docs/protocol.md, "Data channel"): chat
//! and file transfer between real WebRTC clients through the server.

mod support;

use anyhow::{ensure, Result};
use noom_sfu::{
    client_frame, file_offer_body, KIND_CHAT, KIND_ERROR, KIND_FILE_ABORT, KIND_FILE_CHUNK,
    KIND_FILE_END, KIND_FILE_OFFER,
};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use support::{
    http_get, metric_max, metric_sum, start_server_with, with_deadline, MediaKind, TestClient,
};

const WAIT: Duration = Duration::from_secs(20);

/// A server frame: (kind, from, direct, body).
fn parse(frame: &[u8]) -> Option<(u8, String, bool, Vec<u8>)> {
    let from_len = *frame.get(1)? as usize;
    let from = String::from_utf8(frame.get(2..2 + from_len)?.to_vec()).ok()?;
    let flags = *frame.get(2 + from_len)?;
    Some((
        frame[0],
        from,
        flags & 1 == 1,
        frame.get(3 + from_len..)?.to_vec(),
    ))
}

fn error_code(frame: &[u8]) -> Option<String> {
    let (kind, _, _, body) = parse(frame)?;
    if kind != KIND_ERROR {
        return None;
    }
    let len = *body.get(4)? as usize;
    String::from_utf8(body.get(5..5 + len)?.to_vec()).ok()
}

fn transfer_of(body: &[u8]) -> u32 {
    u32::from_be_bytes(body[..4].try_into().unwrap())
}

async fn room(
    addr: std::net::SocketAddr,
    names: &[&str],
) -> Result<(Vec<TestClient>, Vec<String>)> {
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for name in names {
        let mut c = TestClient::connect(addr, name).await?;
        let joined = c.join_with_media("files", name).await?;
        ids.push(joined.you.clone());
        clients.push(c);
    }
    for c in &clients {
        c.wait_data_open(Duration::from_secs(30)).await?;
    }
    Ok((clients, ids))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_frames_reach_the_right_people_and_bad_frames_get_errors() -> Result<()> {
    with_deadline("dc chat", Duration::from_secs(90), async {
        let server = start_server_with(|_| {}).await?;
        let (c, ids) = room(server.http_addr(), &["alice", "bob", "carol"]).await?;
        let (a, b, cc) = (&c[0], &c[1], &c[2]);
        a.send_data(&client_frame(KIND_CHAT, None, b"hello room"))
            .await?;
        for r in [b, cc] {
            let f = r
                .wait_data_frame("room chat", WAIT, |f| f.ends_with(b"hello room"))
                .await?;
            let (kind, from, direct, _) = parse(&f).unwrap();
            ensure!(
                kind == KIND_CHAT && from == ids[0] && !direct,
                "{}: {kind} {from} {direct}",
                r.label
            );
        }
        a.send_data(&client_frame(KIND_CHAT, Some(&ids[1]), b"just bob"))
            .await?;
        let f = b
            .wait_data_frame("direct chat", WAIT, |f| f.ends_with(b"just bob"))
            .await?;
        ensure!(parse(&f).unwrap().2, "direct flag set");
        // Errors, each leaving the channel usable.
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                client_frame(KIND_CHAT, Some("nobody"), b"?").to_vec(),
                "not_found",
            ),
            (
                client_frame(KIND_CHAT, Some(&ids[0]), b"me").to_vec(),
                "bad_request",
            ),
            (client_frame(0x55, None, b"x").to_vec(), "unknown_type"),
            (vec![KIND_CHAT, 9, b'a'], "bad_request"),
        ];
        for (i, (frame, code)) in cases.iter().enumerate() {
            a.send_data(frame).await?;
            let seen = a
                .data_frames()
                .iter()
                .filter(|f| error_code(f).is_some())
                .count();
            a.wait_data_frame(code, WAIT, |f| error_code(f).as_deref() == Some(code))
                .await?;
            ensure!(seen <= i + 1, "one error per bad frame");
        }
        a.send_data_text("plain text").await?;
        tokio::time::timeout(WAIT, async {
            while a
                .data_frames()
                .iter()
                .filter(|f| error_code(f).as_deref() == Some("bad_request"))
                .count()
                < 2
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await?;
        a.send_data(&client_frame(KIND_CHAT, None, b"still works"))
            .await?;
        b.wait_data_frame("after errors", WAIT, |f| f.ends_with(b"still works"))
            .await?;
        // Nothing came back to the sender, and carol never saw bob's message.
        ensure!(!a.data_frames().iter().any(|f| f.ends_with(b"hello room")));
        ensure!(!cc.data_frames().iter().any(|f| f.ends_with(b"just bob")));
        ensure!(
            cc.data_frames()
                .iter()
                .filter(|f| f.ends_with(b"hello room"))
                .count()
                == 1
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// Sends a file in 16 KiB chunks, pacing on the channel's queue.
async fn send_file(from: &TestClient, to: Option<&str>, id: u32, data: &[u8]) -> Result<()> {
    from.send_data(&client_frame(
        KIND_FILE_OFFER,
        to,
        &file_offer_body(
            id,
            data.len() as u64,
            "blob.bin",
            "application/octet-stream",
        ),
    ))
    .await?;
    for chunk in data.chunks(16 * 1024) {
        while from.data_outstanding().await? > 512 * 1024 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(chunk);
        from.send_data(&client_frame(KIND_FILE_CHUNK, to, &body))
            .await?;
    }
    from.send_data(&client_frame(KIND_FILE_END, to, &id.to_be_bytes()))
        .await
}

/// Reassembles transfer `id` from `c`'s frames once it ended; its SHA-256.
fn received(c: &TestClient, id: u32) -> Option<Result<[u8; 32], String>> {
    let mut hasher = Sha256::new();
    let mut started = false;
    for f in c.data_frames() {
        let (kind, _, _, body) = parse(&f)?;
        if body.len() < 4 || transfer_of(&body) != id {
            continue;
        }
        match kind {
            KIND_FILE_OFFER => started = true,
            KIND_FILE_CHUNK if started => hasher.update(&body[4..]),
            KIND_FILE_END if started => return Some(Ok(hasher.finalize().into())),
            KIND_FILE_ABORT => return Some(Err(String::from_utf8_lossy(&body[4..]).into_owned())),
            _ => {}
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mb_file_arrives_intact_while_media_flows() -> Result<()> {
    with_deadline("dc file", Duration::from_secs(120), async {
        let server = start_server_with(|_| {}).await?;
        let (c, ids) = room(server.http_addr(), &["alice", "bob", "carol"]).await?;
        let (a, b, cc) = (&c[0], &c[1], &c[2]);
        let data: Vec<u8> = (0..5_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let expected: [u8; 32] = Sha256::digest(&data).into();
        b.wait_packets_above(&ids[0], MediaKind::Video, 30, Duration::from_secs(30))
            .await?;
        let media_before = b.packets_from(&ids[0], MediaKind::Video);
        let started = Instant::now();
        send_file(a, None, 7, &data).await?;
        for r in [b, cc] {
            let deadline = Instant::now() + Duration::from_secs(60);
            let got = loop {
                if let Some(got) = received(r, 7) {
                    break got;
                }
                ensure!(Instant::now() < deadline, "{}: file not complete", r.label);
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            ensure!(got == Ok(expected), "{}: file differs: {got:?}", r.label);
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "5 MB to two receivers in {secs:.2} s: {:.1} MB/s per receiver",
            5.0 / secs
        );
        ensure!(
            b.packets_from(&ids[0], MediaKind::Video) > media_before + 20,
            "alice's video kept flowing"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transfers_are_refused_and_abandoned_ones_aborted() -> Result<()> {
    with_deadline("dc limits", Duration::from_secs(120), async {
        let server = start_server_with(|cfg| cfg.limits.max_file_bytes = 1_000_000).await?;
        let (mut c, _ids) = room(server.http_addr(), &["alice", "bob", "carol"]).await?;
        {
            let (a, b) = (&c[0], &c[1]);
            // Over the limit: refused with its transfer id, nothing relayed.
            a.send_data(&client_frame(
                KIND_FILE_OFFER,
                None,
                &file_offer_body(1, 2_000_000, "big", "x"),
            ))
            .await?;
            let err = a
                .wait_data_frame("too_large", WAIT, |f| {
                    error_code(f).as_deref() == Some("too_large")
                })
                .await?;
            ensure!(transfer_of(&parse(&err).unwrap().3) == 1);
            // More bytes than announced: error, and receivers get an abort.
            a.send_data(&client_frame(
                KIND_FILE_OFFER,
                None,
                &file_offer_body(2, 10, "small", "x"),
            ))
            .await?;
            let mut body = 2u32.to_be_bytes().to_vec();
            body.extend_from_slice(&[0u8; 11]);
            a.send_data(&client_frame(KIND_FILE_CHUNK, None, &body))
                .await?;
            b.wait_data_frame("abort of 2", WAIT, |f| {
                parse(f).is_some_and(|p| p.0 == KIND_FILE_ABORT && transfer_of(&p.3) == 2)
            })
            .await?;
            // An early end: receivers get an abort.
            a.send_data(&client_frame(
                KIND_FILE_OFFER,
                None,
                &file_offer_body(3, 100, "early", "x"),
            ))
            .await?;
            a.send_data(&client_frame(KIND_FILE_END, None, &3u32.to_be_bytes()))
                .await?;
            b.wait_data_frame("abort of 3", WAIT, |f| {
                parse(f).is_some_and(|p| p.0 == KIND_FILE_ABORT && transfer_of(&p.3) == 3)
            })
            .await?;
            ensure!(!b.data_frames().iter().any(
                |f| parse(f).is_some_and(|p| p.0 == KIND_FILE_OFFER && transfer_of(&p.3) == 1)
            ));
            // The sender leaves mid-transfer: receivers get an abort from it.
            a.send_data(&client_frame(
                KIND_FILE_OFFER,
                None,
                &file_offer_body(4, 500_000, "half", "x"),
            ))
            .await?;
            let mut body = 4u32.to_be_bytes().to_vec();
            body.extend_from_slice(&[7u8; 1000]);
            a.send_data(&client_frame(KIND_FILE_CHUNK, None, &body))
                .await?;
            b.wait_data_frame("chunk of 4", WAIT, |f| {
                parse(f).is_some_and(|p| p.0 == KIND_FILE_CHUNK && transfer_of(&p.3) == 4)
            })
            .await?;
        }
        let a = c.remove(0);
        a.close().await;
        for r in &c {
            r.wait_data_frame("abort of 4", WAIT, |f| {
                parse(f).is_some_and(|p| p.0 == KIND_FILE_ABORT && transfer_of(&p.3) == 4)
            })
            .await?;
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}

fn relayed(metrics: &str) -> f64 {
    metric_sum(metrics, "noom_data_file_relayed_bytes_total")
}

async fn metrics(addr: std::net::SocketAddr) -> Result<String> {
    http_get(addr, "/metrics").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_stalls_the_relay_with_bounded_server_queue() -> Result<()> {
    with_deadline("dc backpressure", Duration::from_secs(150), async {
        let server = start_server_with(|_| {}).await?;
        let addr = server.http_addr();
        let (c, ids) = room(addr, &["alice", "bob"]).await?;
        let (a, b) = (&c[0], &c[1]);
        b.set_data_paused(true)?;
        let data: Vec<u8> = (0..12_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected: [u8; 32] = Sha256::digest(&data).into();
        // Alice's client buffers without bound (webrtc-rs' default), so her
        // sends complete at once; what matters is what the server relays.
        send_file(a, Some(&ids[1]), 9, &data).await?;
        let mut last = 0.0;
        let mut stable_since = Instant::now();
        let watch_until = Instant::now() + Duration::from_secs(40);
        let plateau = loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = relayed(&metrics(addr).await?);
            if now > last {
                last = now;
                stable_since = Instant::now();
            } else if stable_since.elapsed() > Duration::from_secs(2) {
                break last;
            }
            ensure!(Instant::now() < watch_until, "relay never stalled (at {now} bytes)");
        };
        let text = metrics(addr).await?;
        let peak = metric_max(&text, "noom_data_channel_queue_peak_bytes");
        println!(
            "relay stalled at {:.2} MB of 12 MB while the receiver read nothing (the test client's own buffers took the rest); server queue peak {:.0} KiB",
            plateau / 1e6,
            peak / 1024.0
        );
        // Not everything was pulled from alice: the server stopped reading her.
        ensure!(plateau < 11.9e6, "the server relayed {plateau} bytes to a receiver that read nothing");
        // And what the server held for bob stayed bounded: 1 MiB high water
        // plus one message.
        ensure!(peak > 0.0 && peak <= (1024.0 + 64.0) * 1024.0, "server queue peak {peak} bytes");
        // Bob reads again: the rest flows and the file is intact.
        b.set_data_paused(false)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let got = loop {
            if let Some(got) = received(b, 9) {
                break got;
            }
            ensure!(Instant::now() < deadline, "file not complete after bob resumed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        ensure!(got == Ok(expected), "file differs after back-pressure: {got:?}");
        server.shutdown().await;
        Ok(())
    })
    .await
}
