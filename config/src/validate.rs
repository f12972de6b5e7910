//! Semantic checks on values that parse but cannot work.
//!
//! [`Config::check`] says only *which key* is wrong; the caller says *where*
//! it came from (a line of the user's file, an environment variable, or a
//! programmatic edit), because only the caller knows.

use crate::{Config, ConfigError};

/// Most media shards accepted. Each shard is a thread with its own UDP port,
/// so a stray extra digit would otherwise spawn thousands of threads.
pub const MAX_SHARDS: usize = 1024;

/// Smallest accepted `limits.max_message_bytes`: below this even a `join`
/// with a modest SDP offer would be rejected.
pub const MIN_MESSAGE_BYTES: usize = 1024;

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

        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            return invalid(
                "log.level",
                format!("{:?} is not a valid filter: {e}", self.log.level),
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
