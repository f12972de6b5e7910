//! The signaling contract over the WebSocket alone (no media): errors, `req`
//! echoing, lobby pushes, chat, rename and mute.

use crate::support;

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use serde_json::{json, Value};
use support::{
    brief, expect_error, is_recent_unix_ms, start_server, with_deadline, Participant, TestClient,
    MSG_TIMEOUT,
};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(60);

/// After an error the connection must still work: a `rooms` round trip.
async fn still_open(c: &mut TestClient, after: &str) -> Result<()> {
    c.barrier()
        .await
        .map_err(|e| anyhow::anyhow!("connection unusable after {after}: {e:#}"))
}

/// Sends a raw frame and expects an `error` of `code` without any `req`.
async fn raw_expect_error(
    c: &mut TestClient,
    frame: Message,
    code: &str,
    what: &str,
) -> Result<()> {
    c.send_raw(frame)?;
    let reply = c
        .recv_where(&format!("an `error` for {what}"), MSG_TIMEOUT, |m| {
            m["type"] == "error"
        })
        .await?;
    expect_error(&c.label, &reply, code, what)?;
    still_open(c, what).await
}

/// Counts the messages received so far that echo `req`.
fn replies_to(c: &TestClient, req: &Value) -> usize {
    c.history_where(|m| m.get("req") == Some(req)).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_rejected_and_the_connection_stays_open() -> Result<()> {
    with_deadline("malformed_messages", LIMIT, async {
        let server = start_server().await?;
        let mut c = TestClient::connect(server.http_addr(), "malformed").await?;

        raw_expect_error(
            &mut c,
            Message::text("{not json"),
            "bad_request",
            "malformed JSON",
        )
        .await?;
        raw_expect_error(
            &mut c,
            Message::text(r#"{"room":"x"}"#),
            "bad_request",
            "an object without `type`",
        )
        .await?;
        raw_expect_error(
            &mut c,
            Message::text(r#"[1,2,3]"#),
            "bad_request",
            "a JSON array",
        )
        .await?;
        raw_expect_error(
            &mut c,
            Message::text(r#"{"type":"no_such_type"}"#),
            "unknown_type",
            "an unknown type",
        )
        .await?;
        raw_expect_error(
            &mut c,
            Message::binary(vec![0x7b, 0x7d]),
            "bad_request",
            "a binary frame",
        )
        .await?;

        // Wrong field types / missing fields, with req: bad_request echoing req.
        c.request_err(
            json!({"type": "join", "room": 5, "name": "x"}),
            "bad_request",
        )
        .await?;
        c.request_err(json!({"type": "join", "name": "x"}), "bad_request")
            .await?;
        c.request_err(json!({"type": 7}), "bad_request").await?;

        // Oversize text: too_large without req (the message is not parsed).
        let big = json!({"type": "chat", "text": "x".repeat(70_000), "req": 999});
        c.send_raw(Message::text(big.to_string()))?;
        let reply = c
            .recv_where("a `too_large` error", MSG_TIMEOUT, |m| m["type"] == "error")
            .await?;
        expect_error(&c.label, &reply, "too_large", "a 70,000-byte text frame")?;
        ensure!(
            reply.get("req").is_none(),
            "too_large must not carry a req (the frame is not parsed): {reply}"
        );
        still_open(&mut c, "an oversize frame").await?;
        ensure!(
            c.close_reason().is_none(),
            "connection closed after an oversize frame: {:?}",
            c.close_reason()
        );

        // Nothing else happened: we are still in the lobby.
        c.request_err(json!({"type": "chat", "text": "hi"}), "not_in_room")
            .await?;

        c.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_req_gets_exactly_one_reply() -> Result<()> {
    with_deadline("exactly_one_reply", LIMIT, async {
        let server = start_server().await?;
        let addr = server.http_addr();
        let mut a = TestClient::connect(addr, "a").await?;
        let mut b = TestClient::connect(addr, "b").await?;

        // A mix of successes and errors, numeric and string reqs.
        let cases: Vec<(Value, Value, &str)> = vec![
            (json!({"type": "rooms"}), json!(101), "rooms"),
            (json!({"type": "rooms"}), json!("str-req"), "rooms"),
            (json!({"type": "chat", "text": "x"}), json!(102), "error"),
            (json!({"type": "bogus"}), json!(103), "error"),
            (
                json!({"type": "answer", "sdp": "v=0\r\n"}),
                json!(104),
                "error",
            ),
            (
                json!({"type": "join", "room": "r", "name": "a"}),
                json!("join-a"),
                "joined",
            ),
            (
                json!({"type": "join", "room": "r", "name": "a"}),
                json!(105),
                "error",
            ),
            (json!({"type": "chat", "text": "hello"}), json!(106), "ok"),
            (json!({"type": "name", "name": "alice"}), json!(107), "ok"),
            (
                json!({"type": "mute", "kind": "audio", "muted": true}),
                json!(108),
                "ok",
            ),
            (
                json!({"type": "chat", "text": "x", "to": "nobody-here"}),
                json!(109),
                "error",
            ),
            (json!({"type": "leave"}), json!("leave-a"), "ok"),
        ];
        let _ = b.join("r", "b").await?;
        for (msg, req, want) in &cases {
            let reply = a.request_with_req(msg.clone(), req.clone()).await?;
            ensure!(
                reply["type"] == *want,
                "reply to {} should be `{want}`, got {}",
                brief(msg),
                brief(&reply)
            );
        }
        // Everything sent before this barrier has been answered; count echoes.
        a.barrier().await?;
        for (msg, req, _) in &cases {
            let n = replies_to(&a, req);
            ensure!(
                n == 1,
                "{} with req {req} got {n} replies echoing it (want exactly 1): {:?}",
                brief(msg),
                a.history_where(|m| m.get("req") == Some(req))
            );
        }

        a.close().await;
        b.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_and_join_errors() -> Result<()> {
    with_deadline("lobby_and_join_errors", LIMIT, async {
        let server = start_server().await?;
        let addr = server.http_addr();
        let mut c = TestClient::connect(addr, "c").await?;

        // answer in the lobby: negotiation_failed, echoing req.
        let reply = c
            .request_with_req(
                json!({"type": "answer", "sdp": "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}),
                json!("ans-1"),
            )
            .await?;
        expect_error(&c.label, &reply, "negotiation_failed", "an answer in the lobby")?;
        ensure!(reply["req"] == "ans-1", "req not echoed: {reply}");

        // chat outside a room.
        c.request_err(json!({"type": "chat", "text": "hi"}), "not_in_room")
            .await?;
        c.request_err(
            json!({"type": "chat", "text": "hi", "to": "someone"}),
            "not_in_room",
        )
        .await?;

        // Name and room validation (lengths count Unicode scalar values).
        let long65 = "n".repeat(65);
        let wide64 = "é".repeat(64); // 64 chars, 128 bytes: valid
        let bad_joins = [
            (json!({"type": "join", "room": "r", "name": ""}), "empty name"),
            (json!({"type": "join", "room": "r", "name": long65}), "65-char name"),
            (json!({"type": "join", "room": "", "name": "ok"}), "empty room"),
            (json!({"type": "join", "room": long65, "name": "ok"}), "65-char room"),
            (json!({"type": "join", "room": "r", "name": "bad\u{7}bell"}), "BEL in name"),
            (json!({"type": "join", "room": "r", "name": "new\nline"}), "LF in name"),
            (json!({"type": "join", "room": "r", "name": "del\u{7f}"}), "DEL in name"),
            (json!({"type": "join", "room": "r\u{1}", "name": "ok"}), "SOH in room"),
        ];
        for (msg, what) in bad_joins {
            let reply = c.request(msg.clone()).await?;
            expect_error(&c.label, &reply, "bad_request", what)?;
        }
        // Still in the lobby, and no room was created by the rejected joins.
        let reply = c.request(json!({"type": "rooms"})).await?;
        let rooms = support::rooms_of(&reply)?;
        ensure!(
            rooms.is_empty(),
            "rejected joins must not create rooms: {rooms:?}"
        );

        let j = c.join(&wide64, &wide64).await?;
        ensure!(j.room == wide64, "64-character room name not kept: {:?}", j.room);
        c.request_err(
            json!({"type": "join", "room": "other", "name": "x"}),
            "already_in_room",
        )
        .await?;
        c.request_err(
            json!({"type": "join", "room": wide64, "name": "x"}),
            "already_in_room",
        )
        .await?;

        // Direct chat: unknown id -> not_found; oneself -> bad_request.
        c.request_err(
            json!({"type": "chat", "text": "hi", "to": "no-such-participant"}),
            "not_found",
        )
        .await?;
        c.request_err(
            json!({"type": "chat", "text": "hi", "to": j.you}),
            "bad_request",
        )
        .await?;
        // Text length: 1..=4096.
        c.request_err(json!({"type": "chat", "text": ""}), "bad_request")
            .await?;
        c.request_err(
            json!({"type": "chat", "text": "t".repeat(4097)}),
            "bad_request",
        )
        .await?;
        c.request_ok(json!({"type": "chat", "text": "é".repeat(4096)}))
            .await?;

        // After leave the connection is back in the lobby and may join again.
        c.leave().await?;
        c.request_err(json!({"type": "chat", "text": "hi"}), "not_in_room")
            .await?;
        let j2 = c.join("again", "me").await?;
        ensure!(j2.participants.is_empty(), "fresh room not empty: {:?}", j2.participants);

        c.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_rooms_push_on_connect_and_on_changes() -> Result<()> {
    with_deadline("lobby_rooms_push", LIMIT, async {
        let server = start_server().await?;
        let addr = server.http_addr();

        let mut lobby = TestClient::connect(addr, "lobby").await?;
        let first = lobby.next_push("rooms").await?;
        let rooms = support::rooms_of(&first)?;
        ensure!(rooms.is_empty(), "fresh server lists rooms: {rooms:?}");

        let mut a = TestClient::connect(addr, "a").await?;
        a.next_push("rooms").await?;
        a.join("standup", "alice").await?;
        lobby
            .wait_rooms_push("standup has 1", |r| r.get("standup") == Some(&1))
            .await?;

        let mut b = TestClient::connect(addr, "b").await?;
        let on_connect = b.next_push("rooms").await?;
        ensure!(
            support::rooms_of(&on_connect)?.get("standup") == Some(&1),
            "push on connect should list standup with 1: {on_connect}"
        );
        b.join("standup", "bob").await?;
        let pushes = |x: &TestClient| {
            x.history_where(|m| m["type"] == "rooms" && m.get("req").is_none())
                .len()
        };
        let b_pushes_at_join = pushes(&b);
        lobby
            .wait_rooms_push("standup has 2", |r| r.get("standup") == Some(&2))
            .await?;

        let mut d = TestClient::connect(addr, "d").await?;
        d.join("retro", "dave").await?;
        lobby
            .wait_rooms_push("standup 2 and retro 1", |r| {
                r.get("standup") == Some(&2) && r.get("retro") == Some(&1)
            })
            .await?;

        // A member does not get lobby pushes; after leave it does, at once.
        b.barrier().await?;
        ensure!(
            pushes(&b) == b_pushes_at_join,
            "bob got `rooms` pushes while in a room: {:?}",
            b.history_where(|m| m["type"] == "rooms" && m.get("req").is_none())
        );
        b.leave().await?;
        let pushed = b.next_push("rooms").await?;
        let r = support::rooms_of(&pushed)?;
        ensure!(
            r.get("standup") == Some(&1),
            "push right after leave should show standup with 1, got {r:?}"
        );
        lobby
            .wait_rooms_push("standup back to 1", |r| r.get("standup") == Some(&1))
            .await?;

        // Closing the WebSocket is a leave; the last one removes the room.
        a.close().await;
        lobby
            .wait_rooms_push("standup gone", |r| {
                !r.contains_key("standup") && r.get("retro") == Some(&1)
            })
            .await?;
        d.leave().await?;
        lobby
            .wait_rooms_push("no rooms at all", |r| r.is_empty())
            .await?;

        // Pushes never carry req, and a member in a room got none while inside.
        for v in lobby.history_where(|m| m["type"] == "rooms") {
            ensure!(v.get("req").is_none(), "a rooms push carries req: {v}");
        }

        for x in [lobby, b, d] {
            x.close().await;
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_is_delivered_once_to_each_other_member() -> Result<()> {
    with_deadline("chat_delivery", LIMIT, async {
        let server = start_server().await?;
        let addr = server.http_addr();
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let mut c = TestClient::connect(addr, "carol").await?;
        let mut outsider = TestClient::connect(addr, "outsider").await?;
        let ja = a.join("chat", "alice").await?;
        let jb = b.join("chat", "bob").await?;
        let _jc = c.join("chat", "carol").await?;
        outsider.join("elsewhere", "olga").await?;

        // Room message.
        a.request_ok(json!({"type": "chat", "text": "hello room"}))
            .await?;
        for x in [&mut b, &mut c] {
            let m = x
                .recv_where("alice's room chat", MSG_TIMEOUT, |m| m["type"] == "chat")
                .await?;
            ensure!(
                m["from"] == ja.you.as_str()
                    && m["name"] == "alice"
                    && m["text"] == "hello room"
                    && is_recent_unix_ms(&m["ts"])
                    && m.get("to").is_none(),
                "{}: room chat should be {{from: {}, name: alice, text, ts: unix ms, no to}}, got {m}",
                x.label,
                ja.you
            );
        }
        // Direct message alice -> bob.
        a.request_ok(json!({"type": "chat", "text": "psst", "to": jb.you}))
            .await?;
        let m = b
            .recv_where("alice's direct chat", MSG_TIMEOUT, |m| m["type"] == "chat")
            .await?;
        ensure!(
            m["from"] == ja.you.as_str()
                && m["name"] == "alice"
                && m["text"] == "psst"
                && m["to"] == jb.you.as_str()
                && is_recent_unix_ms(&m["ts"]),
            "bob: direct chat should carry from/name/text/ts and to={}, got {m}",
            jb.you
        );

        // Barriers, then exact counts.
        for x in [&mut a, &mut b, &mut c, &mut outsider] {
            x.barrier().await?;
        }
        let count = |x: &TestClient, text: &str| {
            x.history_where(|m| m["type"] == "chat" && m["text"] == text)
                .len()
        };
        ensure!(count(&a, "hello room") == 0, "the sender got its own room chat");
        ensure!(count(&a, "psst") == 0, "the sender got its own direct chat");
        ensure!(count(&b, "hello room") == 1, "bob got the room chat {} times", count(&b, "hello room"));
        ensure!(count(&c, "hello room") == 1, "carol got the room chat {} times", count(&c, "hello room"));
        ensure!(count(&b, "psst") == 1, "bob got the direct chat {} times", count(&b, "psst"));
        ensure!(count(&c, "psst") == 0, "carol got a direct chat meant for bob");
        ensure!(
            outsider.history_where(|m| m["type"] == "chat").is_empty(),
            "a member of another room got chat: {:?}",
            outsider.history_where(|m| m["type"] == "chat")
        );

        for x in [a, b, c, outsider] {
            x.close().await;
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_and_mute_reach_everyone_including_self() -> Result<()> {
    with_deadline("rename_and_mute", LIMIT, async {
        let server = start_server().await?;
        let addr = server.http_addr();
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let ja = a.join("r", "alice").await?;
        let _jb = b.join("r", "bob").await?;

        a.request_ok(json!({"type": "name", "name": "alicia"}))
            .await?;
        for x in [&mut a, &mut b] {
            let m = x
                .recv_where("participant_updated after rename", MSG_TIMEOUT, |m| {
                    m["type"] == "participant_updated"
                })
                .await?;
            let p = Participant::from_json(&m["participant"])?;
            ensure!(
                p.id == ja.you && p.name == "alicia" && !p.audio_muted && !p.video_muted,
                "{}: participant_updated after rename should show alicia, unmuted, id {}: {m}",
                x.label,
                ja.you
            );
        }
        a.request_err(json!({"type": "name", "name": ""}), "bad_request")
            .await?;
        a.request_err(json!({"type": "name", "name": "tab\there"}), "bad_request")
            .await?;

        for (kind, muted) in [("audio", true), ("video", true), ("audio", false)] {
            a.request_ok(json!({"type": "mute", "kind": kind, "muted": muted}))
                .await?;
            for x in [&mut a, &mut b] {
                let m = x
                    .recv_where(
                        &format!("participant_updated after mute {kind}={muted}"),
                        MSG_TIMEOUT,
                        |m| m["type"] == "participant_updated",
                    )
                    .await?;
                let p = Participant::from_json(&m["participant"])?;
                let (want_audio, want_video) = match (kind, muted) {
                    ("audio", true) => (true, false),
                    ("video", true) => (true, true),
                    _ => (false, true),
                };
                ensure!(
                    p.id == ja.you
                        && p.name == "alicia"
                        && p.audio_muted == want_audio
                        && p.video_muted == want_video,
                    "{}: after mute {kind}={muted} expected audio_muted={want_audio} \
                     video_muted={want_video} for {}, got {m}",
                    x.label,
                    ja.you
                );
            }
        }
        a.request_err(
            json!({"type": "mute", "kind": "smell", "muted": true}),
            "bad_request",
        )
        .await?;
        a.request_err(
            json!({"type": "mute", "kind": "audio", "muted": "yes"}),
            "bad_request",
        )
        .await?;

        // A newcomer sees the recorded state in `joined`.
        let mut c = TestClient::connect(addr, "carol").await?;
        let jc = c.join("r", "carol").await?;
        let alice = jc.participants.iter().find(|p| p.id == ja.you).cloned();
        match alice {
            Some(p) if p.name == "alicia" && !p.audio_muted && p.video_muted => {}
            other => {
                bail!("carol's joined should list alicia with video muted only, got {other:?}")
            }
        }

        for x in [a, b, c] {
            x.close().await;
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}
