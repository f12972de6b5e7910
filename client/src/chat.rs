//! Chat (contract section "Chat"): sending to the room or to one
//! participant, and the typed message recipients get.

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use crate::contract::brief;
use crate::Client;

/// A chat message as a recipient gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Sender's participant id.
    pub from: String,
    /// Sender's display name.
    pub name: String,
    pub text: String,
    /// Unix milliseconds, the server's clock.
    pub ts: u64,
    /// Set on a direct message: our participant id.
    pub to: Option<String>,
}

impl ChatMessage {
    /// Reads a `chat` push; `None` for any other message.
    pub fn from_json(v: &Value) -> Option<Result<ChatMessage>> {
        if v["type"] != "chat" || v.get("req").is_some() {
            return None;
        }
        let text = |k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("`chat` without a string `{k}`: {}", brief(v)))
        };
        Some((|| {
            Ok(ChatMessage {
                from: text("from")?,
                name: text("name")?,
                text: text("text")?,
                ts: v["ts"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("`chat` without a numeric `ts`: {}", brief(v)))?,
                to: v["to"].as_str().map(str::to_owned),
            })
        })())
    }
}

impl Client {
    /// Sends `text` to the room, or to one participant with `to`; awaits `ok`.
    pub async fn send_chat(&mut self, text: &str, to: Option<&str>) -> Result<()> {
        let mut msg = json!({"type": "chat", "text": text});
        if let Some(to) = to {
            msg["to"] = json!(to);
        }
        self.request_ok(msg).await.map(|_| ())
    }
}
