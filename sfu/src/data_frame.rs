//! The binary framing of Noom's data channel (label `noom`), documented in
//! docs/protocol.md ("Data channel"). Every message is binary:
//!
//! ```text
//! client -> server: kind u8 | to_len u8 | to (participant id, empty = room) | body
//! server -> client: kind u8 | from_len u8 | from (empty = the server) | flags u8 | body
//! ```
//!
//! The server reads only what it needs to route and police: the kind, the
//! address, and for files the transfer id and announced size. Chat text and
//! file bytes pass through untouched.

use bytes::{BufMut, Bytes, BytesMut};

pub const KIND_CHAT: u8 = 0x01;
pub const KIND_FILE_OFFER: u8 = 0x10;
pub const KIND_FILE_CHUNK: u8 = 0x11;
pub const KIND_FILE_END: u8 = 0x12;
pub const KIND_FILE_ABORT: u8 = 0x13;
pub const KIND_ERROR: u8 = 0x7F;

/// `flags` bit: the sender addressed the message to this recipient only
/// (its `to`); clear when it went to the whole room. Server-made frames
/// follow the message they are about: a file abort carries its transfer's
/// addressing, and an error frame (a reply to its sender alone, about a
/// frame it sent) never has it.
pub const FLAG_DIRECT: u8 = 0x01;

/// Longest participant id on the wire.
pub const MAX_ID_LEN: usize = 64;

/// Largest data-channel message the server accepts, in bytes; a larger one
/// is refused with a `too_large` error frame. The server's SDP announces
/// [`MAX_SERVER_FRAME_BYTES`] as `a=max-message-size` (webrtc-rs uses one
/// setting for both directions), so a conforming client refuses a much
/// larger `send()` itself.
///
/// Why this size: the largest legitimate frame is a 16 KiB file chunk or a
/// 4,096-character chat (at most 16 KiB of UTF-8) plus a header of at most
/// 70 bytes; 17 KiB leaves room for both. Why it matters: while a receiver
/// is behind, the server stops reading the sender, and what it still holds
/// of that sender is webrtc-rs's read pipeline, bounded in *messages* (256),
/// plus the SCTP receive window (1 MiB). Capping the message size is what
/// turns that count into bytes: 256 x 17 KiB + 1 MiB, about 5.3 MiB per
/// sender (with the 64 KiB default it was about 17 MiB).
pub const MAX_MESSAGE_BYTES: usize = 17 * 1024;

/// Largest frame the server sends: a relayed client frame trades its
/// `to_len | to` for `from_len | from | flags`.
pub const MAX_SERVER_FRAME_BYTES: usize = MAX_MESSAGE_BYTES + 1 + MAX_ID_LEN;

/// A client frame, borrowed from the received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame<'a> {
    pub kind: u8,
    /// Recipient participant id; `None` addresses the whole room.
    pub to: Option<&'a str>,
    pub body: &'a [u8],
}

/// Why a client frame was refused (the contract's error codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
    /// The transfer the error is about, when there is one.
    pub transfer: u32,
}

impl FrameError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
            transfer: 0,
        }
    }

    pub fn for_transfer(mut self, transfer: u32) -> Self {
        self.transfer = transfer;
        self
    }
}

pub fn parse_client(data: &[u8]) -> Result<ClientFrame<'_>, FrameError> {
    let (&kind, rest) = data
        .split_first()
        .ok_or_else(|| FrameError::new("bad_request", "empty frame"))?;
    let (&to_len, rest) = rest
        .split_first()
        .ok_or_else(|| FrameError::new("bad_request", "frame too short for its address"))?;
    let to_len = to_len as usize;
    if to_len > MAX_ID_LEN || rest.len() < to_len {
        return Err(FrameError::new("bad_request", "bad address length"));
    }
    let (to, body) = rest.split_at(to_len);
    let to = std::str::from_utf8(to)
        .map_err(|_| FrameError::new("bad_request", "address is not UTF-8"))?;
    Ok(ClientFrame {
        kind,
        to: (!to.is_empty()).then_some(to),
        body,
    })
}

/// Encodes a server frame.
pub fn server_frame(kind: u8, from: &str, direct: bool, body: &[u8]) -> BytesMut {
    let from = &from.as_bytes()[..from.len().min(MAX_ID_LEN)];
    let mut out = BytesMut::with_capacity(3 + from.len() + body.len());
    out.put_u8(kind);
    out.put_u8(from.len() as u8);
    out.put_slice(from);
    out.put_u8(if direct { FLAG_DIRECT } else { 0 });
    out.put_slice(body);
    out
}

/// An error frame from the server: transfer u32 | code_len u8 | code | message.
pub fn error_frame(error: &FrameError) -> BytesMut {
    let mut body = Vec::with_capacity(5 + error.code.len() + error.message.len());
    body.extend_from_slice(&error.transfer.to_be_bytes());
    body.push(error.code.len() as u8);
    body.extend_from_slice(error.code.as_bytes());
    body.extend_from_slice(error.message.as_bytes());
    server_frame(KIND_ERROR, "", false, &body)
}

/// The transfer id that starts every file frame's body.
pub fn transfer_id(body: &[u8]) -> Result<u32, FrameError> {
    body.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| FrameError::new("bad_request", "file frame without a transfer id"))
}

/// What a file offer announces: transfer u32 | size u64 | name_len u16 |
/// name | type_len u16 | type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOffer {
    pub transfer: u32,
    pub size: u64,
}

pub fn parse_file_offer(body: &[u8]) -> Result<FileOffer, FrameError> {
    let transfer = transfer_id(body)?;
    let bad = |what: &str| FrameError::new("bad_request", what.to_owned()).for_transfer(transfer);
    let size = body
        .get(4..12)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| bad("file offer without a size"))?;
    let mut at = 12;
    for field in ["name", "type"] {
        let len = body
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| bad(&format!("file offer without a {field}")))?;
        let value = body
            .get(at + 2..at + 2 + len)
            .ok_or_else(|| bad(&format!("file offer with a truncated {field}")))?;
        std::str::from_utf8(value).map_err(|_| bad(&format!("file {field} is not UTF-8")))?;
        at += 2 + len;
    }
    Ok(FileOffer { transfer, size })
}

/// Builds a client frame (tests and tools).
pub fn client_frame(kind: u8, to: Option<&str>, body: &[u8]) -> Bytes {
    let to = to.unwrap_or("");
    let mut out = BytesMut::with_capacity(2 + to.len() + body.len());
    out.put_u8(kind);
    out.put_u8(to.len() as u8);
    out.put_slice(to.as_bytes());
    out.put_slice(body);
    out.freeze()
}

/// Builds a file offer body (tests and tools).
pub fn file_offer_body(transfer: u32, size: u64, name: &str, mime: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&transfer.to_be_bytes());
    body.extend_from_slice(&size.to_be_bytes());
    for field in [name, mime] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_round_trip() {
        let frame = client_frame(KIND_CHAT, Some("pBob"), b"hello");
        let parsed = parse_client(&frame).unwrap();
        assert_eq!(parsed.kind, KIND_CHAT);
        assert_eq!(parsed.to, Some("pBob"));
        assert_eq!(parsed.body, b"hello");
        let room = client_frame(KIND_CHAT, None, b"hi all");
        assert_eq!(parse_client(&room).unwrap().to, None);
    }

    #[test]
    fn refuses_malformed_frames_without_panicking() {
        assert!(parse_client(&[]).is_err());
        assert!(parse_client(&[1]).is_err());
        assert!(parse_client(&[1, 5, b'a']).is_err());
        assert!(parse_client(&[1, 200]).is_err());
        assert!(parse_client(&[1, 2, 0xff, 0xfe]).is_err());
        let offer = file_offer_body(7, 1000, "a.txt", "text/plain");
        assert_eq!(
            parse_file_offer(&offer).unwrap(),
            FileOffer {
                transfer: 7,
                size: 1000
            }
        );
        for cut in 0..offer.len() {
            assert!(parse_file_offer(&offer[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn server_frames_carry_sender_and_flags() {
        let f = server_frame(KIND_CHAT, "pAl", true, b"x");
        assert_eq!(&f[..], &[KIND_CHAT, 3, b'p', b'A', b'l', FLAG_DIRECT, b'x']);
        let e = error_frame(&FrameError::new("too_large", "no").for_transfer(9));
        assert_eq!(e[0], KIND_ERROR);
        assert_eq!(&e[3..7], &9u32.to_be_bytes());
    }
}
