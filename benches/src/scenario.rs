//! One measured scenario against one target: R rooms, each with P
//! publishers (who also receive each other, as in a meeting) and S
//! receive-only subscribers.
//!
//! Order: start the server (Noom, limit) or take the running one (Janus),
//! read its RSS, join every publisher, then every subscriber, wait until
//! every receiver has media, warm up, then measure for `duration`: packets
//! sent and received, server CPU (utime + stime), latency stamps. RSS is
//! read again at the end of the window.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::janus::{create_room, JanusPublisher, JanusSubscriber};
use crate::layer_counts::LayerTotals;
use crate::limit::{LimitClient, LimitServer};
use crate::media::{quantile, MediaProfile, Metrics};
use crate::noom::{NoomParticipant, NoomServer};
use crate::procfs;
use noom_client::simulcast_publish::LAYERS;

#[derive(Debug, Clone)]
pub enum Target {
    /// Start `bin` with this many media shards.
    Noom { bin: PathBuf, shards: usize },
    /// A running Janus: HTTP API address, its pid, our address to bind.
    Janus {
        api: SocketAddr,
        pid: u32,
        bind_ip: IpAddr,
    },
    /// The UDP + SRTP fan-out of `limit.rs`.
    Limit,
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Noom { .. } => "noom",
            Target::Janus { .. } => "janus",
            Target::Limit => "limit",
        }
    }

    pub fn shards(&self) -> usize {
        match self {
            Target::Noom { shards, .. } => *shards,
            _ => 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub rooms: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub profile: MediaProfile,
    /// Noom only: publishers send three simulcast encodings and each
    /// receiver asks (`layout`) for one of them, q, h, f in turn.
    pub simulcast: bool,
}

impl Scenario {
    pub fn participants(&self) -> usize {
        self.rooms * (self.publishers + self.subscribers)
    }

    /// Receivers of each published packet.
    pub fn fanout(&self) -> u64 {
        (self.publishers.saturating_sub(1) + self.subscribers) as u64
    }

    /// Forwarded packets per second the scenario asks of the server.
    pub fn offered_pps(&self) -> f64 {
        if self.simulcast {
            // Receiver k of a room gets encoding k mod 3 of each publisher
            // (publishers count as receivers 0..P-1 of each other).
            let audio = if self.profile.audio { 50.0 } else { 0.0 };
            let video = |k: usize| LAYERS[k % LAYERS.len()].packets_per_second(&self.profile);
            let mut per_room = 0.0;
            for p in 0..self.publishers {
                for k in (0..self.publishers).filter(|&k| k != p) {
                    per_room += video(k) + audio;
                }
                for s in 0..self.subscribers {
                    per_room += video(s) + audio;
                }
            }
            return self.rooms as f64 * per_room;
        }
        self.rooms as f64
            * self.publishers as f64
            * self.fanout() as f64
            * self.profile.packets_per_second()
    }
}

enum Handle {
    Noom(NoomParticipant),
    JanusPub(JanusPublisher),
    JanusSub(JanusSubscriber),
    Limit(LimitClient),
}

impl Handle {
    fn received(&self) -> u64 {
        match self {
            Handle::Noom(p) => p.observer.packets_received(),
            Handle::JanusPub(p) => p.peer.packets_received(),
            Handle::JanusSub(s) => s.peer.packets_received(),
            Handle::Limit(c) => c.packets_received(),
        }
    }

    fn describe(&self) -> String {
        let peer = match self {
            Handle::Noom(p) => return p.describe(),
            Handle::JanusPub(p) => &p.peer,
            Handle::JanusSub(s) => &s.peer,
            Handle::Limit(_) => return "limit client".to_owned(),
        };
        format!("{} ({})", peer.label, peer.state())
    }

    async fn close(self) {
        match self {
            Handle::Noom(p) => p.close().await,
            Handle::JanusPub(p) => p.close().await,
            Handle::JanusSub(s) => s.close().await,
            Handle::Limit(c) => c.close(),
        }
    }
}

/// Simulcast: receiver k of each room (subscribers by index; publishers,
/// who receive each other, by theirs) asks for encoding k mod 3 of every
/// publisher with a `layout` of that encoding's size, so all three are
/// forwarded. Roles come from the labels `r<room>p<k>` / `r<room>s<k>`.
async fn ask_for_layers(handles: &mut [Handle]) -> Result<()> {
    fn role(label: &str) -> Option<(&str, bool, usize)> {
        let at = label.rfind(['p', 's'])?;
        let k = label[at + 1..].parse().ok()?;
        Some((&label[..at], &label[at..at + 1] == "p", k))
    }
    let mut publishers: Vec<(String, String)> = Vec::new(); // (room, id)
    for h in handles.iter() {
        if let Handle::Noom(p) = h {
            if let (Some((room, true, _)), Some(id)) = (role(&p.client.label), &p.client.id) {
                publishers.push((room.to_owned(), id.clone()));
            }
        }
    }
    for h in handles.iter_mut() {
        let Handle::Noom(p) = h else { continue };
        let Some((room, _, k)) = role(&p.client.label) else {
            continue;
        };
        let layer = LAYERS[k % LAYERS.len()];
        let videos: Vec<Value> = publishers
            .iter()
            .filter(|(r, id)| r == room && Some(id) != p.client.id.as_ref())
            .map(|(_, id)| json!({"participant": id, "width": layer.width, "height": layer.height}))
            .collect();
        if !videos.is_empty() {
            let msg = json!({"type": "layout", "videos": videos});
            p.client.request_ok(msg).await?;
        }
    }
    Ok(())
}

/// A join whose peer connection does not come up is retried (twice).
async fn retrying<T, F, Fut>(metrics: &Metrics, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Ok(t) => return Ok(t),
            Err(e) if tries < 2 => {
                tries += 1;
                metrics.join_retries.fetch_add(1, Ordering::Relaxed);
                metrics.error(format!("join retried: {e:#}"));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Joins run this many at a time.
const JOIN_BATCH: usize = 5;
const MEDIA_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `scenario` against `target`; the result as one JSON object.
pub async fn run(target: &Target, scenario: &Scenario) -> Result<Value> {
    let metrics = Metrics::new();
    let mut noom_server = None;
    let mut limit_server = None;
    let (pid, addr) = match target {
        Target::Noom { bin, shards } => {
            let s = NoomServer::start(bin, *shards).await?;
            let found = (s.pid(), s.http);
            noom_server = Some(s);
            found
        }
        Target::Janus { pid, api, .. } => (*pid, *api),
        Target::Limit => {
            let s = LimitServer::start()?;
            let found = (s.pid(), s.addr);
            limit_server = Some(s);
            found
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = procfs::rss_kib(pid).ok_or_else(|| anyhow!("no process {pid}"))?;

    let result = drive(target, scenario, &metrics, pid, addr, rss_before).await;
    drop(noom_server);
    drop(limit_server);
    result
}

async fn drive(
    target: &Target,
    sc: &Scenario,
    metrics: &Arc<Metrics>,
    pid: u32,
    addr: SocketAddr,
    rss_before: u64,
) -> Result<Value> {
    let mut handles: Vec<Handle> = Vec::new();
    // Indices (into handles) of everything that should receive media.
    let mut receivers: Vec<usize> = Vec::new();
    let fanout = sc.fanout();
    let profile = sc.profile;
    let room_base = 1_000 + (crate::media::random_u32() % 100_000) as u64 * 100;
    let t_join = Instant::now();

    let outcome: Result<()> = async {
        match target {
            Target::Noom { .. } => {
                let http = addr;
                for r in 0..sc.rooms {
                    let room = format!("bench-{room_base}-{r}");
                    for p in 0..sc.publishers {
                        let name = format!("r{r}p{p}");
                        let part = retrying(metrics, || {
                            NoomParticipant::join_connected(
                                http,
                                &room,
                                &name,
                                true,
                                profile,
                                sc.simulcast,
                                Arc::clone(metrics),
                            )
                        })
                        .await?;
                        part.observer.set_fanout(fanout);
                        if sc.publishers > 1 {
                            receivers.push(handles.len());
                        }
                        handles.push(Handle::Noom(part));
                    }
                }
                let subs: Vec<(String, String)> = (0..sc.rooms)
                    .flat_map(|r| {
                        (0..sc.subscribers)
                            .map(move |s| (format!("bench-{room_base}-{r}"), format!("r{r}s{s}")))
                    })
                    .collect();
                for batch in subs.chunks(JOIN_BATCH) {
                    let joins = batch.iter().map(|(room, name)| {
                        retrying(metrics, move || {
                            NoomParticipant::join_connected(
                                http,
                                room,
                                name,
                                false,
                                profile,
                                sc.simulcast,
                                Arc::clone(metrics),
                            )
                        })
                    });
                    for part in join_all(joins).await {
                        receivers.push(handles.len());
                        handles.push(Handle::Noom(part?));
                    }
                }
                if sc.simulcast {
                    ask_for_layers(&mut handles).await?;
                }
            }
            Target::Janus { api, bind_ip, .. } => {
                let mut feeds: Vec<Vec<u64>> = Vec::new();
                for r in 0..sc.rooms {
                    let room = room_base + r as u64;
                    create_room(*api, room, sc.publishers + 1).await?;
                    let mut room_feeds = Vec::new();
                    for p in 0..sc.publishers {
                        let name = format!("r{r}p{p}");
                        let publisher = retrying(metrics, || {
                            JanusPublisher::join(
                                *api,
                                *bind_ip,
                                room,
                                &name,
                                profile,
                                Arc::clone(metrics),
                            )
                        })
                        .await?;
                        publisher.peer.set_fanout(fanout);
                        room_feeds.push(publisher.feed);
                        handles.push(Handle::JanusPub(publisher));
                    }
                    feeds.push(room_feeds);
                }
                // Publishers' own subscriptions (the others in the room),
                // then the receive-only subscribers (every feed).
                let mut subs: Vec<(u64, String, Vec<u64>)> = Vec::new();
                for (r, room_feeds) in feeds.iter().enumerate() {
                    let room = room_base + r as u64;
                    if sc.publishers > 1 {
                        for (p, own) in room_feeds.iter().enumerate() {
                            let others: Vec<u64> =
                                room_feeds.iter().copied().filter(|f| f != own).collect();
                            subs.push((room, format!("r{r}p{p}-sub"), others));
                        }
                    }
                    for s in 0..sc.subscribers {
                        subs.push((room, format!("r{r}s{s}"), room_feeds.clone()));
                    }
                }
                for batch in subs.chunks(JOIN_BATCH) {
                    let joins = batch.iter().map(|(room, name, feeds)| {
                        retrying(metrics, move || {
                            JanusSubscriber::join(
                                *api,
                                *bind_ip,
                                *room,
                                name,
                                feeds,
                                profile,
                                Arc::clone(metrics),
                            )
                        })
                    });
                    for sub in join_all(joins).await {
                        receivers.push(handles.len());
                        handles.push(Handle::JanusSub(sub?));
                    }
                }
            }
            Target::Limit => {
                let server = addr;
                let mut member = 1u32;
                for r in 0..sc.rooms {
                    for _ in 0..sc.publishers {
                        let c = LimitClient::join(
                            server,
                            r as u32,
                            member,
                            true,
                            sc.publishers > 1,
                            fanout,
                            profile,
                            Arc::clone(metrics),
                        )
                        .await?;
                        member += 1;
                        if sc.publishers > 1 {
                            receivers.push(handles.len());
                        }
                        handles.push(Handle::Limit(c));
                    }
                    for _ in 0..sc.subscribers {
                        let c = LimitClient::join(
                            server,
                            r as u32,
                            member,
                            false,
                            true,
                            fanout,
                            profile,
                            Arc::clone(metrics),
                        )
                        .await?;
                        member += 1;
                        receivers.push(handles.len());
                        handles.push(Handle::Limit(c));
                    }
                }
            }
        }
        Ok(())
    }
    .await;

    let result = match outcome {
        Ok(()) => {
            measure(
                target, sc, metrics, pid, rss_before, &handles, &receivers, t_join,
            )
            .await
        }
        Err(e) => Err(e),
    };
    for h in handles {
        h.close().await;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    target: &Target,
    sc: &Scenario,
    metrics: &Arc<Metrics>,
    pid: u32,
    rss_before: u64,
    handles: &[Handle],
    receivers: &[usize],
    t_join: Instant,
) -> Result<Value> {
    // Every receiver must have media before the window opens.
    let deadline = Instant::now() + MEDIA_TIMEOUT;
    loop {
        let waiting: Vec<usize> = receivers
            .iter()
            .copied()
            .filter(|&i| handles[i].received() == 0)
            .collect();
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let errors = metrics.errors.lock().unwrap().clone();
            let who: Vec<String> = waiting.iter().map(|&i| handles[i].describe()).collect();
            bail!(
                "{} of {} receivers got no media within {MEDIA_TIMEOUT:?}: {}; errors: {errors:?}",
                waiting.len(),
                receivers.len(),
                who.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let setup = t_join.elapsed();
    tokio::time::sleep(sc.warmup).await;

    hook("NOOM_LOAD_WINDOW_START_CMD", pid);
    let load_at_start = procfs::load_average();
    let cpu0 = procfs::cpu_time(pid).ok_or_else(|| anyhow!("server {pid} is gone"))?;
    let precise0 = procfs::cpu_time_precise(pid).unwrap_or_default();
    let gen0 = procfs::cpu_time(std::process::id()).unwrap_or_default();
    let t0 = Instant::now();
    metrics.measuring.store(true, Ordering::SeqCst);
    tokio::time::sleep(sc.duration).await;
    metrics.measuring.store(false, Ordering::SeqCst);
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = procfs::cpu_time(pid).ok_or_else(|| anyhow!("server {pid} is gone"))?;
    let precise1 = procfs::cpu_time_precise(pid).unwrap_or_default();
    let gen1 = procfs::cpu_time(std::process::id()).unwrap_or_default();
    let rss_after = procfs::rss_kib(pid).unwrap_or(0);
    hook("NOOM_LOAD_WINDOW_END_CMD", pid);

    let sent = metrics.sent.load(Ordering::SeqCst);
    let expected = metrics.expected.load(Ordering::SeqCst);
    let received = metrics.received.load(Ordering::SeqCst);
    let cpu = (cpu1 - cpu0).as_secs_f64();
    let lat = metrics.latencies_us();
    let joins = metrics.join_to_first_ms();
    let mut layers = LayerTotals::default();
    for h in handles {
        if let Handle::Noom(p) = h {
            p.observer.layers.add_to(&mut layers);
        }
    }
    // Simulcast: each receiver gets one encoding, so its video loss comes
    // from the sequence numbers it saw (audio not counted).
    let loss = if sc.simulcast {
        layers.loss()
    } else if expected > 0 {
        (1.0 - received as f64 / expected as f64).max(0.0)
    } else {
        0.0
    };
    let participants = sc.participants();
    let rss_per = (rss_after as f64 - rss_before as f64) / participants.max(1) as f64;
    Ok(json!({
        "target": target.name(),
        "scenario": sc.name,
        "rooms": sc.rooms,
        "publishers": sc.publishers,
        "subscribers": sc.subscribers,
        "fanout": sc.fanout(),
        "participants": participants,
        "shards": target.shards(),
        "duration_s": wall,
        "offered_pps": sc.offered_pps(),
        "sent_pps": sent as f64 / wall,
        "received_pps": received as f64 / wall,
        "expected": expected,
        "received": received,
        "received_video": metrics.received_video.load(Ordering::SeqCst),
        "loss": loss,
        "server_cpu_s": cpu,
        "server_cpu_share": cpu / wall,
        "server_cpu_s_schedstat": precise1.saturating_sub(precise0).as_secs_f64(),
        "packets_per_cpu_s": if cpu > 0.0 { received as f64 / cpu } else { 0.0 },
        "cpu_us_per_packet": if received > 0 { cpu * 1e6 / received as f64 } else { 0.0 },
        "simulcast": sc.simulcast,
        "layer_packets": LayerTotals::by_rid(layers.packets),
        "layer_streams": LayerTotals::by_rid(layers.streams),
        "latency_samples": lat.len(),
        "latency_unstamped": metrics.unstamped.load(Ordering::SeqCst),
        "latency_p50_us": quantile(&lat, 0.5),
        "latency_p99_us": quantile(&lat, 0.99),
        "latency_max_us": lat.last().copied(),
        "join_first_p50_ms": quantile(&joins, 0.5),
        "join_first_max_ms": joins.last().copied(),
        "join_first_samples": joins.len(),
        "setup_s": setup.as_secs_f64(),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_per_participant_kib": rss_per,
        "generator_cpu_s": (gen1 - gen0).as_secs_f64(),
        "load_avg_1m_at_start": load_at_start,
        "errors": metrics.errors.lock().unwrap().len(),
        "join_retries": metrics.join_retries.load(Ordering::SeqCst),
    }))
}

/// Runs the shell command in environment variable `var`, if set, with
/// SERVER_PID set: profiling hooks around the measurement window, e.g.
/// `NOOM_LOAD_WINDOW_START_CMD='callgrind_control -i on $SERVER_PID'`.
fn hook(var: &str, pid: u32) {
    if let Ok(cmd) = std::env::var(var) {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("SERVER_PID", pid.to_string())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("{var}: `{cmd}` failed: {status:?}");
        }
    }
}
