//! Operator actions are never lost, even against a participant that floods
//! the server with messages as fast as it can and does not read its socket:
//! a kick (or closing its room) ends its connection and the others see it
//! leave.
//!
//! The flooder's messages each carry an 8 KB `req`, which every reply echoes,
//! and its receive buffer is tiny, so the server's writes to it stall and its
//! outbox fills: the situation where a kick used to leave the connection (and
//! its writer task) behind for as long as the client stayed silent.

use crate::support;

use anyhow::{ensure, Context, Result};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::admin::{admin_server, http, SOON, TOKEN};
use support::{with_deadline, TestClient};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Flood messages sent before the operator acts: with 8 KB replies, far more
/// than a socket's send buffer (4 MiB at most by default) holds.
const FLOOD_BEFORE_ACTION: u64 = 1_500;

type Ws = WebSocketStream<TcpStream>;

/// Connects with a tiny receive buffer and joins `room`; returns the socket
/// halves and the participant id.
async fn join_as_flooder(
    addr: SocketAddr,
    room: &str,
) -> Result<(SplitSink<Ws, Message>, SplitStream<Ws>, String)> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let stream = socket.connect(addr).await?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream).await?;
    let (mut sink, mut stream) = ws.split();
    let join = json!({"type": "join", "room": room, "name": "storm", "req": 1});
    sink.send(Message::text(join.to_string())).await?;
    loop {
        let message = stream.next().await.context("closed before joined")??;
        if let Message::Text(text) = message {
            let v: Value = serde_json::from_str(text.as_str())?;
            if v["type"] == "joined" {
                let id = v["you"].as_str().context("joined without `you`")?;
                return Ok((sink, stream, id.to_owned()));
            }
        }
    }
}

/// A flood in progress: ends (with the send error) when the server drops
/// the connection.
struct Flood {
    task: JoinHandle<(u64, String)>,
    /// Fires once [`FLOOD_BEFORE_ACTION`] messages are out.
    underway: oneshot::Receiver<()>,
}

/// Sends chat and unusable messages (each with an 8 KB `req`) as fast as
/// the connection takes them, until a send fails.
fn flood(mut sink: SplitSink<Ws, Message>) -> Flood {
    let (underway_tx, underway) = oneshot::channel();
    let task = tokio::spawn(async move {
        let req = "r".repeat(8 * 1024);
        let chat = json!({"type": "chat", "text": "storm", "req": req}).to_string();
        let bad = json!({"type": "no_such_type", "req": req}).to_string();
        let mut underway_tx = Some(underway_tx);
        let mut sent = 0u64;
        loop {
            let text = if sent.is_multiple_of(2) { &chat } else { &bad };
            if let Err(err) = sink.send(Message::text(text.as_str())).await {
                return (sent, err.to_string());
            }
            sent += 1;
            if sent == FLOOD_BEFORE_ACTION {
                if let Some(tx) = underway_tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    Flood { task, underway }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_participant_that_does_not_read_is_kicked_and_its_connection_ends() -> Result<()>
{
    with_deadline("kick under a storm", Duration::from_secs(90), async {
        let server = admin_server().await?;
        let addr = server.http_addr();
        let mut alice = TestClient::connect(addr, "alice").await?;
        alice.join("stormy", "alice").await?;
        let (sink, _unread, storm_id) = join_as_flooder(addr, "stormy").await?;
        let joined = alice.next_push("participant_joined").await?;
        ensure!(joined["participant"]["id"] == storm_id.as_str(), "{joined}");

        let flooding = flood(sink);
        flooding.underway.await?;

        let (status, body) = http(
            addr,
            "POST",
            &format!("/api/rooms/stormy/participants/{storm_id}/kick"),
            Some(TOKEN),
            Some(&json!({"reason": "stop it"})),
        )
        .await?;
        ensure!(status == 200, "kick: {status} {body}");

        // Its connection ends although it neither reads nor stops sending.
        let (sent, ended) = tokio::time::timeout(SOON, flooding.task)
            .await
            .context("the kicked flooder's connection is still open")??;
        let left = alice.next_push("participant_left").await?;
        ensure!(left["id"] == storm_id.as_str(), "{left}");
        tracing::info!(sent, %ended, "kicked flooder's connection ended");
        // Alice's own session is unharmed.
        alice.barrier().await?;
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_room_under_a_storm_ends_every_member() -> Result<()> {
    with_deadline("close room under a storm", Duration::from_secs(90), async {
        let server = admin_server().await?;
        let addr = server.http_addr();
        let mut lobby = TestClient::connect(addr, "lobby").await?;
        lobby.next_push("rooms").await?;
        let mut bob = TestClient::connect(addr, "bob").await?;
        bob.join("doomed", "bob").await?;
        let (sink, _unread, _) = join_as_flooder(addr, "doomed").await?;
        let flooding = flood(sink);
        flooding.underway.await?;

        let (status, body) = http(
            addr,
            "POST",
            "/api/rooms/doomed/close",
            Some(TOKEN),
            Some(&json!({"reason": "storm over"})),
        )
        .await?;
        ensure!(status == 200, "close: {status} {body}");
        let reply: Value = serde_json::from_str(&body)?;
        ensure!(reply["participants"] == 2, "{reply}");

        let (sent, ended) = tokio::time::timeout(SOON, flooding.task)
            .await
            .context("the flooder's connection is still open")??;
        tracing::info!(sent, %ended, "flooder's connection ended");
        // Bob, who reads, is told why before his connection closes.
        let kicked = bob.next_push("kicked").await?;
        ensure!(
            kicked == json!({"type": "kicked", "reason": "storm over"}),
            "{kicked}"
        );
        bob.wait_closed(SOON).await?;
        lobby
            .wait_rooms_push("the closed room gone from the list", |rooms| {
                !rooms.contains_key("doomed")
            })
            .await?;
        server.shutdown().await;
        Ok(())
    })
    .await
}
