//! Messages between nodes over Redis pub/sub: one channel per node for
//! addressed messages, one broadcast channel everybody hears.
//!
//! Every message is a versioned JSON envelope `{"v":1,"from":..,"kind":..}`.
//! The channels are plain Redis channels anyone with access can publish on,
//! and a rolling upgrade runs two versions side by side, so whatever arrives
//! is checked: not JSON, a version we do not speak, an unknown kind or bad
//! fields are dropped and counted (for metrics), never a panic, never
//! passed on.
//!
//! Delivery is at most once (Redis pub/sub); ordering and loss detection for
//! relayed connections are `relay`'s job.

use super::ask::{Answer, Question};
use super::keys::Keys;
use super::link::{Delivery, Link, LinkError};
use super::relay::RelayFrame;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The envelope version this build speaks.
pub const BUS_VERSION: u32 = 1;

/// What nodes tell each other. Adding a kind is backwards compatible: an
/// older node drops it as unknown and counts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusMessage {
    /// Lobby lists changed (counts, rooms): refresh from Redis.
    RoomsChanged {},
    /// One frame of a relayed connection.
    Relay(RelayFrame),
    /// A question to the node addressed (see `ask`).
    Ask { id: u64, question: Question },
    /// The answer to question `id` of the node addressed.
    Answer { id: u64, answer: Answer },
}

/// Kinds of [`BusMessage`], to tell "unknown kind" from "bad fields".
const KNOWN_KINDS: &[&str] = &["rooms_changed", "relay", "ask", "answer"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub from: String,
    #[serde(flatten)]
    pub message: BusMessage,
}

/// Dropped messages by reason, and accepted ones.
#[derive(Debug, Default)]
pub struct BusCounters {
    pub accepted: AtomicU64,
    pub not_json: AtomicU64,
    pub wrong_version: AtomicU64,
    pub unknown_kind: AtomicU64,
    pub bad_fields: AtomicU64,
    /// Good messages dropped because the consumer was not keeping up.
    pub overflow: AtomicU64,
}

impl BusCounters {
    /// Everything dropped as garbage or foreign.
    pub fn rejected(&self) -> u64 {
        self.not_json.load(Ordering::Relaxed)
            + self.wrong_version.load(Ordering::Relaxed)
            + self.unknown_kind.load(Ordering::Relaxed)
            + self.bad_fields.load(Ordering::Relaxed)
    }
}

/// Why a payload was rejected.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    NotJson,
    WrongVersion,
    UnknownKind,
    BadFields,
}

/// Decodes one payload, or says why not.
pub fn decode(payload: &[u8]) -> Result<Envelope, Rejection> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| Rejection::NotJson)?;
    if value.get("v").and_then(serde_json::Value::as_u64) != Some(u64::from(BUS_VERSION)) {
        return Err(Rejection::WrongVersion);
    }
    match value.get("kind").and_then(serde_json::Value::as_str) {
        Some(kind) if KNOWN_KINDS.contains(&kind) => {}
        _ => return Err(Rejection::UnknownKind),
    }
    serde_json::from_value(value).map_err(|_| Rejection::BadFields)
}

/// Sends and receives bus messages for one node.
pub struct Bus {
    link: Arc<Link>,
    keys: Keys,
    node: String,
    pub counters: Arc<BusCounters>,
    reader: tokio::task::JoinHandle<()>,
}

impl Bus {
    /// Subscribes this node's channels and starts decoding what the link
    /// receives. Returns the bus and a bounded receiver of good messages
    /// (addressed to us, or broadcast by another node).
    pub async fn start(
        link: Arc<Link>,
        inbox: mpsc::Receiver<Delivery>,
        keys: Keys,
        node: &str,
        capacity: usize,
    ) -> Result<(Self, mpsc::Receiver<Envelope>), LinkError> {
        link.subscribe(&keys.broadcast_channel()).await?;
        link.subscribe(&keys.node_channel(node)).await?;
        let counters = Arc::new(BusCounters::default());
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let reader = tokio::spawn(read_loop(inbox, tx, counters.clone(), node.to_owned()));
        Ok((
            Self {
                link,
                keys,
                node: node.to_owned(),
                counters,
                reader,
            },
            rx,
        ))
    }

    fn encode(&self, message: BusMessage) -> Vec<u8> {
        let envelope = Envelope {
            v: BUS_VERSION,
            from: self.node.clone(),
            message,
        };
        // Serialising plain data to a Vec cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// To one node. Returns whether some process was listening (false: the
    /// node is gone or cut off from Redis).
    pub async fn send_to(&self, node: &str, message: BusMessage) -> Result<bool, LinkError> {
        let listeners = self
            .link
            .publish(&self.keys.node_channel(node), &self.encode(message))
            .await?;
        Ok(listeners > 0)
    }

    /// To every other node.
    pub async fn broadcast(&self, message: BusMessage) -> Result<(), LinkError> {
        self.link
            .publish(&self.keys.broadcast_channel(), &self.encode(message))
            .await
            .map(|_| ())
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop(
    mut inbox: mpsc::Receiver<Delivery>,
    out: mpsc::Sender<Envelope>,
    counters: Arc<BusCounters>,
    node: String,
) {
    while let Some(delivery) = inbox.recv().await {
        let envelope = match decode(&delivery.payload) {
            Ok(envelope) => envelope,
            Err(rejection) => {
                let counter = match rejection {
                    Rejection::NotJson => &counters.not_json,
                    Rejection::WrongVersion => &counters.wrong_version,
                    Rejection::UnknownKind => &counters.unknown_kind,
                    Rejection::BadFields => &counters.bad_fields,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(channel = %delivery.channel, ?rejection, "bus message dropped");
                continue;
            }
        };
        // Our own broadcasts come back to us; we already acted on them.
        if envelope.from == node {
            continue;
        }
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        if out.try_send(envelope).is_err() {
            counters.overflow.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_the_round_trip() {
        let envelope = Envelope {
            v: BUS_VERSION,
            from: "node-a".into(),
            message: BusMessage::Answer {
                id: 7,
                answer: Answer::Kicked { found: true },
            },
        };
        let bytes = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(decode(&bytes), Ok(envelope));
    }

    #[test]
    fn garbage_is_rejected_with_its_reason() {
        assert_eq!(decode(b"\xff\x00not json"), Err(Rejection::NotJson));
        assert_eq!(decode(b"[1,2"), Err(Rejection::NotJson));
        assert_eq!(
            decode(br#"{"v":2,"from":"x","kind":"rooms_changed"}"#),
            Err(Rejection::WrongVersion)
        );
        assert_eq!(
            decode(br#"{"from":"x","kind":"rooms_changed"}"#),
            Err(Rejection::WrongVersion)
        );
        assert_eq!(
            decode(br#"{"v":1,"from":"x","kind":"format_disk"}"#),
            Err(Rejection::UnknownKind)
        );
        assert_eq!(
            decode(br#"{"v":1,"from":"x","kind":"ask","id":"seven"}"#),
            Err(Rejection::BadFields)
        );
        assert_eq!(
            decode(br#"{"v":1,"kind":"rooms_changed"}"#),
            Err(Rejection::BadFields)
        );
    }

    #[test]
    fn a_relay_frame_travels_in_the_envelope() {
        let bytes =
            br#"{"v":1,"from":"a","kind":"relay","stream":"a/3","seq":9,"body":{"type":"chat"}}"#;
        let envelope = decode(bytes).unwrap();
        assert_eq!(
            envelope.message,
            BusMessage::Relay(RelayFrame {
                stream: "a/3".into(),
                seq: 9,
                body: serde_json::json!({"type": "chat"}),
            })
        );
    }
}
