//! The server estimates the bandwidth toward every subscriber from the
//! subscriber's transport-wide congestion feedback (real webrtc-rs clients,
//! whose default interceptors send it, through an in-process server), and
//! shows it per participant in the admin overview and, in bands, in
//! `/metrics`.

use crate::support;

use std::time::Duration;

use anyhow::{anyhow, ensure, Context as _, Result};
use serde_json::Value;
use support::admin::{admin_server, http, overview_until, participants_of, SOON};
use support::{with_deadline, MediaOptions};

use crate::media_support::two_party;

/// (estimate, acknowledged, feedbacks) of participant `name` in `room`.
fn bandwidth(overview: &Value, room: &str, name: &str) -> Result<(u64, u64, u64)> {
    let p = participants_of(overview, room)
        .into_iter()
        .find(|p| p["name"] == name)
        .ok_or_else(|| anyhow!("{name} not in {room}"))?;
    let b = &p["media"]["bandwidth"];
    let field = |f: &str| {
        b[f].as_u64()
            .ok_or_else(|| anyhow!("{name}: no {f} in {b}"))
    };
    Ok((
        field("estimate_bps")?,
        field("acknowledged_bps")?,
        field("feedbacks")?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_has_an_estimate_anchored_on_what_its_link_delivered() -> Result<()> {
    with_deadline("bandwidth_estimate", Duration::from_secs(120), async {
        let server = admin_server().await?;
        let addr = server.http_addr();
        // Alice publishes 1.5 Mbit/s of video, Bob a light call's 250 kbit/s.
        let heavy = MediaOptions {
            profile: Some(noom_client::MediaProfile::default()),
            counters_only: true,
            ..Default::default()
        };
        let light = MediaOptions {
            counters_only: true,
            ..Default::default()
        };
        let (_alice, _, _bob, _) = two_party(addr, "bwe", heavy, light).await?;

        // Bob receives about 1.55 Mbit/s over loopback: his estimate follows
        // what his link delivers (it starts at 1 Mbit/s).
        let (estimate, acked) =
            overview_until(addr, "Bob's estimate above 1.3 Mbit/s", SOON, |o| {
                let (estimate, acked, feedbacks) = bandwidth(o, "bwe", "bob")?;
                ensure!(
                    feedbacks > 0 && acked > 1_300_000 && estimate > 1_300_000,
                    "{estimate} {acked} {feedbacks}"
                );
                Ok((estimate, acked))
            })
            .await?;
        ensure!(
            estimate <= acked * 3 / 2 + 50_000,
            "capped near what was delivered: {estimate} vs {acked}"
        );
        // Alice receives about 300 kbit/s: however clean her link, what she
        // uses proves no more than 1.5x that (or the 300 kbit/s floor).
        overview_until(
            addr,
            "Alice's estimate capped near her delivered rate",
            SOON,
            |o| {
                let (estimate, acked, feedbacks) = bandwidth(o, "bwe", "alice")?;
                ensure!(
                    feedbacks > 10 && acked > 150_000,
                    "{estimate} {acked} {feedbacks}"
                );
                ensure!(
                    estimate <= (acked * 3 / 2).max(300_000) + 1,
                    "{estimate} vs {acked}"
                );
                Ok(())
            },
        )
        .await?;

        // /metrics: both subscribers counted, Bob above 1 Mbit/s.
        let deadline = tokio::time::Instant::now() + SOON;
        loop {
            let (status, text) = http(addr, "GET", "/metrics", None, None).await?;
            ensure!(status == 200, "metrics: {status}");
            let band = |le: &str| -> u64 {
                text.lines()
                    .filter(|l| {
                        l.starts_with("noom_subscribers_by_bandwidth_estimate{")
                            && l.contains(&format!("le=\"{le}\""))
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum()
            };
            if band("+Inf") == 2 && band("1000000") == 1 {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "metrics never showed two estimated subscribers, one above 1 Mbit/s:\n{}",
                text.lines()
                    .filter(|l| l.contains("bandwidth"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    })
    .await
    .context("bandwidth_estimate")
}
