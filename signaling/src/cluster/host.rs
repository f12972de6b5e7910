//! The host's end of a relayed connection: a session runs here, where its
//! room is, for a client whose WebSocket another node (the front) holds.
//!
//! The session is the very one a local WebSocket gets
//! ([`session::serve_port`]); only its [`Port`] differs: frames come from
//! the stream table, and what it says goes back to the front as
//! [`ToFront`] messages, numbered by a [`RelaySender`].

use super::node::{ClusterNode, STREAM_QUEUE};
use super::relay::RelaySender;
use super::stream::ToFront;
use crate::outbox::OutboxReceiver;
use crate::session::{self, ClientFrame, Ending, Identity, Port};
use crate::AppState;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Where a session's messages go when its client is not on a local
/// WebSocket: to the front task in this process, or over the bus.
pub(crate) enum FrontSink {
    Local(mpsc::Sender<ToFront>),
    Remote {
        node: Arc<ClusterNode>,
        front: String,
        sender: RelaySender,
    },
}

impl FrontSink {
    /// False when the front is gone.
    async fn send(&mut self, message: ToFront) -> bool {
        match self {
            FrontSink::Local(tx) => tx.send(message).await.is_ok(),
            FrontSink::Remote {
                node,
                front,
                sender,
            } => {
                let body = serde_json::to_value(&message).unwrap_or_default();
                node.send_frame(front, sender.frame(body)).await
            }
        }
    }
}

/// Turns a channel into the frames a session reads.
pub(crate) fn frames_of(
    rx: mpsc::Receiver<ClientFrame>,
) -> futures_util::stream::BoxStream<'static, ClientFrame> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    })
    .boxed()
}

/// A port whose messages go to `sink`; `done` runs once the session's last
/// word has been sent.
pub(crate) fn port(
    frames: mpsc::Receiver<ClientFrame>,
    sink: FrontSink,
    rejoin: Option<Identity>,
    done: impl FnOnce() + Send + 'static,
) -> Port {
    // A remote front checks size and rate before a frame crosses Redis.
    let admitted_upstream = matches!(sink, FrontSink::Remote { .. });
    let (identity_tx, identity_rx) = watch::channel(None);
    Port {
        frames: frames_of(frames),
        writer: Box::new(move |out_rx, farewell| {
            tokio::spawn(async move {
                write_to_front(out_rx, farewell, identity_rx, sink).await;
                done();
            })
        }),
        identity: Some(identity_tx),
        rejoin,
        admitted_upstream,
    }
}

/// The relayed counterpart of the WebSocket writer: the outbox, identity
/// changes, then the session's ending.
async fn write_to_front(
    mut out_rx: OutboxReceiver,
    farewell: oneshot::Receiver<Ending>,
    mut identity: watch::Receiver<Option<Identity>>,
    mut sink: FrontSink,
) {
    let mut identity_open = true;
    loop {
        tokio::select! {
            biased;
            text = out_rx.rx.recv() => match text {
                Some(text) => if !sink.send(ToFront::Text { text }).await { return },
                None => break,
            },
            _ = out_rx.overflow_signal.notified() => {
                sink.send(ToFront::End { ending: Ending::Close {
                    code: 1008,
                    reason: "client is not reading its messages".into(),
                }}).await;
                return;
            }
            changed = identity.changed(), if identity_open => {
                if changed.is_err() {
                    identity_open = false;
                    continue;
                }
                let now = identity.borrow_and_update().clone();
                if !sink.send(ToFront::Identity { identity: now }).await { return }
            }
        }
    }
    let ending = farewell.await.unwrap_or(Ending::ClientGone);
    sink.send(ToFront::End { ending }).await;
}

/// Starts a session for the client of `front` on stream `stream`; returns
/// where the stream table puts the client's frames.
pub(crate) fn serve(
    node: Arc<ClusterNode>,
    state: Arc<AppState>,
    stream: String,
    front: String,
    rejoin: Option<Identity>,
) -> mpsc::Sender<ClientFrame> {
    let (frames_tx, frames_rx) = mpsc::channel(STREAM_QUEUE);
    let sink = FrontSink::Remote {
        node: node.clone(),
        front,
        // Each direction numbers its own frames from 1.
        sender: RelaySender::new(stream.clone()),
    };
    let table = node.clone();
    let port = port(frames_rx, sink, rejoin, move || {
        table.streams().remove(&stream);
    });
    tokio::spawn(session::serve_port(port, state));
    frames_tx
}
