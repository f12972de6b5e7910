//! Starting an in-process server for one test, on loopback only, and
//! bounding a whole test by a deadline.

use std::future::Future;
use std::sync::Once;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// Installs a tracing subscriber once per test binary. `RUST_LOG` selects the
/// level (default `info`); output goes through the test harness capture, so it
/// is printed for failing tests only (or always with `--nocapture`).
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Starts an in-process server bound to loopback only, on ephemeral ports.
pub async fn start_server() -> Result<noom_signaling::Server> {
    start_server_with(|_| {}).await
}

/// [`start_server`] with configuration changes applied on top (after the
/// loopback-only settings).
pub async fn start_server_with(
    adjust: impl FnOnce(&mut noom_config::Config),
) -> Result<noom_signaling::Server> {
    init_tracing();
    let mut cfg = noom_config::Config::embedded();
    cfg.http.listen = "127.0.0.1:0".parse()?;
    cfg.media.bind_ips = vec!["127.0.0.1".parse()?];
    cfg.media.port = 0;
    cfg.media.shards = 1;
    // No STUN/TURN servers: nothing may leave the machine.
    cfg.ice.servers = vec![];
    adjust(&mut cfg);
    let server = noom_signaling::Server::start(cfg)
        .await
        .context("Server::start failed")?;
    Ok(server)
}

/// Runs a whole test body under one overall deadline, so that a hang becomes a
/// failure naming the test instead of a stuck CI job.
pub async fn with_deadline<F>(what: &str, limit: Duration, fut: F) -> Result<()>
where
    F: Future<Output = Result<()>>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => bail!("{what}: the whole test exceeded its overall deadline of {limit:?}"),
    }
}
