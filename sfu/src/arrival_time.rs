//! When a datagram reached the host: the kernel's receive timestamp
//! (`SO_TIMESTAMPNS`), not the moment the shard got round to reading it.
//!
//! Why: a publisher's bandwidth estimate (Chromium's delay-based GCC) is
//! driven by the arrival times the server reports in its transport-wide
//! congestion feedback. A shard that reads a datagram late (busy with other
//! packets, or descheduled on a loaded machine) made a queue on the
//! server's CPU look like a queue on the network: Chromium cut its estimate
//! on an idle loopback link and switched its top simulcast encodings off.
//! Only the feedback uses this time; everything else keeps the shard's
//! monotonic `now`.

use nix::sys::socket::{
    recvmmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage,
};
use nix::sys::time::TimeSpec;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A kernel timestamp further back than this is not trusted (the wall
/// clock stepped): the read time is used instead.
const MAX_LAG: Duration = Duration::from_secs(1);

/// Asks the kernel to stamp every datagram `socket` receives.
pub fn enable<S: AsFd>(socket: &S) -> io::Result<()> {
    setsockopt(socket, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// Datagrams read per system call (`RecvBatch`).
pub const RECV_BATCH: usize = 16;

/// Reads a socket's waiting datagrams up to `RECV_BATCH` at a time with
/// `recvmmsg`, each with its kernel receive time.
///
/// Why: a shard woken for one datagram read it, then read again only to
/// learn that nothing more was waiting (1,341 of 3,418 reads in 10 s at a
/// fan-out of 2, 2026-12-03). A batch that comes back short says the same
/// without that second call: the socket was empty, and a datagram arriving
/// later wakes the edge-triggered poll again (Linux signals every arrival).
/// Under load, one call reads what several did.
pub struct RecvBatch {
    buffers: Vec<u8>,
    headers: MultiHeaders<SockaddrStorage>,
    received: Vec<(usize, SocketAddr, Option<SystemTime>)>,
    max_datagram: usize,
}

impl RecvBatch {
    /// Room for `RECV_BATCH` datagrams of up to `max_datagram` bytes.
    pub fn new(max_datagram: usize) -> Self {
        RecvBatch {
            buffers: vec![0u8; max_datagram * RECV_BATCH],
            headers: MultiHeaders::preallocate(RECV_BATCH, Some(nix::cmsg_space!(TimeSpec))),
            received: Vec::with_capacity(RECV_BATCH),
            max_datagram,
        }
    }

    /// Reads what is waiting, without blocking: how many datagrams (fewer
    /// than `RECV_BATCH`: the socket is empty now). `WouldBlock` when none
    /// was.
    pub fn recv<S: AsRawFd>(&mut self, socket: &S) -> io::Result<usize> {
        self.received.clear();
        // An array (no drop glue): recvmmsg borrows it for as long as it
        // lives.
        let mut buffers = self.buffers.chunks_exact_mut(self.max_datagram);
        let mut slices: [[IoSliceMut<'_>; 1]; RECV_BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(buffers.next().expect("RECV_BATCH buffers"))]);
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for msg in results {
            let stamp = msg
                .cmsgs()
                .ok()
                .and_then(|mut c| c.find_map(|m| kernel_stamp(&m)));
            // A datagram without a sender (never on UDP) keeps its slot
            // with an unspecified address; the router drops it.
            let from = msg
                .address
                .and_then(|a| socket_addr(&a))
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            self.received.push((msg.bytes, from, stamp));
        }
        Ok(self.received.len())
    }

    /// Datagram `i` of the last `recv`: its bytes, sender and kernel
    /// receive time.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr, Option<SystemTime>) {
        let (len, from, stamp) = self.received[i];
        let start = i * self.max_datagram;
        (&self.buffers[start..start + len], from, stamp)
    }
}

fn kernel_stamp(message: &ControlMessageOwned) -> Option<SystemTime> {
    match message {
        ControlMessageOwned::ScmTimestampns(ts) => {
            let nanos = u64::try_from(ts.tv_sec()).ok()? * 1_000_000_000
                + u64::try_from(ts.tv_nsec()).ok()?;
            Some(UNIX_EPOCH + Duration::from_nanos(nanos))
        }
        _ => None,
    }
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    a.as_sockaddr_in()
        .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
        .or_else(|| {
            a.as_sockaddr_in6()
                .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
        })
}

/// The arrival time on the monotonic clock: `now` (read at `wall_now`)
/// moved back by how long the datagram waited in the socket.
pub fn arrival(stamp: Option<SystemTime>, wall_now: SystemTime, now: Instant) -> Instant {
    let waited = stamp
        .and_then(|s| wall_now.duration_since(s).ok())
        .filter(|w| *w < MAX_LAG)
        .unwrap_or_default();
    now.checked_sub(waited).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_that_waited_is_dated_back_by_its_wait() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(&socket).unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut batch = RecvBatch::new(64);
        // Linux turns arrival stamping on for the whole host a little after
        // the first socket asks (a deferred static key); until then it
        // stamps at read time. So datagrams go until one is stamped at
        // arrival, a bounded number of times: none in 2 s is a failure.
        for _ in 0..40 {
            sender
                .send_to(b"hello", socket.local_addr().unwrap())
                .unwrap();
            // The datagram waits in the socket before it is read.
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(batch.recv(&socket).unwrap(), 1);
            let (datagram, from, stamp) = batch.get(0);
            assert_eq!(
                (datagram, from),
                (&b"hello"[..], sender.local_addr().unwrap())
            );
            let now = Instant::now();
            let waited = now - arrival(stamp, SystemTime::now(), now);
            assert!(waited < MAX_LAG, "waited {waited:?}");
            if waited >= Duration::from_millis(45) {
                return;
            }
        }
        panic!("no datagram was dated back to its arrival");
    }

    /// What waits is read in batches of `RECV_BATCH`, each datagram whole
    /// and in order; the last batch comes back short, then nothing.
    #[test]
    fn waiting_datagrams_are_read_in_batches() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let total = RECV_BATCH + 3;
        for i in 0..total {
            let datagram = vec![i as u8; 10 + i];
            sender
                .send_to(&datagram, socket.local_addr().unwrap())
                .unwrap();
        }
        let mut batch = RecvBatch::new(64);
        let mut seen = Vec::new();
        loop {
            let count = match batch.recv(&socket) {
                Ok(count) => count,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
                Err(err) => panic!("{err}"),
            };
            for i in 0..count {
                let (datagram, from, _) = batch.get(i);
                assert_eq!(from, sender.local_addr().unwrap());
                seen.push(datagram.to_vec());
            }
            if count < RECV_BATCH {
                break;
            }
        }
        let expected: Vec<Vec<u8>> = (0..total).map(|i| vec![i as u8; 10 + i]).collect();
        assert_eq!(seen, expected);
        let nothing = batch.recv(&socket).unwrap_err();
        assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn no_or_implausible_stamps_mean_now() {
        let now = Instant::now();
        let wall = SystemTime::now();
        assert_eq!(arrival(None, wall, now), now);
        // In the future (clock stepped back) or too old (stepped forward).
        assert_eq!(arrival(Some(wall + Duration::from_secs(1)), wall, now), now);
        assert_eq!(arrival(Some(wall - Duration::from_secs(5)), wall, now), now);
        assert_eq!(
            arrival(Some(wall - Duration::from_millis(7)), wall, now),
            now - Duration::from_millis(7)
        );
    }
}
