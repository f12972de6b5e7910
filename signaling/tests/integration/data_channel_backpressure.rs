//! Back-pressure on the `noom` data channel: a slow receiver throttles the
//! sender with bounded server memory, and a stalled receiver costs bounded
//! bytes with the largest messages from several senders (real WebRTC
//! clients through an in-process server).

use crate::support;

use crate::data_channel_support;
use anyhow::{bail, ensure, Result};
use data_channel_support::*;
use noom_sfu::{
    client_frame, KIND_CHAT, KIND_ERROR, KIND_FILE_ABORT, KIND_FILE_END, MAX_MESSAGE_BYTES,
    MAX_SERVER_FRAME_BYTES,
};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{metric_max, start_server_with, with_deadline};

// ---------------------------------------------------------------------------
// 1. A slow receiver
// ---------------------------------------------------------------------------

/// Samples taken while bob does not read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Stall {
    /// File bytes alice handed to her channel.
    sent: u64,
    /// Bytes queued on alice's channel, not yet acknowledged by the server.
    alice_queued: usize,
    /// `noom_data_file_relayed_bytes_total`.
    relayed: f64,
    /// Bytes bob's application read.
    bob_read: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_throttles_the_sender_with_bounded_server_memory() -> Result<()> {
    with_deadline("dc backpressure", Duration::from_secs(90), async {
        let server = start_server_with(|_| {}).await?;
        let addr = server.http_addr();
        let (c, ids) = room(addr, "slow", &["alice", "bob"]).await?;
        let (a, b) = (&c[0], &c[1]);
        // 32 MiB: more than every buffer between alice and bob's application
        // together, so the sender must stall.
        const SIZE: usize = 32 * 1024 * 1024;
        let data = random_bytes(SIZE);
        let expected: [u8; 32] = Sha256::digest(&data).into();
        b.set_data_paused(true)?;

        let progress = AtomicU64::new(0);
        let sending = send_file(a, Some(&ids[1]), 9, &data, &progress, Duration::from_secs(60));
        let watching = async {
            // Until nothing moves for 3 s: alice's sends, the relay.
            let sample = || async {
                Ok::<_, anyhow::Error>(Stall {
                    sent: progress.load(Ordering::Relaxed),
                    alice_queued: a.data_outstanding().await?,
                    relayed: relayed(&metrics(addr).await?),
                    bob_read: b.data_bytes_read(),
                })
            };
            let deadline = Instant::now() + Duration::from_secs(40);
            let mut last = sample().await?;
            let mut still_since = Instant::now();
            let stall = loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = sample().await?;
                if (now.sent, now.relayed) != (last.sent, last.relayed) {
                    still_since = Instant::now();
                } else if still_since.elapsed() >= Duration::from_secs(3) {
                    break now;
                }
                last = now;
                if Instant::now() > deadline {
                    bail!("alice's sends never stalled: {now:?} of {SIZE} bytes");
                }
            };
            let text = metrics(addr).await?;
            let peak = metric_max(&text, "noom_data_channel_queue_peak_bytes");
            // Bytes the server's SCTP acknowledged from alice but did not
            // relay: what it holds, unread, on alice's connection.
            let header = (2 + ids[1].len() + 1 + 4) as f64; // kind, to_len, to, transfer
            let acked_file_bytes = (stall.sent as f64 - stall.alice_queued as f64)
                * (CHUNK as f64 / (CHUNK as f64 + header));
            let held_for_alice = acked_file_bytes - stall.relayed;
            // Relayed but not read by bob: the server's queue toward bob
            // plus everything in bob's own webrtc stack.
            let beyond_bob = stall.relayed - stall.bob_read as f64;
            println!(
                "slow receiver: alice stalled after handing {:.2} MB of {:.2} MB to her channel ({:.0} KiB still queued there); the server relayed {:.2} MB while bob's application read {:.3} MB; relayed beyond what bob read: {:.2} MB; server queue toward bob peaked at {:.0} KiB; unread on alice's server-side connection ≈ {:.2} MB",
                stall.sent as f64 / 1e6,
                SIZE as f64 / 1e6,
                stall.alice_queued as f64 / 1024.0,
                stall.relayed / 1e6,
                stall.bob_read as f64 / 1e6,
                beyond_bob / 1e6,
                peak / 1024.0,
                held_for_alice / 1e6,
            );
            // The sender is throttled: it stopped well short of the file,
            // its own queue above the level it waits for.
            ensure!(
                (stall.sent as usize) < SIZE - 4 * 1024 * 1024,
                "alice was never throttled: {stall:?}"
            );
            ensure!(
                stall.alice_queued > LOW,
                "alice stalled with only {} bytes queued",
                stall.alice_queued
            );
            // The server's queue toward bob stays at its high water plus one
            // message.
            ensure!(
                peak > 0.0 && peak <= SERVER_HIGH_WATER + 64.0 * 1024.0,
                "server queue toward bob peaked at {peak} bytes"
            );
            // The relay stopped at what bob accepted plus bounded buffers:
            // the server's 1 MiB and bob's webrtc stack (1 MiB SCTP receive
            // window, and three 256-message queues: SCTP pipeline, driver,
            // data channel events).
            let bob_stack = (1 << 20) as f64 + 3.0 * 256.0 * (CHUNK as f64 + 64.0);
            ensure!(
                beyond_bob <= SERVER_HIGH_WATER + 64.0 * 1024.0 + bob_stack,
                "relayed {beyond_bob} bytes beyond what bob read"
            );
            // What the server holds of alice's, unread, is bounded by its
            // webrtc stack: rtc's 256-message SCTP read pipeline plus the
            // 1 MiB SCTP receive window (+ 1 MiB for what was in flight when
            // the window closed). Observed ≈ 5.7 MB with 16 KiB chunks; note
            // it scales with the message size (≈ 17.8 MB with 64 KiB ones).
            ensure!(
                held_for_alice <= 2.0 * (1 << 20) as f64 + 256.0 * (CHUNK as f64 + 64.0),
                "server holds {held_for_alice} unread bytes of alice's"
            );

            // Bob reads again: the rest flows, and all along the relay stays
            // within the same distance of what bob has read.
            b.set_data_paused(false)?;
            let deadline = Instant::now() + Duration::from_secs(45);
            let ended = |f: &[u8]| is_file(f, KIND_FILE_END, 9) || is_file(f, KIND_FILE_ABORT, 9);
            let mut widest: f64 = 0.0;
            while count(b, ended) == 0 {
                ensure!(Instant::now() < deadline, "file not complete 45 s after bob resumed");
                // Read bob first: what he has read only grows.
                let bob_read = b.data_bytes_read() as f64;
                let ahead = relayed(&metrics(addr).await?) - bob_read;
                widest = widest.max(ahead);
                ensure!(
                    ahead <= SERVER_HIGH_WATER + 64.0 * 1024.0 + bob_stack,
                    "after resuming, relayed {ahead} bytes beyond what bob read"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            println!(
                "after bob resumed: the relay stayed at most {:.2} MB ahead of what he read",
                widest / 1e6
            );
            Ok::<_, anyhow::Error>(())
        };
        tokio::try_join!(sending, watching)?;
        let got = reassembled(b, 9).unwrap();
        ensure!(
            got == Ok((expected, SIZE)),
            "file differs after back-pressure: {:?}",
            got.map(|(_, len)| len)
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------
// 2. Large messages from several senders to a stalled receiver
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_costs_bounded_bytes_with_large_messages_from_several_senders(
) -> Result<()> {
    with_deadline("dc large", Duration::from_secs(180), async {
        let server = start_server_with(|_| {}).await?;
        let addr = server.http_addr();
        let (c, ids) = room(addr, "large", &["bob", "alice", "carol", "dave"]).await?;
        let (b, senders) = (&c[0], &c[1..]);
        let bob = ids[0].as_str();

        // Over the limit: refused with too_large and not relayed, whether
        // the sender's stack lets it out (just over) or not (64 KiB).
        let over = client_frame(KIND_CHAT, Some(bob), &vec![b'x'; MAX_MESSAGE_BYTES]);
        ensure!(over.len() > MAX_MESSAGE_BYTES && over.len() <= MAX_SERVER_FRAME_BYTES);
        senders[0].send_data(&over).await?;
        senders[0]
            .wait_data_frame("too_large", WAIT, |f| f[0] == KIND_ERROR)
            .await?;
        let error = frames(&senders[0])[0].error();
        ensure!(error == Some((0, "too_large".into())), "over the limit: {error:?}");
        let huge = client_frame(KIND_CHAT, Some(bob), &vec![b'x'; 64 * 1024]);
        let refused = senders[0].send_data(&huge).await;
        ensure!(refused.is_err(), "a 64 KiB message left the sender");
        println!("64 KiB message refused by the sender's stack: {refused:?}");

        // Three senders, each a file in the largest chunks allowed, all to
        // bob, who does not read.
        // 16 MiB each (50 MB in all): clearly more than the whole path can
        // hold before the senders stall, however the buffers fill: bob's
        // webrtc-rs stack takes up to about 14 MB of these messages, the
        // server's queue toward bob 1 MiB, and each blocked sender's side up
        // to the 6.5 MB bound checked below (20 MB for three). With 8 MiB
        // each (25 MB) all of it could fit, and whether the senders were
        // ever throttled depended on timing.
        const SIZE: usize = 16 * 1024 * 1024;
        let chunk = MAX_MESSAGE_BYTES - (2 + bob.len() + 4);
        let files: Vec<Vec<u8>> = (0..3).map(|_| random_bytes(SIZE)).collect();
        b.set_data_paused(true)?;
        let progress: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(0)).collect();
        let sending = futures_util::future::try_join_all(senders.iter().enumerate().map(|(i, s)| {
            send_file_in(
                s,
                Some(bob),
                100 + i as u32,
                &files[i],
                chunk,
                &progress[i],
                Duration::from_secs(90),
            )
        }));
        let watching = async {
            let sample = || async {
                let mut queued = 0;
                for s in senders {
                    queued += s.data_outstanding().await?;
                }
                Ok::<_, anyhow::Error>(Stall {
                    sent: progress.iter().map(|p| p.load(Ordering::Relaxed)).sum(),
                    alice_queued: queued,
                    relayed: relayed(&metrics(addr).await?),
                    bob_read: b.data_bytes_read(),
                })
            };
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut last = sample().await?;
            let mut still_since = Instant::now();
            let stall = loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = sample().await?;
                if (now.sent, now.relayed) != (last.sent, last.relayed) {
                    still_since = Instant::now();
                } else if still_since.elapsed() >= Duration::from_secs(3) {
                    break now;
                }
                last = now;
                ensure!(
                    Instant::now() < deadline,
                    "the senders never stalled: {now:?}"
                );
            };
            let peak = metric_max(&metrics(addr).await?, "noom_data_channel_queue_peak_bytes");
            let header = (2 + bob.len() + 4) as f64;
            let acked = (stall.sent as f64 - stall.alice_queued as f64)
                * (chunk as f64 / (chunk as f64 + header));
            let held = acked - stall.relayed;
            // Per sender: webrtc-rs's 256-message read pipeline of messages
            // of at most MAX_MESSAGE_BYTES, the 1 MiB SCTP window and 1 MiB
            // for what was in flight when it closed.
            let per_sender = 2.0 * (1 << 20) as f64 + 256.0 * MAX_MESSAGE_BYTES as f64;
            println!(
                "3 senders stalled after {:.2} MB of {:.2} MB; server holds ≈ {:.2} MB unread of theirs (bound {:.2} MB); queue toward bob peaked at {:.0} KiB",
                stall.sent as f64 / 1e6,
                3.0 * SIZE as f64 / 1e6,
                held / 1e6,
                3.0 * per_sender / 1e6,
                peak / 1024.0
            );
            ensure!(
                (stall.sent as usize) < 3 * SIZE - 4 * 1024 * 1024,
                "the senders were never throttled: {stall:?}"
            );
            ensure!(
                peak > 0.0 && peak <= SERVER_HIGH_WATER + MAX_SERVER_FRAME_BYTES as f64,
                "server queue toward bob peaked at {peak} bytes"
            );
            ensure!(
                held <= 3.0 * per_sender,
                "server holds {held} unread bytes of the senders'"
            );
            b.set_data_paused(false)?;
            Ok::<_, anyhow::Error>(())
        };
        tokio::try_join!(sending, watching)?;
        for (i, data) in files.iter().enumerate() {
            let id = 100 + i as u32;
            b.wait_data_frame("file end", Duration::from_secs(45), |f| {
                is_file(f, KIND_FILE_END, id) || is_file(f, KIND_FILE_ABORT, id)
            })
            .await?;
            let expected: [u8; 32] = Sha256::digest(data).into();
            let got = reassembled(b, id).unwrap();
            ensure!(
                got == Ok((expected, SIZE)),
                "file {id} differs: {:?}",
                got.map(|(_, len)| len)
            );
        }
        ensure!(
            count(b, |f| f[0] == KIND_CHAT) == 0,
            "an over-long chat reached bob"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}
