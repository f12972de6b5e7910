//! The typed schema: one struct per `[section]` of `config.toml`, and the
//! effective values derived from it (shard count, bind addresses) that
//! depend on the host rather than on the file.
//!
//! The default *values* are not here: they live only in the embedded
//! `config.toml` ([`crate::DEFAULT_TOML`]), so there is one place to change
//! them and the file an operator copies is the file the code parses.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// The whole server configuration; one struct per `[section]` of the file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub media: MediaConfig,
    pub ice: IceConfig,
    pub turn: TurnConfig,
    pub limits: LimitsConfig,
    pub keyframes: KeyframeConfig,
    pub session: SessionConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
}

/// `[auth]`: who may join.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for join tokens; empty = anyone may join (local use).
    pub secret: String,
    /// Origins allowed to open `/ws` (e.g. `https://meet.example.com`);
    /// empty = any origin.
    pub allowed_origins: Vec<String>,
}

impl AuthConfig {
    /// Joining needs a token.
    pub fn required(&self) -> bool {
        !self.secret.is_empty()
    }
}

/// `[admin]`: the operator page and API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token for `/admin` and `/api/`; empty = admin disabled.
    pub token: String,
}

/// `[cluster]`: several nodes sharing rooms through one Redis (issue #14).
///
/// `Debug` is written by hand and serialization goes through
/// [`ClusterConfig::redis_url_redacted`], so the Redis password in
/// `redis_url` never reaches a log line or `--print-config`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://`, `rediss://` (TLS), `redis+unix://` or `unix://` URL of
    /// the shared Redis; empty = single node, Redis is never touched. Use
    /// [`ClusterConfig::enabled`] rather than testing it.
    #[serde(serialize_with = "crate::cluster::serialize_redacted")]
    pub redis_url: String,
    /// This node's id in the cluster; empty = derived at start. Use
    /// [`ClusterConfig::resolved_node_id`] for the effective value.
    pub node_id: String,
    /// Prefix of every Redis key and pub/sub channel, so two clusters can
    /// share one Redis.
    pub key_prefix: String,
    /// How often this node writes its heartbeat, in ms.
    pub heartbeat_ms: u64,
    /// A node whose last heartbeat is older than this many ms is dead.
    pub node_timeout_ms: u64,
    /// Upper bound of one Redis call in ms: anything that needs Redis fails
    /// within it rather than hanging a join.
    pub redis_timeout_ms: u64,
}

/// `[http]`: the web client, WebSocket signaling, health and metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// TCP address to listen on. Port 0 picks an ephemeral port (tests).
    pub listen: SocketAddr,
}

/// `[media]`: where the shards receive RTP/RTCP/ICE/DTLS over UDP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Number of media shards; 0 = one per CPU core. Use
    /// [`Config::shard_count`] for the effective value.
    pub shards: usize,
    /// Addresses to bind; empty = discover the host's IPv4 addresses. Use
    /// [`Config::resolved_bind_ips`] for the effective list.
    pub bind_ips: Vec<IpAddr>,
    /// First UDP port; shard n uses `port + n`. 0 = ephemeral ports (tests).
    pub port: u16,
    /// 1:1 NAT address announced instead of each non-loopback bind address.
    /// Written as `""` when absent, so `--print-config` still shows the key.
    #[serde(default, with = "optional_ip")]
    pub public_ip: Option<IpAddr>,
    /// Also accept ICE over TCP (passive candidates) on the same addresses
    /// and ports, for clients whose network blocks UDP.
    pub ice_tcp: bool,
    /// Ask publishers for three simulcast encodings of their camera (the
    /// server's offer carries rid/simulcast recv lines).
    pub simulcast: bool,
    /// Share each subscriber's bandwidth estimate among its videos
    /// (simulcast layer caps, pauses, padding probes). On when a file
    /// leaves it out, like the embedded default.
    #[serde(default = "allocation_by_default")]
    pub bandwidth_allocation: bool,
    /// Where a publisher's bandwidth estimate starts, in kbit/s (Chromium
    /// reads it from the offer; other browsers keep their own); 0 = the
    /// browser's own start (Chromium: 300). The embedded default when a
    /// file leaves it out.
    #[serde(default = "publisher_start_by_default")]
    pub publisher_start_kbps: u32,
}

fn allocation_by_default() -> bool {
    true
}

fn publisher_start_by_default() -> u32 {
    1000
}

/// `[ice]`: what clients are told about STUN/TURN.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IceConfig {
    /// Handed verbatim to clients in `joined` (as `RTCIceServer`s).
    pub servers: Vec<IceServer>,
}

/// One `RTCIceServer`. Serialized with the browser's field names so the
/// signaling layer can pass it through unchanged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `[turn]`: a TURN server (coturn's REST scheme, `use-auth-secret`) for
/// which every `joined` carries fresh time-limited credentials.
///
/// `Debug` is written by hand and `secret` serializes as `***`, so the
/// shared secret never reaches a log line or `--print-config`: anyone who
/// holds it can mint TURN credentials (free relaying through the server).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TurnConfig {
    /// `turn:` / `turns:` URLs handed to clients in one ICE server entry.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`; empty = no TURN entry is handed out.
    /// Use [`TurnConfig::enabled`] rather than testing it.
    #[serde(serialize_with = "crate::turn::serialize_redacted")]
    pub secret: String,
    /// Lifetime of the credentials, in seconds from the join.
    pub ttl_s: u64,
}

/// `[limits]`: admission control and signaling abuse protection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_rooms: usize,
    pub max_participants_per_room: usize,
    /// Largest WebSocket text message, in bytes.
    pub max_message_bytes: usize,
    /// Sustained signaling messages per second per connection.
    pub messages_per_second: u32,
    /// Token-bucket size for the above.
    pub message_burst: u32,
    /// Joins per minute per connection (join/leave loops are expensive:
    /// each creates a peer connection).
    pub joins_per_minute: u32,
    /// Largest file a participant may send over the data channel, in bytes.
    pub max_file_bytes: u64,
}

/// `[keyframes]`: keyframe request (PLI) aggregation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyframeConfig {
    /// At most one PLI per publisher track per this many ms; 0 = no throttle.
    pub pli_throttle_ms: u64,
    /// Send a new subscriber the latest cached keyframe at once.
    pub cache: bool,
}

/// `[session]`: participant lifetime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// How long a disconnected/failed media connection is kept, in ms.
    pub grace_period_ms: u64,
}

/// `[log]`: tracing output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive, checked by
    /// [`Config::validate`] so a typo fails start-up instead of silently
    /// logging nothing.
    pub level: String,
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("expected `human` or `json`, got {other:?}")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        })
    }
}

/// `public_ip = ""` means none, so the documented file can show the key
/// (TOML has no null).
mod optional_ip {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::IpAddr;

    pub fn serialize<S: Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        match ip {
            Some(ip) => s.collect_str(ip),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        let text = String::deserialize(d)?;
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("{text:?} is not an IP address (or \"\" for none)"))
        })
    }
}

impl Config {
    /// Effective shard count: `media.shards`, or one per available CPU core
    /// when it is 0 (at least 1).
    pub fn shard_count(&self) -> usize {
        if self.media.shards > 0 {
            self.media.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// Effective addresses to bind media sockets to.
    ///
    /// An explicit `media.bind_ips` is returned as written. An empty list
    /// resolves to every IPv4 address of the host's interfaces (discovered
    /// now, via `if-addrs`), deduplicated and sorted ascending with loopback
    /// addresses **last**, so the first entry is the host's primary-looking
    /// non-loopback address. IPv6 is left out because announcing link-local
    /// and temporary addresses mostly adds useless ICE candidates; list IPv6
    /// addresses explicitly to use them. Falls back to `127.0.0.1` if
    /// discovery fails or finds nothing.
    pub fn resolved_bind_ips(&self) -> Vec<IpAddr> {
        if !self.media.bind_ips.is_empty() {
            return self.media.bind_ips.clone();
        }
        let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
            .map(|ifs| {
                ifs.into_iter()
                    .map(|i| i.ip())
                    .filter(IpAddr::is_ipv4)
                    .collect()
            })
            .unwrap_or_default();
        ips.sort_by_key(|ip| (ip.is_loopback(), *ip));
        ips.dedup();
        if ips.is_empty() {
            ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        ips
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_shards_and_bind_ips() {
        let mut c = Config::embedded();
        assert!(c.shard_count() >= 1);
        c.media.shards = 3;
        assert_eq!(c.shard_count(), 3);

        let ips = Config::embedded().resolved_bind_ips();
        assert!(!ips.is_empty());
        assert!(ips.iter().all(IpAddr::is_ipv4));
        assert!(ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{ips:?}");
        // Loopback last, no duplicates, otherwise ascending.
        let first_loopback = ips.iter().position(IpAddr::is_loopback).unwrap();
        assert!(
            ips[first_loopback..].iter().all(IpAddr::is_loopback),
            "{ips:?}"
        );
        assert!(ips.windows(2).all(|w| w[0] != w[1]), "{ips:?}");

        c.media.bind_ips = vec!["127.0.0.1".parse().unwrap()];
        assert_eq!(c.resolved_bind_ips(), c.media.bind_ips);
    }
}
