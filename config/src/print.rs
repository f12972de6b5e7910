//! `noom --print-config`: the effective configuration as a complete TOML
//! file.

use crate::Config;

impl Config {
    /// The configuration as TOML, for `noom --print-config`. Every key is
    /// written (`public_ip = ""` when none), so the output is a complete
    /// file that [`Config::from_toml_str`] reads back to an equal `Config`.
    /// `shards = 0` and `bind_ips = []` are printed as configured, not
    /// resolved, so the file stays portable between hosts; so is an empty
    /// `cluster.node_id`.
    ///
    /// The exceptions to reading back equal: the password in
    /// `cluster.redis_url` and `turn.secret` are printed as `***` (the
    /// output ends up in terminals, tickets and logs), and a header line
    /// says so.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("config serializes");
        let mut redacted = String::new();
        if self.cluster.redis_url_redacted() != self.cluster.redis_url {
            redacted.push_str(
                "# cluster.redis_url is shown with its password replaced by ***; set the real URL\n\
                 # again (preferably with NOOM_CLUSTER_REDIS_URL) before using this file.\n",
            );
        }
        if self.turn.enabled() {
            redacted.push_str(
                "# turn.secret is shown as ***; set the real secret again (preferably with\n\
                 # NOOM_TURN_SECRET) before using this file.\n",
            );
        }
        format!(
            "# Effective Noom configuration (defaults, then --config file, then NOOM_* environment).\n\
             # See the embedded config.toml for what each key does.\n{redacted}\n{body}"
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, IceServer, LogFormat};

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
    fn redis_password_is_redacted_in_print_and_debug() {
        let mut c = Config::embedded();
        assert!(c.to_toml().contains("redis_url = \"\""));
        assert!(!c.to_toml().contains("password replaced"));
        c.cluster.redis_url = "rediss://noom:hunter2@redis.example.com:6380/1".into();
        c.cluster.node_id = "node-a".into();
        let text = c.to_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("redis_url = \"rediss://noom:***@redis.example.com:6380/1\""),
            "{text}"
        );
        assert!(text.contains("password replaced by ***"), "{text}");
        let debug = format!("{c:?} {c:#?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("rediss://noom:***@redis.example.com"),
            "{debug}"
        );

        // The printed file still loads; everything but the password survives.
        let back = Config::from_toml_str(&text).unwrap();
        assert_eq!(back.cluster.redis_url, c.cluster.redis_url_redacted());
        let mut expected = c.clone();
        expected.cluster.redis_url = back.cluster.redis_url.clone();
        assert_eq!(back, expected);

        // Socket URLs carry the password as a query parameter.
        c.cluster.redis_url = "redis+unix:///run/redis.sock?pass=hunter2".into();
        let text = c.to_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
