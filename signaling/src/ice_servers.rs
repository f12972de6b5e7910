//! The `ice_servers` of a `joined` message: the configured STUN servers
//! (`[ice]`), plus, when `[turn]` has a secret, one TURN entry with
//! credentials minted for this participant and this join.
//!
//! The credentials follow coturn's REST scheme (`use-auth-secret`):
//! username `<unix expiry>:<participant id>`, credential
//! base64(HMAC-SHA1(secret, username)). coturn recomputes the HMAC with the
//! same secret and refuses an expired timestamp, so Noom and coturn share
//! one secret and nothing per user; a leaked credential dies at its expiry.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use noom_config::{IceServer, TurnConfig};
use serde_json::Value;
use sha1::Sha1;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What every `joined` hands out, built once at start.
pub(crate) struct IceServers {
    /// `[ice]` entries, rendered once: they never change.
    fixed: Vec<Value>,
    /// Present when `[turn]` is enabled.
    turn: Option<Turn>,
}

struct Turn {
    urls: Vec<String>,
    secret: String,
    ttl: Duration,
}

impl IceServers {
    pub(crate) fn new(stun: &[IceServer], turn: &TurnConfig) -> serde_json::Result<IceServers> {
        Ok(IceServers {
            fixed: stun
                .iter()
                .map(serde_json::to_value)
                .collect::<serde_json::Result<_>>()?,
            turn: turn.enabled().then(|| Turn {
                urls: turn.urls.clone(),
                secret: turn.secret.clone(),
                ttl: Duration::from_secs(turn.ttl_s),
            }),
        })
    }

    /// The list for `participant`, joining now.
    pub(crate) fn for_participant(&self, participant: &str) -> Value {
        self.at(participant, SystemTime::now())
    }

    fn at(&self, participant: &str, now: SystemTime) -> Value {
        let mut list = self.fixed.clone();
        if let Some(turn) = &self.turn {
            let expiry = (now + turn.ttl)
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let username = format!("{expiry}:{participant}");
            let credential = credential(&turn.secret, &username);
            list.push(serde_json::json!({
                "urls": turn.urls,
                "username": username,
                "credential": credential,
            }));
        }
        Value::Array(list)
    }
}

/// coturn's REST credential: base64(HMAC-SHA1(secret, username)).
fn credential(secret: &str, username: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(secret: &str, ttl_s: u64) -> TurnConfig {
        let mut t = noom_config::Config::embedded().turn;
        t.urls = vec![
            "turn:turn.example.com:3478?transport=udp".into(),
            "turns:turn.example.com:443?transport=tcp".into(),
        ];
        t.secret = secret.into();
        t.ttl_s = ttl_s;
        t
    }

    #[test]
    fn credential_matches_a_value_computed_outside_rust() {
        // printf '%s' '1700086400:pAbCdEfGhIjK' |
        //   openssl dgst -sha1 -hmac 'north-wind' -binary | base64
        // (and Python's hmac module) give this:
        assert_eq!(
            credential("north-wind", "1700086400:pAbCdEfGhIjK"),
            "/ZTtQWY9FYiUQOxu36wvtJNBeKY="
        );
    }

    #[test]
    fn joined_carries_stun_then_one_turn_entry_expiring_after_ttl() {
        let stun = noom_config::Config::embedded().ice.servers;
        let servers = IceServers::new(&stun, &turn("north-wind", 3600)).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let list = servers.at("pAbCdEfGhIjK", now);
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), stun.len() + 1);
        for (given, configured) in list.iter().zip(&stun) {
            assert_eq!(given, &serde_json::to_value(configured).unwrap());
        }
        let entry = list.last().unwrap();
        assert_eq!(entry["urls"], serde_json::json!(turn("", 60).urls));
        assert_eq!(entry["username"], "1700003600:pAbCdEfGhIjK");
        assert_eq!(
            entry["credential"],
            credential("north-wind", "1700003600:pAbCdEfGhIjK")
        );

        // The wall clock is used: the expiry is now + ttl.
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let live = servers.for_participant("p1");
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let username = live[stun.len()]["username"].as_str().unwrap();
        let (expiry, id) = username.split_once(':').unwrap();
        assert_eq!(id, "p1");
        let expiry: u64 = expiry.parse().unwrap();
        assert!(
            (before.as_secs() + 3600..=after.as_secs() + 3600).contains(&expiry),
            "{expiry}"
        );
    }

    #[test]
    fn no_secret_no_turn_entry() {
        let stun = noom_config::Config::embedded().ice.servers;
        let mut no_secret = turn("", 3600);
        assert!(!no_secret.enabled());
        let servers = IceServers::new(&stun, &no_secret).unwrap();
        assert_eq!(
            servers.for_participant("p1"),
            serde_json::to_value(&stun).unwrap()
        );
        no_secret.urls.clear();
        let servers = IceServers::new(&[], &no_secret).unwrap();
        assert_eq!(servers.for_participant("p1"), serde_json::json!([]));
    }
}
