//! Loading: the embedded default `config.toml`, a user's full or partial
//! file laid over it key by key, and the mapping of every error back to the
//! user's key and line.

use crate::error::{error_path, line_of, locate};
use crate::{Config, ConfigError};
use std::path::Path;

/// The default configuration, with a comment for every key.
pub const DEFAULT_TOML: &str = include_str!("../config.toml");

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
}

#[cfg(test)]
mod tests {
    use crate::{Config, IceServer, LogFormat, DEFAULT_TOML};

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
        assert!(c.turn.urls.is_empty());
        assert_eq!(c.turn.secret, "");
        assert!(!c.turn.enabled());
        assert_eq!(c.turn.ttl_s, 86400);
        assert_eq!(c.limits.max_rooms, 1000);
        assert_eq!(c.limits.max_participants_per_room, 50);
        assert_eq!(c.limits.max_message_bytes, 65536);
        assert_eq!(c.limits.messages_per_second, 50);
        assert_eq!(c.limits.message_burst, 100);
        assert_eq!(c.keyframes.pli_throttle_ms, 500);
        assert_eq!(c.session.grace_period_ms, 10000);
        assert_eq!(c.cluster.redis_url, "");
        assert!(!c.cluster.enabled());
        assert_eq!(c.cluster.node_id, "");
        assert_eq!(c.cluster.key_prefix, "noom");
        assert_eq!(c.cluster.heartbeat_ms, 1000);
        assert_eq!(c.cluster.node_timeout_ms, 5000);
        assert_eq!(c.cluster.redis_timeout_ms, 2000);
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
}
