//! Acceptance: three WebRTC participants in one room, each publishing audio and
//! video, each receiving exactly the other two; leaving re-offers without the
//! leaver; the room disappears from the lobby when empty. Plus room isolation.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;
use support::{
    forwarded_in_offer, parse_sections, start_server, with_deadline, Joined, MediaKind, TestClient,
    MEDIA_TIMEOUT,
};

const KINDS: [MediaKind; 2] = [MediaKind::Audio, MediaKind::Video];

/// `(participant id, kind)` pairs for a set of publishers.
fn expected_tracks(publishers: &[&str]) -> BTreeSet<(String, MediaKind)> {
    publishers
        .iter()
        .flat_map(|p| KINDS.iter().map(move |k| (p.to_string(), *k)))
        .collect()
}

fn expected_in_offer(publishers: &[&str]) -> BTreeSet<(String, String)> {
    publishers
        .iter()
        .flat_map(|p| {
            KINDS
                .iter()
                .map(move |k| (p.to_string(), k.sdp_name().to_owned()))
        })
        .collect()
}

/// Live remote tracks (packets received, not ended) as `(stream id, kind)`.
fn live_tracks(c: &TestClient) -> BTreeMap<(String, MediaKind), usize> {
    let mut out = BTreeMap::new();
    for t in c.remote_tracks() {
        if t.packets > 0 && !t.ended {
            if let Some(k) = t.kind {
                *out.entry((t.stream_id.clone(), k)).or_insert(0) += 1;
            }
        }
    }
    out
}

/// Waits until `c` receives media from exactly `publishers` (one audio and one
/// video track each), then checks SSRC / stream-id consistency and that the
/// last applied offer forwards exactly those tracks.
async fn expect_receives_exactly(c: &TestClient, me: &str, publishers: &[&str]) -> Result<()> {
    let want = expected_tracks(publishers);
    c.wait_media(
        &format!("media from exactly {publishers:?} (audio+video each)"),
        MEDIA_TIMEOUT,
        |c| {
            let live = live_tracks(c);
            live.keys().cloned().collect::<BTreeSet<_>>() == want && live.values().all(|n| *n == 1)
        },
    )
    .await?;

    for t in c.remote_tracks() {
        ensure!(
            t.stream_id != me,
            "{}: receives its own track back: {t:?}",
            c.label
        );
        if !t.stream_ids_on_open.is_empty() {
            ensure!(
                t.stream_ids_on_open.first() == Some(&t.stream_id),
                "{}: track stream id {:?} differs from the stream ids of its OnOpen {:?}",
                c.label,
                t.stream_id,
                t.stream_ids_on_open
            );
        }
        if t.packets > 0 {
            ensure!(
                t.ssrcs_seen.len() == 1,
                "{}: one forwarded track carried several SSRCs {:?}: {t:?}",
                c.label,
                t.ssrcs_seen
            );
        }
    }

    // Publishers send a VP8 keyframe every 2 s, so each forwarded video track
    // must show one soon (the SFU may also request one with PLI).
    c.wait_media(
        "a VP8 keyframe on every forwarded video track",
        Duration::from_secs(6),
        |c| {
            c.remote_tracks()
                .iter()
                .filter(|t| t.kind == Some(MediaKind::Video) && t.packets > 0 && !t.ended)
                .all(|t| t.keyframes > 0)
        },
    )
    .await?;

    let offer = c
        .last_offer_sdp()
        .with_context(|| format!("{}: no offer applied", c.label))?;
    let forwarded = forwarded_in_offer(&offer);
    ensure!(
        forwarded == expected_in_offer(publishers),
        "{}: last offer should forward exactly {:?} (sendonly, msid = publisher id), \
         but forwards {:?}; sections: {:?}",
        c.label,
        expected_in_offer(publishers),
        forwarded,
        parse_sections(&offer)
            .iter()
            .map(|m| m.short())
            .collect::<Vec<_>>()
    );
    let recvonly: Vec<_> = parse_sections(&offer)
        .into_iter()
        .filter(|m| m.direction == "recvonly" && m.port != 0)
        .map(|m| m.kind)
        .collect();
    ensure!(
        recvonly.len() == 2 && recvonly.contains(&"audio".into()) && recvonly.contains(&"video".into()),
        "{}: offer should have exactly one recvonly audio and one recvonly video section, has {recvonly:?}",
        c.label
    );
    let errors = c.media_errors();
    ensure!(errors.is_empty(), "{}: media errors: {errors:?}", c.label);
    tracing::info!("receives exactly {publishers:?}: {}", c.media_report());
    Ok(())
}

/// Waits until packet counts from each of `publishers` grow (audio and video).
async fn expect_packets_flowing(c: &TestClient, publishers: &[&str]) -> Result<()> {
    for p in publishers {
        for k in KINDS {
            let before = c.packets_from(p, k);
            // ~1 s of media: 50 audio packets, ~60 video packets.
            let want = before + 20;
            c.wait_packets_above(p, k, want - 1, Duration::from_secs(10))
                .await
                .with_context(|| {
                    format!("{}: {k:?} packets from {p} should keep growing", c.label)
                })?;
        }
    }
    Ok(())
}

/// Participant ids a contract message names (participant objects, `id`,
/// `from`, `to`, and msid stream ids in an offer).
fn ids_mentioned(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |x: &Value| {
        if let Some(s) = x.as_str() {
            out.push(s.to_owned());
        }
    };
    push(&v["participant"]["id"]);
    push(&v["id"]);
    push(&v["from"]);
    push(&v["to"]);
    if let Some(list) = v["participants"].as_array() {
        for p in list {
            push(&p["id"]);
        }
    }
    if let Some(sdp) = v["sdp"].as_str() {
        for m in parse_sections(sdp) {
            if let Some((s, _)) = m.msid {
                out.push(s);
            }
        }
    }
    out
}

fn participant_joined_id(v: &Value) -> Option<(String, String)> {
    let p = &v["participant"];
    Some((p["id"].as_str()?.to_owned(), p["name"].as_str()?.to_owned()))
}

async fn expect_participant_joined(c: &mut TestClient, id: &str, name: &str) -> Result<()> {
    let v = c
        .recv_where(
            &format!("participant_joined for {name} ({id})"),
            support::MSG_TIMEOUT,
            |m| m["type"] == "participant_joined" && m["participant"]["id"] == id,
        )
        .await?;
    let got = participant_joined_id(&v);
    ensure!(
        got == Some((id.to_owned(), name.to_owned())),
        "{}: participant_joined should carry id {id} name {name}, got {v}",
        c.label
    );
    ensure!(
        v["participant"]["audio_muted"] == false && v["participant"]["video_muted"] == false,
        "{}: a new participant should be unmuted: {v}",
        c.label
    );
    Ok(())
}

fn check_joined(j: &Joined, room: &str, others: &[(&str, &str)]) -> Result<()> {
    ensure!(j.room == room, "joined.room {:?} != {room:?}", j.room);
    let got: BTreeSet<(String, String)> = j
        .participants
        .iter()
        .map(|p| (p.id.clone(), p.name.clone()))
        .collect();
    let want: BTreeSet<(String, String)> = others
        .iter()
        .map(|(i, n)| (i.to_string(), n.to_string()))
        .collect();
    ensure!(
        got == want,
        "joined.participants should be the others already in the room {want:?}, got {got:?}"
    );
    ensure!(
        !got.iter().any(|(i, _)| *i == j.you),
        "joined.participants must not list oneself ({})",
        j.you
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_exchange_media_then_leave() -> Result<()> {
    with_deadline("three_participants", Duration::from_secs(150), async {
        let server = start_server().await?;
        let addr = server.http_addr();
        let room = "acceptance";

        let mut lobby = TestClient::connect(addr, "lobby").await?;
        let initial = lobby
            .wait_rooms_push("the initial push on connect", |_| true)
            .await?;
        ensure!(
            !initial.contains_key(room),
            "fresh server lists room {room}: {initial:?}"
        );

        let mut a = TestClient::connect(addr, "alice").await?;
        let ja = a.join_with_media(room, "alice").await?;
        check_joined(&ja, room, &[])?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let jb = b.join_with_media(room, "bob").await?;
        check_joined(&jb, room, &[(&ja.you, "alice")])?;
        let mut c = TestClient::connect(addr, "carol").await?;
        let jc = c.join_with_media(room, "carol").await?;
        check_joined(&jc, room, &[(&ja.you, "alice"), (&jb.you, "bob")])?;

        let (ia, ib, ic) = (ja.you.clone(), jb.you.clone(), jc.you.clone());
        ensure!(
            ia != ib && ib != ic && ia != ic,
            "participant ids must be distinct: {ia} {ib} {ic}"
        );

        expect_participant_joined(&mut a, &ib, "bob").await?;
        expect_participant_joined(&mut a, &ic, "carol").await?;
        expect_participant_joined(&mut b, &ic, "carol").await?;

        lobby
            .wait_rooms_push(&format!("{room} has 3 participants"), |r| {
                r.get(room) == Some(&3)
            })
            .await?;

        // Everyone receives exactly the two others, mapped by stream id.
        expect_receives_exactly(&a, &ia, &[&ib, &ic]).await?;
        expect_receives_exactly(&b, &ib, &[&ia, &ic]).await?;
        expect_receives_exactly(&c, &ic, &[&ia, &ib]).await?;
        expect_packets_flowing(&a, &[&ib, &ic]).await?;
        expect_packets_flowing(&b, &[&ia, &ic]).await?;
        expect_packets_flowing(&c, &[&ia, &ib]).await?;

        // Carol leaves; her PC keeps publishing, the server must stop forwarding it.
        let carol_mids_at_a: Vec<String> = parse_sections(&a.last_offer_sdp().unwrap_or_default())
            .into_iter()
            .filter(|m| m.msid.as_ref().map(|(s, _)| s == &ic).unwrap_or(false))
            .filter_map(|m| m.mid)
            .collect();
        c.leave().await?;

        for (x, others) in [(&mut a, [&ib]), (&mut b, [&ia])] {
            let left = x
                .recv_where(
                    &format!("participant_left for carol ({ic})"),
                    support::MSG_TIMEOUT,
                    |m| m["type"] == "participant_left",
                )
                .await?;
            ensure!(
                left["id"] == ic.as_str(),
                "{}: participant_left should name carol {ic}, got {left}",
                x.label
            );
            let sdp = x
                .wait_offer_applied(
                    &format!("a re-offer without carol's ({ic}) tracks"),
                    Duration::from_secs(15),
                    |sdp| !sdp.contains(&format!("msid:{ic} ")),
                )
                .await?;
            ensure!(
                forwarded_in_offer(&sdp) == expected_in_offer(&[others[0].as_str()]),
                "{}: re-offer after carol left should forward only {:?}, forwards {:?}",
                x.label,
                expected_in_offer(&[others[0].as_str()]),
                forwarded_in_offer(&sdp)
            );
            x.wait_packets_stop(&ic, Duration::from_secs(1), Duration::from_secs(10))
                .await?;
            expect_packets_flowing(x, &[others[0].as_str()]).await?;
            let errors = x.media_errors();
            ensure!(errors.is_empty(), "{}: media errors: {errors:?}", x.label);
            tracing::info!("after carol left: {}", x.media_report());
        }

        // At alice, carol's former sections are dead (inactive or port 0) or reused
        // for someone else; none keeps carol's msid.
        let sdp_a = a.last_offer_sdp().unwrap_or_default();
        for mid in &carol_mids_at_a {
            if let Some(m) = parse_sections(&sdp_a)
                .into_iter()
                .find(|m| m.mid.as_deref() == Some(mid.as_str()))
            {
                let reused = m.msid.as_ref().map(|(s, _)| s != &ic).unwrap_or(false);
                ensure!(
                    m.is_dead() || reused,
                    "alice: carol's former section mid={mid} is still live: {}",
                    m.short()
                );
            }
        }

        lobby
            .wait_rooms_push(&format!("{room} has 2 participants"), |r| {
                r.get(room) == Some(&2)
            })
            .await?;

        a.leave().await?;
        b.leave().await?;
        let rooms = lobby
            .wait_rooms_push(&format!("{room} is gone"), |r| !r.contains_key(room))
            .await?;
        ensure!(!rooms.contains_key(room), "room still listed: {rooms:?}");
        // And a fresh request agrees.
        let reply = lobby.request(serde_json::json!({"type": "rooms"})).await?;
        let listed = support::rooms_of(&reply)?;
        if listed.contains_key(room) {
            bail!("`rooms` request still lists {room} after everyone left: {reply}");
        }

        for x in [a, b, c, lobby] {
            x.close().await;
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_isolated() -> Result<()> {
    with_deadline("rooms_are_isolated", Duration::from_secs(120), async {
        let server = start_server().await?;
        let addr = server.http_addr();

        let mut a1 = TestClient::connect(addr, "a1").await?;
        let ja1 = a1.join_with_media("room-a", "a1").await?;
        let mut b1 = TestClient::connect(addr, "b1").await?;
        let jb1 = b1.join_with_media("room-b", "b1").await?;
        let mut a2 = TestClient::connect(addr, "a2").await?;
        let ja2 = a2.join_with_media("room-a", "a2").await?;
        let mut b2 = TestClient::connect(addr, "b2").await?;
        let jb2 = b2.join_with_media("room-b", "b2").await?;

        ensure!(
            ja2.participants.iter().all(|p| p.id == ja1.you),
            "a2's joined lists someone not in room-a: {:?}",
            ja2.participants
        );
        ensure!(
            jb2.participants.iter().all(|p| p.id == jb1.you),
            "b2's joined lists someone not in room-b: {:?}",
            jb2.participants
        );

        // Media flows inside each room (so the server has both rooms' media)...
        expect_receives_exactly(&a1, &ja1.you, &[&ja2.you]).await?;
        expect_receives_exactly(&a2, &ja2.you, &[&ja1.you]).await?;
        expect_receives_exactly(&b1, &jb1.you, &[&jb2.you]).await?;
        expect_receives_exactly(&b2, &jb2.you, &[&jb1.you]).await?;
        expect_packets_flowing(&a1, &[&ja2.you]).await?;
        expect_packets_flowing(&b1, &[&jb2.you]).await?;

        // ...and nothing crosses: no tracks, no msids, no room events.
        for x in [&mut a1, &mut a2, &mut b1, &mut b2] {
            x.barrier().await?;
        }
        let a_ids = [ja1.you.clone(), ja2.you.clone()];
        let b_ids = [jb1.you.clone(), jb2.you.clone()];
        for (x, foreign) in [(&a1, &b_ids), (&a2, &b_ids), (&b1, &a_ids), (&b2, &a_ids)] {
            for t in x.remote_tracks() {
                ensure!(
                    !foreign.contains(&t.stream_id),
                    "{}: received a track from the other room: {t:?}",
                    x.label
                );
            }
            for v in x.history() {
                for id in ids_mentioned(&v) {
                    ensure!(
                        !foreign.contains(&id),
                        "{}: a message names {id} from the other room: {}",
                        x.label,
                        support::brief(&v)
                    );
                }
            }
        }

        for x in [a1, a2, b1, b2] {
            x.close().await;
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}
