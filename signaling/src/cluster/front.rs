//! The front's end of a client's connection (several nodes): this node
//! holds the WebSocket, and the client's session runs where its room is:
//! here (an in-process attachment) or on another node (a stream over the
//! bus). The front follows the session when it hands the client over (the
//! room the client asks for lives elsewhere) and rejoins the client's room
//! on a live node when the node running the session is lost.
//!
//! What a front remembers is small: the client's recent frames (to replay
//! those the previous session had not handled when it handed over) and the
//! participant's identity (to rejoin it elsewhere).

use super::host::{self, FrontSink};
use super::link::LinkState;
use super::node::{ClusterNode, EndKind, StreamEnd, STREAM_QUEUE};
use super::placement::Move;
use super::relay::{RelayReceiver, RelaySender};
use super::stream::{ToFront, ToHost};
use crate::protocol;
use crate::rate_limit::TokenBucket;
use crate::session::{self, ClientFrame, Ending, Handoff, Identity};
use crate::AppState;
use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::BoxStream;
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Frames kept for replay. A session hands over right at the `join` it
/// cannot serve, so only the frames in flight since then are replayed: a
/// few, as clients are rate limited.
const REPLAY_FRAMES: usize = 256;

/// Handoffs in a row with nothing said to the client: the room map is
/// changing under us faster than we follow; the client reconnects instead.
const MAX_HOPS: u32 = 6;

/// How long Redis must stay up again before relayed sessions are renewed
/// (one renewal for a flapping link, not one per flap).
const RESYNC_SETTLE: Duration = Duration::from_millis(300);

/// How long a client that left still waits for its session to end.
const GOODBYE_LIMIT: Duration = Duration::from_secs(2);

/// Serves one WebSocket of a clustered node until it closes.
pub async fn run(socket: WebSocket, state: Arc<AppState>, node: Arc<ClusterNode>) {
    // Counted where the WebSocket is, wherever its session runs.
    state.metrics.ws_connections.inc();
    let metrics_state = state.clone();
    let (mut ws_tx, ws_rx) = socket.split();
    let mut client = session::ws_frames(ws_rx);
    let attachment = attach_local(&node, &state, None);
    let limits = &state.config.limits;
    let rate = TokenBucket::new(limits.messages_per_second, limits.message_burst);
    let mut front = Front {
        node,
        state,
        attachment,
        identity: None,
        sent: Replay::default(),
        hops: 0,
        rate,
    };
    let ending = front.serve(&mut client, &mut ws_tx).await;
    drop(front);
    session::say_farewell(&mut ws_tx, ending).await;
    metrics_state.metrics.ws_connections.dec();
}

struct Front {
    node: Arc<ClusterNode>,
    state: Arc<AppState>,
    attachment: Attachment,
    identity: Option<Identity>,
    sent: Replay,
    hops: u32,
    /// The client's message rate, checked here for a remote session.
    rate: TokenBucket,
}

type WsSink = futures_util::stream::SplitSink<WebSocket, Message>;

impl Front {
    async fn serve(
        &mut self,
        client: &mut BoxStream<'static, ClientFrame>,
        ws_tx: &mut WsSink,
    ) -> Ending {
        let mut live = self.node.live();
        let mut shutdown = self.state.shutdown.subscribe();
        let mut link = self.node.link.status();
        let mut reconnects = link.borrow_and_update().reconnects;
        // When to renew a relayed session after Redis came back; a link
        // that flaps renews once it has been up for RESYNC_SETTLE.
        let mut resync_at: Option<tokio::time::Instant> = None;
        loop {
            let resync_due = resync_at.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                biased;
                // This process exits (after a drain handed its rooms over).
                // A session here says goodbye itself (`shutdown`); one on
                // another node ends as if the client had left, and the
                // client is told to reconnect at once (1012).
                _ = shutdown.recv(), if self.attachment.is_remote() => {
                    self.goodbye().await;
                    return Ending::Close { code: 1012, reason: "service restart: reconnect".into() };
                }
                event = self.attachment.events.recv() => match event {
                    Some(ToFront::Text { text }) => {
                        self.hops = 0;
                        if ws_tx.send(Message::Text(text.into())).await.is_err() {
                            return self.goodbye().await;
                        }
                    }
                    Some(ToFront::Identity { identity }) => self.identity = identity,
                    Some(ToFront::End { ending: Ending::Handoff(handoff) }) => {
                        match self.follow(handoff).await {
                            Ok(replies) => {
                                for reply in replies {
                                    if ws_tx.send(Message::Text(reply.into())).await.is_err() {
                                        return self.goodbye().await;
                                    }
                                }
                            }
                            Err(ending) => return ending,
                        }
                    }
                    Some(ToFront::End { ending }) => return ending,
                    // The stream broke or its node was lost.
                    None => if let Err(ending) = self.rehome().await {
                        return ending;
                    },
                },
                _ = live.changed() => {
                    let host = self.attachment.host.clone();
                    if host != self.node.id && !self.node.is_live(&host) {
                        if let Err(ending) = self.rehome().await {
                            return ending;
                        }
                    }
                }
                _ = link.changed() => {
                    let status = *link.borrow_and_update();
                    if status.reconnects != reconnects || resync_at.is_some() {
                        reconnects = status.reconnects;
                        resync_at = (status.state == LinkState::Up)
                            .then(|| tokio::time::Instant::now() + RESYNC_SETTLE);
                    }
                }
                _ = tokio::time::sleep_until(resync_due), if resync_at.is_some() => {
                    resync_at = None;
                    if self.attachment.is_remote() {
                        if let Err(ending) = self.resync().await {
                            return ending;
                        }
                    }
                }
                frame = client.next() => {
                    let frame = frame.unwrap_or(ClientFrame::Gone);
                    if frame == ClientFrame::Gone {
                        return self.goodbye().await;
                    }
                    if let Some(refusal) = self.refused(&frame) {
                        if ws_tx.send(Message::Text(refusal.into())).await.is_err() {
                            return self.goodbye().await;
                        }
                        continue;
                    }
                    self.sent.push(frame.clone());
                    if !self.attachment.send(&self.node, frame).await && self.attachment.is_remote() {
                        if let Err(ending) = self.rehome().await {
                            return ending;
                        }
                    }
                }
            }
        }
    }

    /// A remote session's client frames pass the size and rate checks here,
    /// so a flood never crosses Redis; the answer is the one the session
    /// would give.
    fn refused(&mut self, frame: &ClientFrame) -> Option<String> {
        let ClientFrame::Text { text } = frame else {
            return None;
        };
        if !self.attachment.is_remote() {
            return None;
        }
        let max = self.state.config.limits.max_message_bytes;
        let (req, refusal) = session::admit(max, Some(&mut self.rate), text).err()?;
        self.state.metrics.count_error(refusal.code);
        Some(protocol::error(&req, &refusal))
    }

    /// The client left: its session leaves its room (bounded wait).
    async fn goodbye(&mut self) -> Ending {
        self.attachment.send(&self.node, ClientFrame::Gone).await;
        let _ = tokio::time::timeout(GOODBYE_LIMIT, async {
            while let Some(event) = self.attachment.events.recv().await {
                if matches!(event, ToFront::End { .. }) {
                    break;
                }
            }
        })
        .await;
        Ending::ClientGone
    }

    /// The session handed the client over: attach there and replay what it
    /// had not handled.
    /// Returns the answers the front gives itself to replayed frames that
    /// cannot follow (see [`stale_negotiation`]).
    async fn follow(&mut self, handoff: Handoff) -> Result<Vec<String>, Ending> {
        self.hops += 1;
        if self.hops > MAX_HOPS {
            return Err(unavailable("the room keeps moving; reconnect"));
        }
        let mut pending = self
            .sent
            .after(handoff.processed)
            .ok_or_else(|| unavailable("lost track of the session; reconnect"))?;
        let mut replies = Vec::new();
        if handoff.rejoin.is_some() {
            // Rejoining elsewhere means a new participant and a new peer
            // connection: negotiation the client sent before it saw the new
            // `joined` was for the old one, and must not reach the new.
            pending.retain(|frame| match stale_negotiation(frame) {
                Some(reply) => {
                    replies.extend(reply);
                    false
                }
                None => true,
            });
        }
        let attachment = match self.attach(&handoff.node, handoff.rejoin.clone()).await {
            Some(attachment) => attachment,
            // A client in the lobby goes on in this node's lobby.
            None if handoff.rejoin.is_none() && handoff.room.is_empty() => {
                attach_local(&self.node, &self.state, None)
            }
            None => {
                // The room's node is gone already: find it a new one.
                let home = self.new_home(&handoff.room, &handoff.node).await?;
                self.attach(&home, handoff.rejoin)
                    .await
                    .ok_or_else(|| unavailable("the room's node cannot be reached; reconnect"))?
            }
        };
        self.attachment = attachment;
        self.sent = Replay::default();
        for frame in pending {
            self.sent.push(frame.clone());
            self.attachment.send(&self.node, frame).await;
        }
        Ok(replies)
    }

    /// The node running the session is lost: rejoin the room on a live
    /// node (the client gets `joined` and a new offer), or go back to the
    /// lobby here if the client was not in a room.
    async fn rehome(&mut self) -> Result<(), Ending> {
        let lost = self.attachment.host.clone();
        self.sent = Replay::default();
        let Some(identity) = self.identity.clone() else {
            if self.attachment.is_remote() {
                self.attachment.send(&self.node, ClientFrame::Gone).await;
            }
            self.attachment = attach_local(&self.node, &self.state, None);
            return Ok(());
        };
        self.hops += 1;
        if self.hops > MAX_HOPS {
            return Err(unavailable("the room's node was lost; reconnect"));
        }
        // Only the stream broke (lost frames, a full queue, Redis came
        // back): the room stays where it is, the client rejoins it there.
        if self.node.is_live(&lost) {
            tracing::info!(room = %identity.room, host = %lost, "relayed stream broken: rejoining on the same node");
            // The old session may not know: it leaves, no ghost stays.
            self.attachment.send(&self.node, ClientFrame::Gone).await;
            if let Some(attachment) = self.attach(&lost, Some(identity.clone())).await {
                self.attachment = attachment;
                return Ok(());
            }
        }
        tracing::info!(room = %identity.room, %lost, "room's node lost: rejoining elsewhere");
        self.node.counters.rehomed.fetch_add(1, Ordering::Relaxed);
        let home = self.new_home(&identity.room, &lost).await?;
        self.attachment = self
            .attach(&home, Some(identity))
            .await
            .ok_or_else(|| unavailable("no node can host the room now; reconnect"))?;
        Ok(())
    }

    /// Redis was lost and came back: frames of the relayed stream may have
    /// been lost with it (pub/sub does not queue), and the host ends a
    /// session it could not write to. So the stream is replaced: the old
    /// session is told the client left, and a new one rejoins the room on
    /// the same host (no map change, so no move), or elsewhere if that
    /// node is gone. The client gets `joined` and a new offer.
    async fn resync(&mut self) -> Result<(), Ending> {
        tracing::info!(host = %self.attachment.host, "Redis came back: renewing the relayed session");
        self.rehome().await
    }

    /// A live node for `room`, taking it from `lost` (compare-and-set: the
    /// fronts of all its members agree on one new home).
    async fn new_home(&self, room: &str, lost: &str) -> Result<String, Ending> {
        let placement = &self.node.placement;
        let moved = placement
            .move_room(room, lost)
            .await
            .map_err(|err| unavailable(&format!("cannot re-home the room: {err}")))?;
        match moved {
            Move::Moved { to } => {
                self.node
                    .counters
                    .rooms_rehomed
                    .fetch_add(1, Ordering::Relaxed);
                Ok(to)
            }
            Move::NotOwner { owner: Some(owner) } if owner != lost => Ok(owner),
            Move::NotOwner { .. } => placement
                .claim(room)
                .await
                .map(|claim| claim.owner().to_owned())
                .map_err(|err| unavailable(&format!("cannot re-home the room: {err}"))),
        }
    }

    async fn attach(&self, host: &str, rejoin: Option<Identity>) -> Option<Attachment> {
        if host == self.node.id {
            Some(attach_local(&self.node, &self.state, rejoin))
        } else {
            attach_remote(&self.node, host, rejoin).await
        }
    }
}

/// A replayed frame that negotiates media (`answer`, `offer`, `candidate`,
/// `restart_media`) when the client is rejoined elsewhere: it concerned the
/// replaced peer connection. Some(error for its `req`, if any) to drop it.
fn stale_negotiation(frame: &ClientFrame) -> Option<Option<String>> {
    let ClientFrame::Text { text } = frame else {
        return None;
    };
    let incoming = protocol::parse(text);
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let kind = value.get("type")?.as_str()?;
    if !matches!(kind, "answer" | "offer" | "candidate" | "restart_media") {
        return None;
    }
    Some(incoming.req.as_ref().map(|_| {
        protocol::error(
            &incoming.req,
            &protocol::Refusal::new(
                protocol::ErrorCode::NegotiationFailed,
                "the peer connection this was for was replaced (the room moved); answer the new offer",
            ),
        )
    }))
}

fn unavailable(reason: &str) -> Ending {
    tracing::info!(reason, "closing a relayed connection");
    Ending::Close {
        code: 1011,
        reason: reason.chars().take(120).collect(),
    }
}

/// Where the client's session runs.
struct Attachment {
    host: String,
    to_host: ToHostSink,
    events: mpsc::Receiver<ToFront>,
}

enum ToHostSink {
    Local(mpsc::Sender<ClientFrame>),
    Remote {
        node: Arc<ClusterNode>,
        stream: String,
        sender: RelaySender,
    },
}

impl Attachment {
    fn is_remote(&self) -> bool {
        matches!(self.to_host, ToHostSink::Remote { .. })
    }

    /// False when the session's side is gone.
    async fn send(&mut self, node: &ClusterNode, frame: ClientFrame) -> bool {
        match &mut self.to_host {
            ToHostSink::Local(tx) => tx.send(frame).await.is_ok(),
            ToHostSink::Remote { sender, .. } => {
                let body = serde_json::to_value(ToHost::Frame { frame }).unwrap_or_default();
                node.send_frame(&self.host, sender.frame(body)).await
            }
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let ToHostSink::Remote { node, stream, .. } = &self.to_host {
            node.streams().remove(stream);
        }
    }
}

/// A session in this process.
fn attach_local(node: &ClusterNode, state: &Arc<AppState>, rejoin: Option<Identity>) -> Attachment {
    let (frames_tx, frames_rx) = mpsc::channel(64);
    let (events_tx, events_rx) = mpsc::channel(STREAM_QUEUE);
    let port = host::port(frames_rx, FrontSink::Local(events_tx), rejoin, || {});
    tokio::spawn(session::serve_port(port, state.clone()));
    Attachment {
        host: node.id.clone(),
        to_host: ToHostSink::Local(frames_tx),
        events: events_rx,
    }
}

/// A session on `host`, over the bus. None when `host` does not listen.
async fn attach_remote(
    node: &Arc<ClusterNode>,
    host: &str,
    rejoin: Option<Identity>,
) -> Option<Attachment> {
    let stream = node.new_stream_id();
    let (events_tx, events_rx) = mpsc::channel(STREAM_QUEUE);
    node.streams().insert(
        stream.clone(),
        StreamEnd {
            receiver: RelayReceiver::new(stream.clone()),
            peer: host.to_owned(),
            kind: EndKind::Front(events_tx),
        },
    );
    let mut attachment = Attachment {
        host: host.to_owned(),
        to_host: ToHostSink::Remote {
            node: node.clone(),
            stream: stream.clone(),
            sender: RelaySender::new(stream),
        },
        events: events_rx,
    };
    let open = ToHost::Open {
        front: node.id.clone(),
        rejoin,
    };
    let ToHostSink::Remote { sender, .. } = &mut attachment.to_host else {
        unreachable!("just built as remote")
    };
    let frame = sender.frame(serde_json::to_value(open).unwrap_or_default());
    // Dropping the attachment on failure removes its table entry.
    node.send_frame(host, frame).await.then_some(attachment)
}

/// The client's frames sent to the current session, numbered from 1.
#[derive(Default)]
struct Replay {
    frames: VecDeque<ClientFrame>,
    /// Number of the oldest frame kept, minus one.
    forgotten: u64,
}

impl Replay {
    fn push(&mut self, frame: ClientFrame) {
        if self.frames.len() == REPLAY_FRAMES {
            self.frames.pop_front();
            self.forgotten += 1;
        }
        self.frames.push_back(frame);
    }

    /// The frames after the first `processed`, or None if some of them
    /// were forgotten.
    fn after(&self, processed: u64) -> Option<Vec<ClientFrame>> {
        let skip = processed.checked_sub(self.forgotten)?;
        Some(self.frames.iter().skip(skip as usize).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: u32) -> ClientFrame {
        ClientFrame::Text {
            text: n.to_string(),
        }
    }

    #[test]
    fn replay_gives_the_frames_not_yet_handled() {
        let mut replay = Replay::default();
        for n in 1..=5 {
            replay.push(text(n));
        }
        assert_eq!(replay.after(2), Some(vec![text(3), text(4), text(5)]));
        assert_eq!(replay.after(5), Some(vec![]));
        assert_eq!(replay.after(0).map(|f| f.len()), Some(5));
    }

    #[test]
    fn negotiation_for_a_replaced_peer_is_not_replayed() {
        let answer = ClientFrame::Text {
            text: r#"{"type":"answer","sdp":"v=0","req":7}"#.into(),
        };
        let reply = stale_negotiation(&answer)
            .expect("dropped")
            .expect("answered");
        assert!(
            reply.contains("negotiation_failed") && reply.contains("\"req\":7"),
            "{reply}"
        );
        let candidate = ClientFrame::Text {
            text: r#"{"type":"candidate","candidate":null}"#.into(),
        };
        assert_eq!(stale_negotiation(&candidate), Some(None));
        let chat = ClientFrame::Text {
            text: r#"{"type":"chat","text":"hi"}"#.into(),
        };
        assert_eq!(stale_negotiation(&chat), None);
        assert_eq!(stale_negotiation(&ClientFrame::Binary), None);
    }

    #[test]
    fn replay_refuses_what_it_forgot() {
        let mut replay = Replay::default();
        for n in 1..=(REPLAY_FRAMES as u32 + 3) {
            replay.push(text(n));
        }
        assert_eq!(replay.after(2), None);
        assert_eq!(replay.after(3).map(|f| f.len()), Some(REPLAY_FRAMES));
        assert_eq!(
            replay.after(REPLAY_FRAMES as u64 + 2),
            Some(vec![text(REPLAY_FRAMES as u32 + 3)])
        );
    }
}
