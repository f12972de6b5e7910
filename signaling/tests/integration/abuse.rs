//! What one client (or a thousand) can do to everyone else: idle
//! connections by the thousand, a thousand rooms, a client that never
//! answers offers. Everyone else's call must continue.

use crate::support;

use anyhow::{ensure, Result};
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;
use support::{rooms_of, start_server_with, with_deadline, MediaKind, TestClient};

/// The soft limit on open files of this process (`/proc/self/limits`).
fn open_files_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_stop_a_call() -> Result<()> {
    // Client and server share this process: 1,000 sockets each, plus the
    // media sockets. With the common default of 1,024, say so plainly
    // rather than fail on EMFILE halfway (`ulimit -n 4096` first).
    if let Some(limit) = open_files_limit() {
        ensure!(
            limit >= 2_500,
            "this test opens ~2,100 files; the open-files limit is {limit}: run `ulimit -n 4096` first"
        );
    }
    with_deadline("idle", Duration::from_secs(120), async {
        let server = start_server_with(|_| {}).await?;
        let addr = server.http_addr();
        let url = format!("ws://{addr}/ws");
        let mut idle = Vec::new();
        for _ in 0..1000 {
            let (ws, _) = tokio_tungstenite::connect_async(&url).await?;
            idle.push(ws);
        }
        // They all got the lobby list and now say nothing.
        for ws in idle.iter_mut().step_by(97) {
            let first = tokio::time::timeout(Duration::from_secs(10), ws.next()).await?;
            ensure!(first
                .is_some_and(|m| m.is_ok_and(|m| m.to_text().unwrap_or("").contains("\"rooms\""))));
        }
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let ja = a.join_with_media("busy", "alice").await?;
        let jb = b.join_with_media("busy", "bob").await?;
        b.wait_packets_above(&ja.you, MediaKind::Video, 20, Duration::from_secs(30))
            .await?;
        a.request_ok(json!({"type": "chat", "text": "still here", "to": jb.you}))
            .await?;
        let m = b.next_push("chat").await?;
        ensure!(m["text"] == "still here");
        drop(idle);
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rooms_then_the_room_limit() -> Result<()> {
    with_deadline("rooms", Duration::from_secs(180), async {
        let server = start_server_with(|c| c.limits.max_rooms = 1000).await?;
        let addr = server.http_addr();
        let mut members = Vec::new();
        for i in 0..1000 {
            let mut c = TestClient::connect(addr, "member").await?;
            c.join(&format!("room-{i:04}"), "m").await?;
            members.push(c);
        }
        let mut lobby = TestClient::connect(addr, "lobby").await?;
        let list = lobby.request(json!({"type": "rooms"})).await?;
        let rooms = rooms_of(&list)?;
        ensure!(rooms.len() == 1000, "{} rooms listed", rooms.len());
        ensure!(rooms.values().all(|&n| n == 1));
        lobby
            .request_err(
                json!({"type": "join", "room": "one-too-many", "name": "x"}),
                "room_full",
            )
            .await?;
        // Joining an existing room is still fine.
        lobby.join("room-0007", "guest").await?;
        drop(members);
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_does_not_disturb_the_others() -> Result<()> {
    with_deadline("silent", Duration::from_secs(90), async {
        let server = start_server_with(|_| {}).await?;
        let addr = server.http_addr();
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let ja = a.join_with_media("quiet", "alice").await?;
        let jb = b.join_with_media("quiet", "bob").await?;
        // Mallory joins and ignores every offer.
        let mut m = TestClient::connect(addr, "mallory").await?;
        m.join("quiet", "mallory").await?;
        m.next_push("offer").await?;
        // Alice and bob keep their call, get mallory's join, and keep chatting.
        for (c, other) in [(&a, &jb.you), (&b, &ja.you)] {
            let before = c.packets_from(other, MediaKind::Video);
            c.wait_packets_above(
                other,
                MediaKind::Video,
                before + 40,
                Duration::from_secs(30),
            )
            .await?;
        }
        a.request_ok(json!({"type": "chat", "text": "anyone?"}))
            .await?;
        ensure!(b.next_push("chat").await?["text"] == "anyone?");
        ensure!(m.next_push("chat").await?["text"] == "anyone?");
        // Mallory still gets exactly one outstanding offer, never two.
        m.barrier().await?;
        let offers = m.history_where(|x| x["type"] == "offer").len();
        ensure!(offers == 1, "mallory has {offers} offers outstanding");
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// A publisher that reuses another participant's SSRCs, in another room and
/// in the same room: nothing of it reaches the other room, and subscribers
/// keep the victim's track separate and intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_ssrc_never_reaches_another_participants_track() -> Result<()> {
    with_deadline("ssrc", Duration::from_secs(90), async {
        let server = start_server_with(|_| {}).await?;
        let addr = server.http_addr();
        let same = support::MediaOptions {
            ssrcs: Some((0x1111_2222, 0x3333_4444)),
            ..Default::default()
        };
        let mut alice = TestClient::connect(addr, "alice").await?;
        let mut bob = TestClient::connect(addr, "bob").await?;
        let mut mallory = TestClient::connect(addr, "mallory").await?;
        let mut eve = TestClient::connect(addr, "eve").await?;
        let ja = alice.join_with_media_opts("a", "alice", same).await?;
        bob.join_with_media("a", "bob").await?;
        // Mallory uses alice's SSRCs in another room, eve in alice's room.
        let jm = mallory.join_with_media_opts("b", "mallory", same).await?;
        let je = eve.join_with_media_opts("a", "eve", same).await?;
        bob.wait_packets_above(&ja.you, MediaKind::Video, 50, Duration::from_secs(30)).await?;
        bob.wait_packets_above(&je.you, MediaKind::Video, 50, Duration::from_secs(30)).await?;
        // Bob sees exactly alice's and eve's tracks, nothing of mallory's,
        // and alice's video is hers alone: packets keep coming at her rate.
        let publishers: std::collections::BTreeSet<String> =
            bob.remote_tracks().iter().map(|t| t.stream_id.clone()).collect();
        ensure!(
            publishers == [ja.you.clone(), je.you.clone()].into_iter().collect(),
            "bob's tracks come from {publishers:?}"
        );
        ensure!(bob.packets_from(&jm.you, MediaKind::Video) == 0);
        let from_alice = bob.packets_from(&ja.you, MediaKind::Video);
        let from_eve = bob.packets_from(&je.you, MediaKind::Video);
        let (_, alice_sent) = alice.sent_packets();
        ensure!(
            from_alice <= alice_sent,
            "bob got {from_alice} of alice's packets but she sent {alice_sent}: another source leaked in"
        );
        ensure!(from_eve > 0 && from_alice > 0);
        server.shutdown().await;
        Ok(())
    })
    .await
}
