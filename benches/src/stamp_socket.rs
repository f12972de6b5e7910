//! The load generator's UDP socket under `webrtc`: every RTP packet is
//! stamped on its way out (into [`SendStamps`]) and with the kernel's
//! receive time on its way in (into the participant's [`RecvStamps`]).
//! Installed through `noom_client`'s [`UdpWrap`] hook.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;

use noom_client::socket_tap::{poll_recv_one, UdpWrap};

use crate::media::{rtp_id, RecvStamps, SendStamps};

/// Wraps sockets so that they stamp RTP packets.
#[derive(Debug)]
pub struct StampingUdp {
    pub recv: Arc<RecvStamps>,
}

impl UdpWrap for StampingUdp {
    fn wrap(
        &self,
        io: tokio::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn webrtc::runtime::AsyncUdpSocket>> {
        crate::stamp::enable(io.as_raw_fd())?;
        let local_ip = io.local_addr().ok().map(|a| a.ip());
        Ok(Arc::new(StampingSocket {
            io,
            recv: Arc::clone(&self.recv),
            local_ip,
        }))
    }
}

#[derive(Debug)]
struct StampingSocket {
    io: tokio::net::UdpSocket,
    recv: Arc<RecvStamps>,
    local_ip: Option<IpAddr>,
}

impl webrtc::runtime::AsyncUdpSocket for StampingSocket {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn poll_send(
        &self,
        cx: &mut std::task::Context<'_>,
        transmit: &webrtc::runtime::Transmit<'_>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        // Stamped before the system call: a receiver in this process may
        // look the stamp up before `send_to` has even returned.
        if let Some((ssrc, seq)) = rtp_id(transmit.contents) {
            SendStamps::global().record(ssrc, seq, crate::stamp::now_ns());
        }
        self.io
            .poll_send_to(cx, transmit.contents, transmit.destination)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [webrtc::runtime::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let fd = self.io.as_raw_fd();
        poll_recv_one(&self.io, cx, bufs, meta, self.local_ip, |buf| {
            let (n, from, stamp) = self.io.try_io(tokio::io::Interest::READABLE, || {
                crate::stamp::recv(fd, buf)
            })?;
            if let Some((ssrc, seq)) = rtp_id(&buf[..n]) {
                let at = stamp.unwrap_or_else(crate::stamp::now_ns);
                self.recv.record(ssrc, seq, at);
            }
            Ok(Some((n, from)))
        })
    }
}
