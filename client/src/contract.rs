//! The signaling contract's payloads (`shared/contract/signaling.md`):
//! typed views of `joined`, participants and `rooms`, error checks, and a
//! short rendering of any message for failure output.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use crate::sdp::parse_sections;

/// Milliseconds since the Unix epoch (the contract's timestamps).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Short, single-line rendering of a JSON message for failure output.
pub fn brief(v: &Value) -> String {
    let mut v = v.clone();
    if let Some(sdp) = v.get_mut("sdp") {
        if let Some(s) = sdp.as_str() {
            let sections = parse_sections(s);
            *sdp = Value::String(format!(
                "<sdp: {} m-sections: {}>",
                sections.len(),
                sections
                    .iter()
                    .map(|m| m.short())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let s = v.to_string();
    if s.len() > 400 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(400).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub id: String,
    pub name: String,
    pub audio_muted: bool,
    pub video_muted: bool,
}

impl Participant {
    pub fn from_json(v: &Value) -> Result<Participant> {
        let field = |k: &str| {
            v.get(k)
                .ok_or_else(|| anyhow!("participant object lacks `{k}`: {v}"))
        };
        Ok(Participant {
            id: field("id")?
                .as_str()
                .ok_or_else(|| anyhow!("participant `id` is not a string: {v}"))?
                .to_owned(),
            name: field("name")?
                .as_str()
                .ok_or_else(|| anyhow!("participant `name` is not a string: {v}"))?
                .to_owned(),
            audio_muted: field("audio_muted")?
                .as_bool()
                .ok_or_else(|| anyhow!("participant `audio_muted` is not a bool: {v}"))?,
            video_muted: field("video_muted")?
                .as_bool()
                .ok_or_else(|| anyhow!("participant `video_muted` is not a bool: {v}"))?,
        })
    }
}

/// The `joined` reply.
#[derive(Debug, Clone)]
pub struct Joined {
    pub room: String,
    pub you: String,
    pub participants: Vec<Participant>,
    pub raw: Value,
}

impl Joined {
    pub fn from_json(v: &Value) -> Result<Joined> {
        if v["type"] != "joined" {
            bail!("expected a `joined` reply, got {}", brief(v));
        }
        let participants = v["participants"]
            .as_array()
            .ok_or_else(|| anyhow!("`joined` without a `participants` array: {}", brief(v)))?
            .iter()
            .map(Participant::from_json)
            .collect::<Result<Vec<_>>>()?;
        if !v["ice_servers"].is_array() {
            bail!("`joined` without an `ice_servers` array: {}", brief(v));
        }
        Ok(Joined {
            room: v["room"]
                .as_str()
                .ok_or_else(|| anyhow!("`joined` without `room`: {}", brief(v)))?
                .to_owned(),
            you: v["you"]
                .as_str()
                .ok_or_else(|| anyhow!("`joined` without `you`: {}", brief(v)))?
                .to_owned(),
            participants,
            raw: v.clone(),
        })
    }
}

/// Rooms listed in a `rooms` message, as `name -> participants`.
pub fn rooms_of(v: &Value) -> Result<HashMap<String, u64>> {
    let list = v["rooms"]
        .as_array()
        .ok_or_else(|| anyhow!("`rooms` message without a `rooms` array: {}", brief(v)))?;
    let mut out = HashMap::new();
    for r in list {
        let name = r["name"]
            .as_str()
            .ok_or_else(|| anyhow!("room entry without a string `name`: {r}"))?;
        let n = r["participants"]
            .as_u64()
            .ok_or_else(|| anyhow!("room entry without a numeric `participants`: {r}"))?;
        out.insert(name.to_owned(), n);
    }
    Ok(out)
}

/// Checks that `reply` is `{"type":"error","code":code,"message":...}`.
pub fn expect_error(label: &str, reply: &Value, code: &str, sent: &str) -> Result<()> {
    if reply["type"] != "error" || reply["code"] != code {
        bail!(
            "{label}: expected error `{code}` for {sent}, got {}",
            brief(reply)
        );
    }
    if !reply["message"].is_string() {
        bail!(
            "{label}: error reply for {sent} has no string `message`: {}",
            brief(reply)
        );
    }
    Ok(())
}

/// Sanity check for a unix-ms timestamp: within a minute of now.
pub fn is_recent_unix_ms(v: &Value) -> bool {
    match v.as_u64() {
        Some(ts) => ts.abs_diff(now_unix_ms()) < 60_000,
        None => false,
    }
}
