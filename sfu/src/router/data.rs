//! Relaying the `noom` data channel between the members of a room: chat and
//! file transfer (framing in `data_frame.rs`).
//!
//! Back-pressure, so the server never holds a whole file: a sender's data
//! messages are read from its connection only while every member it could
//! address has less than [`HIGH_WATER`] bytes queued on its own channel.
//! Unread messages stay in the sender's SCTP receive buffer, which shrinks
//! the window it advertises, so a slow receiver slows the sender, not the
//! server's memory. When a receiver drains below [`LOW_WATER`] the room's
//! senders are read again.
//!
//! What a stalled receiver can make the server hold, in bytes:
//! - toward each receiver, its channel's queue: under [`HIGH_WATER`] when a
//!   message is relayed, so at most 1 MiB + one message (17 KiB,
//!   [`frame::MAX_MESSAGE_BYTES`]), the peak is `noom_data_channel_queue_peak_bytes`;
//! - of each blocked sender, one message held here plus what webrtc-rs read
//!   before the sender's window closed: its read pipeline (256 messages, so
//!   at most 256 x 17 KiB because larger messages are refused) and the SCTP
//!   receive window (1 MiB): about 5.3 MiB.
//!
//! No sender loses a message without knowing: a message is either relayed,
//! held (the sender's window closes), or refused with an error frame.

use super::Router;
use crate::data_frame::{self as frame, FrameError};
use crate::track::ConnKey;
use crate::transfer::Transfer;
use bytes::BytesMut;
use rtc::data_channel::RTCDataChannelMessage;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use std::time::Instant;

/// Bytes queued toward one receiver above which senders are no longer read.
pub const HIGH_WATER: usize = 1 << 20;
/// Queued bytes at which a receiver asks for more.
pub const LOW_WATER: u32 = 256 * 1024;
/// Data messages read from one connection per drive, so one sender cannot
/// starve the shard's other work.
const READ_BUDGET: usize = 64;
/// Concurrent file transfers per sender.
const MAX_TRANSFERS: usize = 8;

impl Router {
    /// True when some member `conn` may send to (or `conn` itself) has too
    /// much queued.
    fn data_blocked(&mut self, conn: ConnKey) -> bool {
        let Some(room) = self.peers.get(&conn).map(|p| p.room.clone()) else {
            return true;
        };
        let members = self.rooms.get(&room).cloned().unwrap_or_default();
        // The sender itself too: refused frames are answered on its own
        // channel, so a client that floods bad frames and never reads must
        // not grow the server's queue toward it.
        members.into_iter().any(|m| {
            self.peers
                .get_mut(&m)
                .and_then(|p| {
                    let id = p.data_channel?;
                    p.pc.data_channel(id).map(|dc| dc.outstanding_bytes())
                })
                .is_some_and(|queued| queued > HIGH_WATER)
        })
    }

    /// Reads and relays `conn`'s pending data-channel messages, unless a
    /// receiver is behind.
    ///
    /// A message is taken from the connection before the back-pressure
    /// check (which walks the room) so that the per-packet drive of a
    /// connection without data pays nothing; a message that finds the room
    /// blocked is held on the peer (one at most) and relayed first later.
    pub(super) fn drain_data(&mut self, conn: ConnKey, now: Instant) {
        for _ in 0..READ_BUDGET {
            let Some(peer) = self.peers.get_mut(&conn) else {
                return;
            };
            let message = match peer.held_data.take() {
                Some(message) => message,
                None => match peer.pc.poll_data_read() {
                    Some(TaggedRTCMessage {
                        message: RTCMessage::DataChannelMessage(_, message),
                        ..
                    }) => message,
                    Some(_) => continue,
                    None => return,
                },
            };
            if self.data_blocked(conn) {
                if let Some(peer) = self.peers.get_mut(&conn) {
                    peer.held_data = Some(message);
                }
                return;
            }
            self.handle_data(conn, message, now);
        }
        // Budget spent with messages left: come back on the next pass.
        Self::mark_dirty(&mut self.dirty, conn);
    }

    /// A receiver drained its queue: its room's senders may be read again.
    pub(super) fn data_drained(&mut self, conn: ConnKey) {
        let Some(room) = self.peers.get(&conn).map(|p| p.room.clone()) else {
            return;
        };
        for member in self.rooms.get(&room).cloned().unwrap_or_default() {
            Self::mark_dirty(&mut self.dirty, member);
        }
    }

    /// The channel opened: arm its low-water event.
    pub(super) fn data_opened(&mut self, conn: ConnKey) {
        if let Some(peer) = self.peers.get_mut(&conn) {
            if let Some(mut dc) = peer.data_channel.and_then(|id| peer.pc.data_channel(id)) {
                dc.set_buffered_amount_low_threshold(LOW_WATER);
            }
            peer.data_open = true;
        }
    }

    fn send_data(&mut self, to: ConnKey, data: BytesMut, now: Instant) -> bool {
        let Some(peer) = self.peers.get_mut(&to) else {
            return false;
        };
        if !peer.data_open {
            return false;
        }
        let Some(mut dc) = peer.data_channel.and_then(|id| peer.pc.data_channel(id)) else {
            return false;
        };
        let sent = dc.send(now, data).is_ok();
        crate::stats::raise_to(
            &self.stats.data_queue_peak_bytes,
            dc.outstanding_bytes() as u64,
        );
        Self::mark_dirty(&mut self.dirty, to);
        sent
    }

    fn refuse(&mut self, conn: ConnKey, error: FrameError, now: Instant) {
        add(&self.stats.data_errors, 1);
        self.send_data(conn, frame::error_frame(&error), now);
    }

    fn handle_data(&mut self, conn: ConnKey, message: RTCDataChannelMessage, now: Instant) {
        add(&self.stats.data_messages_in, 1);
        if message.data.len() > frame::MAX_MESSAGE_BYTES {
            // Only a client ignoring the SDP's max-message-size gets here.
            // A chunk refused here never reaches the receivers, so its
            // transfer ends short and is aborted at its file end.
            let transfer = frame::parse_client(&message.data)
                .ok()
                .filter(|f| f.kind >= frame::KIND_FILE_OFFER)
                .and_then(|f| frame::transfer_id(f.body).ok())
                .unwrap_or(0);
            return self.refuse(
                conn,
                FrameError::new(
                    "too_large",
                    format!(
                        "a data channel message is at most {} bytes, got {}",
                        frame::MAX_MESSAGE_BYTES,
                        message.data.len()
                    ),
                )
                .for_transfer(transfer),
                now,
            );
        }
        if message.is_string {
            return self.refuse(
                conn,
                FrameError::new("bad_request", "the noom channel carries binary frames only"),
                now,
            );
        }
        match self.route_data(conn, &message.data, now) {
            Ok(()) => {}
            Err(error) => self.refuse(conn, error, now),
        }
    }

    /// The members `frame` goes to: one participant or everyone else whose
    /// channel is open. A direct message to a participant whose channel is
    /// not open (yet) is refused rather than dropped, so its sender knows.
    fn recipients(&self, conn: ConnKey, to: Option<&str>) -> Result<Vec<ConnKey>, FrameError> {
        let peer = &self.peers[&conn];
        let members = self.rooms.get(&peer.room).cloned().unwrap_or_default();
        let open = |m: &ConnKey| self.peers.get(m).is_some_and(|p| p.data_open);
        match to {
            None => Ok(members
                .into_iter()
                .filter(|m| *m != conn && open(m))
                .collect()),
            Some(id) if id == peer.participant => Err(FrameError::new(
                "bad_request",
                "a direct message cannot be sent to oneself",
            )),
            Some(id) => members
                .into_iter()
                .find(|m| self.peers.get(m).is_some_and(|p| p.participant == id))
                .ok_or_else(|| {
                    FrameError::new("not_found", format!("no participant {id:?} in this room"))
                })
                .and_then(|m| {
                    if open(&m) {
                        Ok(vec![m])
                    } else {
                        Err(FrameError::new(
                            "not_found",
                            format!("participant {id:?} has no open data channel yet"),
                        ))
                    }
                }),
        }
    }

    fn route_data(&mut self, conn: ConnKey, data: &[u8], now: Instant) -> Result<(), FrameError> {
        let parsed = frame::parse_client(data)?;
        let from = self.peers[&conn].participant.clone();
        let direct = parsed.to.is_some();
        let out = |kind: u8, body: &[u8]| frame::server_frame(kind, &from, direct, body);
        match parsed.kind {
            frame::KIND_CHAT => {
                let text = std::str::from_utf8(parsed.body)
                    .map_err(|_| FrameError::new("bad_request", "chat text is not UTF-8"))?;
                let chars = text.chars().count();
                if !(1..=4096).contains(&chars) {
                    return Err(FrameError::new(
                        "bad_request",
                        format!("text must be 1 to 4096 characters, got {chars}"),
                    ));
                }
                let recipients = self.recipients(conn, parsed.to)?;
                let message = out(frame::KIND_CHAT, parsed.body);
                for r in recipients {
                    self.send_data(r, message.clone(), now);
                }
            }
            frame::KIND_FILE_OFFER => {
                let offer = frame::parse_file_offer(parsed.body)?;
                let bad = |code, message: String| {
                    FrameError::new(code, message).for_transfer(offer.transfer)
                };
                if offer.size > self.max_file_bytes {
                    return Err(bad(
                        "too_large",
                        format!(
                            "file of {} bytes exceeds the limit of {} bytes",
                            offer.size, self.max_file_bytes
                        ),
                    ));
                }
                let recipients = self
                    .recipients(conn, parsed.to)
                    .map_err(|e| e.for_transfer(offer.transfer))?;
                let peer = self.peers.get_mut(&conn).expect("sender exists");
                if peer.transfers.contains_key(&offer.transfer) {
                    return Err(bad("bad_request", "transfer id already in use".to_owned()));
                }
                if peer.transfers.len() >= MAX_TRANSFERS {
                    return Err(bad(
                        "rate_limited",
                        format!("at most {MAX_TRANSFERS} transfers at once"),
                    ));
                }
                peer.transfers.insert(
                    offer.transfer,
                    Transfer {
                        recipients: recipients.clone(),
                        direct,
                        size: offer.size,
                        relayed: 0,
                    },
                );
                let message = out(frame::KIND_FILE_OFFER, parsed.body);
                for r in recipients {
                    self.send_data(r, message.clone(), now);
                }
            }
            frame::KIND_FILE_CHUNK | frame::KIND_FILE_END | frame::KIND_FILE_ABORT => {
                let id = frame::transfer_id(parsed.body)?;
                let peer = self.peers.get_mut(&conn).expect("sender exists");
                let Some(transfer) = peer.transfers.get_mut(&id) else {
                    return Err(FrameError::new("bad_request", "no such transfer").for_transfer(id));
                };
                let recipients = transfer.recipients.clone();
                // The transfer's addressing, not this frame's `to`: a chunk
                // is routed by its transfer, whatever it names.
                let transfer_direct = transfer.direct;
                match parsed.kind {
                    frame::KIND_FILE_CHUNK => {
                        transfer.relayed += (parsed.body.len() - 4) as u64;
                        if transfer.relayed > transfer.size {
                            peer.transfers.remove(&id);
                            self.abort_transfer(
                                &from,
                                id,
                                &recipients,
                                transfer_direct,
                                "more bytes than announced",
                                now,
                            );
                            return Err(FrameError::new(
                                "bad_request",
                                "more bytes than the offer announced",
                            )
                            .for_transfer(id));
                        }
                        add(
                            &self.stats.data_bytes_relayed,
                            (parsed.body.len() - 4) as u64,
                        );
                    }
                    frame::KIND_FILE_END => {
                        let complete = transfer.relayed == transfer.size;
                        peer.transfers.remove(&id);
                        if !complete {
                            self.abort_transfer(
                                &from,
                                id,
                                &recipients,
                                transfer_direct,
                                "the file ended early",
                                now,
                            );
                            return Err(FrameError::new(
                                "bad_request",
                                "fewer bytes than the offer announced",
                            )
                            .for_transfer(id));
                        }
                    }
                    _ => {
                        peer.transfers.remove(&id);
                    }
                }
                let message = frame::server_frame(parsed.kind, &from, transfer_direct, parsed.body);
                for r in recipients {
                    self.send_data(r, message.clone(), now);
                }
            }
            other => {
                return Err(FrameError::new(
                    "unknown_type",
                    format!("unknown frame kind 0x{other:02x}"),
                ))
            }
        }
        Ok(())
    }

    fn abort_transfer(
        &mut self,
        from: &str,
        id: u32,
        recipients: &[ConnKey],
        direct: bool,
        reason: &str,
        now: Instant,
    ) {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(reason.as_bytes());
        let message = frame::server_frame(frame::KIND_FILE_ABORT, from, direct, &body);
        for &r in recipients {
            self.send_data(r, message.clone(), now);
        }
    }

    /// A participant left: its transfers end for their receivers, and it is
    /// no longer a receiver of anyone's.
    pub(super) fn data_left(
        &mut self,
        conn: ConnKey,
        participant: &str,
        transfers: Vec<(u32, Transfer)>,
        now: Instant,
    ) {
        for (id, transfer) in transfers {
            self.abort_transfer(
                participant,
                id,
                &transfer.recipients,
                transfer.direct,
                "the sender left",
                now,
            );
        }
        for peer in self.peers.values_mut() {
            for transfer in peer.transfers.values_mut() {
                transfer.recipients.retain(|&r| r != conn);
            }
        }
    }
}

use crate::stats::add;
