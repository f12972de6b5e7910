//! `/metrics` as a Prometheus scraper reads it: every line well-formed,
//! every family with HELP and TYPE, and the numbers moving with a real call.

use crate::support;

use anyhow::{ensure, Result};
use serde_json::json;
use std::time::{Duration, Instant};
use support::admin::{admin_server, http, overview, SOON};
use support::exposition::{parse_exposition, scrape, sum};
use support::{with_deadline, MediaKind, TestClient};

#[test]
fn the_exposition_checker_rejects_what_it_should() {
    let ok = "# HELP x things\n# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"}\"} 3\n# HELP g a gauge\n# TYPE g gauge\ng 1.5\n# EOF\n";
    let s = parse_exposition(ok).expect("valid text");
    assert_eq!(sum(&s, "x_total"), 3.0);
    assert_eq!(sum(&s, "g"), 1.5);
    for bad in [
        "# TYPE g gauge\ng 1\n",                         // no HELP
        "# HELP g h\ng 1\n",                             // no TYPE
        "# HELP g h\n# TYPE g gauge\ng one\n",           // not a float
        "# HELP g h\n# TYPE g gauge\ng{a=\"1\" 1\n",     // broken labels
        "# HELP g h\n# TYPE g gauge\ng 1 2 3\n",         // trailing garbage
        "# HELP g h\n# TYPE g gauge\n# HELP h h\nh 1\n", // h untyped
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_media() -> Result<()> {
    with_deadline("metrics", Duration::from_secs(120), async {
        let server = admin_server().await?;
        let addr = server.http_addr();
        let mut a = TestClient::connect(addr, "alice").await?;
        let mut b = TestClient::connect(addr, "bob").await?;
        let ja = a.join_with_media("m", "alice").await?;
        let jb = b.join_with_media("m", "bob").await?;
        b.wait_packets_above(&ja.you, MediaKind::Video, 20, Duration::from_secs(60))
            .await?;
        a.wait_packets_above(&jb.you, MediaKind::Video, 20, Duration::from_secs(60))
            .await?;

        let m0 = scrape(addr).await?;
        ensure!(sum(&m0, "noom_participants") == 2.0, "participants: {m0:?}");
        ensure!(sum(&m0, "noom_rooms") == 1.0);
        ensure!(sum(&m0, "noom_websocket_connections") == 2.0);
        for name in [
            "noom_rtp_packets_forwarded_total",
            "noom_udp_received_bytes_total",
            "noom_rtp_packets_received_total",
            "noom_admin_auth_failures_total",
            "noom_shard_busy_seconds_total",
        ] {
            ensure!(
                m0.keys()
                    .any(|s| s == name || s.starts_with(&format!("{name}{{"))),
                "{name} missing"
            );
        }

        // While media flows, the packet and byte counters grow.
        let deadline = Instant::now() + SOON;
        loop {
            let m = scrape(addr).await?;
            let grown: Vec<&str> = [
                "noom_rtp_packets_forwarded_total",
                "noom_udp_received_bytes_total",
                "noom_rtp_packets_received_total",
            ]
            .into_iter()
            .filter(|c| sum(&m, c) <= sum(&m0, c))
            .collect();
            if grown.is_empty() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "did not grow within {SOON:?}: {grown:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // Counted refusals: an unknown message type, a wrong admin token.
        // Both are counted before the reply is sent, so one scrape after the
        // replies sees them.
        let unknown = "noom_signaling_errors_total{code=\"unknown_type\"}";
        let auth = "noom_admin_auth_failures_total";
        let before = scrape(addr).await?;
        a.request_err(json!({"type": "dance"}), "unknown_type")
            .await?;
        let (status, _) = http(addr, "GET", "/api/overview", Some("nope"), None).await?;
        ensure!(status == 401);
        let (status, _) = http(addr, "GET", "/api/overview", None, None).await?;
        ensure!(status == 401);
        let after = scrape(addr).await?;
        ensure!(
            sum(&after, unknown) == sum(&before, unknown) + 1.0,
            "{unknown}: {} -> {}",
            sum(&before, unknown),
            sum(&after, unknown)
        );
        ensure!(
            sum(&after, auth) == sum(&before, auth) + 2.0,
            "{auth}: {} -> {}",
            sum(&before, auth),
            sum(&after, auth)
        );
        // A right token is not a failure.
        overview(addr).await?;
        ensure!(sum(&scrape(addr).await?, auth) == sum(&after, auth));

        a.close().await;
        b.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}
