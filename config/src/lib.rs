//! Noom's typed configuration.
//!
//! The documented default `config.toml` is embedded ([`DEFAULT_TOML`]), so the
//! binary runs with no file and the defaults live in exactly one place: the
//! file an operator copies is the file the code parses.
//!
//! A user file may be partial: its keys are laid over the defaults
//! ([`Config::from_toml_str`]). Unknown keys and bad values are errors that
//! name the dotted key and the line *of the user's file*, because a typo that
//! silently falls back to a default (say `[media] portz = 40000`) is the worst
//! kind of misconfiguration to debug on a production host.
//!
//! Loading order in the binary: embedded defaults, then `--config FILE`, then
//! the `NOOM_*` environment overrides ([`Config::apply_env`]).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

/// The default configuration, with a comment for every key.
pub const DEFAULT_TOML: &str = include_str!("../config.toml");

/// Most media shards accepted. Each shard is a thread with its own UDP port,
/// so a stray extra digit would otherwise spawn thousands of threads.
pub const MAX_SHARDS: usize = 1024;

/// Smallest accepted `limits.max_message_bytes`: below this even a `join`
/// with a modest SDP offer would be rejected.
pub const MIN_MESSAGE_BYTES: usize = 1024;

/// The whole server configuration; one struct per `[section]` of the file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub media: MediaConfig,
    pub ice: IceConfig,
    pub limits: LimitsConfig,
    pub keyframes: KeyframeConfig,
    pub session: SessionConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
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

/// A configuration problem.
///
/// Its `Display` says where the problem is (the file name or the environment
/// variable, the 1-based line when the key is in the user's file) and which
/// dotted key, e.g.
/// `config.toml line 7: unknown key `media.portz`, expected one of ...` or
/// `config.toml line 3, key `limits.max_rooms`: invalid type: string "many", expected usize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the text came from: a path, `config`, or `environment variable NOOM_X`.
    origin: String,
    line: Option<usize>,
    /// Dotted key, e.g. `limits.max_rooms`.
    key: Option<String>,
    /// True when `key` does not exist in the schema (changes the wording).
    unknown_key: bool,
    message: String,
}

impl ConfigError {
    fn new(origin: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.into(),
            line: None,
            key: None,
            unknown_key: false,
            message: message.into(),
        }
    }

    /// The dotted key at fault, when there is one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The 1-based line in the user's file, when the key is in it.
    pub fn line(&self) -> Option<usize> {
        self.line
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        match (&self.key, self.unknown_key) {
            (Some(key), true) => write!(f, ": unknown key `{key}`")?,
            (Some(key), false) => write!(f, ", key `{key}`")?,
            (None, _) => {}
        }
        if self.unknown_key && !self.message.is_empty() {
            write!(f, ", {}", self.message)
        } else {
            write!(f, ": {}", self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A semantic problem found by [`Config::check`], before it is told where.
struct Invalid {
    key: &'static str,
    message: String,
}

fn invalid(key: &'static str, message: impl Into<String>) -> Result<(), Invalid> {
    Err(Invalid {
        key,
        message: message.into(),
    })
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text[..at].matches('\n').count() + 1
}

/// Lays `over` onto `base`, table by table; any other value (including
/// arrays such as `ice.servers`) replaces the default wholesale.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Byte span in the user's document of the dotted `path` (table keys and
/// array indices): the key's span for table entries, the element's span for
/// array items. `None` when the path is not in the user's text, i.e. the
/// value came from the defaults.
fn locate(doc: &toml::de::DeTable<'_>, path: &[String]) -> Option<Range<usize>> {
    let (first, rest) = path.split_first()?;
    let (key, value) = doc.iter().find(|(k, _)| k.get_ref().as_ref() == first)?;
    let mut span = key.span();
    let mut value = value;
    for segment in rest {
        let next = match value.get_ref() {
            toml::de::DeValue::Table(table) => table
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == segment)
                .map(|(k, v)| (k.span(), v)),
            toml::de::DeValue::Array(items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .map(|v| (v.span(), v)),
            _ => None,
        };
        let (s, v) = next?;
        span = s;
        value = v;
    }
    Some(span)
}

/// Dotted path of a serde error, plus the offending name when the error is
/// about an unknown field (serde reports those at the parent's path).
fn error_path(path: &serde_path_to_error::Path, message: &str) -> (Vec<String>, bool) {
    let mut parts: Vec<String> = path
        .iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
            _ => None,
        })
        .collect();
    let unknown = unknown_field(message);
    if let Some(field) = unknown {
        if parts.last().map(String::as_str) != Some(field) {
            parts.push(field.to_owned());
        }
    }
    (parts, unknown.is_some())
}

/// The name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
}

impl Config {
    /// The embedded defaults. Cannot fail: a unit test parses
    /// [`DEFAULT_TOML`], so a broken default never ships.
    pub fn embedded() -> Config {
        Self::from_toml_str(DEFAULT_TOML).expect("the embedded config.toml is valid")
    }

    /// Parses a full or partial TOML document: keys missing from `text` take
    /// the embedded defaults. Tables merge key by key; arrays (`bind_ips`,
    /// `ice.servers`) replace the default array. Unknown keys, wrong types
    /// and values that fail [`Config::validate`] are errors naming the key
    /// and its line in `text`.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::parse_named(text, "config")
    }

    /// Reads and parses `path` as [`Config::from_toml_str`] does; errors
    /// start with the path.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(origin.clone(), format!("cannot read: {e}")))?;
        Self::parse_named(&text, &origin)
    }

    /// Merging loses positions, so this keeps the user's document with its
    /// spans (`DeTable`) and maps every later error's dotted key back to a
    /// line in it.
    fn parse_named(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let syntax = |e: toml::de::Error| {
            let mut err = ConfigError::new(origin, e.message().trim_end());
            err.line = e.span().map(|s| line_of(text, s.start));
            err
        };
        let doc = toml::de::DeTable::parse(text).map_err(syntax)?;
        let user: toml::Table = toml::from_str(text).map_err(syntax)?;
        let mut table: toml::Table = DEFAULT_TOML.parse().expect("embedded TOML parses");
        merge(&mut table, user);

        let located = |path: &[String], unknown_key: bool, message: String| {
            let line = locate(doc.get_ref(), path).map(|s| line_of(text, s.start));
            ConfigError {
                origin: origin.to_owned(),
                line,
                key: (!path.is_empty()).then(|| path.join(".")),
                unknown_key,
                message,
            }
        };
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let message = e.inner().message().trim_end().to_owned();
                let (path, unknown) = error_path(e.path(), &message);
                let message = match (unknown, message.split_once(", expected")) {
                    // "unknown key `media.portz`, expected one of `shards`, ..."
                    (true, Some((_, expected))) => format!("expected{expected}"),
                    (true, None) => String::new(),
                    (false, _) => message,
                };
                located(&path, unknown, message)
            })?;
        config.check().map_err(|invalid| {
            let path: Vec<String> = invalid.key.split('.').map(str::to_owned).collect();
            located(&path, false, invalid.message)
        })?;
        Ok(config)
    }

    /// Applies the `NOOM_*` environment overrides found in `vars` (pass
    /// `std::env::vars()`; tests pass a literal list). Other variables,
    /// including unrelated `NOOM_*` ones, are ignored.
    ///
    /// | variable              | key               | format                          |
    /// |-----------------------|-------------------|---------------------------------|
    /// | `NOOM_HTTP_LISTEN`    | `http.listen`     | `IP:PORT`                       |
    /// | `NOOM_MEDIA_BIND_IPS` | `media.bind_ips`  | comma-separated; empty = all    |
    /// | `NOOM_MEDIA_PORT`     | `media.port`      | integer                         |
    /// | `NOOM_MEDIA_SHARDS`   | `media.shards`    | integer, 0 = one per core       |
    /// | `NOOM_PUBLIC_IP`      | `media.public_ip` | IP; empty = none                |
    /// | `NOOM_LOG_LEVEL`      | `log.level`       | EnvFilter directive             |
    /// | `NOOM_LOG_FORMAT`     | `log.format`      | `human` or `json`               |
    ///
    /// All or nothing: on error `self` is unchanged. The result is
    /// validated, and errors name the variable.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(
        &mut self,
        vars: I,
    ) -> Result<(), ConfigError> {
        fn parsed<T: FromStr>(var: &str, key: &str, value: &str) -> Result<T, ConfigError>
        where
            T::Err: fmt::Display,
        {
            value.trim().parse().map_err(|e: T::Err| {
                let mut err = ConfigError::new(
                    format!("environment variable {var}"),
                    format!("invalid value {value:?}: {e}"),
                );
                err.key = Some(key.to_owned());
                err
            })
        }
        let mut next = self.clone();
        // Which variable set which key, to blame the right one on validation.
        let mut set: Vec<(String, &'static str)> = Vec::new();
        for (var, value) in vars {
            let key = match var.as_str() {
                "NOOM_HTTP_LISTEN" => {
                    next.http.listen = parsed(&var, "http.listen", &value)?;
                    "http.listen"
                }
                "NOOM_MEDIA_BIND_IPS" => {
                    next.media.bind_ips = value
                        .split(',')
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| parsed(&var, "media.bind_ips", s))
                        .collect::<Result<_, _>>()?;
                    "media.bind_ips"
                }
                "NOOM_MEDIA_PORT" => {
                    next.media.port = parsed(&var, "media.port", &value)?;
                    "media.port"
                }
                "NOOM_MEDIA_SHARDS" => {
                    next.media.shards = parsed(&var, "media.shards", &value)?;
                    "media.shards"
                }
                "NOOM_PUBLIC_IP" => {
                    next.media.public_ip = if value.trim().is_empty() {
                        None
                    } else {
                        Some(parsed(&var, "media.public_ip", &value)?)
                    };
                    "media.public_ip"
                }
                "NOOM_AUTH_SECRET" => {
                    next.auth.secret = value.clone();
                    "auth.secret"
                }
                "NOOM_ADMIN_TOKEN" => {
                    next.admin.token = value.clone();
                    "admin.token"
                }
                "NOOM_LOG_LEVEL" => {
                    next.log.level = value.trim().to_owned();
                    "log.level"
                }
                "NOOM_LOG_FORMAT" => {
                    next.log.format = parsed(&var, "log.format", &value)?;
                    "log.format"
                }
                _ => continue,
            };
            set.push((var, key));
        }
        next.check().map_err(|invalid| {
            let origin = match set.iter().rev().find(|(_, key)| *key == invalid.key) {
                Some((var, _)) => format!("environment variable {var}"),
                None => "config after environment overrides".to_owned(),
            };
            let mut err = ConfigError::new(origin, invalid.message);
            err.key = Some(invalid.key.to_owned());
            err
        })?;
        *self = next;
        Ok(())
    }

    /// Semantic checks on values that parse but cannot work: zero limits, a
    /// message size too small for an SDP offer, a port range past 65535, ICE
    /// URLs or TURN entries a browser would reject (which would break every
    /// join), an unusable log filter. [`Config::from_toml_str`] and
    /// [`Config::apply_env`] call it; call it yourself after editing fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|invalid| {
            let mut err = ConfigError::new("config", invalid.message);
            err.key = Some(invalid.key.to_owned());
            err
        })
    }

    fn check(&self) -> Result<(), Invalid> {
        let l = &self.limits;
        let positive = [
            ("limits.max_file_bytes", l.max_file_bytes),
            ("limits.joins_per_minute", l.joins_per_minute as u64),
            ("limits.max_rooms", l.max_rooms as u64),
            (
                "limits.max_participants_per_room",
                l.max_participants_per_room as u64,
            ),
            ("limits.messages_per_second", l.messages_per_second as u64),
            ("limits.message_burst", l.message_burst as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return invalid(key, "must be at least 1, got 0");
            }
        }
        if l.max_message_bytes < MIN_MESSAGE_BYTES {
            return invalid(
                "limits.max_message_bytes",
                format!(
                    "must be at least {MIN_MESSAGE_BYTES} (an SDP offer alone is larger), got {}",
                    l.max_message_bytes
                ),
            );
        }

        let m = &self.media;
        if m.shards > MAX_SHARDS {
            return invalid(
                "media.shards",
                format!("at most {MAX_SHARDS} (0 = one per core), got {}", m.shards),
            );
        }
        let shards = self.shard_count();
        if m.port != 0 && m.port as usize + shards - 1 > u16::MAX as usize {
            return invalid(
                "media.port",
                format!(
                    "{} shards on ports {}..{} run past 65535",
                    shards,
                    m.port,
                    m.port as usize + shards - 1
                ),
            );
        }
        for (i, ip) in m.bind_ips.iter().enumerate() {
            if ip.is_unspecified() || ip.is_multicast() {
                return invalid(
                    "media.bind_ips",
                    format!("{ip} cannot be announced to clients; list concrete addresses, or [] for all"),
                );
            }
            if m.bind_ips[..i].contains(ip) {
                return invalid("media.bind_ips", format!("{ip} is listed twice"));
            }
        }
        if let Some(ip) = m.public_ip {
            if ip.is_unspecified() || ip.is_multicast() {
                return invalid(
                    "media.public_ip",
                    format!("{ip} is not a reachable address; use \"\" for none"),
                );
            }
        }

        for server in &self.ice.servers {
            if server.urls.is_empty() {
                return invalid("ice.servers", "every server needs at least one url");
            }
            for url in &server.urls {
                let scheme = url.split(':').next().unwrap_or_default();
                match scheme {
                    "stun" | "stuns" => {}
                    "turn" | "turns" => {
                        if server.username.is_none() || server.credential.is_none() {
                            return invalid(
                                "ice.servers",
                                format!("{url:?}: TURN servers need `username` and `credential` (browsers reject them otherwise)"),
                            );
                        }
                    }
                    _ => {
                        return invalid(
                            "ice.servers",
                            format!("{url:?}: must start with stun:, stuns:, turn: or turns:"),
                        )
                    }
                }
                if url.len() <= scheme.len() + 1 {
                    return invalid("ice.servers", format!("{url:?} has no host"));
                }
            }
        }

        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            return invalid(
                "log.level",
                format!("{:?} is not a valid filter: {e}", self.log.level),
            );
        }
        Ok(())
    }

    /// The configuration as TOML, for `noom --print-config`. Every key is
    /// written (`public_ip = ""` when none), so the output is a complete
    /// file that [`Config::from_toml_str`] reads back to an equal `Config`.
    /// `shards = 0` and `bind_ips = []` are printed as configured, not
    /// resolved, so the file stays portable between hosts.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("config serializes");
        format!(
            "# Effective Noom configuration (defaults, then --config file, then NOOM_* environment).\n\
             # See the embedded config.toml for what each key does.\n\n{body}"
        )
    }

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

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err_of(text: &str) -> String {
        Config::from_toml_str(text).unwrap_err().to_string()
    }

    #[test]
    fn embedded_defaults_match_the_documented_values() {
        let c = Config::embedded();
        assert_eq!(c.http.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.media.shards, 0);
        assert!(c.media.bind_ips.is_empty());
        assert_eq!(c.media.port, 50000);
        assert_eq!(c.media.public_ip, None);
        assert_eq!(
            c.ice.servers,
            vec![
                IceServer {
                    urls: vec!["stun:stun.l.google.com:19302".into()],
                    username: None,
                    credential: None
                },
                IceServer {
                    urls: vec!["stun:global.stun.twilio.com:3478".into()],
                    username: None,
                    credential: None
                },
            ]
        );
        assert_eq!(c.limits.max_rooms, 1000);
        assert_eq!(c.limits.max_participants_per_room, 50);
        assert_eq!(c.limits.max_message_bytes, 65536);
        assert_eq!(c.limits.messages_per_second, 50);
        assert_eq!(c.limits.message_burst, 100);
        assert_eq!(c.keyframes.pli_throttle_ms, 500);
        assert_eq!(c.session.grace_period_ms, 10000);
        assert_eq!(c.log.level, "info,rtc_dtls=error");
        assert_eq!(c.log.format, LogFormat::Human);
        c.validate().unwrap();
    }

    #[test]
    fn embedded_file_documents_every_key() {
        // Every key of the schema appears in the embedded file itself (not
        // only via serde defaults), each with a comment line right above.
        let lines: Vec<&str> = DEFAULT_TOML.lines().collect();
        let rendered = Config::embedded().to_toml();
        let table: toml::Table = rendered.parse().unwrap();
        for (section, value) in &table {
            assert!(
                lines.iter().any(|l| l.trim() == format!("[{section}]")),
                "[{section}] missing from config.toml"
            );
            for key in value.as_table().unwrap().keys() {
                let at = lines
                    .iter()
                    .position(|l| l.starts_with(&format!("{key} =")))
                    .unwrap_or_else(|| panic!("{section}.{key} missing from config.toml"));
                assert!(
                    lines[at - 1].starts_with('#'),
                    "{section}.{key} has no comment above it"
                );
            }
        }
    }

    #[test]
    fn to_toml_round_trips() {
        let mut c = Config::embedded();
        assert_eq!(Config::from_toml_str(&c.to_toml()).unwrap(), c);
        // Non-default values, including the optional ones, survive too.
        c.media.public_ip = Some("203.0.113.7".parse().unwrap());
        c.media.bind_ips = vec!["10.0.0.5".parse().unwrap(), "::1".parse().unwrap()];
        c.media.shards = 3;
        c.ice.servers.push(IceServer {
            urls: vec!["turn:turn.example.com:3478?transport=udp".into()],
            username: Some("u".into()),
            credential: Some("p".into()),
        });
        c.log.format = LogFormat::Json;
        c.log.level = "info,noom_sfu=debug".into();
        let text = c.to_toml();
        assert!(text.contains("public_ip = \"203.0.113.7\""), "{text}");
        assert_eq!(Config::from_toml_str(&text).unwrap(), c);
        // An absent public_ip is still shown, as "".
        assert!(Config::embedded().to_toml().contains("public_ip = \"\""));
    }

    #[test]
    fn empty_and_partial_files_merge_over_defaults() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::embedded());
        let c = Config::from_toml_str(
            "# only what I change\n[limits]\nmax_rooms = 7\n\n[media]\nport = 40000\npublic_ip = \"198.51.100.1\"\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_rooms, 7);
        assert_eq!(c.limits.max_participants_per_room, 50);
        assert_eq!(c.media.port, 40000);
        assert_eq!(c.media.shards, 0);
        assert_eq!(c.media.public_ip, Some("198.51.100.1".parse().unwrap()));
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.ice.servers.len(), 2);
        // Dotted keys work like sections; arrays replace the default array.
        let c = Config::from_toml_str(
            "log.format = \"json\"\nice.servers = [{ urls = [\"stun:stun.example.com\"] }]\n",
        )
        .unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "info,rtc_dtls=error");
        assert_eq!(c.ice.servers.len(), 1);
        // public_ip = "" is the same as absent.
        let c = Config::from_toml_str("[media]\npublic_ip = \"\"\n").unwrap();
        assert_eq!(c.media.public_ip, None);
    }

    #[test]
    fn unknown_nested_key_names_key_and_line() {
        let text = "[http]\nlisten = \"127.0.0.1:1\"\n\n[media]\nport = 1\n\nportz = 5\n";
        let err = Config::from_toml_str(text).unwrap_err();
        assert_eq!(err.key(), Some("media.portz"));
        assert_eq!(err.line(), Some(7));
        let msg = err.to_string();
        assert!(
            msg.starts_with("config line 7: unknown key `media.portz`, expected one of"),
            "{msg}"
        );
        assert!(msg.contains("`port`"), "{msg}");
        // Dotted form at top level.
        let err = err_of("\nmedia.portz = 5\n");
        assert!(
            err.contains("line 2") && err.contains("`media.portz`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_top_level_section_names_key_and_line() {
        let err = Config::from_toml_str("# c\n\n[video]\nx = 1\n").unwrap_err();
        assert_eq!(err.key(), Some("video"));
        assert_eq!(err.line(), Some(3), "{err}");
        assert!(err.to_string().contains("unknown key `video`"), "{err}");
        // Misspelled top-level scalar.
        let err = err_of("[http]\nlisten = \"0.0.0.0:1\"\n[logs]\nlevel = \"x\"\n");
        assert!(err.contains("line 3") && err.contains("`logs`"), "{err}");
    }

    #[test]
    fn unknown_key_inside_array_of_tables_is_located() {
        let text = "[[ice.servers]]\nurls = [\"stun:a.example\"]\n\n[[ice.servers]]\nurls = [\"stun:b.example\"]\npassword = \"x\"\n";
        let err = Config::from_toml_str(text).unwrap_err();
        assert_eq!(err.key(), Some("ice.servers.1.password"));
        assert_eq!(err.line(), Some(6), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = Config::from_toml_str("[limits]\n\nmax_rooms = \"many\"\n").unwrap_err();
        assert_eq!(err.key(), Some("limits.max_rooms"));
        assert_eq!(err.line(), Some(3));
        let msg = err.to_string();
        assert!(
            msg.starts_with("config line 3, key `limits.max_rooms`: invalid type: string"),
            "{msg}"
        );

        let err = err_of("[media]\nport = 70000\n");
        assert!(err.contains("line 2, key `media.port`"), "{err}");
        let err = err_of("[media]\nshards = -1\n");
        assert!(err.contains("line 2, key `media.shards`"), "{err}");
        let err = err_of("[media]\n\npublic_ip = \"nope\"\n");
        assert!(err.contains("line 3, key `media.public_ip`"), "{err}");
        let err = err_of("[http]\nlisten = \"localhost\"\n");
        assert!(err.contains("line 2, key `http.listen`"), "{err}");
        let err = err_of("[log]\nformat = \"xml\"\n");
        assert!(err.contains("line 2, key `log.format`"), "{err}");
        assert!(err.contains("human"), "{err}");
        // A bad element of a multi-line array points at the element's line.
        let err = err_of("[media]\nbind_ips = [\n  \"10.0.0.1\",\n  \"10.0.0.x\",\n]\n");
        assert!(err.contains("line 4, key `media.bind_ips.1`"), "{err}");
        // A whole section of the wrong type.
        let err = err_of("\nlimits = 5\n");
        assert!(err.contains("line 2, key `limits`"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_key_and_line() {
        let err =
            Config::from_toml_str("[limits]\nmax_rooms = 3\nmax_message_bytes = 10\n").unwrap_err();
        assert_eq!(err.key(), Some("limits.max_message_bytes"));
        assert_eq!(err.line(), Some(3));
        assert!(err.to_string().contains("at least 1024"), "{err}");

        for key in [
            "max_rooms",
            "max_participants_per_room",
            "messages_per_second",
            "message_burst",
        ] {
            let err = err_of(&format!("[limits]\n{key} = 0\n"));
            assert!(
                err.contains(&format!("line 2, key `limits.{key}`")),
                "{err}"
            );
        }
        let err = err_of("[media]\nport = 65535\nshards = 2\n");
        assert!(err.contains("line 2, key `media.port`"), "{err}");
        let err = err_of("[media]\nshards = 100000\n");
        assert!(err.contains("key `media.shards`"), "{err}");
        let err = err_of("[media]\nbind_ips = [\"0.0.0.0\"]\n");
        assert!(err.contains("line 2, key `media.bind_ips`"), "{err}");
        let err = err_of("[media]\nbind_ips = [\"10.0.0.1\", \"10.0.0.1\"]\n");
        assert!(err.contains("twice"), "{err}");
        let err = err_of("[media]\npublic_ip = \"0.0.0.0\"\n");
        assert!(err.contains("key `media.public_ip`"), "{err}");
        let err = err_of("[log]\nlevel = \"info,[[[\"\n");
        assert!(err.contains("line 2, key `log.level`"), "{err}");
    }

    #[test]
    fn ice_servers_browsers_would_reject_are_errors() {
        let err = err_of("[ice]\nservers = [{ urls = [\"http://x\"] }]\n");
        assert!(err.contains("line 2, key `ice.servers`"), "{err}");
        let err = err_of("[ice]\nservers = [{ urls = [\"turn:t.example:3478\"] }]\n");
        assert!(err.contains("username"), "{err}");
        let err = err_of("[ice]\nservers = [{ urls = [] }]\n");
        assert!(err.contains("at least one url"), "{err}");
        let c = Config::from_toml_str(
            "[ice]\nservers = [{ urls = [\"turns:t.example:443\"], username = \"u\", credential = \"p\" }]\n",
        )
        .unwrap();
        assert_eq!(c.ice.servers[0].username.as_deref(), Some("u"));
        // No servers at all is allowed (LAN-only deployments).
        assert!(Config::from_toml_str("[ice]\nservers = []\n").is_ok());
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Config::from_toml_str("[http]\nlisten = \"0.0.0.0:1\"\n[media\n").unwrap_err();
        assert_eq!(err.line(), Some(3), "{err}");
        let err = err_of("[limits]\nmax_rooms = 1\nmax_rooms = 2\n");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn from_file_names_the_path() {
        let dir = std::env::temp_dir().join(format!("noom-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, "[session]\ngrace_period_ms = 2500\n").unwrap();
        assert_eq!(
            Config::from_file(&path).unwrap().session.grace_period_ms,
            2500
        );
        std::fs::write(&path, "[session]\n\ngrace_period = 2500\n").unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{} line 3: unknown key `session.grace_period`",
                path.display()
            )),
            "{err}"
        );
        let missing = dir.join("missing.toml");
        let err = Config::from_file(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn environment_overrides_apply() {
        let mut c = Config::embedded();
        c.apply_env(env(&[
            ("NOOM_HTTP_LISTEN", "127.0.0.1:9"),
            ("NOOM_MEDIA_BIND_IPS", "127.0.0.1, 10.1.2.3"),
            ("NOOM_MEDIA_PORT", "0"),
            ("NOOM_MEDIA_SHARDS", "4"),
            ("NOOM_PUBLIC_IP", "203.0.113.7"),
            ("NOOM_LOG_LEVEL", "debug,noom_sfu=trace"),
            ("NOOM_LOG_FORMAT", "json"),
            ("NOOM_SOMETHING_ELSE", "x"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:9".parse().unwrap());
        assert_eq!(
            c.media.bind_ips,
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "10.1.2.3".parse().unwrap()
            ]
        );
        assert_eq!(c.media.port, 0);
        assert_eq!(c.media.shards, 4);
        assert_eq!(c.media.public_ip, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(c.log.level, "debug,noom_sfu=trace");
        assert_eq!(c.log.format, LogFormat::Json);

        // Empty values mean "all interfaces" / "no public ip".
        c.apply_env(env(&[("NOOM_MEDIA_BIND_IPS", ""), ("NOOM_PUBLIC_IP", "")]))
            .unwrap();
        assert!(c.media.bind_ips.is_empty());
        assert_eq!(c.media.public_ip, None);
        // The result still round-trips.
        assert_eq!(Config::from_toml_str(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn bad_environment_values_name_the_variable_and_change_nothing() {
        let original = Config::embedded();
        for (var, value) in [
            ("NOOM_HTTP_LISTEN", "8080"),
            ("NOOM_MEDIA_BIND_IPS", "10.0.0.1,nope"),
            ("NOOM_MEDIA_PORT", "http"),
            ("NOOM_MEDIA_PORT", "70000"),
            ("NOOM_MEDIA_SHARDS", "-2"),
            ("NOOM_PUBLIC_IP", "example.com"),
            ("NOOM_LOG_FORMAT", "xml"),
            ("NOOM_LOG_LEVEL", "info,[[["),
            ("NOOM_MEDIA_BIND_IPS", "0.0.0.0"),
        ] {
            let mut c = original.clone();
            let err = c
                .apply_env(env(&[("NOOM_MEDIA_PORT", "40000"), (var, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("environment variable {var}")),
                "{var}={value}: {err}"
            );
            assert_eq!(c, original, "{var}={value} changed the config");
        }
        // A combination that breaks a rule blames the variable that set the key.
        let mut c = original.clone();
        let err = c
            .apply_env(env(&[
                ("NOOM_MEDIA_SHARDS", "8"),
                ("NOOM_MEDIA_PORT", "65530"),
            ]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("environment variable NOOM_MEDIA_PORT, key `media.port`"),
            "{err}"
        );
    }

    #[test]
    fn validate_catches_programmatic_edits() {
        let mut c = Config::embedded();
        c.limits.max_message_bytes = 10;
        let err = c.validate().unwrap_err();
        assert_eq!(err.key(), Some("limits.max_message_bytes"));
        assert!(err
            .to_string()
            .starts_with("config, key `limits.max_message_bytes`"));
    }

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
