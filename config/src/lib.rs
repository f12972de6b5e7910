//! Noom's typed configuration.
//!
//! The documented default `config.toml` is embedded ([`DEFAULT_TOML`]), so the
//! binary runs with no file. A user file may be partial: its keys are laid
//! over the defaults. Unknown keys and bad values are errors that name the key
//! and the line of the user's file.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The default configuration, with a comment for every key.
pub const DEFAULT_TOML: &str = include_str!("../config.toml");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub media: MediaConfig,
    pub ice: IceConfig,
    pub limits: LimitsConfig,
    pub keyframes: KeyframeConfig,
    pub session: SessionConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    pub shards: usize,
    pub bind_ips: Vec<IpAddr>,
    pub port: u16,
    #[serde(
        default,
        with = "optional_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub public_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IceConfig {
    pub servers: Vec<IceServer>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_rooms: usize,
    pub max_participants_per_room: usize,
    pub max_message_bytes: usize,
    pub messages_per_second: u32,
    pub message_burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyframeConfig {
    pub pli_throttle_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    pub grace_period_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// `public_ip = ""` means none, so the documented file can show the key.
mod optional_ip {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::IpAddr;

    pub fn serialize<S: Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        match ip {
            Some(ip) => s.serialize_str(&ip.to_string()),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an IP address")))
    }
}

/// A configuration problem, naming the key and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into(),
        }
    }
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// Lays `over` onto `base`, table by table; other values replace.
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

/// Finds the line of `section.key` in the user's text, for errors the
/// deserializer reports without a position (values that parse but fail
/// validation).
fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.rsplit_once('.')?;
    let mut in_section = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_section = t.trim_start_matches('[').trim_end_matches(']').trim() == section;
        } else if in_section {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim() == key {
                    return Some(i + 1);
                }
            }
        }
    }
    None
}

impl Config {
    /// The embedded defaults.
    pub fn embedded() -> Config {
        Self::from_toml_str(DEFAULT_TOML).expect("the embedded config.toml is valid")
    }

    /// Parses a full or partial document over the embedded defaults.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::parse_named(text, "config")
    }

    fn parse_named(text: &str, name: &str) -> Result<Config, ConfigError> {
        let user: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            ConfigError::new(format!("{name} line {line}: {}", e.message()))
        })?;
        let mut table: toml::Table = DEFAULT_TOML.parse().expect("embedded TOML parses");
        merge(&mut table, user);
        // Re-render the merged table and deserialize it, locating errors in
        // the user's text by the key the error names.
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
            let message = e.inner().message().to_owned();
            let key = error_key(e.path(), &message);
            let line = key
                .as_deref()
                .and_then(|k| line_of_key(text, k))
                .map(|l| format!(" line {l}"))
                .unwrap_or_default();
            match key {
                Some(key) => ConfigError::new(format!("{name}{line}, key `{key}`: {message}")),
                None => ConfigError::new(format!("{name}{line}: {message}")),
            }
        })?;
        config
            .validate()
            .map_err(|e| match e.message.split_once(':') {
                Some((key, _)) => match line_of_key(text, key.trim_matches('`')) {
                    Some(line) => ConfigError::new(format!("{name} line {line}, {}", e.message)),
                    None => ConfigError::new(format!("{name}: {}", e.message)),
                },
                None => ConfigError::new(format!("{name}: {}", e.message)),
            })?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(format!("{}: {e}", path.display())))?;
        Self::parse_named(&text, &path.display().to_string())
    }

    /// Applies the `NOOM_*` environment overrides found in `vars`.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(
        &mut self,
        vars: I,
    ) -> Result<(), ConfigError> {
        fn parsed<T: std::str::FromStr>(var: &str, value: &str) -> Result<T, ConfigError> {
            value
                .trim()
                .parse()
                .map_err(|_| ConfigError::new(format!("environment {var}: invalid value {value:?}")))
        }
        for (var, value) in vars {
            match var.as_str() {
                "NOOM_HTTP_LISTEN" => self.http.listen = parsed(&var, &value)?,
                "NOOM_MEDIA_BIND_IPS" => {
                    self.media.bind_ips = value
                        .split(',')
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| parsed(&var, s))
                        .collect::<Result<_, _>>()?
                }
                "NOOM_MEDIA_PORT" => self.media.port = parsed(&var, &value)?,
                "NOOM_MEDIA_SHARDS" => self.media.shards = parsed(&var, &value)?,
                "NOOM_PUBLIC_IP" => {
                    self.media.public_ip = if value.trim().is_empty() {
                        None
                    } else {
                        Some(parsed(&var, &value)?)
                    }
                }
                "NOOM_LOG_LEVEL" => self.log.level = value,
                "NOOM_LOG_FORMAT" => {
                    self.log.format = match value.trim() {
                        "human" => LogFormat::Human,
                        "json" => LogFormat::Json,
                        _ => {
                            return Err(ConfigError::new(format!(
                                "environment {var}: expected human or json, got {value:?}"
                            )))
                        }
                    }
                }
                _ => {}
            }
        }
        self.validate()
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("limits.max_rooms", self.limits.max_rooms as u64),
            (
                "limits.max_participants_per_room",
                self.limits.max_participants_per_room as u64,
            ),
            (
                "limits.messages_per_second",
                self.limits.messages_per_second as u64,
            ),
            ("limits.message_burst", self.limits.message_burst as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(format!("`{key}`: must be at least 1")));
            }
        }
        if self.limits.max_message_bytes < 1024 {
            return Err(ConfigError::new(format!(
                "`limits.max_message_bytes`: must be at least 1024, got {}",
                self.limits.max_message_bytes
            )));
        }
        if self.media.port != 0 && (self.media.port as usize + self.shard_count()) > 65536 {
            return Err(ConfigError::new(format!(
                "`media.port`: {} + {} shards runs past port 65535",
                self.media.port,
                self.shard_count()
            )));
        }
        for server in &self.ice.servers {
            if server.urls.is_empty() {
                return Err(ConfigError::new("`ice.servers`: every server needs at least one url"));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    /// Shards to run (resolves 0 to the number of cores).
    pub fn shard_count(&self) -> usize {
        if self.media.shards > 0 {
            self.media.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// Addresses to bind media sockets to (resolves an empty list to every
    /// IPv4 address of the host's interfaces, loopback last).
    pub fn resolved_bind_ips(&self) -> Vec<IpAddr> {
        if !self.media.bind_ips.is_empty() {
            return self.media.bind_ips.clone();
        }
        let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
            .map(|ifs| ifs.into_iter().map(|i| i.ip()).filter(IpAddr::is_ipv4).collect())
            .unwrap_or_default();
        ips.sort_by_key(|ip| (ip.is_loopback(), *ip));
        ips.dedup();
        if ips.is_empty() {
            ips.push(IpAddr::from([127, 0, 0, 1]));
        }
        ips
    }
}

/// The dotted key a deserialization error is about: the path to the failing
/// value, plus the field name for unknown fields.
fn error_key(path: &serde_path_to_error::Path, message: &str) -> Option<String> {
    let mut parts: Vec<String> = path
        .iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
            _ => None,
        })
        .collect();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        if parts.last().map(String::as_str) != Some(field) {
            parts.push(field.to_owned());
        }
    }
    (!parts.is_empty()).then(|| parts.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse_and_round_trip() {
        let config = Config::embedded();
        assert_eq!(config.http.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.limits.max_message_bytes, 65536);
        assert_eq!(config.keyframes.pli_throttle_ms, 500);
        assert_eq!(config.media.public_ip, None);
        assert_eq!(config.ice.servers.len(), 2);
        let again = Config::from_toml_str(&config.to_toml()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let config = Config::from_toml_str("[limits]\nmax_rooms = 7\n").unwrap();
        assert_eq!(config.limits.max_rooms, 7);
        assert_eq!(config.limits.max_participants_per_room, 50);
        assert_eq!(config.http.listen.port(), 8080);
    }

    #[test]
    fn unknown_keys_name_key_and_line() {
        let err = Config::from_toml_str("[http]\nlisten = \"127.0.0.1:1\"\n\n[media]\nportz = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("media.portz"), "{err}");
        assert!(err.contains("line 5"), "{err}");
        let err = Config::from_toml_str("# c\n[video]\nx = 1\n").unwrap_err().to_string();
        assert!(err.contains("video"), "{err}");
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let err = Config::from_toml_str("[limits]\n\nmax_rooms = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.max_rooms"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        let err = Config::from_toml_str("[limits]\nmax_message_bytes = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.max_message_bytes"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = Config::from_toml_str("[media]\npublic_ip = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("media.public_ip"), "{err}");
        let err = Config::from_toml_str("[http\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn environment_overrides() {
        let mut config = Config::embedded();
        config
            .apply_env([
                ("NOOM_HTTP_LISTEN".to_owned(), "127.0.0.1:9".to_owned()),
                ("NOOM_MEDIA_BIND_IPS".to_owned(), "127.0.0.1, 10.1.2.3".to_owned()),
                ("NOOM_MEDIA_PORT".to_owned(), "0".to_owned()),
                ("NOOM_PUBLIC_IP".to_owned(), "203.0.113.7".to_owned()),
                ("NOOM_LOG_FORMAT".to_owned(), "json".to_owned()),
                ("UNRELATED".to_owned(), "x".to_owned()),
            ])
            .unwrap();
        assert_eq!(config.http.listen.port(), 9);
        assert_eq!(config.media.bind_ips.len(), 2);
        assert_eq!(config.media.port, 0);
        assert_eq!(config.media.public_ip, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(config.log.format, LogFormat::Json);
        let err = config
            .apply_env([("NOOM_MEDIA_PORT".to_owned(), "http".to_owned())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("NOOM_MEDIA_PORT"), "{err}");
    }

    #[test]
    fn resolves_shards_and_bind_ips() {
        let config = Config::embedded();
        assert!(config.shard_count() >= 1);
        assert!(!config.resolved_bind_ips().is_empty());
    }
}
