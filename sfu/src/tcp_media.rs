//! ICE over TCP on each shard's media port (RFC 6544 passive candidates,
//! RFC 4571 framing), for networks that let TCP out but not UDP, with no
//! TURN server to fall back on.
//!
//! Each shard listens on TCP at the same addresses and port as its UDP
//! sockets, and every connection a client opens is one more way in: the
//! router sees its framed packets exactly like datagrams, tagged with a
//! route whose socket index carries [`TCP_ROUTE`], so demux (ufrag, then
//! route), ICE and the forwarding path stay as they are. Writes to such a
//! route are framed and queued on that connection.
//!
//! The TCP path is a fallback and is not tuned like UDP: a frame read is one
//! allocation (rtc-shared's `TcpFrameDecoder`), and a connection whose peer
//! does not read fast enough loses packets beyond [`MAX_PENDING_BYTES`]
//! instead of growing a queue (media is loss-tolerant; a stall would only add
//! latency). A connection that carries nothing for [`IDLE_TIMEOUT`] is
//! closed (ICE consent checks keep a live one busy every few seconds), and a
//! shard holds at most [`MAX_CONNECTIONS`], so unauthenticated connections
//! cannot pin its memory.

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use rtc::shared::tcp_framing::TcpFrameDecoder;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Set in a route's socket index when the route is a TCP connection.
pub const TCP_ROUTE: usize = 1 << 30;
/// Open connections per shard.
pub const MAX_CONNECTIONS: usize = 1024;
/// Bytes queued per connection before packets are dropped.
pub const MAX_PENDING_BYTES: usize = 256 * 1024;
/// A connection with no data in this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Tokens from here on are TCP listeners, then connections.
const FIRST_LISTENER: usize = 1 << 20;
const FIRST_CONNECTION: usize = 1 << 21;

/// Whether `socket` (a route's socket index) is a TCP connection.
pub fn is_tcp(socket: usize) -> bool {
    socket & TCP_ROUTE != 0
}

/// The bind address index behind a route's socket index.
pub fn bind_index(socket: usize) -> usize {
    socket & !TCP_ROUTE
}

struct Connection {
    stream: TcpStream,
    /// Index of the bind address (listener) it arrived on.
    socket: usize,
    peer: SocketAddr,
    decoder: TcpFrameDecoder,
    pending: Vec<u8>,
    last_active: Instant,
    wants_writable: bool,
}

/// A shard's TCP listeners and connections.
#[derive(Default)]
pub struct TcpMedia {
    listeners: Vec<TcpListener>,
    connections: HashMap<Token, Connection>,
    by_route: HashMap<(usize, SocketAddr), Token>,
    next_token: usize,
    /// Packets dropped because a connection's queue was full.
    pub dropped: u64,
    last_sweep: Option<Instant>,
}

/// What an event on one of the TCP tokens produced: complete packets from
/// `(route socket, peer)`, to hand to the router.
pub struct Arrivals {
    pub socket: usize,
    pub peer: SocketAddr,
    pub packets: Vec<Vec<u8>>,
}

impl TcpMedia {
    /// Listens on `addr` (bind address index `socket`, same port as its UDP
    /// socket).
    pub fn listen(&mut self, registry: &Registry, addr: SocketAddr) -> io::Result<()> {
        let socket = self.listeners.len();
        let mut listener = TcpListener::bind(addr).map_err(|e| {
            io::Error::new(e.kind(), format!("binding TCP {addr} for ICE-TCP: {e}"))
        })?;
        registry.register(
            &mut listener,
            Token(FIRST_LISTENER + socket),
            Interest::READABLE,
        )?;
        self.listeners.push(listener);
        Ok(())
    }

    /// Whether `token` is one of ours.
    pub fn owns(token: Token) -> bool {
        token.0 >= FIRST_LISTENER && token.0 != usize::MAX
    }

    /// Handles a readiness event on one of our tokens.
    pub fn on_event(
        &mut self,
        registry: &Registry,
        token: Token,
        writable: bool,
        now: Instant,
    ) -> Option<Arrivals> {
        if token.0 < FIRST_CONNECTION {
            self.accept(registry, token.0 - FIRST_LISTENER, now);
            return None;
        }
        if writable {
            self.flush(registry, token);
        }
        self.read(registry, token, now)
    }

    fn accept(&mut self, registry: &Registry, socket: usize, now: Instant) {
        let Some(listener) = self.listeners.get(socket) else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.connections.len() >= MAX_CONNECTIONS {
                        tracing::debug!(%peer, "ICE-TCP connection refused: too many");
                        continue; // dropped: closed
                    }
                    let _ = stream.set_nodelay(true);
                    let token = Token(FIRST_CONNECTION + self.next_token);
                    self.next_token = (self.next_token + 1) % (usize::MAX / 4);
                    if registry
                        .register(&mut stream, token, Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    tracing::debug!(%peer, "ICE-TCP connection");
                    self.by_route.insert((socket, peer), token);
                    self.connections.insert(
                        token,
                        Connection {
                            stream,
                            socket,
                            peer,
                            decoder: TcpFrameDecoder::new(),
                            pending: Vec::new(),
                            last_active: now,
                            wants_writable: false,
                        },
                    );
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    tracing::debug!(%err, "ICE-TCP accept");
                    return;
                }
            }
        }
    }

    fn read(&mut self, registry: &Registry, token: Token, now: Instant) -> Option<Arrivals> {
        let conn = self.connections.get_mut(&token)?;
        let mut buf = [0u8; 4096];
        let mut closed = false;
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    conn.last_active = now;
                    conn.decoder.extend_from_slice(&buf[..n]);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let mut packets = Vec::new();
        while let Some(packet) = conn.decoder.next_packet() {
            packets.push(packet);
        }
        let arrivals = Arrivals {
            socket: conn.socket | TCP_ROUTE,
            peer: conn.peer,
            packets,
        };
        if closed {
            self.close(registry, token);
        }
        Some(arrivals)
    }

    /// Frames `data` onto the connection behind `(socket, to)`; false when
    /// there is no such connection (it closed).
    pub fn send(
        &mut self,
        registry: &Registry,
        socket: usize,
        to: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Some(&token) = self.by_route.get(&(bind_index(socket), to)) else {
            return false;
        };
        let Some(conn) = self.connections.get_mut(&token) else {
            return false;
        };
        let Ok(len) = u16::try_from(data.len()) else {
            return false;
        };
        if conn.pending.len() + 2 + data.len() > MAX_PENDING_BYTES {
            self.dropped += 1;
            return true;
        }
        conn.pending.extend_from_slice(&len.to_be_bytes());
        conn.pending.extend_from_slice(data);
        self.flush(registry, token);
        true
    }

    fn flush(&mut self, registry: &Registry, token: Token) {
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        let mut written = 0;
        let mut failed = false;
        while written < conn.pending.len() {
            match conn.stream.write(&conn.pending[written..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => written += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        conn.pending.drain(..written);
        if failed {
            self.close(registry, token);
            return;
        }
        let wants_writable = !conn.pending.is_empty();
        if wants_writable != conn.wants_writable {
            let interest = if wants_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry
                .reregister(&mut conn.stream, token, interest)
                .is_ok()
            {
                conn.wants_writable = wants_writable;
            }
        }
    }

    fn close(&mut self, registry: &Registry, token: Token) {
        if let Some(mut conn) = self.connections.remove(&token) {
            let _ = registry.deregister(&mut conn.stream);
            self.by_route.remove(&(conn.socket, conn.peer));
            tracing::debug!(peer = %conn.peer, "ICE-TCP connection closed");
        }
    }

    /// Closes connections idle for [`IDLE_TIMEOUT`] (checked once a second).
    pub fn sweep(&mut self, registry: &Registry, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < Duration::from_secs(1))
        {
            return;
        }
        self.last_sweep = Some(now);
        let idle: Vec<Token> = self
            .connections
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.last_active) >= IDLE_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for token in idle {
            self.close(registry, token);
        }
    }

    /// Open connections (for tests and metrics).
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::io::{Read, Write};

    /// Polls until `media` yields arrivals (or a connection count changes).
    fn pump(
        poll: &mut Poll,
        media: &mut TcpMedia,
        until: impl Fn(&TcpMedia, &[Vec<u8>]) -> bool,
    ) -> Vec<Vec<u8>> {
        let mut events = Events::with_capacity(16);
        let mut got = Vec::new();
        for _ in 0..200 {
            poll.poll(&mut events, Some(Duration::from_millis(20)))
                .unwrap();
            for event in events.iter() {
                if let Some(a) = media.on_event(
                    poll.registry(),
                    event.token(),
                    event.is_writable(),
                    Instant::now(),
                ) {
                    assert!(is_tcp(a.socket));
                    got.extend(a.packets);
                }
            }
            if until(media, &got) {
                return got;
            }
        }
        panic!("condition not reached; got {got:?}");
    }

    fn listening() -> (Poll, TcpMedia, SocketAddr) {
        let poll = Poll::new().unwrap();
        let mut media = TcpMedia::default();
        // Port 0: the listener's own; the address a shard would announce.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        media.listen(poll.registry(), addr).unwrap();
        (poll, media, addr)
    }

    #[test]
    fn frames_split_across_reads_come_out_whole_and_replies_are_framed() {
        let (mut poll, mut media, addr) = listening();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        pump(&mut poll, &mut media, |m, _| m.connection_count() == 1);
        // Two packets, the second split in the middle of its length prefix.
        client.write_all(&[0, 3, b'a', b'b', b'c', 0]).unwrap();
        client.flush().unwrap();
        let first = pump(&mut poll, &mut media, |_, got| !got.is_empty());
        assert_eq!(first, vec![b"abc".to_vec()]);
        client.write_all(&[2, b'x', b'y']).unwrap();
        let second = pump(&mut poll, &mut media, |_, got| !got.is_empty());
        assert_eq!(second, vec![b"xy".to_vec()]);

        let peer = client.local_addr().unwrap();
        assert!(media.send(poll.registry(), TCP_ROUTE, peer, b"hello"));
        let mut reply = [0u8; 7];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"\x00\x05hello");
        // A route nobody holds is refused, not an error.
        assert!(!media.send(
            poll.registry(),
            TCP_ROUTE,
            "127.0.0.1:9".parse().unwrap(),
            b"x"
        ));
    }

    #[test]
    fn a_peer_that_does_not_read_loses_packets_instead_of_growing_a_queue() {
        let (mut poll, mut media, addr) = listening();
        let client = std::net::TcpStream::connect(addr).unwrap();
        pump(&mut poll, &mut media, |m, _| m.connection_count() == 1);
        let peer = client.local_addr().unwrap();
        let packet = [7u8; 1200];
        // Far more than the kernel buffers and the queue together hold.
        for _ in 0..20_000 {
            media.send(poll.registry(), TCP_ROUTE, peer, &packet);
        }
        assert!(media.dropped > 0, "packets beyond the queue are dropped");
        let conn = media.connections.values().next().unwrap();
        assert!(conn.pending.len() <= MAX_PENDING_BYTES);
    }

    #[test]
    fn closed_and_idle_connections_go_away() {
        let (mut poll, mut media, addr) = listening();
        let client = std::net::TcpStream::connect(addr).unwrap();
        pump(&mut poll, &mut media, |m, _| m.connection_count() == 1);
        drop(client);
        pump(&mut poll, &mut media, |m, _| m.connection_count() == 0);

        let _idle = std::net::TcpStream::connect(addr).unwrap();
        pump(&mut poll, &mut media, |m, _| m.connection_count() == 1);
        media.sweep(poll.registry(), Instant::now() + IDLE_TIMEOUT);
        assert_eq!(media.connection_count(), 0, "an idle connection is closed");
    }
}
