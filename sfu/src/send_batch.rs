//! Outgoing datagrams of one pass of the shard loop, sent with one
//! `sendmmsg(2)` instead of one `sendto(2)` each.
//!
//! One publisher packet becomes one datagram per subscriber, all produced
//! by the same `Router::flush`; the shard flushes the batch right after, so
//! nothing waits longer than the pass that made it (latency unchanged) and
//! the system-call overhead is paid once per fan-out, not once per
//! subscriber. The kernel still does its per-datagram work.
//!
//! Uses `nix`'s safe `sendmmsg` wrapper; buffers and headers are kept and
//! reused, so a steady state allocates one small slice list per flush.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

/// Datagrams per system call. Small on purpose: the first subscriber's
/// datagram waits for the batch, so 16 bounds that wait while already
/// paying the call overhead once per 16 (measured: 64 was no cheaper).
pub const BATCH: usize = 16;

pub struct SendBatch {
    /// The socket (index into the shard's sockets) every queued datagram
    /// leaves from; a datagram for another socket flushes first.
    socket: usize,
    buffers: Vec<Vec<u8>>,
    addrs: Vec<Option<SockaddrStorage>>,
    len: usize,
    headers: MultiHeaders<SockaddrStorage>,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            socket: 0,
            buffers: vec![Vec::new(); BATCH],
            addrs: vec![None; BATCH],
            len: 0,
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }
}

impl SendBatch {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues one datagram; `fd_of(socket)` is the socket's descriptor,
    /// needed when the batch must go out first (full, or another socket).
    pub fn push(
        &mut self,
        fd_of: impl Fn(usize) -> RawFd,
        socket: usize,
        to: SocketAddr,
        data: &[u8],
    ) {
        if self.len > 0 && (self.len == BATCH || socket != self.socket) {
            self.flush(fd_of(self.socket));
        }
        self.socket = socket;
        let buffer = &mut self.buffers[self.len];
        buffer.clear();
        buffer.extend_from_slice(data);
        self.addrs[self.len] = Some(SockaddrStorage::from(to));
        self.len += 1;
    }

    /// The socket the queued datagrams leave from.
    pub fn socket(&self) -> usize {
        self.socket
    }

    /// Sends everything queued on `fd`. A datagram the kernel refuses (a
    /// full socket buffer, an ICMP error from an earlier send) is dropped,
    /// as a failed `sendto` would be; the rest still go.
    pub fn flush(&mut self, fd: RawFd) {
        let mut start = 0;
        while start < self.len {
            let slices: Vec<[IoSlice<'_>; 1]> = self.buffers[start..self.len]
                .iter()
                .map(|b| [IoSlice::new(b)])
                .collect();
            let sent = sendmmsg(
                fd,
                &mut self.headers,
                &slices,
                &self.addrs[start..self.len],
                [],
                MsgFlags::empty(),
            )
            .map(|results| results.count());
            match sent {
                Ok(n) if n > 0 => start += n,
                Ok(_) => start += 1,
                Err(err) => {
                    tracing::trace!(%err, "sendmmsg");
                    start += 1;
                }
            }
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn every_queued_datagram_arrives_once_in_order() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receivers: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let fd = sender.as_raw_fd();
        let mut batch = SendBatch::default();
        // More than one batch: the push that finds it full flushes it.
        for i in 0..(BATCH + 10) {
            let to = receivers[i % 3].local_addr().unwrap();
            batch.push(|_| fd, 0, to, &(i as u32).to_be_bytes());
        }
        batch.flush(fd);
        assert!(batch.is_empty());
        let mut buf = [0u8; 16];
        for (r, receiver) in receivers.iter().enumerate() {
            receiver.set_nonblocking(true).unwrap();
            let mut got = Vec::new();
            while let Ok(n) = receiver.recv(&mut buf) {
                got.push(u32::from_be_bytes(buf[..n].try_into().unwrap()) as usize);
            }
            let want: Vec<usize> = (0..(BATCH + 10)).filter(|i| i % 3 == r).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_refused_datagram_does_not_stop_the_rest() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = sender.as_raw_fd();
        let mut batch = SendBatch::default();
        // Port 0 cannot be sent to: that message fails with EINVAL.
        batch.push(|_| fd, 0, "127.0.0.1:0".parse().unwrap(), b"lost");
        batch.push(|_| fd, 0, receiver.local_addr().unwrap(), b"kept");
        batch.flush(fd);
        let mut buf = [0u8; 16];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"kept");
    }
}
