//! Holds a connection's DTLS datagrams that arrive before ICE has selected
//! a candidate pair, and gives them back once it has.
//!
//! Why: in rtc 0.21.1 the ICE handler (`peer_connection/handler/ice.rs`,
//! `handle_read`) passes a non-STUN datagram on to DTLS only when the ICE
//! agent has a selected pair; before that it drops it with a trace line and
//! still returns `Ok`. Noom offers with full ICE and is the controlling
//! agent; rtc-ice selects a pair only when the success response to its own
//! USE-CANDIDATE check arrives, and sends that check only on the check tick
//! (`ICE_CHECK_INTERVAL`, `engine.rs`) after an ordinary check on the pair
//! succeeded. The browser (controlled, the DTLS client) sends its
//! ClientHello as soon as one of its own checks succeeds, and a webrtc-rs
//! client as soon as it sees our USE-CANDIDATE, in both cases often before
//! the success response that selects our pair reaches us. That hello was lost and the handshake
//! waited for the client's DTLS retransmission: joins from Chromium took
//! about 120 ms or about 435 ms, nothing in between.
//!
//! Nominating earlier would be the cleaner fix, but it is not reachable from
//! here: rtc exposes no way to trigger a check or to nominate, and making
//! Noom an ICE-lite (controlled) agent does not help either: rtc-ice's
//! controlled selector answers a USE-CANDIDATE on a pair it has not yet
//! validated with a check of its own and no success response, so nomination
//! would then wait for the browser's retransmitted check. (The upstream fix
//! is to nominate in rtc-ice's `ControllingSelector::handle_success_response`
//! as soon as a pair is valid.) Holding the early datagrams is simpler, costs
//! a few KiB per connecting peer, and changes nothing once ICE is up; it also
//! covers a hello that overtakes the nomination for any other reason.
//!
//! The hold is bounded ([`MAX_HELD_DATAGRAMS`], [`MAX_HELD_BYTES`]): a
//! retransmission of a held datagram (same bytes apart from the DTLS record
//! sequence number) replaces it, anything beyond the bounds is dropped and
//! counted by the caller. Nothing here depends on time: the hold ends on an
//! event (ICE connected) or with the connection, and a client that keeps
//! retransmitting only refreshes the copy it already has here.

use bytes::BytesMut;
use std::net::SocketAddr;

/// A browser sends one ClientHello (and its retransmissions) before it
/// hears from us; a few more leave room for a fragmented hello.
pub const MAX_HELD_DATAGRAMS: usize = 4;
pub const MAX_HELD_BYTES: usize = 4096;

/// DTLS record header: type (1), version (2), epoch (2), then the 6-byte
/// record sequence number, which differs between retransmissions.
const RECORD_SEQUENCE: std::ops::Range<usize> = 5..11;

/// One held datagram, with the socket and address it came from.
#[derive(Debug)]
pub struct HeldDatagram {
    pub socket: usize,
    pub from: SocketAddr,
    pub data: BytesMut,
}

/// What became of a DTLS datagram offered to [`EarlyDtls::offer`].
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// ICE is up: hand it to the connection now.
    PassOn,
    /// Kept (or it refreshed a held copy); it comes back from `release`.
    Held,
    /// The hold is full: dropped.
    Dropped,
}

/// One connection's hold. Released for good the first time ICE connects.
#[derive(Debug, Default)]
pub struct EarlyDtls {
    held: Vec<HeldDatagram>,
    held_bytes: usize,
    released: bool,
}

/// Whether `b` is a retransmission of `a`: the same bytes apart from the
/// first record's sequence number.
fn is_repeat(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.len() > RECORD_SEQUENCE.end
        && a[..RECORD_SEQUENCE.start] == b[..RECORD_SEQUENCE.start]
        && a[RECORD_SEQUENCE.end..] == b[RECORD_SEQUENCE.end..]
}

impl EarlyDtls {
    /// Takes a DTLS datagram from `from` on `socket`: held while ICE has not
    /// connected yet, passed on after.
    pub fn offer(&mut self, socket: usize, from: SocketAddr, data: &[u8]) -> Arrival {
        if self.released {
            return Arrival::PassOn;
        }
        if let Some(held) = self
            .held
            .iter_mut()
            .find(|h| h.socket == socket && h.from == from && is_repeat(&h.data, data))
        {
            // Same length: the byte count does not change.
            held.data = BytesMut::from(data);
            return Arrival::Held;
        }
        if self.held.len() == MAX_HELD_DATAGRAMS || self.held_bytes + data.len() > MAX_HELD_BYTES {
            return Arrival::Dropped;
        }
        self.held_bytes += data.len();
        self.held.push(HeldDatagram {
            socket,
            from,
            data: BytesMut::from(data),
        });
        Arrival::Held
    }

    /// ICE connected: the held datagrams, in arrival order, for the
    /// connection to read now. Every later datagram passes straight on.
    pub fn release(&mut self) -> Vec<HeldDatagram> {
        self.released = true;
        self.held_bytes = 0;
        std::mem::take(&mut self.held)
    }

    /// The connection is going away: forgets what it holds; how many
    /// datagrams that was.
    pub fn abandon(&mut self) -> usize {
        self.held_bytes = 0;
        std::mem::take(&mut self.held).len()
    }

    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "10.0.0.2:50000".parse().expect("addr")
    }

    /// A DTLS-looking datagram: handshake record, epoch 0, record sequence
    /// `record_seq`, `len` bytes filled with `fill`.
    fn record(record_seq: u8, len: usize, fill: u8) -> Vec<u8> {
        let mut d = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, record_seq];
        d.resize(len, fill);
        d
    }

    #[test]
    fn holds_until_released_then_passes_everything_on() {
        let mut hold = EarlyDtls::default();
        let (first, second) = (record(0, 200, 1), record(1, 100, 2));
        assert_eq!(hold.offer(0, addr(), &first), Arrival::Held);
        assert_eq!(hold.offer(0, addr(), &second), Arrival::Held);
        let released = hold.release();
        let data: Vec<&[u8]> = released.iter().map(|h| &h.data[..]).collect();
        assert_eq!(data, [&first[..], &second[..]], "in arrival order");
        assert!(released.iter().all(|h| h.socket == 0 && h.from == addr()));
        assert_eq!(hold.held(), 0);
        assert_eq!(hold.offer(0, addr(), &first), Arrival::PassOn);
        assert!(hold.release().is_empty());
    }

    #[test]
    fn a_retransmission_replaces_its_held_copy() {
        let mut hold = EarlyDtls::default();
        assert_eq!(hold.offer(0, addr(), &record(0, 200, 1)), Arrival::Held);
        for seq in 1..10 {
            assert_eq!(hold.offer(0, addr(), &record(seq, 200, 1)), Arrival::Held);
        }
        let released = hold.release();
        assert_eq!(released.len(), 1);
        assert_eq!(
            &released[0].data[..],
            &record(9, 200, 1)[..],
            "the newest copy"
        );
    }

    #[test]
    fn beyond_the_bounds_datagrams_are_dropped() {
        let mut hold = EarlyDtls::default();
        for fill in 0..MAX_HELD_DATAGRAMS as u8 {
            assert_eq!(hold.offer(0, addr(), &record(0, 100, fill)), Arrival::Held);
        }
        assert_eq!(hold.offer(0, addr(), &record(0, 100, 99)), Arrival::Dropped);
        assert_eq!(hold.held(), MAX_HELD_DATAGRAMS);

        let mut hold = EarlyDtls::default();
        let big = record(0, MAX_HELD_BYTES - 100, 1);
        assert_eq!(hold.offer(0, addr(), &big), Arrival::Held);
        assert_eq!(hold.offer(0, addr(), &record(0, 101, 2)), Arrival::Dropped);
        assert_eq!(hold.offer(0, addr(), &record(0, 100, 3)), Arrival::Held);
        assert_eq!(
            hold.offer(0, addr(), &record(0, MAX_HELD_BYTES + 1, 4)),
            Arrival::Dropped
        );
        // A repeat of a held datagram is not "more": it still fits.
        assert_eq!(hold.offer(0, addr(), &record(7, 100, 3)), Arrival::Held);
        assert_eq!(hold.held(), 2);
    }

    #[test]
    fn the_same_bytes_from_elsewhere_are_not_a_repeat() {
        let mut hold = EarlyDtls::default();
        let other: SocketAddr = "10.0.0.3:50000".parse().expect("addr");
        assert_eq!(hold.offer(0, addr(), &record(0, 100, 1)), Arrival::Held);
        assert_eq!(hold.offer(1, addr(), &record(1, 100, 1)), Arrival::Held);
        assert_eq!(hold.offer(0, other, &record(1, 100, 1)), Arrival::Held);
        let released = hold.release();
        let sources: Vec<_> = released.iter().map(|h| (h.socket, h.from)).collect();
        assert_eq!(sources, [(0, addr()), (1, addr()), (0, other)]);
    }

    #[test]
    fn abandoning_forgets_what_was_held() {
        let mut hold = EarlyDtls::default();
        assert_eq!(hold.abandon(), 0);
        hold.offer(0, addr(), &record(0, 100, 1));
        hold.offer(0, addr(), &record(0, 100, 2));
        assert_eq!(hold.abandon(), 2);
        assert_eq!(hold.held(), 0);
        // Still not released: ICE has not connected.
        assert_eq!(
            hold.offer(0, addr(), &record(0, MAX_HELD_BYTES, 1)),
            Arrival::Held
        );
    }
}
