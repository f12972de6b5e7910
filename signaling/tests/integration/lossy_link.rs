//! A publisher behind a bad link: 10 % loss and 50 ms of jitter between it
//! and the server, both ways. The kernel here has no netem, so the link is a
//! user-space UDP relay on loopback that the publisher is pointed at (its
//! view of the server's candidates is rewritten). The subscriber, on a clean
//! link, must keep receiving: the server NACKs the publisher for what the
//! link lost and passes keyframe requests on. The loss starts once the call
//! is up (ICE and DTLS over a 10 % lossy link take long retransmission
//! backoffs, which is not what this test is about).

use crate::support;

use anyhow::{ensure, Context, Result};
use rand::Rng;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{start_server_with, with_deadline, MediaKind, MediaOptions, TestClient};
use tokio::net::UdpSocket;

#[derive(Default)]
struct LinkStats {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    /// Current loss in per mille (0 while the call is being set up).
    loss_permille: AtomicU64,
}

/// Relays datagrams between one client (first sender on `front`) and
/// `server`, dropping `loss` of them and delaying the rest by 0..2×`jitter`.
async fn lossy_relay(server: SocketAddr, jitter: Duration) -> Result<(u16, Arc<LinkStats>)> {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let port = front.local_addr()?.port();
    let stats = Arc::new(LinkStats::default());
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let link = stats.clone();
    let delay = move || {
        let mut rng = rand::rng();
        let loss = link.loss_permille.load(Ordering::Relaxed) as f64 / 1000.0;
        (
            rng.random::<f64>() >= loss,
            Duration::from_secs_f64(rng.random::<f64>() * 2.0 * jitter.as_secs_f64()),
        )
    };
    // client -> server
    {
        let delay = delay.clone();
        let (front, back, stats, client) =
            (front.clone(), back.clone(), stats.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                let (keep, wait) = delay();
                if !keep {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
                let (back, data) = (back.clone(), buf[..n].to_vec());
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = back.send_to(&data, server).await;
                });
            }
        });
    }
    // server -> client
    {
        let (front, back, stats) = (front.clone(), back.clone(), stats.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, _)) = back.recv_from(&mut buf).await {
                let Some(to) = *client.lock().unwrap() else {
                    continue;
                };
                let (keep, wait) = delay();
                if !keep {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
                let (front, data) = (front.clone(), buf[..n].to_vec());
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = front.send_to(&data, to).await;
                });
            }
        });
    }
    Ok((port, stats))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_keep_receiving_across_a_lossy_publisher_link() -> Result<()> {
    with_deadline("lossy link", Duration::from_secs(120), async {
        let server = start_server_with(|_| {}).await?;
        let media = *server.media_addrs().first().context("media address")?;
        let (relay_port, link) = lossy_relay(media, Duration::from_millis(25)).await?;
        let addr = server.http_addr();
        let mut publisher = TestClient::connect(addr, "alice").await?;
        let mut subscriber = TestClient::connect(addr, "bob").await?;
        let opts = MediaOptions {
            candidate_rewrite: Some((media.port(), relay_port)),
            ..Default::default()
        };
        let ja = publisher.join_with_media_opts("lossy", "alice", opts).await?;
        subscriber.join_with_media("lossy", "bob").await?;
        subscriber
            .wait_packets_above(&ja.you, MediaKind::Video, 50, Duration::from_secs(60))
            .await
            .with_context(|| format!(
                "video from the publisher behind the lossy link (relay forwarded {}, dropped {})",
                link.forwarded.load(Ordering::Relaxed),
                link.dropped.load(Ordering::Relaxed)
            ))?;
        // The call is up: now the link turns bad (10 % loss each way; the
        // jitter, 0 to 50 ms, was on from the start).
        link.loss_permille.store(100, Ordering::Relaxed);
        let (fwd0, drop0) = (link.forwarded.load(Ordering::Relaxed), link.dropped.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let metrics_before = server_counters(addr).await?;
        let start = subscriber.recent_track_seqs(&ja.you, MediaKind::Video).last().copied();
        tokio::time::sleep(Duration::from_secs(8)).await;
        let log = subscriber.track_log(&ja.you, MediaKind::Video);
        let seqs: BTreeSet<u16> = log
            .iter()
            .map(|p| p.seq)
            .skip_while(|s| Some(*s) != start)
            .collect();
        let (first, last) = (*seqs.first().context("no packets")?, *seqs.last().context("no packets")?);
        let span = last.wrapping_sub(first) as u64 + 1;
        let missing = span - seqs.len() as u64;
        let dropped = link.dropped.load(Ordering::Relaxed) - drop0;
        let wire_loss = dropped as f64 / (dropped + link.forwarded.load(Ordering::Relaxed) - fwd0) as f64;
        let metrics_after = server_counters(addr).await?;
        let keyframes = subscriber
            .tracks_from(&ja.you, MediaKind::Video)
            .iter()
            .map(|t| t.keyframes)
            .sum::<u64>();
        println!(
            "publisher link: {:.1} % lost on the wire; subscriber: {missing} of {span} video packets missing ({:.1} %); \
             server lost-on-arrival +{}, NACK-repaired arrivals seen; keyframes at subscriber: {keyframes}",
            wire_loss * 100.0,
            missing as f64 * 100.0 / span as f64,
            metrics_after.0 - metrics_before.0,
        );
        ensure!(wire_loss > 0.05, "the link did not lose packets ({wire_loss})");
        // Repair works: the subscriber misses far less than the link lost.
        ensure!(
            (missing as f64) < span as f64 * wire_loss * 0.5,
            "subscriber missed {missing} of {span} packets with {:.1} % lost on the wire",
            wire_loss * 100.0
        );
        ensure!(keyframes >= 1, "no keyframe reached the subscriber");
        server.shutdown().await;
        Ok(())
    })
    .await
}

/// (packets lost on arrival from publishers) from /metrics.
async fn server_counters(addr: SocketAddr) -> Result<(u64,)> {
    let text = support::http_get(addr, "/metrics").await?;
    Ok((support::metric_sum(&text, "noom_rtp_packets_lost_total") as u64,))
}
