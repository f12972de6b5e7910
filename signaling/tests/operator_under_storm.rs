//! Operator actions are never lost, even against a participant that floods
//! the server with messages as fast as it can and does not read its socket:
//! a kick (or closing its room) ends its connection and the others see it
//! leave.
//!
//! The flooder's messages each carry an 8 KB `req`, which every reply echoes,
//! and its receive buffer is tiny, so the server's writes to it stall and its
//! outbox fills: the situation where a kick used to leave the connection (and
//! its writer task) behind for as long as the client stayed silent.

mod support;

use anyhow::{anyhow, ensure, Context, Result};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::{start_server_with, with_deadline, TestClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const TOKEN: &str = "t0ken";
const SOON: Duration = Duration::from_secs(20);
/// Flood messages sent before the operator acts: with 8 KB replies, far more
/// than a socket's send buffer (4 MiB at most by default) holds.
const FLOOD_BEFORE_ACTION: u64 = 1_500;

type Ws = WebSocketStream<TcpStream>;

/// An authorised admin POST; returns (status, body).
async fn admin_post(addr: SocketAddr, path: &str, body: &Value) -> Result<(u16, String)> {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed response: {text:.200}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:.100}"))?;
    Ok((status, body.to_owned()))
}

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

/// Waits for the server to close `c`'s WebSocket; returns how it closed.
async fn wait_closed(c: &mut TestClient) -> Result<String> {
    let result = c
        .recv_where("the server to close the WebSocket", SOON, |_| false)
        .await;
    match (result, c.close_reason()) {
        (Err(_), Some(reason)) => Ok(reason),
        (Err(e), None) => Err(e),
        (Ok(_), _) => unreachable!("the predicate accepts nothing"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_participant_that_does_not_read_is_kicked_and_its_connection_ends() -> Result<()>
{
    with_deadline("kick under a storm", Duration::from_secs(90), async {
        let server = start_server_with(|c| c.admin.token = TOKEN.to_owned()).await?;
        let addr = server.http_addr();
        let mut alice = TestClient::connect(addr, "alice").await?;
        alice.join("stormy", "alice").await?;
        let (sink, _unread, storm_id) = join_as_flooder(addr, "stormy").await?;
        let joined = alice.next_push("participant_joined").await?;
        ensure!(joined["participant"]["id"] == storm_id.as_str(), "{joined}");

        let flooding = flood(sink);
        flooding.underway.await?;

        let (status, body) = admin_post(
            addr,
            &format!("/api/rooms/stormy/participants/{storm_id}/kick"),
            &json!({"reason": "stop it"}),
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
        let server = start_server_with(|c| c.admin.token = TOKEN.to_owned()).await?;
        let addr = server.http_addr();
        let mut lobby = TestClient::connect(addr, "lobby").await?;
        lobby.next_push("rooms").await?;
        let mut bob = TestClient::connect(addr, "bob").await?;
        bob.join("doomed", "bob").await?;
        let (sink, _unread, _) = join_as_flooder(addr, "doomed").await?;
        let flooding = flood(sink);
        flooding.underway.await?;

        let (status, body) = admin_post(
            addr,
            "/api/rooms/doomed/close",
            &json!({"reason": "storm over"}),
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
        wait_closed(&mut bob).await?;
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
