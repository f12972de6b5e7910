//! What `[turn]` means beyond its raw fields: whether TURN is on, which URLs
//! a browser accepts, and the shared secret kept out of logs and printouts.
//!
//! The credentials themselves are minted per join by `noom-signaling`; this
//! crate only holds and checks the settings.

use crate::TurnConfig;
use serde::Serializer;
use std::fmt;

/// Shown instead of a configured secret (`--print-config`, `{:?}`).
pub const REDACTED: &str = "***";

/// Accepted `turn.ttl_s`. coturn checks the expiry in the username when a
/// client allocates a relay, and a client allocates again with the
/// credentials of its join after a media restart, so they should outlive
/// the longest call: under a minute they would not even outlive ICE
/// gathering on a slow network; over a year is a typo (and nearly a static
/// password).
pub const TURN_TTL_S: std::ops::RangeInclusive<u64> = 60..=31_536_000;

impl TurnConfig {
    /// TURN is handed out: a secret is set (the URLs are then non-empty, see
    /// [`crate::Config::validate`]). URLs without a secret are allowed, so a
    /// file can name the server and the environment supply the secret.
    pub fn enabled(&self) -> bool {
        !self.secret.is_empty()
    }
}

impl fmt::Debug for TurnConfig {
    // Hand-written so `{:?}` of a `Config` never shows the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so a new field cannot be forgotten here.
        let TurnConfig {
            urls,
            secret,
            ttl_s,
        } = self;
        f.debug_struct("TurnConfig")
            .field("urls", urls)
            .field("secret", &redacted(secret))
            .field("ttl_s", ttl_s)
            .finish()
    }
}

fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        REDACTED
    }
}

/// Serializes `secret` as `***` (empty stays empty), so `--print-config`
/// cannot leak it.
pub(crate) fn serialize_redacted<S: Serializer>(secret: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(redacted(secret))
}

/// Why `url` cannot be a TURN URL a browser accepts (RFC 7065:
/// `turn[s]:host[:port][?transport=udp|tcp]`), or None.
pub(crate) fn turn_url_problem(url: &str) -> Option<String> {
    let (scheme, rest) = match url.split_once(':') {
        Some((scheme @ ("turn" | "turns"), rest)) => (scheme, rest),
        _ => return Some(format!("{url:?}: must start with turn: or turns:")),
    };
    let (address, query) = match rest.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (rest, None),
    };
    if let Some(query) = query {
        match query {
            "transport=tcp" => {}
            "transport=udp" if scheme == "turn" => {}
            "transport=udp" => {
                return Some(format!(
                    "{url:?}: turns: is TLS over TCP; use ?transport=tcp or no query"
                ))
            }
            _ => {
                return Some(format!(
                    "{url:?}: the only query is ?transport=udp or ?transport=tcp"
                ))
            }
        }
    }
    // An IPv6 host is bracketed: [2001:db8::1]:3478.
    let (host, port) = match address.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Some(format!("{url:?}: junk after the IPv6 address")),
            },
            None => return Some(format!("{url:?}: unclosed [ in the IPv6 address")),
        },
        None => match address.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        },
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Some(format!(
            "{url:?} has no usable host (turn:host[:port][?transport=udp|tcp])"
        ));
    }
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return Some(format!("{url:?}: port {port:?} is not 1..65535"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::turn_url_problem;
    use crate::{Config, TurnConfig};

    #[test]
    fn accepts_the_urls_browsers_accept() {
        for url in [
            "turn:turn.example.com:3478?transport=udp",
            "turn:turn.example.com:3478?transport=tcp",
            "turns:turn.example.com:443?transport=tcp",
            "turn:turn.example.com",
            "turns:turn.example.com",
            "turn:192.0.2.7:3478",
            "turn:[2001:db8::1]:3478?transport=udp",
            "turn:[2001:db8::1]",
        ] {
            assert_eq!(turn_url_problem(url), None, "{url}");
        }
    }

    #[test]
    fn rejects_what_a_browser_would_refuse_with_the_reason() {
        let cases = [
            (
                "stun:stun.example.com:3478",
                "must start with turn: or turns:",
            ),
            ("turn.example.com:3478", "must start with turn: or turns:"),
            ("turn:", "has no usable host"),
            ("turn::3478", "has no usable host"),
            ("turn://turn.example.com", "has no usable host"),
            ("turn:turn.example.com:0", "port \"0\" is not 1..65535"),
            ("turn:turn.example.com:70000", "is not 1..65535"),
            ("turn:turn.example.com:abc", "is not 1..65535"),
            ("turn:h?transport=sctp", "the only query is"),
            ("turns:h:443?transport=udp", "turns: is TLS over TCP"),
            ("turn:[2001:db8::1", "unclosed ["),
            ("turn:[2001:db8::1]3478", "junk after the IPv6 address"),
        ];
        for (url, reason) in cases {
            let problem = turn_url_problem(url).unwrap_or_else(|| panic!("{url} accepted"));
            assert!(problem.contains(reason), "{url}: {problem}");
        }
    }

    #[test]
    fn secret_is_redacted_in_print_and_debug() {
        let mut c = Config::embedded();
        assert!(!c.turn.enabled());
        c.turn = TurnConfig {
            urls: vec!["turn:turn.example.com:3478?transport=udp".into()],
            secret: "hunter2".into(),
            ttl_s: 3600,
        };
        assert!(c.turn.enabled());
        let text = c.to_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("secret = \"***\""), "{text}");
        assert!(text.contains("turn.secret is shown as ***"), "{text}");
        let debug = format!("{c:?} {c:#?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        // The printed file loads back with everything but the secret.
        let back = Config::from_toml_str(&text).unwrap();
        assert_eq!(back.turn.secret, "***");
        assert_eq!(back.turn.urls, c.turn.urls);
        assert_eq!(back.turn.ttl_s, 3600);
    }
}
