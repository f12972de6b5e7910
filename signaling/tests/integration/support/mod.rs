//! Test participants and helpers for the Noom integration tests.
//!
//! The participant is [`noom_client::Client`] (re-exported here as
//! `TestClient`, with the rest of `noom-client`): one WebSocket connection
//! speaking the signaling contract, and with `join_with_media` a real WebRTC
//! peer connection. What only tests need lives beside it: starting an
//! in-process server ([`server`]), reading its metrics ([`metrics`]) and
//! calling its operator API ([`admin`]).

#![allow(dead_code, unused_imports)]

pub mod admin;
pub mod exposition;
mod metrics;
mod server;

pub use metrics::{metric_max, metric_sum};
pub use noom_client::Client as TestClient;
pub use noom_client::*;
pub use server::{init_tracing, start_server, start_server_with, with_deadline};

/// Sends `stale`, an answer from the peer connection a move replaced, while
/// the new offer is outstanding: the server must refuse it, naming why, and
/// not take it for the answer to the new offer.
pub async fn stale_answer_is_refused(client: &mut TestClient, stale: String) -> anyhow::Result<()> {
    let reply = client
        .request_err(
            serde_json::json!({"type": "answer", "sdp": stale}),
            "negotiation_failed",
        )
        .await?;
    anyhow::ensure!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("replaced")),
        "{}: the stale answer was refused for another reason: {reply}",
        client.label
    );
    Ok(())
}
