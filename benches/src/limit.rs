//! The machine's practical ceiling: a minimal SFU that forwards the same
//! packet rates over plain UDP with SRTP and nothing else (no ICE, DTLS,
//! RTCP, interceptors or negotiation). Per packet it does what any SFU must:
//! one `recv_from`, one SRTP unprotect, then per subscriber an SSRC and
//! sequence-number rewrite, one SRTP protect and one `send_to`. One thread,
//! like one Noom shard. Keys are fixed (no DTLS): both sides know them.
//!
//! The server runs as a separate process (`noom-load limit-server`) so its
//! CPU time is read from `/proc/<pid>/stat` exactly like Noom's or Janus'.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use rtc::rtp;
use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use noom_sfu::send_batch::SendBatch;

use crate::media::{
    audio_payload, random_u32, read_stamp, rtp_id, video_payload, FrameSchedule, MediaProfile,
    Metrics, SendStamps, AUDIO_INTERVAL,
};

/// What webrtc-rs negotiates between two `rtc` endpoints (Noom and the
/// load generator's client): AEAD AES-128-GCM.
pub const PROFILE: ProtectionProfile = ProtectionProfile::AeadAes128Gcm;
const MASTER_KEY: [u8; 16] = *b"noom-bench-key!!";
const MASTER_SALT: [u8; 12] = *b"noom-salt-12";
const REGISTER: &[u8; 4] = b"NLIM";
const REGISTERED: &[u8; 4] = b"NLOK";
const AUDIO_PT: u8 = 111;
const VIDEO_PT: u8 = 96;

pub fn srtp_context() -> Result<Context> {
    let provider = rtc::crypto::default_provider().map_err(|e| anyhow!("crypto: {e:?}"))?;
    Context::new(
        &MASTER_KEY,
        &MASTER_SALT,
        PROFILE,
        None,
        None,
        provider.crypto(),
    )
    .map_err(|e| anyhow!("srtp context: {e}"))
}

fn registration(publisher: bool, room: u32, member: u32) -> Vec<u8> {
    let mut m = REGISTER.to_vec();
    m.push(if publisher { b'P' } else { b'S' });
    m.extend_from_slice(&room.to_be_bytes());
    m.extend_from_slice(&member.to_be_bytes());
    m
}

struct Sub {
    addr: SocketAddr,
    member: u32,
    ctx: Context,
    /// source SSRC -> (our SSRC, sequence offset)
    streams: HashMap<u32, (u32, u16)>,
}

struct Pub {
    room: u32,
    member: u32,
    ctx: Context,
}

/// The limit server's loop (never returns but on a socket error). Prints
/// `port N` on stdout once bound.
pub fn serve(bind: SocketAddr) -> Result<()> {
    let socket = std::net::UdpSocket::bind(bind)?;
    println!("port {}", socket.local_addr()?.port());
    use std::io::Write as _;
    std::io::stdout().flush()?;
    let mut pubs: HashMap<SocketAddr, Pub> = HashMap::new();
    let mut rooms: HashMap<u32, Vec<Sub>> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    let fd = socket.as_raw_fd();
    let mut batch = SendBatch::default();
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        let data = &buf[..n];
        if data.len() == 13 && &data[..4] == REGISTER {
            let room = u32::from_be_bytes([data[5], data[6], data[7], data[8]]);
            let member = u32::from_be_bytes([data[9], data[10], data[11], data[12]]);
            if data[4] == b'P' {
                pubs.entry(from).or_insert(Pub {
                    room,
                    member,
                    ctx: srtp_context()?,
                });
            } else {
                let subs = rooms.entry(room).or_default();
                if !subs.iter().any(|s| s.addr == from) {
                    subs.push(Sub {
                        addr: from,
                        member,
                        ctx: srtp_context()?,
                        streams: HashMap::new(),
                    });
                }
            }
            let _ = socket.send_to(REGISTERED, from);
            continue;
        }
        let Some(publisher) = pubs.get_mut(&from) else {
            continue;
        };
        let Ok(mut plain) = publisher.ctx.decrypt_rtp(data) else {
            continue;
        };
        let Ok(mut header) = rtp::Header::unmarshal(&mut &plain[..]) else {
            continue;
        };
        let Some(subs) = rooms.get_mut(&publisher.room) else {
            continue;
        };
        let source = header.ssrc;
        let seq = header.sequence_number;
        for sub in subs.iter_mut().filter(|s| s.member != publisher.member) {
            let &mut (ssrc, offset) = sub
                .streams
                .entry(source)
                .or_insert_with(|| (random_u32(), random_u32() as u16));
            header.ssrc = ssrc;
            header.sequence_number = seq.wrapping_add(offset);
            plain[2..4].copy_from_slice(&header.sequence_number.to_be_bytes());
            plain[8..12].copy_from_slice(&ssrc.to_be_bytes());
            if let Ok(out) = sub.ctx.encrypt_rtp_with_header(&plain, &header) {
                batch.push(|_| fd, 0, sub.addr, &out);
            }
        }
        // One system call per fan-out, as Noom's shards do.
        batch.flush(fd);
    }
}

/// The limit server process (this binary, `limit-server`).
pub struct LimitServer {
    child: Child,
    pub addr: SocketAddr,
}

impl LimitServer {
    pub fn start() -> Result<LimitServer> {
        use std::io::BufRead as _;
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("limit-server")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the limit server")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let port: u16 = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("limit server said {line:?}"))?;
        Ok(LimitServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LimitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn register(socket: &UdpSocket, server: SocketAddr, msg: &[u8]) -> Result<()> {
    let mut buf = [0u8; 64];
    for _ in 0..20 {
        socket.send_to(msg, server).await?;
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(250), socket.recv_from(&mut buf)).await
        {
            if &buf[..n] == REGISTERED {
                return Ok(());
            }
        }
    }
    bail!("the limit server did not acknowledge a registration")
}

/// A limit-mode participant: optionally publishing, optionally receiving.
pub struct LimitClient {
    tasks: Vec<JoinHandle<()>>,
    received: Arc<std::sync::atomic::AtomicU64>,
}

impl LimitClient {
    #[allow(clippy::too_many_arguments)]
    pub async fn join(
        server: SocketAddr,
        room: u32,
        member: u32,
        publish: bool,
        receive: bool,
        fanout: u64,
        profile: MediaProfile,
        metrics: Arc<Metrics>,
    ) -> Result<LimitClient> {
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        if receive {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            crate::stamp::enable(socket.as_raw_fd())?;
            let join_at = Instant::now();
            register(&socket, server, &registration(false, room, member)).await?;
            let metrics = Arc::clone(&metrics);
            let received = Arc::clone(&received);
            tasks.push(tokio::spawn(async move {
                let Ok(mut ctx) = srtp_context() else { return };
                let mut buf = vec![0u8; 2048];
                let mut first = true;
                let fd = socket.as_raw_fd();
                loop {
                    if socket.readable().await.is_err() {
                        return;
                    }
                    let (n, arrived_ns) = match socket.try_io(tokio::io::Interest::READABLE, || {
                        crate::stamp::recv(fd, &mut buf)
                    }) {
                        Ok((n, _, stamp)) => (n, stamp.unwrap_or_else(crate::stamp::now_ns)),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(_) => return,
                    };
                    if rtp_id(&buf[..n]).is_none() {
                        continue;
                    }
                    let Ok(plain) = ctx.decrypt_rtp(&buf[..n]) else {
                        continue;
                    };
                    let Ok(header) = rtp::Header::unmarshal(&mut &plain[..]) else {
                        continue;
                    };
                    let payload = &plain[header.marshal_size().min(plain.len())..];
                    let sent =
                        read_stamp(payload).and_then(|(s, q)| SendStamps::global().get(s, q));
                    received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    metrics.on_received(header.payload_type == VIDEO_PT, sent, Some(arrived_ns));
                    if first {
                        first = false;
                        metrics.on_first_packet(join_at.elapsed());
                    }
                }
            }));
        }
        if publish {
            let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
            register(&socket, server, &registration(true, room, member)).await?;
            let ctx = Arc::new(std::sync::Mutex::new(srtp_context()?));
            if profile.audio {
                tasks.push(tokio::spawn(publish_stream(
                    Arc::clone(&socket),
                    server,
                    Arc::clone(&ctx),
                    Arc::clone(&metrics),
                    fanout,
                    profile,
                    false,
                )));
            }
            tasks.push(tokio::spawn(publish_stream(
                socket, server, ctx, metrics, fanout, profile, true,
            )));
        }
        Ok(LimitClient { tasks, received })
    }

    pub fn packets_received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn close(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

async fn publish_stream(
    socket: Arc<UdpSocket>,
    server: SocketAddr,
    ctx: Arc<std::sync::Mutex<Context>>,
    metrics: Arc<Metrics>,
    fanout: u64,
    profile: MediaProfile,
    video: bool,
) {
    let interval = if video {
        Duration::from_secs_f64(1.0 / profile.fps.max(1) as f64)
    } else {
        AUDIO_INTERVAL
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ssrc = random_u32();
    let mut seq = (random_u32() & 0x7fff) as u16;
    let mut ts = random_u32();
    let mut schedule = FrameSchedule::new(&profile);
    let size = profile.video_payload();
    loop {
        tick.tick().await;
        let (key, count) = if video {
            ts = ts.wrapping_add(90_000 / profile.fps.max(1));
            schedule.next_frame()
        } else {
            ts = ts.wrapping_add(960);
            (false, 1)
        };
        for i in 0..count {
            let payload = if video {
                video_payload(size, i == 0, key, ssrc, seq)
            } else {
                audio_payload(ssrc, seq)
            };
            let pkt = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: video && i + 1 == count,
                    payload_type: if video { VIDEO_PT } else { AUDIO_PT },
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            };
            let Ok(plain) = pkt.marshal() else { continue };
            let Ok(out) = ctx.lock().unwrap().encrypt_rtp(&plain) else {
                continue;
            };
            SendStamps::global().record(ssrc, seq, crate::stamp::now_ns());
            if socket.send_to(&out, server).await.is_ok() {
                metrics.on_sent(fanout);
            }
            seq = seq.wrapping_add(1);
        }
    }
}
