//! An operator moves everyone of one room into another
//! (`POST /api/rooms/{room}/move`, docs/admin.md): the movers get `joined`
//! for the destination and a new offer, follow it with a new peer connection
//! (as the contract's "Several nodes" section asks of every client), and
//! then exchange real media and chat with the destination's members; a
//! refused move changes nothing.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use serde_json::{json, Value};
use support::admin::{admin_server, http, post_ok, SOON, TOKEN};
use support::{
    is_recent_unix_ms, start_server_with, with_deadline, Joined, MediaKind, MediaOptions,
    TestClient, MEDIA_TIMEOUT,
};

const KINDS: [MediaKind; 2] = [MediaKind::Audio, MediaKind::Video];

/// Waits until `c` receives audio and video packets from each of `ids`.
async fn receives_from(c: &TestClient, ids: &[&str]) -> Result<()> {
    for id in ids {
        for kind in KINDS {
            c.wait_packets_above(id, kind, 0, MEDIA_TIMEOUT)
                .await
                .with_context(|| format!("{} should receive {kind:?} from {id}", c.label))?;
        }
    }
    Ok(())
}

/// Names by participant id in a `joined`.
fn names(joined: &Joined) -> BTreeMap<String, String> {
    joined
        .participants
        .iter()
        .map(|p| (p.id.clone(), p.name.clone()))
        .collect()
}

/// The messages `c` received after its last `joined`, in order.
fn since_last_joined(c: &TestClient) -> Vec<Value> {
    let history = c.history();
    let last = history
        .iter()
        .rposition(|m| m["type"] == "joined")
        .unwrap_or(0);
    history[last + 1..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_room_joins_the_destination_with_media_and_chat() -> Result<()> {
    with_deadline("move a room", Duration::from_secs(150), async {
        let server = admin_server().await?;
        let addr = server.http_addr();
        let mut lobby = TestClient::connect(addr, "lobby").await?;
        lobby.next_push("rooms").await?;

        let mut a1 = TestClient::connect(addr, "a1").await?;
        let mut a2 = TestClient::connect(addr, "a2").await?;
        let mut b1 = TestClient::connect(addr, "b1").await?;
        let a1_old = a1.join_with_media("a", "ann").await?.you;
        let a2_old = a2.join_with_media("a", "abe").await?.you;
        let b1_id = b1.join_with_media("b", "bea").await?.you;
        // A mute state travels with its participant.
        a1.request_ok(json!({"type": "mute", "kind": "audio", "muted": true}))
            .await?;
        receives_from(&a1, &[&a2_old]).await?;
        receives_from(&a2, &[&a1_old]).await?;
        lobby
            .wait_rooms_push("a has 2 and b has 1", |r| {
                r.get("a") == Some(&2) && r.get("b") == Some(&1)
            })
            .await?;

        let reply = post_ok(addr, "/api/rooms/a/move", json!({"to": "b"})).await?;
        ensure!(
            reply == json!({"moved": 2, "from": "a", "to": "b"}),
            "move reply: {reply}"
        );

        let j1 = a1
            .follow_move(support::MSG_TIMEOUT, MediaOptions::default())
            .await?;
        let j2 = a2
            .follow_move(support::MSG_TIMEOUT, MediaOptions::default())
            .await?;
        for (c, j, old) in [(&a1, &j1, &a1_old), (&a2, &j2, &a2_old)] {
            ensure!(j.room == "b", "{}: joined {:?}", c.label, j.room);
            ensure!(&j.you != old, "{}: kept its old id {old}", c.label);
            ensure!(j.raw.get("req").is_none(), "{}: {}", c.label, j.raw);
        }
        // `participants` is who is in the destination when each arrives: bea,
        // and the other mover if it arrived first (then only one of them).
        for (c, j, other, other_name) in [(&a1, &j1, &j2.you, "abe"), (&a2, &j2, &j1.you, "ann")] {
            let seen = names(j);
            ensure!(
                seen.get(&b1_id).map(String::as_str) == Some("bea"),
                "{}: joined should list bea: {seen:?}",
                c.label
            );
            let mut allowed = BTreeMap::from([(b1_id.clone(), "bea".to_owned())]);
            allowed.insert(other.clone(), other_name.to_owned());
            ensure!(
                seen.iter().all(|(id, name)| allowed.get(id) == Some(name)),
                "{}: joined lists someone not in b: {seen:?}",
                c.label
            );
        }
        ensure!(
            names(&j1).contains_key(&j2.you) != names(&j2).contains_key(&j1.you),
            "exactly one mover arrives first: {:?} / {:?}",
            names(&j1),
            names(&j2)
        );

        // bea is told about each mover, with its name and mute state.
        let mut arrivals = BTreeMap::new();
        for _ in 0..2 {
            let p = b1.next_push("participant_joined").await?["participant"].clone();
            arrivals.insert(p["id"].as_str().unwrap_or("?").to_owned(), p);
        }
        let ann = &arrivals.get(&j1.you).context("bea never heard of ann")?;
        ensure!(ann["name"] == "ann" && ann["audio_muted"] == true, "{ann}");
        let abe = &arrivals.get(&j2.you).context("bea never heard of abe")?;
        ensure!(abe["name"] == "abe" && abe["audio_muted"] == false, "{abe}");

        // Media, both ways, with the new ids; new peer connections.
        let media = async {
            receives_from(&b1, &[&j1.you, &j2.you]).await?;
            receives_from(&a1, &[&b1_id, &j2.you]).await?;
            receives_from(&a2, &[&b1_id, &j1.you]).await
        };
        media.await.with_context(|| {
            format!(
                "ann is {}, abe is {}\n{}\n{}",
                j1.you,
                j2.you,
                a1.media_report(),
                a2.media_report()
            )
        })?;
        for c in [&a1, &a2] {
            // The first thing after `joined` about media is the new offer,
            // and it was applied by the new peer connection.
            let after = since_last_joined(c);
            let first_media = after
                .iter()
                .find(|m| m["type"] == "offer" || m["type"] == "candidate");
            ensure!(
                first_media.is_some_and(|m| m["type"] == "offer"),
                "{}: after joined came {:?}",
                c.label,
                first_media
            );
            ensure!(c.offers_applied() >= 1, "{}: no offer applied", c.label);
            ensure!(
                c.packets_from(&a1_old, MediaKind::Video) == 0
                    && c.packets_from(&a2_old, MediaKind::Video) == 0,
                "{}: the new peer connection carries an old id's media",
                c.label
            );
            // No news about the destination overtook `joined`.
            for m in c.history().iter().rev().skip(after.len() + 1) {
                let text = m.to_string();
                ensure!(
                    [&b1_id, &j1.you, &j2.you]
                        .iter()
                        .all(|id| !text.contains(id.as_str())),
                    "{}: heard of the destination before its joined: {m}",
                    c.label
                );
            }
        }

        // Chat in the destination reaches everyone there, from the new id.
        a1.request_ok(json!({"type": "chat", "text": "hello b"}))
            .await?;
        for c in [&mut a2, &mut b1] {
            let m = c.next_push("chat").await?;
            ensure!(
                m["from"] == j1.you.as_str()
                    && m["name"] == "ann"
                    && m["text"] == "hello b"
                    && is_recent_unix_ms(&m["ts"]),
                "{}: {m}",
                c.label
            );
        }

        // The source room is gone from the lobby.
        lobby
            .wait_rooms_push("only b, with 3", |r| r.len() == 1 && r.get("b") == Some(&3))
            .await?;

        // A moved member can still be acted on: its operator slot is free.
        let kicked = post_ok(
            addr,
            &format!("/api/rooms/b/participants/{}/kick", j2.you),
            json!({"reason": "bye"}),
        )
        .await?;
        ensure!(kicked["kicked"] == j2.you.as_str(), "{kicked}");
        let why = a2.next_push("kicked").await?;
        ensure!(why["reason"] == "bye", "{why}");
        a2.wait_closed(SOON).await?;
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// What a client heard about rooms and people (not the media
/// negotiation, which runs on its own, nor `rooms` replies), by type.
fn history_types(c: &TestClient) -> Vec<String> {
    c.history()
        .iter()
        .map(|m| m["type"].as_str().unwrap_or("?").to_owned())
        .filter(|t| !["offer", "candidate", "rooms"].contains(&t.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_move_changes_nothing() -> Result<()> {
    with_deadline("refused moves", Duration::from_secs(90), async {
        let server = start_server_with(|c| {
            c.admin.token = TOKEN.to_owned();
            c.limits.max_participants_per_room = 3;
        })
        .await?;
        let addr = server.http_addr();
        let mut clients = Vec::new();
        for (room, name) in [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")] {
            let mut c = TestClient::connect(addr, name).await?;
            c.join(room, name).await?;
            clients.push(c);
        }
        for c in &mut clients {
            c.barrier().await?;
        }
        let before: Vec<Vec<String>> = clients.iter().map(history_types).collect();

        let long = "x".repeat(65);
        let refusals: [(&str, Option<Value>, Option<&str>, u16); 9] = [
            (
                "/api/rooms/nope/move",
                Some(json!({"to": "b"})),
                Some(TOKEN),
                404,
            ),
            (
                "/api/rooms/a/move",
                Some(json!({"to": "a"})),
                Some(TOKEN),
                400,
            ),
            (
                "/api/rooms/a/move",
                Some(json!({"to": ""})),
                Some(TOKEN),
                400,
            ),
            (
                "/api/rooms/a/move",
                Some(json!({"to": long})),
                Some(TOKEN),
                400,
            ),
            (
                "/api/rooms/a/move",
                Some(json!({"to": "b\u{7}"})),
                Some(TOKEN),
                400,
            ),
            (
                "/api/rooms/a/move",
                Some(json!({"room": "b"})),
                Some(TOKEN),
                400,
            ),
            ("/api/rooms/a/move", None, Some(TOKEN), 400),
            (
                "/api/rooms/a/move",
                Some(json!({"to": "b"})),
                Some("wrong"),
                401,
            ),
            // Two more in b would make 4, over the limit of 3.
            (
                "/api/rooms/a/move",
                Some(json!({"to": "b"})),
                Some(TOKEN),
                409,
            ),
        ];
        for (path, body, token, want) in &refusals {
            let (status, text) = http(addr, "POST", path, *token, body.as_ref()).await?;
            ensure!(
                status == *want,
                "POST {path} {body:?}: want {want}, got {status} {text}"
            );
            let error: Value = serde_json::from_str(&text)
                .with_context(|| format!("POST {path}: not JSON: {text}"))?;
            ensure!(error["error"].is_string(), "POST {path}: {text}");
        }

        // Nobody heard anything, and the rooms are as they were.
        for c in &mut clients {
            c.barrier().await?;
        }
        for (c, before) in clients.iter().zip(&before) {
            let now = history_types(c);
            ensure!(&now == before, "{}: {before:?} became {now:?}", c.label);
        }
        let mut lobby = TestClient::connect(addr, "lobby").await?;
        let rooms = lobby.wait_rooms_push("a and b as before", |_| true).await?;
        ensure!(
            rooms == std::collections::HashMap::from([("a".to_owned(), 2), ("b".to_owned(), 2)]),
            "{rooms:?}"
        );

        // Into a new room it fits; members without media follow too.
        let reply = post_ok(addr, "/api/rooms/a/move", json!({"to": "c"})).await?;
        ensure!(reply["moved"] == 2, "{reply}");
        let mut arrived = BTreeSet::new();
        for c in clients.iter_mut().take(2) {
            let j = c
                .follow_move(support::MSG_TIMEOUT, MediaOptions::default())
                .await?;
            ensure!(j.room == "c", "{}: {:?}", c.label, j.room);
            arrived.insert(j.you);
        }
        lobby
            .wait_rooms_push("b and c with 2 each", |r| {
                r.len() == 2 && r.get("b") == Some(&2) && r.get("c") == Some(&2)
            })
            .await?;
        ensure!(arrived.len() == 2, "{arrived:?}");
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// A client's old peer connection may answer an offer just before the
/// client sees the move's `joined`: that answer crosses the move on the
/// wire and is refused, naming why, while the new peer connection's offer
/// is outstanding; the new one then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_from_the_replaced_peer_connection_is_refused() -> Result<()> {
    with_deadline("stale answer", Duration::from_secs(120), async {
        let server = admin_server().await?;
        let addr = server.http_addr();
        let mut a1 = TestClient::connect(addr, "a1").await?;
        let mut a2 = TestClient::connect(addr, "a2").await?;
        let mut b1 = TestClient::connect(addr, "b1").await?;
        a1.join_with_media("a", "ann").await?;
        let a2_id = a2.join_with_media("a", "abe").await?.you;
        let b1_id = b1.join_with_media("b", "bea").await?.you;
        receives_from(&a1, &[&a2_id]).await?;

        // abe leaves: ann's old peer connection answers the re-offer, and
        // that answer is held back until after the move.
        a1.set_hold_answers(true)?;
        a2.leave().await?;
        let stale = a1.take_held_answer(MEDIA_TIMEOUT).await?;

        post_ok(addr, "/api/rooms/a/move", json!({"to": "b"})).await?;
        let joined = a1.moved(support::MSG_TIMEOUT).await?;
        // The server's new offer is outstanding (the new peer connection
        // does not exist yet): the stale answer must not be taken for it.
        support::stale_answer_is_refused(&mut a1, stale).await?;
        a1.media_after_move(MediaOptions::default()).await?;
        receives_from(&a1, &[&b1_id]).await?;
        receives_from(&b1, &[&joined.you]).await?;
        server.shutdown().await;
        Ok(())
    })
    .await
}
