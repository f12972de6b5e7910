//! The `NOOM_*` environment overrides, applied last (after the embedded
//! defaults and the `--config` file), all or nothing.

use crate::{Config, ConfigError};
use std::fmt;
use std::str::FromStr;

impl Config {
    /// Applies the `NOOM_*` environment overrides found in `vars` (pass
    /// `std::env::vars()`; tests pass a literal list). Other variables,
    /// including unrelated `NOOM_*` ones, are ignored.
    ///
    /// | variable              | key               | format                          |
    /// |-----------------------|-------------------|---------------------------------|
    /// | `NOOM_HTTP_LISTEN`    | `http.listen`     | `IP:PORT`                       |
    /// | `NOOM_MEDIA_BIND_IPS` | `media.bind_ips`  | comma-separated; empty = all    |
    /// | `NOOM_MEDIA_PORT`     | `media.port`      | integer                         |
    /// | `NOOM_MEDIA_BANDWIDTH_ALLOCATION` | `media.bandwidth_allocation` | `true` or `false` |
    /// | `NOOM_MEDIA_PUBLISHER_START_KBPS` | `media.publisher_start_kbps` | integer, 0 = the browser's own |
    /// | `NOOM_MEDIA_SHARDS`   | `media.shards`    | integer, 0 = one per core       |
    /// | `NOOM_PUBLIC_IP`      | `media.public_ip` | IP; empty = none                |
    /// | `NOOM_AUTH_SECRET`    | `auth.secret`     | string                          |
    /// | `NOOM_ADMIN_TOKEN`    | `admin.token`     | string                          |
    /// | `NOOM_TURN_SECRET`    | `turn.secret`     | string; empty = no TURN entry   |
    /// | `NOOM_CLUSTER_REDIS_URL` | `cluster.redis_url` | Redis URL; empty = single node |
    /// | `NOOM_NODE_ID`        | `cluster.node_id` | id; empty = derived at start    |
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
                "NOOM_MEDIA_BANDWIDTH_ALLOCATION" => {
                    next.media.bandwidth_allocation =
                        parsed(&var, "media.bandwidth_allocation", &value)?;
                    "media.bandwidth_allocation"
                }
                "NOOM_MEDIA_PUBLISHER_START_KBPS" => {
                    next.media.publisher_start_kbps =
                        parsed(&var, "media.publisher_start_kbps", &value)?;
                    "media.publisher_start_kbps"
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
                "NOOM_TURN_SECRET" => {
                    next.turn.secret = value.clone();
                    "turn.secret"
                }
                "NOOM_CLUSTER_REDIS_URL" => {
                    next.cluster.redis_url = value.trim().to_owned();
                    "cluster.redis_url"
                }
                "NOOM_NODE_ID" => {
                    next.cluster.node_id = value.trim().to_owned();
                    "cluster.node_id"
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
}

#[cfg(test)]
mod tests {
    use crate::{Config, LogFormat};
    use std::net::IpAddr;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
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

        c.apply_env(env(&[
            (
                "NOOM_CLUSTER_REDIS_URL",
                " redis://:s3cret@10.0.0.9:6379/0 ",
            ),
            ("NOOM_NODE_ID", "sfu-eu-1"),
        ]))
        .unwrap();
        assert_eq!(c.cluster.redis_url, "redis://:s3cret@10.0.0.9:6379/0");
        assert!(c.cluster.enabled());
        assert_eq!(c.cluster.node_id, "sfu-eu-1");
        assert_eq!(c.cluster.resolved_node_id(), "sfu-eu-1");
        // Empty values mean "single node" and "derive the id".
        let mut single = c.clone();
        single
            .apply_env(env(&[("NOOM_CLUSTER_REDIS_URL", ""), ("NOOM_NODE_ID", "")]))
            .unwrap();
        assert!(!single.cluster.enabled());
        assert_eq!(single.cluster.node_id, "");

        // The TURN secret, with the URLs from a file.
        let mut turn = Config::from_toml_str("[turn]\nurls = [\"turn:t.example:3478\"]\n").unwrap();
        turn.apply_env(env(&[("NOOM_TURN_SECRET", "s3cret")]))
            .unwrap();
        assert_eq!(turn.turn.secret, "s3cret");
        assert!(turn.turn.enabled());
        // Without URLs a secret is refused, blamed on the variable's key.
        let mut no_urls = Config::embedded();
        let err = no_urls
            .apply_env(env(&[("NOOM_TURN_SECRET", "s3cret")]))
            .unwrap_err();
        assert_eq!(err.key(), Some("turn.urls"));
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert_eq!(no_urls, Config::embedded());
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
            ("NOOM_CLUSTER_REDIS_URL", "http://:s3cret@redis:6379"),
            ("NOOM_CLUSTER_REDIS_URL", "10.0.0.9:6379"),
            ("NOOM_NODE_ID", "node one"),
            ("NOOM_NODE_ID", "noom:1"),
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
            assert!(!err.contains("s3cret"), "{err}");
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
}
