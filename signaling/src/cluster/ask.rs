//! A question to one node and its answer, over the bus: what operators
//! need from the node hosting a room (its overview with media statistics,
//! a kick, a closed room, an announcement).
//!
//! Pub/sub has no replies, so the asker keeps a pending slot per question
//! (a oneshot keyed by a per-node id) that the matching `answer` fills. The
//! table is bounded: when it is full a new question fails at once rather
//! than queueing, and a slot is freed when its asker stops waiting
//! (answered, timed out or cancelled), so nothing accumulates. An answer
//! for an id nobody waits for (late, or forged) is dropped and counted.
//! Answering is bounded too: a node answers a limited number of questions
//! at a time and drops (and counts) the rest; their askers time out.

use super::bus::BusMessage;
use super::link::LinkError;
use super::node::ClusterNode;
use crate::AppState;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};

/// How long an operator's request waits for another node.
pub const OPERATOR_TIMEOUT: Duration = Duration::from_secs(1);

/// Questions awaiting an answer, at most (all askers together).
const MAX_PENDING: usize = 256;

/// Questions a node answers at the same time, at most.
const MAX_ANSWERING: usize = 32;

/// What one node asks another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "q", rename_all = "snake_case")]
pub enum Question {
    /// Nothing to do: measures the bus round trip (metrics).
    Ping {},
    /// This node's own rooms, shards and media statistics (the JSON of
    /// `admin::node_overview_json`).
    Overview {},
    Kick {
        room: String,
        participant: String,
        reason: String,
    },
    CloseRoom {
        room: String,
        reason: String,
    },
    /// Move everyone in `from` (a room of the asked node) into `to`.
    MoveRoom {
        from: String,
        to: String,
    },
    /// To one room of the node, or (no room) every session the node runs.
    Announce {
        text: String,
        room: Option<String>,
        ts: u64,
    },
}

/// What the asked node answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "a", rename_all = "snake_case")]
pub enum Answer {
    Pong {},
    /// How many were asked to move, or why nobody was.
    Moved {
        result: Result<usize, crate::rooms::MoveError>,
    },
    Overview {
        overview: serde_json::Value,
    },
    /// Whether the participant was found in the room there.
    Kicked {
        found: bool,
    },
    /// How many were asked to leave; None: no such room there.
    Closed {
        participants: Option<usize>,
    },
    /// Sessions reached; None: no such room there.
    Announced {
        reached: Option<usize>,
    },
    /// The question was refused as invalid (a forged or newer message).
    Refused {
        error: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("nobody listens on its channel (the node is gone or cut off from Redis)")]
    NotListening,
    #[error("did not answer within {0:?}")]
    Timeout(Duration),
    #[error("too many questions in flight on this node; try again")]
    Busy,
    #[error("Redis: {0}")]
    Link(#[from] LinkError),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AskCounters {
    pub asked: AtomicU64,
    pub answered: AtomicU64,
    pub timed_out: AtomicU64,
    /// Answers for no pending question (late or forged).
    pub unknown_answers: AtomicU64,
    /// Questions from other nodes dropped: too many being answered.
    pub dropped_questions: AtomicU64,
}

struct Pending {
    /// The node asked: only its answer fills the slot.
    node: String,
    reply: oneshot::Sender<Answer>,
}

/// This node's questions in flight, and its capacity to answer others'.
pub struct Asks {
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    answering: Arc<Semaphore>,
    pub counters: AskCounters,
    /// Question -> answer round trips over the bus, in seconds.
    pub round_trip: Histogram,
}

impl Default for Asks {
    fn default() -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            answering: Arc::new(Semaphore::new(MAX_ANSWERING)),
            counters: AskCounters::default(),
            // 0.25 ms .. about 4 s.
            round_trip: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.00025, 2.0, 15,
            )),
        }
    }
}

/// Frees a pending slot when its asker stops waiting, however it stops.
struct Slot<'a> {
    asks: &'a Asks,
    id: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.asks.pending().remove(&self.id);
    }
}

impl Asks {
    fn pending(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        // Only inserts and removes happen under the lock: a poisoned map is
        // still consistent.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(&self, node: &str) -> Result<(Slot<'_>, oneshot::Receiver<Answer>), AskError> {
        let mut pending = self.pending();
        if pending.len() >= MAX_PENDING {
            return Err(AskError::Busy);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        pending.insert(
            id,
            Pending {
                node: node.to_owned(),
                reply,
            },
        );
        Ok((Slot { asks: self, id }, rx))
    }

    /// An answer arrived from `from`: fills its slot, or is counted as unknown.
    pub(crate) fn resolve(&self, from: &str, id: u64, answer: Answer) {
        let mut pending = self.pending();
        match pending.get(&id) {
            Some(slot) if slot.node == from => {
                if let Some(slot) = pending.remove(&id) {
                    let _ = slot.reply.send(answer);
                }
            }
            _ => {
                self.counters
                    .unknown_answers
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Questions waiting for an answer now.
    pub fn in_flight(&self) -> usize {
        self.pending().len()
    }
}

impl ClusterNode {
    /// Asks `node` one question; waits at most `timeout` (the publish
    /// included) for its answer.
    pub async fn ask(
        &self,
        node: &str,
        question: Question,
        timeout: Duration,
    ) -> Result<Answer, AskError> {
        let (slot, rx) = self.asks.register(node)?;
        self.asks.counters.asked.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let exchange = async {
            let message = BusMessage::Ask {
                id: slot.id,
                question,
            };
            if !self.bus.send_to(node, message).await? {
                return Err(AskError::NotListening);
            }
            // The slot is only removed by `resolve` (which sends) or by our
            // own drop, so a closed channel cannot happen while we wait.
            rx.await.map_err(|_| AskError::Timeout(timeout))
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                self.asks.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                Err(AskError::Timeout(timeout))
            }
        };
        if result.is_ok() {
            self.asks.counters.answered.fetch_add(1, Ordering::Relaxed);
            self.asks
                .round_trip
                .observe(started.elapsed().as_secs_f64());
        }
        drop(slot);
        result
    }

    /// A question from `from`: answered in a task of its own (bounded), so
    /// the bus keeps flowing while this node gathers its overview.
    pub(crate) fn answer(
        self: &Arc<Self>,
        state: &Arc<AppState>,
        from: &str,
        id: u64,
        question: Question,
    ) {
        let Ok(permit) = self.asks.answering.clone().try_acquire_owned() else {
            self.asks
                .counters
                .dropped_questions
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (node, state, from) = (self.clone(), state.clone(), from.to_owned());
        tokio::spawn(async move {
            let answer = super::operators::answer_here(&state, question).await;
            if let Err(err) = node
                .bus
                .send_to(&from, BusMessage::Answer { id, answer })
                .await
            {
                tracing::info!(%err, to = %from, "could not send an answer");
            }
            drop(permit);
        });
    }

    /// Measures the bus round trip to every other live node now and then,
    /// so the latency metric means something while operators are away.
    /// Costs two small publishes per node pair every 5 s, whatever the
    /// number of participants.
    pub(crate) async fn probe_round_trips(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let others: Vec<String> = self
                .live()
                .borrow()
                .iter()
                .filter(|id| **id != self.id)
                .cloned()
                .collect();
            let pings = others
                .iter()
                .map(|node| self.ask(node, Question::Ping {}, OPERATOR_TIMEOUT));
            futures_util::future::join_all(pings).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_fills_only_its_askers_slot() {
        let asks = Asks::default();
        let (slot, mut rx) = asks.register("node-b").unwrap();
        // From a node we did not ask: dropped and counted.
        asks.resolve("node-c", slot.id, Answer::Pong {});
        assert!(rx.try_recv().is_err());
        // For an id nobody waits for: dropped and counted.
        asks.resolve("node-b", slot.id + 100, Answer::Pong {});
        assert_eq!(asks.counters.unknown_answers.load(Ordering::Relaxed), 2);
        asks.resolve("node-b", slot.id, Answer::Pong {});
        assert_eq!(rx.try_recv().unwrap(), Answer::Pong {});
        assert_eq!(asks.in_flight(), 0);
    }

    #[test]
    fn questions_and_answers_travel_in_the_envelope_and_garbage_is_refused() {
        use super::super::bus::{decode, Rejection};
        let ask = br#"{"v":1,"from":"a","kind":"ask","id":7,"question":{"q":"kick","room":"r","participant":"p","reason":"x"}}"#;
        assert_eq!(
            decode(ask).unwrap().message,
            BusMessage::Ask {
                id: 7,
                question: Question::Kick {
                    room: "r".into(),
                    participant: "p".into(),
                    reason: "x".into()
                }
            }
        );
        let answer =
            br#"{"v":1,"from":"b","kind":"answer","id":7,"answer":{"a":"kicked","found":true}}"#;
        assert_eq!(
            decode(answer).unwrap().message,
            BusMessage::Answer {
                id: 7,
                answer: Answer::Kicked { found: true }
            }
        );
        // A question this version does not know, a bad id, a missing answer.
        for bad in [
            &br#"{"v":1,"from":"a","kind":"ask","id":1,"question":{"q":"format_disk"}}"#[..],
            br#"{"v":1,"from":"a","kind":"ask","id":-1,"question":{"q":"ping"}}"#,
            br#"{"v":1,"from":"a","kind":"answer","id":1}"#,
        ] {
            assert_eq!(decode(bad), Err(Rejection::BadFields));
        }
    }

    #[test]
    fn the_pending_table_is_bounded_and_freed_by_its_askers() {
        let asks = Asks::default();
        let slots: Vec<_> = (0..MAX_PENDING)
            .map(|_| asks.register("node-b").unwrap())
            .collect();
        assert!(matches!(asks.register("node-b"), Err(AskError::Busy)));
        drop(slots);
        assert_eq!(asks.in_flight(), 0);
        assert!(asks.register("node-b").is_ok());
    }
}
