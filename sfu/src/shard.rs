//! One shard: a thread, its UDP sockets (one per bind address, all on the
//! shard's port), and an event loop that feeds datagrams, commands and
//! timeouts to the [`Router`].

use crate::arrival_time;
use crate::command::Command;
use crate::router::Router;
use crate::send_batch::SendBatch;
use crate::settings::MediaSettings;
use crate::stats::{add, ShardStats};
use crate::tcp_media::{self, TcpMedia};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

const WAKER: Token = Token(usize::MAX);
/// Commands are rare (joins, answers, candidates); a full queue means the
/// shard is stuck, and the control plane gets an error instead of waiting.
const COMMAND_QUEUE: usize = 4096;
/// Largest datagram we accept; WebRTC packets stay under the path MTU.
const MAX_DATAGRAM: usize = 2048;
/// Upper bound on one wait, so a shard notices a stop even with no traffic.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Kernel buffer asked for each media socket, both directions. The default
/// (about 208 KiB) holds some 7 ms of a busy shard's input: a shard thread
/// that loses its core for longer (a burst of keyframes, another process
/// scheduled) lost packets in the socket. The kernel caps the request at
/// `net.core.rmem_max` / `wmem_max` (see docs/admin.md); the size obtained
/// is logged.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

enum Message {
    Command(Command),
    Stop,
}

/// The control plane's handle on one shard.
pub struct ShardHandle {
    index: usize,
    tx: SyncSender<Message>,
    waker: Arc<Waker>,
    stats: Arc<ShardStats>,
    local_addrs: Vec<SocketAddr>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl ShardHandle {
    pub fn index(&self) -> usize {
        self.index
    }

    /// The addresses this shard's sockets are bound to.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// Queues a command. Fails (returning it) only when the shard is gone or
    /// its queue is full.
    pub fn send(&self, command: Command) -> Result<(), Command> {
        match self.tx.try_send(Message::Command(command)) {
            Ok(()) => {
                let _ = self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(Message::Command(c)))
            | Err(TrySendError::Disconnected(Message::Command(c))) => Err(c),
            Err(_) => unreachable!("only commands are sent here"),
        }
    }

    pub(crate) fn request_stop(&self) {
        // A blocking send: stopping must not be lost to a full queue.
        let _ = self.tx.send(Message::Stop);
        let _ = self.waker.wake();
    }

    pub(crate) fn join(&self) {
        let thread = self.thread.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

struct BoundSocket {
    socket: UdpSocket,
}

/// The candidate address announced for a socket bound to `bound`.
fn announced_addr(bound: SocketAddr, public_ip: Option<IpAddr>) -> SocketAddr {
    match public_ip {
        Some(ip) if !bound.ip().is_loopback() => SocketAddr::new(ip, bound.port()),
        _ => bound,
    }
}

/// Binds the shard's sockets and starts its thread.
pub fn spawn(index: usize, settings: &MediaSettings) -> io::Result<ShardHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let mut sockets = Vec::new();
    let mut local_addrs = Vec::new();
    let mut tcp = TcpMedia::default();
    let mut ice_tcp = settings.ice_tcp;
    // With port 0 the first socket picks a port and the others reuse it, so a
    // shard is one port whichever addresses it listens on.
    let mut port = if settings.port == 0 {
        0
    } else {
        settings.port.checked_add(index as u16).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "media port range overflows")
        })?
    };
    for &ip in &settings.bind_ips {
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(ip, port)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("binding UDP {ip}:{port} for shard {index}: {e}"),
            )
        })?;
        std_socket.set_nonblocking(true)?;
        grow_buffers(&std_socket);
        if let Err(err) = arrival_time::enable(&std_socket) {
            tracing::warn!(%err, "no kernel receive timestamps: publisher feedback uses read times");
        }
        let bound = std_socket.local_addr()?;
        port = bound.port();
        let mut socket = UdpSocket::from_std(std_socket);
        poll.registry()
            .register(&mut socket, Token(sockets.len()), Interest::READABLE)?;
        local_addrs.push(bound);
        sockets.push(BoundSocket { socket });
        if ice_tcp {
            match tcp.listen(poll.registry(), bound) {
                Ok(()) => {}
                // An ephemeral UDP port (tests) may already be taken on TCP
                // by some outgoing connection: go without ICE-TCP on this
                // shard rather than fail. A configured port must work.
                Err(err) if settings.port == 0 => {
                    tracing::warn!(%err, shard = index, "no ICE-TCP on this shard");
                    ice_tcp = false;
                    tcp = TcpMedia::default();
                }
                Err(err) => return Err(err),
            }
        }
    }
    let announced = local_addrs
        .iter()
        .map(|&a| announced_addr(a, settings.public_ip))
        .collect();
    let stats = Arc::new(ShardStats::default());
    let (tx, rx) = sync_channel(COMMAND_QUEUE);
    let settings = crate::settings::MediaSettings {
        ice_tcp,
        ..settings.clone()
    };
    let router = Router::new(index, announced, &settings, stats.clone());
    let shard = Shard {
        poll,
        sockets,
        tcp,
        rx,
        router,
        stats: stats.clone(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("noom-shard-{index}"))
        .spawn(move || shard.run())?;
    tracing::info!(shard = index, addrs = ?local_addrs, "media shard listening");
    Ok(ShardHandle {
        index,
        tx,
        waker,
        stats,
        local_addrs,
        thread: std::sync::Mutex::new(Some(thread)),
    })
}

struct Shard {
    poll: Poll,
    sockets: Vec<BoundSocket>,
    tcp: TcpMedia,
    rx: Receiver<Message>,
    router: Router,
    stats: Arc<ShardStats>,
}

impl Shard {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut received = arrival_time::RecvBatch::new(MAX_DATAGRAM);
        let mut batch = SendBatch::default();
        loop {
            let now = Instant::now();
            let wait = self
                .router
                .next_deadline()
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(MAX_WAIT)
                .min(MAX_WAIT);
            if let Err(err) = self.poll.poll(&mut events, Some(wait)) {
                if err.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(%err, "shard poll failed");
                    return;
                }
            }
            let started = Instant::now();
            let Shard {
                poll,
                sockets,
                tcp,
                rx,
                router,
                stats,
            } = &mut self;
            let registry = poll.registry();
            let mut out = Outputs {
                sockets,
                tcp,
                registry,
                batch: &mut batch,
            };
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    continue;
                }
                if TcpMedia::owns(token) {
                    let now = Instant::now();
                    let arrivals = out.tcp.on_event(registry, token, event.is_writable(), now);
                    for packet in arrivals.iter().flat_map(|a| a.packets.iter()) {
                        let a = arrivals.as_ref().expect("iterating its packets");
                        out.sending(|send| {
                            router.handle_datagram(a.socket, a.peer, packet, now, send);
                            router.flush(now, send);
                        });
                    }
                    continue;
                }
                let index = token.0;
                loop {
                    match received.recv(&sockets[index].socket) {
                        Ok(count) => {
                            for i in 0..count {
                                let (datagram, from, stamp) = received.get(i);
                                let now = Instant::now();
                                let arrival = arrival_time::arrival(stamp, SystemTime::now(), now);
                                router.set_datagram_arrival(Some(arrival));
                                out.sending(|send| {
                                    router.handle_datagram(index, from, datagram, now, send);
                                    router.flush(now, send);
                                });
                                router.set_datagram_arrival(None);
                            }
                            // Short: the socket is empty (see `RecvBatch`).
                            if count < arrival_time::RECV_BATCH {
                                break;
                            }
                        }
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                        Err(err) => {
                            // ICMP errors surface here on Linux; they are per
                            // remote, never fatal for the shard.
                            tracing::trace!(%err, "recvmmsg");
                        }
                    }
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(Message::Command(command)) => {
                        out.sending(|send| router.handle_command(command, Instant::now(), send));
                    }
                    Ok(Message::Stop) | Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        out.sending(|send| router.close_all(Instant::now(), send));
                        return;
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                }
            }
            out.sending(|send| router.handle_timeouts(Instant::now(), send));
            out.tcp.sweep(registry, Instant::now());
            add(&stats.tcp_dropped, std::mem::take(&mut out.tcp.dropped));
            crate::stats::set(&stats.tcp_connections, out.tcp.connection_count() as u64);
            add(
                &stats.loop_busy_micros,
                started.elapsed().as_micros() as u64,
            );
        }
    }
}

/// Where a shard's output goes: UDP datagrams into the send batch, packets
/// for ICE-TCP routes onto their connections.
struct Outputs<'a> {
    sockets: &'a [BoundSocket],
    tcp: &'a mut TcpMedia,
    registry: &'a mio::Registry,
    batch: &'a mut SendBatch,
}

impl Outputs<'_> {
    /// Runs `f` with a `Send` that queues datagrams in the batch, then sends
    /// them all (one `sendmmsg` per socket and [`crate::send_batch::BATCH`]).
    fn sending<R>(&mut self, f: impl FnOnce(crate::router::Send<'_>) -> R) -> R {
        let sockets = self.sockets;
        let fd_of = |i: usize| sockets[i].socket.as_raw_fd();
        let (batch, tcp, registry) = (&mut *self.batch, &mut *self.tcp, self.registry);
        let result = {
            let mut send = |socket: usize, to: SocketAddr, data: &[u8]| {
                if tcp_media::is_tcp(socket) {
                    tcp.send(registry, socket, to, data);
                } else {
                    batch.push(fd_of, socket, to, data);
                }
            };
            f(&mut send)
        };
        if !batch.is_empty() {
            batch.flush(fd_of(batch.socket()));
        }
        result
    }
}

/// Asks for [`SOCKET_BUFFER_BYTES`] in both directions; what the kernel
/// grants (capped by its limits) is enough to go on with either way.
fn grow_buffers(socket: &std::net::UdpSocket) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    let requested = SOCKET_BUFFER_BYTES;
    let _ = setsockopt(socket, sockopt::RcvBuf, &requested);
    let _ = setsockopt(socket, sockopt::SndBuf, &requested);
    let granted = (
        getsockopt(socket, sockopt::RcvBuf).unwrap_or(0),
        getsockopt(socket, sockopt::SndBuf).unwrap_or(0),
    );
    // Linux reports twice what it reserves for data (bookkeeping included).
    if granted.0 < requested {
        tracing::info!(
            receive = granted.0,
            send = granted.1,
            requested,
            "media socket buffers smaller than asked (raise net.core.rmem_max / wmem_max)"
        );
    } else {
        tracing::debug!(
            receive = granted.0,
            send = granted.1,
            "media socket buffers"
        );
    }
}
