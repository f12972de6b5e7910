//! `noom-load`: RTP forwarding load against Noom, Janus or the UDP+SRTP
//! limit, over real ICE/DTLS/SRTP (see benches/RESULTS.md).
//!
//! ```text
//! noom-load run --target noom --subscribers 10 --json-out results.jsonl
//! noom-load run --target janus --janus-api 10.231.0.1:8088 --janus-pid PID --bind-ip 10.231.0.2 ...
//! noom-load run --target limit --subscribers 10
//! noom-load report results.jsonl --svg chart.svg --md tables.md
//! noom-load --quick            # < 60 s: packets flowed through Noom and the limit
//! noom-load cluster --nodes 3  # several nodes over one Redis (starts them)
//! noom-load cluster --node http://127.0.0.1:8081 --node http://127.0.0.1:8082 --redis 127.0.0.1:6390
//! noom-load cluster --quick    # < 60 s: the cluster figures exist
//! ```

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use noom_benches::cluster::Cluster;
use noom_benches::cluster_bench;
use noom_benches::media::MediaProfile;
use noom_benches::report;
use noom_benches::scenario::{self, Scenario, Target};

#[derive(Parser)]
#[command(
    name = "noom-load",
    about = "RTP forwarding load: Noom, Janus, and the UDP+SRTP limit"
)]
struct Cli {
    /// Under 60 s: 1 publisher -> 2 subscribers through Noom and through
    /// the limit for 3 s each; fails unless packets flowed.
    #[arg(long)]
    quick: bool,
    /// The noom binary for --quick.
    #[arg(long, env = "NOOM_BIN")]
    noom_bin: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetKind {
    Noom,
    Janus,
    Limit,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    #[arg(long, value_enum)]
    target: TargetKind,
    /// Scenario name in the results (default: derived from the shape).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publishers per room (they also receive each other).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Receive-only subscribers per room.
    #[arg(long, default_value_t = 2)]
    subscribers: usize,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of traffic after every receiver has media, before measuring
    /// (Noom withholds video deltas from a new subscriber until the next
    /// live keyframe: keep this above the keyframe interval).
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Video bits per second per publisher.
    #[arg(long, default_value_t = 1_500_000)]
    bitrate: u64,
    /// Bytes per video packet on the wire.
    #[arg(long, default_value_t = 1_200)]
    packet_size: usize,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Seconds between keyframes.
    #[arg(long, default_value_t = 2.0)]
    keyframe_interval: f64,
    #[arg(long)]
    no_audio: bool,
    /// Noom only: every publisher sends three simulcast encodings (rids q,
    /// h, f: 320x180 at 150 kbit/s, 640x360 at 500 kbit/s, 1280x720 at
    /// 1.7 Mbit/s; --bitrate is then unused) and receiver k of a room asks
    /// for encoding k mod 3 of each publisher (a `layout` of its size).
    #[arg(long)]
    simulcast: bool,
    /// Noom: the server binary (started per run).
    #[arg(long, env = "NOOM_BIN", default_value = "target/release/noom")]
    noom_bin: PathBuf,
    /// Noom: media shards.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Janus: HTTP API address (ip:port; the base path is /janus).
    #[arg(long)]
    janus_api: Option<SocketAddr>,
    /// Janus: the server's pid (CPU and RSS are read from /proc).
    #[arg(long)]
    janus_pid: Option<u32>,
    /// Janus: our address for media (a veth address in the namespace).
    #[arg(long)]
    bind_ip: Option<IpAddr>,
    /// Append the result (one JSON line) here.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
struct ClusterArgs {
    /// A running cluster's node (http://IP:PORT), once per node (at least
    /// two); needs --redis. Without --node the bench starts its own cluster.
    #[arg(long = "node")]
    nodes: Vec<String>,
    /// The running cluster's Redis (IP:PORT, no password).
    #[arg(long)]
    redis: Option<SocketAddr>,
    /// The running cluster's `cluster.key_prefix`.
    #[arg(long, default_value = "noom")]
    key_prefix: String,
    /// Nodes to start (without --node).
    #[arg(long = "nodes", default_value_t = 3)]
    start_nodes: usize,
    /// The noom binary for the nodes the bench starts.
    #[arg(long, env = "NOOM_BIN", default_value = "target/release/noom")]
    noom_bin: PathBuf,
    /// Chat messages for the latency figures.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Milliseconds between two chat messages.
    #[arg(long, default_value_t = 10)]
    message_gap_ms: u64,
    /// Subscribers per path for join -> first frame.
    #[arg(long, default_value_t = 10)]
    frame_trials: usize,
    /// Participants idle in rooms while Redis commands are counted.
    #[arg(long, default_value_t = 60)]
    idle_participants: usize,
    /// Participants per room among them.
    #[arg(long, default_value_t = 3)]
    room_size: usize,
    /// Seconds of each Redis counting window (idle cluster, then loaded).
    #[arg(long, default_value_t = 60.0)]
    window: f64,
    /// Under 60 s: 2 nodes, few samples, 5 s windows; fails unless every
    /// figure was measured.
    #[arg(long)]
    quick: bool,
    /// Append the result (one JSON line) here.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one scenario against one target.
    Run(RunArgs),
    /// Tables and chart of a results file.
    Report {
        results: PathBuf,
        /// Write the SVG chart here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Write the Markdown tables here.
        #[arg(long)]
        md: Option<PathBuf>,
    },
    /// Several nodes over one Redis: cross-node chat latency, join -> first
    /// frame via the host node vs another node, Redis commands per
    /// participant per minute.
    Cluster(ClusterArgs),
    /// The limit server process (started by `run --target limit`).
    LimitServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::LimitServer { bind }) = &cli.command {
        return match noom_benches::limit::serve(*bind) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("limit-server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        if cli.quick {
            return quick(cli.noom_bin.clone()).await;
        }
        match cli.command {
            Some(Cmd::Run(args)) => run(args).await,
            Some(Cmd::Report { results, svg, md }) => report_cmd(&results, svg, md),
            Some(Cmd::Cluster(args)) => cluster(args).await,
            Some(Cmd::LimitServer { .. }) => unreachable!(),
            None => bail!("nothing to do: give a subcommand (run, report) or --quick"),
        }
    });
    // Peer connections' background tasks must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("noom-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn scenario_of(a: &RunArgs) -> Scenario {
    let name = a.name.clone().unwrap_or_else(|| {
        let shape = if a.rooms == 1 && a.publishers == 1 {
            format!("fanout-{}", a.subscribers)
        } else {
            format!("rooms{}x{}p{}s", a.rooms, a.publishers, a.subscribers)
        };
        if a.simulcast {
            format!("{shape}-simulcast")
        } else {
            shape
        }
    });
    Scenario {
        name,
        rooms: a.rooms,
        publishers: a.publishers,
        subscribers: a.subscribers,
        duration: Duration::from_secs_f64(a.duration),
        warmup: Duration::from_secs_f64(a.warmup),
        profile: MediaProfile {
            video_bitrate: a.bitrate,
            packet_size: a.packet_size,
            fps: a.fps,
            keyframe_interval: Duration::from_secs_f64(a.keyframe_interval),
            audio: !a.no_audio,
            fixed_frames: None,
        },
        simulcast: a.simulcast,
    }
}

fn target_of(a: &RunArgs) -> Result<Target> {
    if a.simulcast && !matches!(a.target, TargetKind::Noom) {
        bail!("--simulcast is for --target noom only (Janus and the limit get one encoding)");
    }
    Ok(match a.target {
        TargetKind::Noom => Target::Noom {
            bin: a.noom_bin.clone(),
            shards: a.shards,
        },
        TargetKind::Limit => Target::Limit,
        TargetKind::Janus => {
            let (Some(api), Some(pid)) = (a.janus_api, a.janus_pid) else {
                bail!("--target janus needs --janus-api and --janus-pid");
            };
            Target::Janus {
                api,
                pid,
                bind_ip: a.bind_ip.unwrap_or(api.ip()),
            }
        }
    })
}

fn summary(v: &Value) -> String {
    let g = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let layers = if v["simulcast"] == true {
        format!(
            "; simulcast: streams q/h/f {}/{}/{}, packets {}/{}/{}, {:.2} µs CPU per packet",
            v["layer_streams"]["q"],
            v["layer_streams"]["h"],
            v["layer_streams"]["f"],
            v["layer_packets"]["q"],
            v["layer_packets"]["h"],
            v["layer_packets"]["f"],
            g("cpu_us_per_packet"),
        )
    } else {
        String::new()
    };
    format!(
        "{:<5} {:<14} shards={} retries={} recv {:>7.0} pkt/s (offered {:>7.0}) loss {:>5.2}% server {:.3} cores -> {:>7.0} pkt/CPU-s; latency p50 {:.0} µs p99 {:.0} µs; join->first p50 {:.0} ms; RSS/participant {:.0} KiB; load {:.2}{layers}",
        v["target"].as_str().unwrap_or(""),
        v["scenario"].as_str().unwrap_or(""),
        v["shards"],
        v["join_retries"],
        g("received_pps"),
        g("offered_pps"),
        g("loss") * 100.0,
        g("server_cpu_share"),
        g("packets_per_cpu_s"),
        g("latency_p50_us"),
        g("latency_p99_us"),
        g("join_first_p50_ms"),
        g("rss_per_participant_kib"),
        g("load_avg_1m_at_start"),
    )
}

async fn run(args: RunArgs) -> Result<()> {
    let target = target_of(&args)?;
    let sc = scenario_of(&args);
    let v = scenario::run(&target, &sc)
        .await
        .with_context(|| format!("{} {}", target.name(), sc.name))?;
    println!("{}", summary(&v));
    if let Some(path) = &args.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{v}")?;
    }
    Ok(())
}

async fn cluster(args: ClusterArgs) -> Result<()> {
    let plan = if args.quick {
        cluster_bench::Plan {
            messages: 50,
            message_gap: Duration::from_millis(5),
            frame_trials: 1,
            idle_participants: 6,
            room_size: 3,
            window: Duration::from_secs(5),
        }
    } else {
        cluster_bench::Plan {
            messages: args.messages,
            message_gap: Duration::from_millis(args.message_gap_ms),
            frame_trials: args.frame_trials,
            idle_participants: args.idle_participants,
            room_size: args.room_size,
            window: Duration::from_secs_f64(args.window),
        }
    };
    let cluster = if args.nodes.is_empty() {
        let n = if args.quick { 2 } else { args.start_nodes };
        Cluster::start(&args.noom_bin, n).await?
    } else {
        let Some(redis) = args.redis else {
            bail!("--node needs --redis IP:PORT (the cluster's Redis)");
        };
        Cluster::external(&args.nodes, redis, &args.key_prefix)?
    };
    let v = cluster_bench::run(&cluster, &plan).await?;
    println!("{}", cluster_bench::summary(&v));
    if let Some(path) = &args.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{v}")?;
    }
    if args.quick {
        let measured = [
            "/chat/p99_ms",
            "/first_frame/other_p50_ms",
            "/first_frame/host_p50_ms",
        ]
        .iter()
        .all(|p| v.pointer(p).and_then(Value::as_f64).is_some());
        if !measured {
            bail!("cluster quick: a figure is missing: {v}");
        }
        println!("cluster quick: chat and media crossed nodes");
    }
    Ok(())
}

fn report_cmd(results: &Path, svg: Option<PathBuf>, md: Option<PathBuf>) -> Result<()> {
    let text = std::fs::read_to_string(results)
        .with_context(|| format!("reading {}", results.display()))?;
    let rows = report::load(&text);
    let tables = format!(
        "{}\n{}",
        report::ratio_table(&rows),
        report::rows_table(&rows)
    );
    println!("{tables}");
    if let Some(path) = md {
        std::fs::write(&path, &tables)?;
    }
    if let Some(path) = svg {
        std::fs::write(&path, report::chart_svg(&rows))?;
        println!("chart: {}", path.display());
    }
    Ok(())
}

/// The `bench` part of scripts/test.sh: packets must flow, nothing is
/// compared against a target.
async fn quick(noom_bin: Option<PathBuf>) -> Result<()> {
    let bin = noom_bin.unwrap_or_else(|| PathBuf::from("target/debug/noom"));
    if !bin.exists() {
        bail!("{} not found (build it, or set NOOM_BIN)", bin.display());
    }
    let sc = Scenario {
        name: "quick-fanout-2".to_owned(),
        rooms: 1,
        publishers: 1,
        subscribers: 2,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(2_500),
        profile: MediaProfile::default(),
        simulcast: false,
    };
    let mut failed = Vec::new();
    for target in [Target::Noom { bin, shards: 1 }, Target::Limit] {
        let outcome =
            tokio::time::timeout(Duration::from_secs(25), scenario::run(&target, &sc)).await;
        match outcome {
            Ok(Ok(v)) => {
                println!("{}", summary(&v));
                let received = v["received"].as_u64().unwrap_or(0);
                let video = v["received_video"].as_u64().unwrap_or(0);
                if received == 0 || video == 0 {
                    failed.push(format!(
                        "{}: {received} packets received, {video} of them video",
                        target.name()
                    ));
                }
            }
            Ok(Err(e)) => failed.push(format!("{}: {e:#}", target.name())),
            Err(_) => failed.push(format!("{}: over 25 s", target.name())),
        }
    }
    if failed.is_empty() {
        println!("bench quick: packets flowed through noom and the limit");
        Ok(())
    } else {
        bail!("bench quick failed: {}", failed.join("; "))
    }
}
