//! A connection's bounded outgoing queue.
//!
//! Everything sent to one WebSocket goes through its outbox, from the
//! session task, from other sessions (broadcasts) and from shard threads
//! (offers, negotiation replies). Pushing never blocks: a client too slow to
//! read 1,024 queued messages is disconnected rather than allowed to grow the
//! server's memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

pub const OUTBOX_CAPACITY: usize = 1024;

#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<String>,
    overflowed: Arc<AtomicBool>,
    overflow_signal: Arc<tokio::sync::Notify>,
}

pub struct OutboxReceiver {
    pub rx: mpsc::Receiver<String>,
    pub overflow_signal: Arc<tokio::sync::Notify>,
}

pub fn outbox() -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
    let overflowed = Arc::new(AtomicBool::new(false));
    let overflow_signal = Arc::new(tokio::sync::Notify::new());
    (
        Outbox {
            tx,
            overflowed,
            overflow_signal: overflow_signal.clone(),
        },
        OutboxReceiver {
            rx,
            overflow_signal,
        },
    )
}

impl Outbox {
    pub fn push(&self, text: String) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(text) {
            if !self.overflowed.swap(true, Ordering::Relaxed) {
                self.overflow_signal.notify_one();
            }
        }
    }
}
