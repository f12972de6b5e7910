//! `noom --print-config`: the effective configuration as a complete TOML
//! file.

use crate::Config;

impl Config {
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
}
