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
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
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

/// One datagram: its length, sender and kernel receive time (wall clock),
/// if the kernel gave one.
pub fn recv_from<S: AsRawFd>(
    socket: &S,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SystemTime>)> {
    let mut cmsg = nix::cmsg_space!(TimeSpec);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let stamp = msg.cmsgs().ok().and_then(|mut c| {
        c.find_map(|m| match m {
            ControlMessageOwned::ScmTimestampns(ts) => {
                let nanos = u64::try_from(ts.tv_sec()).ok()? * 1_000_000_000
                    + u64::try_from(ts.tv_nsec()).ok()?;
                Some(UNIX_EPOCH + Duration::from_nanos(nanos))
            }
            _ => None,
        })
    });
    let from = msg
        .address
        .and_then(|a: SockaddrStorage| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                })
        })
        .ok_or_else(|| io::Error::other("datagram without a sender address"))?;
    Ok((msg.bytes, from, stamp))
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
        let mut buf = [0u8; 64];
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
            let (n, from, stamp) = recv_from(&socket, &mut buf).unwrap();
            assert_eq!(
                (&buf[..n], from),
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
