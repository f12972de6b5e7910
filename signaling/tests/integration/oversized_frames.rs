//! A frame far over the message limit: the server closes with status 1009
//! (contract: "may close with 1009 for a message over 16 times the limit")
//! as soon as it has read the frame header, without reading or buffering
//! the payload; a frame of exactly 16 times the limit still only gets
//! `too_large` and the connection stays open.
//!
//! The client is a raw WebSocket client over TCP so that it can send a frame
//! header announcing 16 MiB and then stream the payload, watching for the
//! server's close while it is still writing.

use crate::support;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{start_server, with_deadline};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpSocket;

/// The default `limits.max_message_bytes`.
const LIMIT: usize = 65_536;
const HARD_LIMIT: usize = 16 * LIMIT;
const SOON: Duration = Duration::from_secs(20);

/// A WebSocket opened by hand: the read half (with bytes already received
/// after the handshake) and the write half.
struct RawSocket {
    read: OwnedReadHalf,
    buffered: Vec<u8>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

async fn open(addr: SocketAddr) -> Result<RawSocket> {
    let socket = TcpSocket::new_v4()?;
    // A small send buffer: what the client has written is then close to
    // what it handed to the server, not what sits in its own kernel.
    socket.set_send_buffer_size(64 * 1024)?;
    let stream = socket.connect(addr).await?;
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut buffered = Vec::new();
    let head_end = loop {
        if let Some(end) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = read.read(&mut chunk).await?;
        ensure!(n > 0, "connection closed during the handshake");
        buffered.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffered[..head_end]).into_owned();
    ensure!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    buffered.drain(..head_end);
    Ok(RawSocket {
        read,
        buffered,
        write,
    })
}

/// What the server sent: a text message or its close frame.
#[derive(Debug)]
enum ServerFrame {
    Text(String),
    Close(Option<u16>, String),
}

async fn read_exact_buffered(
    read: &mut OwnedReadHalf,
    buffered: &mut Vec<u8>,
    n: usize,
) -> Result<Vec<u8>> {
    while buffered.len() < n {
        let mut chunk = [0u8; 16 * 1024];
        let got = read.read(&mut chunk).await.context("reading a frame")?;
        ensure!(got > 0, "connection ended without a close frame");
        buffered.extend_from_slice(&chunk[..got]);
    }
    Ok(buffered.drain(..n).collect())
}

/// Reads the server's next frame (server frames are never masked).
async fn next_frame(read: &mut OwnedReadHalf, buffered: &mut Vec<u8>) -> Result<ServerFrame> {
    let head = read_exact_buffered(read, buffered, 2).await?;
    let opcode = head[0] & 0x0f;
    let len = match head[1] & 0x7f {
        126 => {
            let b = read_exact_buffered(read, buffered, 2).await?;
            u16::from_be_bytes([b[0], b[1]]) as usize
        }
        127 => {
            let b = read_exact_buffered(read, buffered, 8).await?;
            u64::from_be_bytes(b.try_into().expect("8 bytes")) as usize
        }
        n => n as usize,
    };
    let payload = read_exact_buffered(read, buffered, len).await?;
    match opcode {
        0x1 => Ok(ServerFrame::Text(String::from_utf8(payload)?)),
        0x8 => {
            let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
            Ok(ServerFrame::Close(code, reason))
        }
        other => bail!("unexpected frame opcode {other}"),
    }
}

/// Writes one masked text frame of `len` bytes of `a`, counting the payload
/// bytes the kernel accepted in `written`. Returns the write error, if any.
async fn send_text_frame(
    write: &mut (impl AsyncWrite + Unpin),
    len: usize,
    written: &AtomicU64,
) -> std::io::Result<()> {
    let mut header = vec![0x81u8, 0x80 | 127];
    header.extend_from_slice(&(len as u64).to_be_bytes());
    // Mask key zero: the payload goes out as is (any key is valid).
    header.extend_from_slice(&[0, 0, 0, 0]);
    write.write_all(&header).await?;
    let chunk = vec![b'a'; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        write.write_all(&chunk[..n]).await?;
        written.fetch_add(n as u64, Ordering::Relaxed);
        left -= n;
    }
    write.flush().await
}

/// The next frame that is not the lobby's room list.
async fn next_reply(read: &mut OwnedReadHalf, buffered: &mut Vec<u8>) -> Result<ServerFrame> {
    loop {
        let frame = next_frame(read, buffered).await?;
        if let ServerFrame::Text(text) = &frame {
            let v: Value = serde_json::from_str(text)?;
            if v["type"] == "rooms" {
                continue;
            }
        }
        return Ok(frame);
    }
}

#[tokio::test]
async fn a_frame_of_sixteen_times_the_limit_gets_too_large_and_one_byte_more_closes_with_1009(
) -> Result<()> {
    with_deadline("16x boundary", Duration::from_secs(60), async {
        let server = start_server().await?;
        let RawSocket {
            mut read,
            mut buffered,
            mut write,
        } = open(server.http_addr()).await?;
        let written = AtomicU64::new(0);

        send_text_frame(&mut write, HARD_LIMIT, &written).await?;
        let reply = tokio::time::timeout(SOON, next_reply(&mut read, &mut buffered)).await??;
        let ServerFrame::Text(text) = &reply else {
            bail!("a frame of exactly 16 times the limit: expected too_large, got {reply:?}");
        };
        let v: Value = serde_json::from_str(text)?;
        ensure!(
            v["type"] == "error" && v["code"] == "too_large",
            "16x the limit: {v}"
        );

        // The connection is still usable, and one byte more is refused.
        // The client may manage to write all of this frame before the server
        // reads its header; the close must arrive either way.
        let (write_result, reply) = tokio::join!(
            send_text_frame(&mut write, HARD_LIMIT + 1, &written),
            tokio::time::timeout(SOON, next_reply(&mut read, &mut buffered)),
        );
        let reply = reply??;
        match reply {
            ServerFrame::Close(Some(1009), reason) => {
                ensure!(!reason.is_empty(), "1009 without a reason")
            }
            other => bail!("16x the limit plus one byte: expected close 1009, got {other:?}"),
        }
        tracing::info!(?write_result, "16x + 1: closed with 1009");
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_16_mib_frame_is_closed_with_1009_before_the_client_finishes_sending_it() -> Result<()> {
    with_deadline("16 MiB frame", Duration::from_secs(60), async {
        const FRAME: usize = 16 * 1024 * 1024;
        let server = start_server().await?;
        let RawSocket {
            mut read,
            mut buffered,
            mut write,
        } = open(server.http_addr()).await?;
        let written = Arc::new(AtomicU64::new(0));
        let sender = {
            let written = written.clone();
            tokio::spawn(async move { send_text_frame(&mut write, FRAME, &written).await })
        };
        let close = tokio::time::timeout(SOON, async {
            loop {
                match next_frame(&mut read, &mut buffered).await? {
                    ServerFrame::Text(_) => continue, // the lobby's room list
                    ServerFrame::Close(code, reason) => return anyhow::Ok((code, reason)),
                }
            }
        })
        .await
        .context("no close frame")??;
        let sent_at_close = written.load(Ordering::Relaxed);
        ensure!(
            close.0 == Some(1009),
            "a 16 MiB frame: expected close 1009, got {close:?}"
        );
        ensure!(
            (sent_at_close as usize) < FRAME,
            "the close came only after the whole frame was sent ({sent_at_close} bytes)"
        );
        // The server dropped the connection instead of reading the rest:
        // the client's write fails rather than completing.
        let result = tokio::time::timeout(SOON, sender)
            .await
            .context("the client's write neither completed nor failed")??;
        let sent_total = written.load(Ordering::Relaxed);
        ensure!(
            result.is_err() && (sent_total as usize) < FRAME,
            "the server read the whole 16 MiB payload ({sent_total} bytes written, {result:?})"
        );
        tracing::info!(
            sent_at_close,
            sent_total,
            ?result,
            "16 MiB frame: close {close:?}"
        );
        server.shutdown().await;
        Ok(())
    })
    .await
}
