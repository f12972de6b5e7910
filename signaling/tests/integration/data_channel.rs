//! The `noom` data channel relay (docs/protocol.md, "Data channel [ext]"):
//! chat routing and errors, file transfer while media flows, the file limits
//! and aborts, and the direct flag on every kind of frame, between real
//! WebRTC clients (async `webrtc` 0.21.1) through an in-process server.
//! Back-pressure and bounded server memory: data_channel_backpressure.rs.

use crate::support;

use crate::data_channel_support;
use anyhow::{ensure, Result};
use data_channel_support::*;
use noom_sfu::{
    client_frame, file_offer_body, KIND_CHAT, KIND_ERROR, KIND_FILE_ABORT, KIND_FILE_CHUNK,
    KIND_FILE_END, KIND_FILE_OFFER,
};
use sha2::{Digest, Sha256};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use support::{start_server_with, with_deadline, MediaKind, TestClient};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_frames_reach_the_right_people_and_bad_frames_get_errors() -> Result<()> {
    with_deadline("dc chat", Duration::from_secs(90), async {
        let server = start_server_with(|_| {}).await?;
        let (c, ids) = room(server.http_addr(), "chat", &["alice", "bob", "carol"]).await?;
        let (a, b, cc) = (&c[0], &c[1], &c[2]);

        // Room chat: bob and carol, from alice, flags 0.
        a.send_data(&client_frame(KIND_CHAT, None, b"hello room"))
            .await?;
        for r in [b, cc] {
            let f = r
                .wait_data_frame("room chat", WAIT, |f| is_chat(f, b"hello room"))
                .await?;
            let f = Frame::parse(&f).unwrap();
            ensure!(
                f.from == ids[0] && f.flags == 0,
                "{}: room chat from {:?} flags {} (want {:?}, 0)",
                r.label,
                f.from,
                f.flags,
                ids[0]
            );
        }

        // Direct chat: bob only, with the direct flag.
        a.send_data(&client_frame(KIND_CHAT, Some(&ids[1]), b"just bob"))
            .await?;
        let f = b
            .wait_data_frame("direct chat", WAIT, |f| is_chat(f, b"just bob"))
            .await?;
        let f = Frame::parse(&f).unwrap();
        ensure!(
            f.from == ids[0] && f.flags == 1,
            "direct chat from {:?} flags {}",
            f.from,
            f.flags
        );

        // Refused frames: each answered by one error frame from the server,
        // and the channel still relays the next message.
        enum Bad {
            Binary(Vec<u8>),
            Text(&'static str),
        }
        let mut offer_cut = file_offer_body(77, 10, "name.txt", "text/plain");
        offer_cut.truncate(10);
        let cases: Vec<(&str, Bad, &str, u32)> = vec![
            (
                "to an unknown id",
                Bad::Binary(client_frame(KIND_CHAT, Some("nobody"), b"?").to_vec()),
                "not_found",
                0,
            ),
            (
                "to oneself",
                Bad::Binary(client_frame(KIND_CHAT, Some(&ids[0]), b"me").to_vec()),
                "bad_request",
                0,
            ),
            ("a text message", Bad::Text("plain text"), "bad_request", 0),
            (
                "an unknown kind",
                Bad::Binary(client_frame(0x55, None, b"x").to_vec()),
                "unknown_type",
                0,
            ),
            (
                "a truncated address",
                Bad::Binary(vec![KIND_CHAT, 9, b'a']),
                "bad_request",
                0,
            ),
            (
                "a lone kind byte",
                Bad::Binary(vec![KIND_CHAT]),
                "bad_request",
                0,
            ),
            (
                "a truncated file offer",
                Bad::Binary(client_frame(KIND_FILE_OFFER, None, &offer_cut).to_vec()),
                "bad_request",
                77,
            ),
            (
                "a chunk of no transfer",
                Bad::Binary(chunk_frame(None, 78, b"zz").to_vec()),
                "bad_request",
                78,
            ),
            (
                "an empty chat",
                Bad::Binary(client_frame(KIND_CHAT, None, b"").to_vec()),
                "bad_request",
                0,
            ),
        ];
        let errors = |frames: &[Vec<u8>]| frames.iter().filter(|f| f[0] == KIND_ERROR).count();
        for (i, (what, bad, code, transfer)) in cases.iter().enumerate() {
            match bad {
                Bad::Binary(frame) => a.send_data(frame).await?,
                Bad::Text(text) => a.send_data_text(text).await?,
            }
            // On the sender's channel the server answers in order: the
            // (i+1)-th error frame is this case's.
            a.wait_data_frames(&format!("hold error #{} ({what})", i + 1), WAIT, |f| {
                errors(f) > i
            })
            .await?;
            let error = frames(a)
                .into_iter()
                .filter(|f| f.kind == KIND_ERROR)
                .nth(i)
                .unwrap();
            ensure!(
                error.error() == Some((*transfer, code.to_string()))
                    && error.from.is_empty()
                    && error.flags == 0,
                "{what}: got error {:?} from {:?} flags {} (want {code} for transfer {transfer})",
                error.error(),
                error.from,
                error.flags
            );
            // Still usable.
            let text = format!("still works after {what}");
            a.send_data(&client_frame(KIND_CHAT, Some(&ids[1]), text.as_bytes()))
                .await?;
            b.wait_data_frame(&text, WAIT, |f| is_chat(f, text.as_bytes()))
                .await?;
        }

        // A last room message fences everything above: the channel is
        // ordered, so whatever the server relayed earlier has arrived.
        a.send_data(&client_frame(KIND_CHAT, None, b"fence"))
            .await?;
        for r in [b, cc] {
            r.wait_data_frame("fence", WAIT, |f| is_chat(f, b"fence"))
                .await?;
            ensure!(
                count(r, |f| is_chat(f, b"hello room")) == 1,
                "{}: the room chat arrived {} times",
                r.label,
                count(r, |f| is_chat(f, b"hello room"))
            );
            ensure!(
                frames(r).iter().all(|f| f.from == ids[0]),
                "{}: a frame not from alice: {:?}",
                r.label,
                frames(r)
            );
        }
        // Carol saw none of the direct messages to bob.
        let carol: Vec<Frame> = frames(cc);
        ensure!(
            carol.iter().all(|f| f.flags == 0)
                && carol.len() == 2
                && count(cc, |f| is_chat(f, b"just bob")) == 0,
            "carol got {carol:?}"
        );
        // Bob got every direct message once.
        ensure!(count(b, |f| is_chat(f, b"just bob")) == 1);
        ensure!(
            frames(b).len() == 2 + 1 + cases.len(),
            "bob got {} frames",
            frames(b).len()
        );
        // Alice got nothing but her errors, exactly one per refused frame.
        let alice = frames(a);
        ensure!(
            alice.iter().all(|f| f.kind == KIND_ERROR) && alice.len() == cases.len(),
            "alice got {alice:?}"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------
// 2. A file while media flows
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mb_file_arrives_intact_while_media_flows() -> Result<()> {
    with_deadline("dc file", Duration::from_secs(90), async {
        let server = start_server_with(|_| {}).await?;
        let (c, ids) = room(server.http_addr(), "file", &["alice", "bob", "carol"]).await?;
        let (a, b, cc) = (&c[0], &c[1], &c[2]);
        const SIZE: usize = 5 * 1024 * 1024;
        let data = random_bytes(SIZE);
        let expected: [u8; 32] = Sha256::digest(&data).into();
        for kind in [MediaKind::Audio, MediaKind::Video] {
            b.wait_packets_above(&ids[0], kind, 20, Duration::from_secs(30))
                .await?;
        }
        let media = || {
            (
                b.packets_from(&ids[0], MediaKind::Audio),
                b.packets_from(&ids[0], MediaKind::Video),
            )
        };

        let progress = AtomicU64::new(0);
        let started = Instant::now();
        let sending = send_file(a, None, 7, &data, &progress, Duration::from_secs(30));
        // While the file moves, sample bob's packet counters from alice.
        let watching = async {
            let mut samples = vec![(Duration::ZERO, media())];
            let mut done = [None, None];
            let deadline = started + Duration::from_secs(60);
            while done.iter().any(Option::is_none) {
                ensure!(Instant::now() < deadline, "file not complete after 60 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
                samples.push((started.elapsed(), media()));
                for (i, r) in [b, cc].into_iter().enumerate() {
                    let ended = |f: &[u8]| is_file(f, KIND_FILE_END, 7) || is_file(f, KIND_FILE_ABORT, 7);
                    if done[i].is_none() && count(r, ended) > 0 {
                        done[i] = Some(started.elapsed());
                    }
                }
            }
            Ok::<_, anyhow::Error>((samples, done))
        };
        let ((), (samples, done)) = tokio::try_join!(sending, watching)?;
        let secs = done.iter().flatten().max().unwrap().as_secs_f64();

        for r in [b, cc] {
            let got = reassembled(r, 7).unwrap();
            ensure!(
                got == Ok((expected, SIZE)),
                "{}: file differs: {:?} (want {SIZE} bytes)",
                r.label,
                got.map(|(_, len)| len)
            );
        }
        let mb = SIZE as f64 / 1e6;
        println!(
            "5 MiB file to 2 receivers through the server in {secs:.2} s: {:.2} MB/s per receiver, {:.2} MB/s relayed in total; alice's queue-low events: {}",
            mb / secs,
            2.0 * mb / secs,
            a.data_low_events()
        );

        // Media kept flowing: both counters grew across the transfer and
        // through its middle, and never stood still for long.
        let (t0, first) = samples[0];
        let (t1, last) = *samples.last().unwrap();
        let mid = samples[samples.len() / 2].1;
        ensure!(
            first.0 < mid.0 && mid.0 < last.0 && first.1 < mid.1 && mid.1 < last.1,
            "alice's media to bob stalled during the transfer: {first:?} -> {mid:?} -> {last:?}"
        );
        // Longest time between two samples that saw a counter grow (100 ms
        // resolution).
        let mut longest = [Duration::ZERO; 2];
        let mut since = [t0; 2];
        for w in samples.windows(2) {
            let ((_, prev), (t, now)) = (w[0], w[1]);
            for (k, grew) in [(0, now.0 > prev.0), (1, now.1 > prev.1)] {
                if grew {
                    longest[k] = longest[k].max(t - since[k]);
                    since[k] = t;
                }
            }
        }
        for k in 0..2 {
            longest[k] = longest[k].max(t1 - since[k]);
        }
        println!(
            "media at bob during the transfer: {} audio, {} video packets in {:.2} s; longest gap {:?} audio, {:?} video",
            last.0 - first.0,
            last.1 - first.1,
            (t1 - t0).as_secs_f64(),
            longest[0],
            longest[1]
        );
        ensure!(
            longest.iter().all(|g| *g < Duration::from_secs(2)),
            "a media gap of {longest:?} during the transfer"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------
// 3. Limits and aborts
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transfers_are_refused_and_abandoned_ones_aborted() -> Result<()> {
    with_deadline("dc limits", Duration::from_secs(90), async {
        let server = start_server_with(|cfg| cfg.limits.max_file_bytes = 1_000_000).await?;
        let (mut c, ids) = room(server.http_addr(), "limits", &["alice", "bob", "carol"]).await?;
        let alice = ids[0].clone();
        let aborted_by_alice = |r: &TestClient, id: u32| {
            frames(r)
                .into_iter()
                .filter(|f| f.is_file(KIND_FILE_ABORT, id))
                .map(|f| (f.from, f.flags))
                .collect::<Vec<_>>()
        };
        let nth_error = |c: &TestClient, n: usize| {
            frames(c)
                .into_iter()
                .filter(|f| f.kind == KIND_ERROR)
                .nth(n)
        };
        {
            let (a, b, cc) = (&c[0], &c[1], &c[2]);

            // Over the limit: too_large for that transfer, nothing relayed.
            a.send_data(&client_frame(
                KIND_FILE_OFFER,
                None,
                &file_offer_body(1, 1_000_001, "big", "x"),
            ))
            .await?;
            a.wait_data_frame("too_large", WAIT, |f| f[0] == KIND_ERROR)
                .await?;
            let err = nth_error(a, 0).unwrap().error();
            ensure!(
                err == Some((1, "too_large".into())),
                "over the limit: {err:?}"
            );
            // Its chunks are then refused as belonging to no transfer.
            a.send_data(&chunk_frame(None, 1, &[1u8; 100])).await?;
            a.wait_data_frames("hold 2 errors", WAIT, |f| {
                f.iter().filter(|f| f[0] == KIND_ERROR).count() >= 2
            })
            .await?;
            let err = nth_error(a, 1).unwrap().error();
            ensure!(
                err == Some((1, "bad_request".into())),
                "chunk of a refused offer: {err:?}"
            );
            // At the limit is fine.
            a.send_data(&client_frame(
                KIND_FILE_OFFER,
                None,
                &file_offer_body(5, 1_000_000, "limit", "x"),
            ))
            .await?;
            a.send_data(&client_frame(KIND_FILE_ABORT, None, &5u32.to_be_bytes()))
                .await?;

            // More bytes than announced: an error to the sender, an abort
            // to the receivers, and the excess chunk is not relayed.
            a.send_data(&client_frame(
                KIND_FILE_OFFER,
                None,
                &file_offer_body(2, 10, "small", "x"),
            ))
            .await?;
            a.send_data(&chunk_frame(None, 2, &[2u8; 6])).await?;
            a.send_data(&chunk_frame(None, 2, &[2u8; 5])).await?;
            for r in [&c[1], &c[2]] {
                r.wait_data_frame("abort of 2", WAIT, |f| is_file(f, KIND_FILE_ABORT, 2))
                    .await?;
                ensure!(
                    aborted_by_alice(r, 2) == vec![(alice.clone(), 0)],
                    "{}: aborts of 2: {:?}",
                    r.label,
                    aborted_by_alice(r, 2)
                );
                ensure!(
                    count(r, |f| is_file(f, KIND_FILE_CHUNK, 2)) == 1,
                    "{}: the excess chunk was relayed",
                    r.label
                );
                // The limit offer (5) came and went; the refused one (1)
                // never reached anyone (ordered channel: 2 came after it).
                ensure!(count(r, |f| is_file(f, KIND_FILE_OFFER, 5)) == 1);
                ensure!(count(r, |f| is_file(f, KIND_FILE_ABORT, 5)) == 1);
                ensure!(
                    count(r, |f| (KIND_FILE_OFFER..=KIND_FILE_ABORT).contains(&f[0])
                        && Frame::parse(f).unwrap().transfer() == Some(1))
                        == 0,
                    "{}: something of the refused transfer 1 arrived",
                    r.label
                );
            }
            a.wait_data_frames("hold 3 errors", WAIT, |f| {
                f.iter().filter(|f| f[0] == KIND_ERROR).count() >= 3
            })
            .await?;
            let err = nth_error(a, 2).unwrap().error();
            ensure!(err == Some((2, "bad_request".into())), "overflow: {err:?}");

            // An early end: an error to the sender, an abort (no end) to
            // the receivers.
            a.send_data(&client_frame(
                KIND_FILE_OFFER,
                None,
                &file_offer_body(3, 100, "early", "x"),
            ))
            .await?;
            a.send_data(&chunk_frame(None, 3, &[3u8; 99])).await?;
            a.send_data(&client_frame(KIND_FILE_END, None, &3u32.to_be_bytes()))
                .await?;
            for r in [b, cc] {
                r.wait_data_frame("abort of 3", WAIT, |f| is_file(f, KIND_FILE_ABORT, 3))
                    .await?;
                ensure!(aborted_by_alice(r, 3) == vec![(alice.clone(), 0)]);
                ensure!(count(r, |f| is_file(f, KIND_FILE_END, 3)) == 0);
            }
            a.wait_data_frames("hold 4 errors", WAIT, |f| {
                f.iter().filter(|f| f[0] == KIND_ERROR).count() >= 4
            })
            .await?;
            let err = nth_error(a, 3).unwrap().error();
            ensure!(err == Some((3, "bad_request".into())), "early end: {err:?}");

            // Mid-transfer, the sender leaves: it closes its WebSocket (its
            // peer connection is left to the server to tear down).
            a.send_data(&client_frame(
                KIND_FILE_OFFER,
                None,
                &file_offer_body(4, 500_000, "half", "x"),
            ))
            .await?;
            a.send_data(&chunk_frame(None, 4, &[4u8; 1000])).await?;
            for r in [b, cc] {
                r.wait_data_frame("chunk of 4", WAIT, |f| is_file(f, KIND_FILE_CHUNK, 4))
                    .await?;
            }
            ensure!(
                count(a, |f| f[0] == KIND_ERROR) == 4,
                "alice: unexpected errors {:?}",
                frames(a)
            );
            a.send_raw(Message::Close(None))?;
        }
        for r in &c[1..] {
            r.wait_data_frame("abort of 4", WAIT, |f| is_file(f, KIND_FILE_ABORT, 4))
                .await?;
            ensure!(
                aborted_by_alice(r, 4) == vec![(alice.clone(), 0)],
                "{}: aborts of 4: {:?}",
                r.label,
                aborted_by_alice(r, 4)
            );
        }
        // Bob and carol still talk over the relay.
        c[1].send_data(&client_frame(KIND_CHAT, None, b"alice left"))
            .await?;
        c[2].wait_data_frame("chat after the abort", WAIT, |f| is_chat(f, b"alice left"))
            .await?;
        drop(c.remove(0));
        server.shutdown().await;
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------
// 4. The direct flag
// ---------------------------------------------------------------------------

/// Whether a frame of the flag test was addressed to one participant: room
/// transfers there have even ids, direct ones odd; chats say which.
fn addressed_directly(f: &Frame) -> bool {
    match f.kind {
        KIND_CHAT => f.body.starts_with(b"direct"),
        _ => f.transfer().is_some_and(|id| id % 2 == 1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_flag_is_set_exactly_on_frames_addressed_to_one_participant() -> Result<()> {
    with_deadline("dc direct flag", Duration::from_secs(90), async {
        let server = start_server_with(|_| {}).await?;
        let (c, ids) = room(
            server.http_addr(),
            "flags",
            &["alice", "bob", "carol", "dave"],
        )
        .await?;
        let (a, b, cc, d) = (&c[0], &c[1], &c[2], &c[3]);
        let bob = ids[1].as_str();

        // Every kind, once to the room (even transfer ids) and once to bob
        // (odd): chat, offer, chunk, end; a client abort; an abort by the
        // server (more bytes than announced). Chunks carry no `to`: they
        // are routed, and flagged, by their transfer.
        for (room_or_bob, to) in [(0u32, None), (1, Some(bob))] {
            let chat = if to.is_some() {
                "direct chat"
            } else {
                "room chat"
            };
            a.send_data(&client_frame(KIND_CHAT, to, chat.as_bytes()))
                .await?;
            let id = 10 + room_or_bob;
            a.send_data(&client_frame(
                KIND_FILE_OFFER,
                to,
                &file_offer_body(id, 3, "f", "x"),
            ))
            .await?;
            a.send_data(&chunk_frame(None, id, b"abc")).await?;
            a.send_data(&client_frame(KIND_FILE_END, to, &id.to_be_bytes()))
                .await?;
            let id = 20 + room_or_bob;
            a.send_data(&client_frame(
                KIND_FILE_OFFER,
                to,
                &file_offer_body(id, 3, "g", "x"),
            ))
            .await?;
            let mut abort = id.to_be_bytes().to_vec();
            abort.extend_from_slice(b"changed my mind");
            a.send_data(&client_frame(KIND_FILE_ABORT, to, &abort))
                .await?;
            let id = 30 + room_or_bob;
            a.send_data(&client_frame(
                KIND_FILE_OFFER,
                to,
                &file_offer_body(id, 1, "h", "x"),
            ))
            .await?;
            a.send_data(&chunk_frame(to, id, b"too many")).await?;
        }
        a.send_data(&client_frame(KIND_CHAT, None, b"room fence"))
            .await?;
        for r in [b, cc] {
            r.wait_data_frame("fence", WAIT, |f| is_chat(f, b"room fence"))
                .await?;
        }
        // Per round: chat, offer, chunk, end, offer, abort, offer, server
        // abort (the excess chunk is not relayed).
        let got = frames(b);
        ensure!(got.len() == 2 * 8 + 1, "bob got {got:?}");
        for f in &got {
            ensure!(
                f.from == ids[0] && f.flags == u8::from(addressed_directly(f)),
                "bob: flags {} on {f:?}",
                f.flags
            );
        }
        ensure!(got.iter().filter(|f| f.flags == 1).count() == 8);
        let got = frames(cc);
        ensure!(
            got.len() == 8 + 1 && got.iter().all(|f| f.flags == 0 && !addressed_directly(f)),
            "carol got {got:?}"
        );
        // The server's abort was the one of its own for both 30 and 31.
        for (r, id, flags) in [(b, 30, 0), (b, 31, 1), (cc, 30, 0)] {
            let aborts: Vec<Frame> = frames(r)
                .into_iter()
                .filter(|f| f.is_file(KIND_FILE_ABORT, id))
                .collect();
            ensure!(
                aborts.len() == 1
                    && aborts[0].flags == flags
                    && aborts[0].body[4..] == *b"more bytes than announced",
                "{}: aborts of {id}: {aborts:?}",
                r.label
            );
        }
        // Alice's two overflows were answered with error frames, flags 0.
        a.wait_data_frames("two errors", WAIT, |f| {
            f.iter().filter(|f| f[0] == KIND_ERROR).count() >= 2
        })
        .await?;
        let errors: Vec<_> = frames(a)
            .into_iter()
            .map(|f| (f.error(), f.flags))
            .collect();
        ensure!(
            errors
                == vec![
                    (Some((30, "bad_request".into())), 0),
                    (Some((31, "bad_request".into())), 0)
                ],
            "alice got {errors:?}"
        );

        // Dave leaves mid-transfer: the server's aborts for his room
        // transfer (40) and his transfer to bob (41) keep their flags.
        d.send_data(&client_frame(
            KIND_FILE_OFFER,
            None,
            &file_offer_body(40, 100, "r", "x"),
        ))
        .await?;
        d.send_data(&chunk_frame(None, 40, b"room")).await?;
        d.send_data(&client_frame(
            KIND_FILE_OFFER,
            Some(bob),
            &file_offer_body(41, 100, "d", "x"),
        ))
        .await?;
        d.send_data(&chunk_frame(Some(bob), 41, b"bob")).await?;
        b.wait_data_frame("chunk of 41", WAIT, |f| is_file(f, KIND_FILE_CHUNK, 41))
            .await?;
        cc.wait_data_frame("chunk of 40", WAIT, |f| is_file(f, KIND_FILE_CHUNK, 40))
            .await?;
        d.send_raw(Message::Close(None))?;
        for (r, id) in [(b, 40), (b, 41), (cc, 40)] {
            r.wait_data_frame("abort after leaving", WAIT, |f| {
                is_file(f, KIND_FILE_ABORT, id)
            })
            .await?;
        }
        a.send_data(&client_frame(KIND_CHAT, None, b"after dave"))
            .await?;
        for r in [b, cc] {
            r.wait_data_frame("fence", WAIT, |f| is_chat(f, b"after dave"))
                .await?;
            let from_dave: Vec<Frame> =
                frames(r).into_iter().filter(|f| f.from == ids[3]).collect();
            ensure!(
                from_dave
                    .iter()
                    .all(|f| f.flags == u8::from(addressed_directly(f))),
                "{}: from dave {from_dave:?}",
                r.label
            );
            let want = if r.label == b.label { 6 } else { 3 };
            ensure!(
                from_dave.len() == want,
                "{}: from dave {from_dave:?}",
                r.label
            );
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}
