//! Frames, files and metrics helpers shared by the data channel tests
//! (data_channel.rs, data_channel_backpressure.rs).

#![allow(dead_code)]

use crate::support::{http_get, metric_sum, TestClient};
use anyhow::Result;
use noom_sfu::{
    client_frame, file_offer_body, KIND_CHAT, KIND_ERROR, KIND_FILE_ABORT, KIND_FILE_CHUNK,
    KIND_FILE_END, KIND_FILE_OFFER,
};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Deadline for one awaited frame.
pub const WAIT: Duration = Duration::from_secs(20);
/// File chunk payload, as the protocol recommends.
pub const CHUNK: usize = 16 * 1024;
/// Sender-side back-pressure: stop sending at this many bytes queued on our
/// own channel, resume once `OnBufferedAmountLow` says it fell to `LOW`.
pub const HIGH: usize = 1024 * 1024;
pub const LOW: usize = 256 * 1024;
/// The server's per-receiver high water (sfu/src/router/data.rs).
pub const SERVER_HIGH_WATER: f64 = (1 << 20) as f64;

/// A server frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub from: String,
    pub flags: u8,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn parse(frame: &[u8]) -> Option<Frame> {
        let kind = *frame.first()?;
        let from_len = *frame.get(1)? as usize;
        let from = String::from_utf8(frame.get(2..2 + from_len)?.to_vec()).ok()?;
        let flags = *frame.get(2 + from_len)?;
        Some(Frame {
            kind,
            from,
            flags,
            body: frame.get(3 + from_len..)?.to_vec(),
        })
    }

    pub fn transfer(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.body.get(..4)?.try_into().ok()?))
    }

    /// An error frame's (transfer, code).
    pub fn error(&self) -> Option<(u32, String)> {
        if self.kind != KIND_ERROR {
            return None;
        }
        let len = *self.body.get(4)? as usize;
        let code = String::from_utf8(self.body.get(5..5 + len)?.to_vec()).ok()?;
        Some((self.transfer()?, code))
    }

    pub fn is_file(&self, kind: u8, transfer: u32) -> bool {
        self.kind == kind && self.transfer() == Some(transfer)
    }
}

pub fn is_chat(f: &[u8], text: &[u8]) -> bool {
    Frame::parse(f).is_some_and(|f| f.kind == KIND_CHAT && f.body == text)
}

/// A server frame's kind and the transfer id its body starts with, without
/// copying it.
pub fn kind_transfer(f: &[u8]) -> Option<(u8, u32)> {
    let at = 3 + *f.get(1)? as usize;
    Some((
        f[0],
        u32::from_be_bytes(f.get(at..at + 4)?.try_into().ok()?),
    ))
}

pub fn is_file(f: &[u8], kind: u8, transfer: u32) -> bool {
    kind_transfer(f) == Some((kind, transfer))
}

pub fn count(c: &TestClient, pred: impl Fn(&[u8]) -> bool) -> usize {
    c.with_data_frames(|frames| frames.iter().filter(|f| pred(f)).count())
}

/// Every frame `c` received, parsed (panics on a frame that does not parse:
/// the server only sends well-formed frames).
pub fn frames(c: &TestClient) -> Vec<Frame> {
    c.with_data_frames(|frames| {
        frames
            .iter()
            .map(|f| Frame::parse(f).expect("a well-formed server frame"))
            .collect()
    })
}

/// Clients joined to one room with media, data channels open.
pub async fn room(
    addr: SocketAddr,
    room: &str,
    names: &[&str],
) -> Result<(Vec<TestClient>, Vec<String>)> {
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for name in names {
        let mut c = TestClient::connect(addr, name).await?;
        let joined = c.join_with_media(room, name).await?;
        ids.push(joined.you.clone());
        clients.push(c);
    }
    for c in &clients {
        c.wait_data_open(Duration::from_secs(30)).await?;
        c.set_data_low_threshold(LOW as u32).await?;
    }
    Ok((clients, ids))
}

pub async fn metrics(addr: SocketAddr) -> Result<String> {
    http_get(addr, "/metrics").await
}

pub fn relayed(metrics: &str) -> f64 {
    metric_sum(metrics, "noom_data_file_relayed_bytes_total")
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut data = vec![0u8; n];
    rand::rng().fill_bytes(&mut data);
    data
}

pub fn chunk_frame(to: Option<&str>, id: u32, bytes: &[u8]) -> bytes::Bytes {
    let mut body = Vec::with_capacity(4 + bytes.len());
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(bytes);
    client_frame(KIND_FILE_CHUNK, to, &body)
}

/// Sends a file: offer, 16 KiB chunks, end. Respects back-pressure: once
/// `HIGH` bytes are queued on the sender's own channel it waits for the
/// queue to fall to `LOW` (`OnBufferedAmountLow`). `progress` counts the
/// file bytes handed to the channel so far.
pub async fn send_file(
    from: &TestClient,
    to: Option<&str>,
    id: u32,
    data: &[u8],
    progress: &AtomicU64,
    deadline: Duration,
) -> Result<()> {
    send_file_in(from, to, id, data, CHUNK, progress, deadline).await
}

/// [`send_file`] in chunks of `chunk` bytes.
pub async fn send_file_in(
    from: &TestClient,
    to: Option<&str>,
    id: u32,
    data: &[u8],
    chunk: usize,
    progress: &AtomicU64,
    deadline: Duration,
) -> Result<()> {
    let offer = file_offer_body(
        id,
        data.len() as u64,
        "blob.bin",
        "application/octet-stream",
    );
    from.send_data(&client_frame(KIND_FILE_OFFER, to, &offer))
        .await?;
    for chunk in data.chunks(chunk) {
        if from.data_outstanding().await? >= HIGH {
            from.wait_data_buffered_at_most(LOW, deadline).await?;
        }
        from.send_data(&chunk_frame(to, id, chunk)).await?;
        progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    from.send_data(&client_frame(KIND_FILE_END, to, &id.to_be_bytes()))
        .await
}

/// How transfer `id` ended at `c`, once it has: the SHA-256 and length of
/// the reassembled bytes, or the abort reason.
pub fn reassembled(c: &TestClient, id: u32) -> Option<Result<([u8; 32], usize), String>> {
    c.with_data_frames(|frames| {
        let mut hasher = Sha256::new();
        let mut len = 0;
        let mut offered = false;
        for f in frames {
            let Some(f) = Frame::parse(f) else { continue };
            if f.transfer() != Some(id) || f.kind == KIND_ERROR {
                continue;
            }
            match f.kind {
                KIND_FILE_OFFER => offered = true,
                KIND_FILE_CHUNK if offered => {
                    hasher.update(&f.body[4..]);
                    len += f.body.len() - 4;
                }
                KIND_FILE_END if offered => return Some(Ok((hasher.finalize().into(), len))),
                KIND_FILE_ABORT => {
                    return Some(Err(String::from_utf8_lossy(&f.body[4..]).into_owned()))
                }
                _ => {}
            }
        }
        None
    })
}

// ---------------------------------------------------------------------------
// 1. Chat
// ---------------------------------------------------------------------------
