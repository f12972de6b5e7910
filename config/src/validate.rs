//! Semantic checks on values that parse but cannot work.
//!
//! [`Config::check`] says only *which key* is wrong; the caller says *where*
//! it came from (a line of the user's file, an environment variable, or a
//! programmatic edit), because only the caller knows.

use crate::cluster::{is_valid_name, redis_url_problem, MAX_NAME_LEN};
use crate::turn::{turn_url_problem, TURN_TTL_S};
use crate::{Config, ConfigError};

/// Most media shards accepted. Each shard is a thread with its own UDP port,
/// so a stray extra digit would otherwise spawn thousands of threads.
pub const MAX_SHARDS: usize = 1024;

/// Smallest accepted `limits.max_message_bytes`: below this even a `join`
/// with a modest SDP offer would be rejected.
pub const MIN_MESSAGE_BYTES: usize = 1024;

/// Smallest accepted `cluster.heartbeat_ms`: more often only loads Redis.
pub const MIN_HEARTBEAT_MS: u64 = 100;

/// `cluster.node_timeout_ms` must cover this many heartbeats, so one late
/// heartbeat (a busy Redis, a GC pause in a proxy) does not declare a live
/// node dead.
pub const HEARTBEATS_PER_TIMEOUT: u64 = 3;

/// Accepted `cluster.redis_timeout_ms`: under 100 ms a healthy Redis across
/// a data centre would time out; over 10 s a join waiting on a dead Redis
/// hangs longer than any user waits.
pub const REDIS_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=10_000;

/// A semantic problem found by [`Config::check`], before it is told where.
pub(crate) struct Invalid {
    pub(crate) key: &'static str,
    pub(crate) message: String,
}

fn invalid(key: &'static str, message: impl Into<String>) -> Result<(), Invalid> {
    Err(Invalid {
        key,
        message: message.into(),
    })
}

impl Config {
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

    pub(crate) fn check(&self) -> Result<(), Invalid> {
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

        self.check_turn()?;
        self.check_cluster()?;

        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            return invalid(
                "log.level",
                format!("{:?} is not a valid filter: {e}", self.log.level),
            );
        }
        Ok(())
    }

    /// `[turn]`, checked even without a secret so a bad URL shows up the day
    /// it is written; a secret without URLs would hand out nothing.
    fn check_turn(&self) -> Result<(), Invalid> {
        let t = &self.turn;
        for url in &t.urls {
            if let Some(problem) = turn_url_problem(url) {
                return invalid("turn.urls", problem);
            }
        }
        if t.enabled() && t.urls.is_empty() {
            return invalid(
                "turn.urls",
                "turn.secret is set but no TURN URL is listed (e.g. [\"turn:turn.example.com:3478?transport=udp\"])",
            );
        }
        if !TURN_TTL_S.contains(&t.ttl_s) {
            return invalid(
                "turn.ttl_s",
                format!(
                    "must be {} to {} seconds (it must outlast the longest call), got {}",
                    TURN_TTL_S.start(),
                    TURN_TTL_S.end(),
                    t.ttl_s
                ),
            );
        }
        Ok(())
    }

    /// `[cluster]`, checked even when clustering is off so a typo shows up
    /// the day it is written, not the day Redis is configured.
    fn check_cluster(&self) -> Result<(), Invalid> {
        let c = &self.cluster;
        if !c.redis_url.is_empty() {
            if let Some(problem) = redis_url_problem(&c.redis_url) {
                return invalid("cluster.redis_url", problem);
            }
        }
        let names = [
            ("cluster.node_id", &c.node_id, true),
            ("cluster.key_prefix", &c.key_prefix, false),
        ];
        for (key, value, empty_allowed) in names {
            let acceptable = is_valid_name(value) || (empty_allowed && value.is_empty());
            if !acceptable {
                let empty = if empty_allowed {
                    " (or \"\" to derive one)"
                } else {
                    ""
                };
                return invalid(
                    key,
                    format!(
                        "must be 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ -{empty}, got {value:?}"
                    ),
                );
            }
        }
        if c.heartbeat_ms < MIN_HEARTBEAT_MS {
            return invalid(
                "cluster.heartbeat_ms",
                format!(
                    "must be at least {MIN_HEARTBEAT_MS}, got {}",
                    c.heartbeat_ms
                ),
            );
        }
        let least_timeout = c.heartbeat_ms.saturating_mul(HEARTBEATS_PER_TIMEOUT);
        if c.node_timeout_ms < least_timeout {
            return invalid(
                "cluster.node_timeout_ms",
                format!(
                    "must be at least {HEARTBEATS_PER_TIMEOUT} heartbeats ({least_timeout} with heartbeat_ms = {}), got {}",
                    c.heartbeat_ms, c.node_timeout_ms
                ),
            );
        }
        if !REDIS_TIMEOUT_MS.contains(&c.redis_timeout_ms) {
            return invalid(
                "cluster.redis_timeout_ms",
                format!(
                    "must be {} to {}, got {}",
                    REDIS_TIMEOUT_MS.start(),
                    REDIS_TIMEOUT_MS.end(),
                    c.redis_timeout_ms
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::error::tests::err_of;
    use crate::Config;

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
    fn turn_values_that_cannot_work_name_key_and_line() {
        let err = err_of("[turn]\nurls = [\"stun:t.example:3478\"]\n");
        assert!(err.contains("line 2, key `turn.urls`"), "{err}");
        assert!(err.contains("must start with turn: or turns:"), "{err}");
        let err = err_of("[turn]\nurls = [\"turn:t.example:99999?transport=udp\"]\n");
        assert!(err.contains("port \"99999\" is not 1..65535"), "{err}");
        let err = err_of("[turn]\nsecret = \"s\"\nurls = []\n");
        assert!(err.contains("key `turn.urls`"), "{err}");
        assert!(err.contains("no TURN URL is listed"), "{err}");
        let err = err_of("[turn]\nttl_s = 5\n");
        assert!(err.contains("line 2, key `turn.ttl_s`"), "{err}");
        assert!(err.contains("60 to 31536000"), "{err}");
        // A secret never shows up in an error about another key.
        let err = err_of("[turn]\nsecret = \"hunter2\"\nurls = [\"turn:h\"]\nttl_s = 0\n");
        assert!(!err.contains("hunter2"), "{err}");

        let c = Config::from_toml_str(
            "[turn]\nurls = [\"turn:t.example:3478?transport=udp\", \"turn:t.example:3478?transport=tcp\", \"turns:t.example:443?transport=tcp\"]\nsecret = \"s\"\nttl_s = 3600\n",
        )
        .unwrap();
        assert!(c.turn.enabled());
        assert_eq!(c.turn.urls.len(), 3);
        // URLs without a secret: allowed (the secret may come from the
        // environment), but nothing is handed out.
        let c = Config::from_toml_str("[turn]\nurls = [\"turn:t.example\"]\n").unwrap();
        assert!(!c.turn.enabled());
    }

    #[test]
    fn cluster_values_that_cannot_work_name_key_and_line() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://:s3cret@redis.internal:6379/0",
            "redis://noom:s3cret@[::1]:6379",
            "rediss://noom:s3cret@redis.example.com:6380/2",
            "redis+unix:///run/redis/redis.sock?db=1&pass=s3cret",
            "unix:///run/redis/redis.sock",
        ] {
            let c = Config::from_toml_str(&format!("[cluster]\nredis_url = \"{url}\"\n"))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(c.cluster.enabled());
        }
        for (url, says) in [
            ("http://:s3cret@redis:6379", "expected a redis://"),
            ("redis.internal:6379", "expected a redis://"),
            ("s3cret", "not a URL"),
            ("redis://:s3cret@", "not a URL"),
            ("redis://:s3cret@host:port", "not a URL"),
            ("redis://:s3cret@host/zero", "database number"),
            ("redis+unix://", "absolute path"),
            ("unix:relative.sock", "absolute path"),
        ] {
            let err = err_of(&format!("[cluster]\n\nredis_url = \"{url}\"\n"));
            assert!(
                err.contains("line 3, key `cluster.redis_url`"),
                "{url}: {err}"
            );
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("s3cret"), "{url}: {err}");
        }

        for id in ["a", "sfu-eu-1.example_2", &"x".repeat(64)] {
            let c = Config::from_toml_str(&format!(
                "[cluster]\nnode_id = \"{id}\"\nkey_prefix = \"{id}\"\n"
            ))
            .unwrap();
            assert_eq!(c.cluster.resolved_node_id(), id);
        }
        for bad in ["node 1", "noom:1", "nöde", &"x".repeat(65)] {
            for key in ["node_id", "key_prefix"] {
                let err = err_of(&format!("[cluster]\n{key} = \"{bad}\"\n"));
                assert!(
                    err.contains(&format!("line 2, key `cluster.{key}`")),
                    "{bad}: {err}"
                );
            }
        }
        // An empty node_id is derived; an empty prefix would put keys at ":nodes".
        assert!(Config::from_toml_str("[cluster]\nnode_id = \"\"\n").is_ok());
        let err = err_of("[cluster]\nkey_prefix = \"\"\n");
        assert!(err.contains("key `cluster.key_prefix`"), "{err}");

        let err = err_of("[cluster]\nheartbeat_ms = 99\n");
        assert!(err.contains("line 2, key `cluster.heartbeat_ms`"), "{err}");
        // The timeout must cover three heartbeats: 3000 is fine at 1000 ms...
        let c = Config::from_toml_str("[cluster]\nnode_timeout_ms = 3000\n").unwrap();
        assert_eq!(c.cluster.node_timeout_ms, 3000);
        // ...2999 is not, nor 5000 once heartbeats slow to 2 s.
        let err = err_of("[cluster]\nnode_timeout_ms = 2999\n");
        assert!(
            err.contains("line 2, key `cluster.node_timeout_ms`"),
            "{err}"
        );
        let err = err_of("[cluster]\nheartbeat_ms = 2000\n");
        assert!(err.contains("key `cluster.node_timeout_ms`"), "{err}");
        assert!(err.contains("6000"), "{err}");
        let c = Config::from_toml_str("[cluster]\nheartbeat_ms = 100\nnode_timeout_ms = 300\n")
            .unwrap();
        assert_eq!(c.cluster.heartbeat_ms, 100);
        for ms in [99, 10_001] {
            let err = err_of(&format!("[cluster]\nredis_timeout_ms = {ms}\n"));
            assert!(
                err.contains("line 2, key `cluster.redis_timeout_ms`"),
                "{err}"
            );
        }
        for ms in [100, 10_000] {
            let c =
                Config::from_toml_str(&format!("[cluster]\nredis_timeout_ms = {ms}\n")).unwrap();
            assert_eq!(c.cluster.redis_timeout_ms, ms);
        }
        // A huge heartbeat does not overflow the timeout rule.
        let err = err_of(&format!("[cluster]\nheartbeat_ms = {}\n", i64::MAX));
        assert!(err.contains("key `cluster.node_timeout_ms`"), "{err}");
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
}
