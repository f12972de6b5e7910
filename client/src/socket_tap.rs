//! Diagnostics below SRTP: a peer connection's UDP sockets can be wrapped
//! ([`UdpWrap`], installed through [`WrappedUdpRuntime`]) to see or drop
//! datagrams before DTLS/SRTP. [`SocketTap`] is the wrapper the integration
//! tests use (count arrivals, drop chosen packets, cut the network); the
//! load generator installs its own to stamp packets with kernel times.
//!
//! These stay public in the crate rather than behind a feature: they cost
//! nothing unless installed, and a bot or recorder debugging a lossy path
//! wants the same view.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::rtp_synth::rtp_id;

/// Turns a peer connection's bound UDP socket into the socket the `webrtc`
/// stack uses.
pub trait UdpWrap: Send + Sync + Debug {
    fn wrap(
        &self,
        socket: tokio::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn webrtc::runtime::AsyncUdpSocket>>;
}

/// Sees every datagram the peer connection receives, before DTLS/SRTP. RTP
/// headers are not encrypted by SRTP, so it can count `(ssrc, seq)` as they
/// arrive on the wire, and drop chosen packets to simulate loss.
#[derive(Debug, Default)]
pub struct SocketTap {
    /// How many times each `(ssrc, seq)` of an RTP packet arrived.
    rtp_seen: Mutex<HashMap<(u32, u16), u32>>,
    /// Drop the next `n` RTP packets of this SSRC.
    drop_plan: Mutex<Option<(u32, usize)>>,
    dropped: Mutex<Vec<u16>>,
    /// Once set, every datagram in either direction is dropped: the peer's
    /// network is gone, without a DTLS close or anything else said.
    silenced: AtomicBool,
    /// Outgoing RTP packets still to be followed on the wire by a replay
    /// and a forged copy (see [`SocketTap::forge_next`]).
    forge_plan: Mutex<usize>,
    /// The same for outgoing SRTCP datagrams (see
    /// [`SocketTap::forge_next_rtcp`]).
    forge_rtcp_plan: Mutex<usize>,
    /// `(replays, forgeries)` sent so far.
    forged: Mutex<(u64, u64)>,
}

impl SocketTap {
    /// Times `(ssrc, seq)` arrived on the wire (dropped ones not counted).
    pub fn rtp_arrivals(&self, ssrc: u32, seq: u16) -> u32 {
        self.rtp_seen
            .lock()
            .unwrap()
            .get(&(ssrc, seq))
            .copied()
            .unwrap_or(0)
    }

    /// Drops the next `n` RTP packets carrying `ssrc`.
    pub fn drop_next(&self, ssrc: u32, n: usize) {
        self.dropped.lock().unwrap().clear();
        *self.drop_plan.lock().unwrap() = Some((ssrc, n));
    }

    /// Cuts the peer connection's network: nothing is sent or received
    /// any more (the WebSocket is not affected).
    pub fn silence(&self) {
        self.silenced.store(true, Ordering::SeqCst);
    }

    /// Follows each of the next `n` outgoing RTP packets with, from the
    /// same socket, an exact replay and a copy whose last byte (inside the
    /// authentication tag) is flipped: what an attacker on the path, or a
    /// duplicating network, could send. The receiver must drop both.
    pub fn forge_next(&self, n: usize) {
        *self.forge_plan.lock().unwrap() = n;
    }

    /// As [`SocketTap::forge_next`], for the next `n` outgoing SRTCP
    /// datagrams (receiver reports, feedback).
    pub fn forge_next_rtcp(&self, n: usize) {
        *self.forge_rtcp_plan.lock().unwrap() = n;
    }

    /// `(replays, forgeries)` sent by [`SocketTap::forge_next`] and
    /// [`SocketTap::forge_next_rtcp`].
    pub fn forged(&self) -> (u64, u64) {
        *self.forged.lock().unwrap()
    }

    /// Sends the replay and forgery planned for an outgoing datagram.
    fn forge_after(&self, io: &tokio::net::UdpSocket, d: &[u8], to: SocketAddr) {
        // RTP or RTCP: version 2, and room for an SSRC.
        if d.len() < 12 || !(128..=191).contains(&d[0]) {
            return;
        }
        let plan = if matches!(d[1], 192..=223) {
            &self.forge_rtcp_plan
        } else {
            &self.forge_plan
        };
        {
            let mut plan = plan.lock().unwrap();
            if *plan == 0 {
                return;
            }
            *plan -= 1;
        }
        let mut forged = d.to_vec();
        if let Some(last) = forged.last_mut() {
            *last ^= 0x5a;
        }
        let replayed = io.try_send_to(d, to).is_ok() as u64;
        let forgery = io.try_send_to(&forged, to).is_ok() as u64;
        let mut count = self.forged.lock().unwrap();
        count.0 += replayed;
        count.1 += forgery;
    }

    /// Sequence numbers dropped since the last [`SocketTap::drop_next`].
    pub fn dropped(&self) -> Vec<u16> {
        self.dropped.lock().unwrap().clone()
    }

    /// Records the datagram; true when it must be dropped.
    fn inspect(&self, d: &[u8]) -> bool {
        if self.silenced.load(Ordering::SeqCst) {
            return true;
        }
        let Some((ssrc, seq)) = rtp_id(d) else {
            return false;
        };
        {
            let mut plan = self.drop_plan.lock().unwrap();
            if let Some((s, n)) = plan.as_mut() {
                if *s == ssrc && *n > 0 {
                    *n -= 1;
                    self.dropped.lock().unwrap().push(seq);
                    return true;
                }
            }
        }
        *self
            .rtp_seen
            .lock()
            .unwrap()
            .entry((ssrc, seq))
            .or_insert(0) += 1;
        false
    }
}

/// A [`SocketTap`] sees each datagram: one per receive, no GSO/GRO.
impl UdpWrap for Arc<SocketTap> {
    fn wrap(
        &self,
        io: tokio::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn webrtc::runtime::AsyncUdpSocket>> {
        Ok(Arc::new(TapSocket {
            io,
            tap: Arc::clone(self),
        }))
    }
}

/// The tokio runtime, with every UDP socket passed through a [`UdpWrap`].
#[derive(Debug)]
pub struct WrappedUdpRuntime {
    inner: webrtc::runtime::TokioRuntime,
    wrap: Arc<dyn UdpWrap>,
}

impl WrappedUdpRuntime {
    pub fn new(wrap: Arc<dyn UdpWrap>) -> WrappedUdpRuntime {
        WrappedUdpRuntime {
            inner: webrtc::runtime::TokioRuntime,
            wrap,
        }
    }
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl webrtc::runtime::Runtime for WrappedUdpRuntime {
    fn spawn(
        &self,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn webrtc::runtime::JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn webrtc::runtime::JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn webrtc::runtime::AsyncUdpSocket>> {
        socket.set_nonblocking(true)?;
        self.wrap.wrap(tokio::net::UdpSocket::from_std(socket)?)
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> std::io::Result<Arc<dyn webrtc::runtime::AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> BoxFut<'a, std::io::Result<Arc<dyn webrtc::runtime::AsyncTcpStream>>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(&'a self, host: &'a str) -> BoxFut<'a, std::io::Result<Vec<SocketAddr>>> {
        self.inner.resolve_host(host)
    }

    fn sleep(&self, duration: Duration) -> BoxFut<'static, ()> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn webrtc::runtime::AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn name(&self) -> &'static str {
        "tokio-wrapped-udp"
    }
}

#[derive(Debug)]
struct TapSocket {
    io: tokio::net::UdpSocket,
    tap: Arc<SocketTap>,
}

impl webrtc::runtime::AsyncUdpSocket for TapSocket {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn poll_send(
        &self,
        cx: &mut std::task::Context<'_>,
        transmit: &webrtc::runtime::Transmit<'_>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.tap.silenced.load(Ordering::SeqCst) {
            return std::task::Poll::Ready(Ok(transmit.contents.len()));
        }
        let sent = self
            .io
            .poll_send_to(cx, transmit.contents, transmit.destination);
        if matches!(sent, std::task::Poll::Ready(Ok(_))) {
            self.tap
                .forge_after(&self.io, transmit.contents, transmit.destination);
        }
        sent
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [webrtc::runtime::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let local_ip = self.io.local_addr().ok().map(|a| a.ip());
        poll_recv_one(&self.io, cx, bufs, meta, local_ip, |buf| {
            let (n, from) = self.io.try_recv_from(buf)?;
            Ok((!self.tap.inspect(&buf[..n])).then_some((n, from)))
        })
    }
}

/// `poll_recv` for a wrapped socket, one datagram per call (no GSO/GRO):
/// waits until `io` is readable, then `recv` reads into the first buffer and
/// says how much from whom, or `None` to drop the datagram and read on.
/// `local_ip` is the socket's (passed in: callers may cache it).
pub fn poll_recv_one(
    io: &tokio::net::UdpSocket,
    cx: &mut std::task::Context<'_>,
    bufs: &mut [std::io::IoSliceMut<'_>],
    meta: &mut [webrtc::runtime::RecvMeta],
    local_ip: Option<std::net::IpAddr>,
    mut recv: impl FnMut(&mut [u8]) -> std::io::Result<Option<(usize, SocketAddr)>>,
) -> std::task::Poll<std::io::Result<usize>> {
    use std::task::Poll;
    if bufs.is_empty() || meta.is_empty() {
        return Poll::Ready(Ok(0));
    }
    loop {
        match io.poll_recv_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        match recv(&mut bufs[0]) {
            Ok(None) => continue,
            Ok(Some((n, from))) => {
                let mut m = webrtc::runtime::RecvMeta::default();
                m.addr = from;
                m.len = n;
                m.stride = n.max(1);
                m.dst_ip = local_ip;
                meta[0] = m;
                return Poll::Ready(Ok(1));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}
