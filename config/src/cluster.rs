//! What `[cluster]` means beyond its raw fields: whether clustering is on,
//! the effective node id, and the Redis URL with its password hidden.
//!
//! The URL is checked with the `url` crate, the parser the `redis` driver
//! itself uses (it is already in the lock file through `redis`), rather than
//! by depending on the whole driver here: the config crate only needs to
//! reject what can never connect, and `noom-signaling` still hands the URL to
//! the driver, which has the last word, at start.

use crate::ClusterConfig;
use rand::Rng;
use serde::Serializer;
use std::fmt;

/// Longest accepted `node_id` / `key_prefix`: both end up in every Redis key
/// and channel name, and in log lines.
pub const MAX_NAME_LEN: usize = 64;

/// Length of the random suffix of a derived node id: 36^6 ≈ 2·10^9, so two
/// nodes started on hosts with the same name (containers) do not collide.
const SUFFIX_LEN: usize = 6;

/// Shown instead of a URL that does not parse: it might be a password typed
/// into the wrong place.
const UNPARSABLE: &str = "<unparsable Redis URL>";

impl ClusterConfig {
    /// Clustering is on: a Redis URL is set. Off means exactly the
    /// single-node server, which never touches Redis.
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }

    /// The node id to use: `node_id` when set, else `<hostname>-<6 random
    /// lowercase letters or digits>`. Every call without a configured id
    /// draws a new suffix, so call it once at start and keep the result.
    ///
    /// The host name comes from `/proc/sys/kernel/hostname`, else `$HOSTNAME`,
    /// else `noom`; characters outside `[A-Za-z0-9._-]` become `-` and it is
    /// cut so the whole id stays within [`MAX_NAME_LEN`], so a derived id
    /// always passes the same check as a configured one.
    pub fn resolved_node_id(&self) -> String {
        if self.node_id.is_empty() {
            derived_node_id(&host_name())
        } else {
            self.node_id.clone()
        }
    }

    /// `redis_url` fit for logs: the password (user-info or the `pass=`
    /// query parameter of socket URLs) replaced by `***`, e.g.
    /// `redis://:***@host:6379/0`. Empty stays empty; a value that does not
    /// parse is hidden entirely.
    pub fn redis_url_redacted(&self) -> String {
        redact(&self.redis_url)
    }
}

impl fmt::Debug for ClusterConfig {
    // Hand-written so `{:?}` of a `Config` never shows the Redis password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so a new field cannot be forgotten here.
        let ClusterConfig {
            redis_url: _,
            node_id,
            key_prefix,
            heartbeat_ms,
            node_timeout_ms,
            redis_timeout_ms,
        } = self;
        f.debug_struct("ClusterConfig")
            .field("redis_url", &self.redis_url_redacted())
            .field("node_id", node_id)
            .field("key_prefix", key_prefix)
            .field("heartbeat_ms", heartbeat_ms)
            .field("node_timeout_ms", node_timeout_ms)
            .field("redis_timeout_ms", redis_timeout_ms)
            .finish()
    }
}

/// Serializes `redis_url` redacted, so `--print-config` (and anything else
/// that serializes a `Config`) cannot leak the password.
pub(crate) fn serialize_redacted<S: Serializer>(raw: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact(raw))
}

fn redact(raw: &str) -> String {
    if raw.is_empty() {
        return String::new();
    }
    let Ok(mut url) = url::Url::parse(raw) else {
        return UNPARSABLE.to_owned();
    };
    if url.password().is_some() && url.set_password(Some("***")).is_err() {
        return UNPARSABLE.to_owned();
    }
    // `redis+unix:///path?pass=secret`: the driver reads the password here.
    if url.query_pairs().any(|(k, _)| is_password_param(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_password_param(&k) {
                    "***".into()
                } else {
                    v
                };
                (k.into_owned(), v.into_owned())
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

fn is_password_param(key: &str) -> bool {
    matches!(key, "pass" | "password")
}

/// Why `raw` (non-empty) cannot be a Redis URL, in words that never repeat
/// the URL itself (it may hold a password).
pub(crate) fn redis_url_problem(raw: &str) -> Option<String> {
    const EXPECTED: &str =
        "expected a redis://, rediss://, redis+unix:// or unix:// URL, or \"\" for a single node";
    let url = match url::Url::parse(raw) {
        Ok(url) => url,
        Err(e) => return Some(format!("not a URL ({e}); {EXPECTED}")),
    };
    match url.scheme() {
        "redis" | "rediss" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Some("has no host, e.g. redis://redis.internal:6379".into());
            }
            let db = url.path().trim_matches('/');
            if !db.is_empty() && db.parse::<u32>().is_err() {
                return Some(format!(
                    "the path must be a database number such as /0, got /{db}"
                ));
            }
            None
        }
        "redis+unix" | "unix" => {
            if url.path().trim_matches('/').is_empty() || url.to_file_path().is_err() {
                return Some(
                    "needs the socket's absolute path, e.g. unix:///run/redis/redis.sock".into(),
                );
            }
            None
        }
        _ => Some(EXPECTED.into()),
    }
}

/// 1..=[`MAX_NAME_LEN`] characters of `[A-Za-z0-9._-]`: safe inside Redis
/// key and channel names (no `:` separator, no spaces) and in log lines.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.chars().all(is_name_char)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// The kernel's host name. `/proc` rather than a `gethostname` crate, which
/// is not in the lock file (nor is `nix`'s `hostname` feature enabled); Noom
/// runs on Linux, and `$HOSTNAME` covers the rest.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "noom".to_owned())
}

fn derived_node_id(host: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let host: String = host
        .chars()
        .map(|c| if is_name_char(c) { c } else { '-' })
        .take(MAX_NAME_LEN - SUFFIX_LEN - 1)
        .collect();
    let host = if host.is_empty() { "noom" } else { &host };
    let mut rng = rand::rng();
    let suffix: String = (0..SUFFIX_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{host}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::{derived_node_id, is_valid_name, MAX_NAME_LEN};
    use crate::Config;

    fn cluster(url: &str) -> crate::ClusterConfig {
        let mut c = Config::embedded().cluster;
        c.redis_url = url.to_owned();
        c
    }

    #[test]
    fn redaction_hides_only_the_password() {
        for (url, shown) in [
            ("", ""),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
            (
                "rediss://noom:s3cret@redis.example.com:6380/2",
                "rediss://noom:***@redis.example.com:6380/2",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&pass=s3cret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            ("unix:///run/redis.sock", "unix:///run/redis.sock"),
            ("redis://:s3cret@", "<unparsable Redis URL>"),
        ] {
            let c = cluster(url);
            assert_eq!(c.redis_url_redacted(), shown, "{url}");
            assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        }
        assert!(!cluster("").enabled());
        assert!(cluster("redis://h").enabled());
    }

    #[test]
    fn derived_node_ids_are_host_plus_random_suffix() {
        let c = Config::embedded().cluster;
        let a = c.resolved_node_id();
        let b = c.resolved_node_id();
        assert!(is_valid_name(&a), "{a}");
        assert_ne!(a, b, "two derived ids drew the same suffix");
        let (host, suffix) = a.rsplit_once('-').unwrap();
        assert!(!host.is_empty(), "{a}");
        assert_eq!(suffix.len(), 6, "{a}");
        assert!(
            suffix
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit()),
            "{a}"
        );

        // Odd or long host names still give a valid id.
        let long = derived_node_id(&"h".repeat(300));
        assert_eq!(long.len(), MAX_NAME_LEN, "{long}");
        assert!(is_valid_name(&long), "{long}");
        let odd = derived_node_id("my host:1/é");
        assert!(odd.starts_with("my-host-1--"), "{odd}");
        assert!(is_valid_name(&odd), "{odd}");
        assert!(derived_node_id("").starts_with("noom-"));

        // A configured id is used as is.
        let mut c = c;
        c.node_id = "sfu-eu-1".into();
        assert_eq!(c.resolved_node_id(), "sfu-eu-1");
    }
}
