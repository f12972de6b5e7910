//! The node's link to Redis: one connection for commands, one for pub/sub.
//!
//! Both are redis-rs `ConnectionManager`s speaking RESP3, because a bare
//! multiplexed connection never recovers from a Redis restart, while the
//! manager reconnects by itself (a RESP3 disconnection push triggers it at
//! once) and, on the pub/sub side, replays our SUBSCRIBEs on the new
//! connection. Pub/sub has its own connection so a flood of messages never
//! delays a command and a slow command never delays delivery.
//!
//! Every call is bounded by [`LinkSettings::command_timeout`] on top of the
//! driver's own connect/response timeouts: while the manager retries a dead
//! server, a caller would otherwise wait for the whole backoff. A caller gets
//! [`LinkError::Unavailable`] instead and can answer its user within 3 s.
//!
//! Messages published while a connection is down are lost (Redis pub/sub is
//! at most once), so [`Link::state`] is observable: a consumer that sees
//! `Down -> Up` resynchronises what it keeps from Redis.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, ProtocolVersion, PushInfo};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A Redis URL that never shows its password: `Display` and `Debug` print
/// `redis://:***@host:port/`, so logging the link or an error is safe.
#[derive(Clone)]
pub struct RedisUrl {
    raw: String,
    redacted: String,
}

impl RedisUrl {
    /// Validates `raw` as a `redis://`, `rediss://` or `redis+unix://` URL.
    pub fn parse(raw: &str) -> Result<Self, LinkError> {
        let redacted = redact(raw);
        // The driver's own parser is the authority on what it accepts.
        if let Err(err) = raw.into_connection_info() {
            return Err(LinkError::BadUrl {
                url: redacted,
                reason: err.to_string(),
            });
        }
        Ok(Self {
            raw: raw.to_owned(),
            redacted,
        })
    }

    /// Whether the link encrypts (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.raw.starts_with("rediss://")
    }
}

/// Replaces the password (and nothing else) with `***`. A string that does
/// not parse as a URL is hidden entirely: it might be a password typed in
/// the wrong place.
fn redact(raw: &str) -> String {
    match redis::parse_redis_url(raw) {
        Some(mut url) => {
            if url.password().is_some() {
                // Cannot fail for a URL that already has a password.
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        None => "<unparsable Redis URL>".to_owned(),
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted)
    }
}

/// Why a call to Redis failed. Messages name the redacted URL, never the
/// password.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("invalid Redis URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("Redis at {url} did not answer {what} within {after:?}")]
    Unavailable {
        url: String,
        what: &'static str,
        after: Duration,
    },
    #[error("Redis at {url} failed {what}: {source}")]
    Redis {
        url: String,
        what: &'static str,
        source: redis::RedisError,
    },
}

/// Up when the last probe of both connections succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Up,
    Down,
}

/// What [`Link::status`] watchers see. `reconnects` counts `Down -> Up`
/// transitions: a watcher that was not looking while a short outage came
/// and went still sees the count move, and knows to resync (Redis may have
/// come back empty, and pub/sub messages of the gap are lost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    pub state: LinkState,
    pub reconnects: u64,
}

/// Timeouts and probe rate. The defaults keep every call under 3 s.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    /// Upper bound of one call, including waiting for a reconnect.
    pub command_timeout: Duration,
    /// Bound of one TCP (+TLS, +HELLO) connection attempt.
    pub connect_timeout: Duration,
    /// Bound of one reply on an established connection.
    pub response_timeout: Duration,
    /// How often the supervisor probes the connections. It also makes the
    /// pub/sub connection retry: nothing else sends on it while Redis is
    /// down, and the manager only reconnects when something does.
    pub probe_interval: Duration,
    /// Capacity of the queue of received pub/sub messages; when the
    /// consumer falls behind, new messages are dropped and counted rather
    /// than queued without bound.
    pub inbox_capacity: usize,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
            probe_interval: Duration::from_secs(1),
            inbox_capacity: 4096,
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// `Down -> Up` transitions (each one means: resync).
    pub reconnects: AtomicU64,
    /// Pub/sub messages dropped because the inbox was full.
    pub inbox_overflow: AtomicU64,
    /// Calls that failed (timeout or error).
    pub failed_calls: AtomicU64,
}

/// A pub/sub message as delivered to the consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub channel: String,
    pub payload: Vec<u8>,
}

/// A live link. Cheap to share behind an `Arc`; dropping the last `Arc`
/// stops the supervisor within one probe interval and closes both
/// connections.
pub struct Link {
    url: RedisUrl,
    settings: LinkSettings,
    commands: ConnectionManager,
    pubsub: ConnectionManager,
    status: watch::Sender<LinkStatus>,
    /// Set by a command that failed for a connection reason, cleared by one
    /// that succeeded: lets the supervisor skip probing a busy connection.
    commands_failing: AtomicBool,
    /// When a command last completed, in ms after `created`
    /// ([`NEVER_USED`] before the first).
    last_command_ms: AtomicU64,
    created: std::time::Instant,
    pub counters: LinkCounters,
}

impl fmt::Debug for Link {
    // Hand-written: the driver's own Debug prints its client configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("url", &self.url)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl Link {
    /// Connects both connections and starts the supervisor. Fails (within
    /// the command timeout) when Redis cannot be reached now: a node must not
    /// start half-clustered. Returns the link and the receiver of pub/sub
    /// messages for the channels later passed to [`Link::subscribe`].
    pub async fn connect(
        url: RedisUrl,
        settings: LinkSettings,
    ) -> Result<(Arc<Link>, mpsc::Receiver<Delivery>), LinkError> {
        install_tls_provider(&url);
        let info = url
            .raw
            .as_str()
            .into_connection_info()
            .map_err(|err| LinkError::BadUrl {
                url: url.redacted.clone(),
                reason: err.to_string(),
            })?;
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        // TCP_NODELAY (redis-rs leaves Nagle on): a relayed chat message is
        // one small PUBLISH that must not wait for the ACK of the one before
        // (it did: cross-node chat p99 was about 42 ms, the delayed ACK).
        let info = info
            .set_redis_settings(redis_settings)
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(|source| LinkError::Redis {
            url: url.redacted.clone(),
            what: "client setup",
            source,
        })?;

        let (inbox_tx, inbox_rx) = mpsc::channel(settings.inbox_capacity.max(1));
        let overflow = Arc::new(AtomicU64::new(0));
        let overflow_in_sender = overflow.clone();
        let wake = Arc::new(Wake::default());
        let wake_in_sender = wake.clone();
        let push_sender = move |push: PushInfo| {
            if push.kind == redis::PushKind::Disconnection {
                // The manager is already reconnecting; tell the supervisor
                // so the outage is reported now, not at the next probe.
                wake_in_sender.disconnected.store(true, Ordering::Relaxed);
                wake_in_sender.notify.notify_one();
            } else if let Some(delivery) = delivery_of(push) {
                if inbox_tx.try_send(delivery).is_err() {
                    overflow_in_sender.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<(), redis::aio::SendError>(())
        };

        let base = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            // Few, short retries: the supervisor and the callers trigger the
            // next attempt anyway, and a long backoff would only make
            // callers wait for a server that is gone.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_millis(500));
        let pubsub_config = base
            .clone()
            .set_push_sender(push_sender)
            .set_automatic_resubscription();

        let redacted = url.redacted.clone();
        let connect = |config: ConnectionManagerConfig, what: &'static str| {
            let client = client.clone();
            let redacted = redacted.clone();
            let timeout = settings.command_timeout;
            async move {
                match tokio::time::timeout(
                    timeout,
                    ConnectionManager::new_with_config(client, config),
                )
                .await
                {
                    Ok(Ok(manager)) => Ok(manager),
                    Ok(Err(source)) => Err(LinkError::Redis {
                        url: redacted,
                        what,
                        source,
                    }),
                    Err(_) => Err(LinkError::Unavailable {
                        url: redacted,
                        what,
                        after: timeout,
                    }),
                }
            }
        };
        let commands = connect(base, "connect (commands)").await?;
        let pubsub = connect(pubsub_config, "connect (pub/sub)").await?;

        let (status, _) = watch::channel(LinkStatus {
            state: LinkState::Up,
            reconnects: 0,
        });
        let link = Arc::new(Link {
            url,
            settings,
            commands,
            pubsub,
            status,
            commands_failing: AtomicBool::new(false),
            last_command_ms: AtomicU64::new(NEVER_USED),
            created: std::time::Instant::now(),
            counters: LinkCounters::default(),
        });
        tokio::spawn(supervise(Arc::downgrade(&link), overflow, wake));
        Ok((link, inbox_rx))
    }

    /// The URL, redacted when displayed.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// Observe up/down transitions (metrics, `/readyz`, resync).
    pub fn status(&self) -> watch::Receiver<LinkStatus> {
        self.status.subscribe()
    }

    pub fn is_up(&self) -> bool {
        self.status.borrow().state == LinkState::Up
    }

    /// Runs one command on the command connection, bounded.
    pub async fn query<T: FromRedisValue>(
        &self,
        what: &'static str,
        cmd: &Cmd,
    ) -> Result<T, LinkError> {
        let mut conn = self.commands.clone();
        let result = self.bounded(what, cmd.query_async(&mut conn)).await;
        self.note_command(&result);
        result
    }

    /// Runs a pipeline (atomic if it says so) on the command connection,
    /// bounded.
    pub async fn pipeline<T: FromRedisValue>(
        &self,
        what: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, LinkError> {
        let mut conn = self.commands.clone();
        let result = self.bounded(what, pipe.query_async(&mut conn)).await;
        self.note_command(&result);
        result
    }

    /// Runs a Lua script (EVALSHA, loading it after a Redis restart),
    /// bounded.
    pub async fn script<T: FromRedisValue>(
        &self,
        what: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, LinkError> {
        let mut conn = self.commands.clone();
        let result = self.bounded(what, invocation.invoke_async(&mut conn)).await;
        self.note_command(&result);
        result
    }

    /// Publishes on the command connection (a subscribed RESP3 connection
    /// could, but keeping it receive-only keeps the two concerns apart).
    /// Returns how many subscribers received it.
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> Result<u64, LinkError> {
        self.query("PUBLISH", redis::cmd("PUBLISH").arg(channel).arg(payload))
            .await
    }

    /// Subscribes the pub/sub connection; the manager re-subscribes after
    /// every reconnect. Messages arrive on the receiver from `connect`.
    pub async fn subscribe(&self, channel: &str) -> Result<(), LinkError> {
        let mut conn = self.pubsub.clone();
        self.bounded("SUBSCRIBE", conn.subscribe(channel)).await
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, LinkError> {
        let after = self.settings.command_timeout;
        let result = match tokio::time::timeout(after, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(LinkError::Redis {
                url: self.url.redacted.clone(),
                what,
                source,
            }),
            Err(_) => Err(LinkError::Unavailable {
                url: self.url.redacted.clone(),
                what,
                after,
            }),
        };
        if result.is_err() {
            self.counters.failed_calls.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// A command's outcome is a free probe of the command connection.
    fn note_command<T>(&self, result: &Result<T, LinkError>) {
        let failing = match result {
            Ok(_) => false,
            Err(err) => is_connection_failure(err),
        };
        self.last_command_ms
            .store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.commands_failing.store(failing, Ordering::Relaxed);
        if failing {
            self.set_state(LinkState::Down);
        }
    }

    fn set_state(&self, next: LinkState) {
        let changed = self.status.send_if_modified(|status| {
            if status.state == next {
                return false;
            }
            status.state = next;
            if next == LinkState::Up {
                status.reconnects += 1;
            }
            true
        });
        if changed {
            match next {
                LinkState::Up => {
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(redis = %self.url, "Redis link up again");
                }
                LinkState::Down => tracing::warn!(redis = %self.url, "Redis link down"),
            }
        }
    }

    async fn ping(&self, conn: &ConnectionManager, what: &'static str) -> bool {
        let mut conn = conn.clone();
        let ping = redis::cmd("PING");
        self.bounded(what, ping.query_async::<redis::Value>(&mut conn))
            .await
            .is_ok()
    }
}

/// A server error reply (wrong type, script error) says nothing about the
/// connection; anything else does.
fn is_connection_failure(err: &LinkError) -> bool {
    match err {
        LinkError::Unavailable { .. } => true,
        LinkError::Redis { source, .. } => !matches!(source.kind(), redis::ErrorKind::Server(_)),
        LinkError::BadUrl { .. } => false,
    }
}

/// `Link::last_command_ms` before any command completed.
const NEVER_USED: u64 = u64::MAX;

/// How the pub/sub push handler wakes the supervisor.
#[derive(Default)]
struct Wake {
    disconnected: AtomicBool,
    notify: tokio::sync::Notify,
}

/// Keeps the state honest and makes a dead pub/sub connection retry.
async fn supervise(link: Weak<Link>, overflow: Arc<AtomicU64>, wake: Arc<Wake>) {
    let interval = match link.upgrade() {
        Some(link) => link.settings.probe_interval,
        None => return,
    };
    let recent_ms = (interval * 3 / 2).as_millis() as u64;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = wake.notify.notified() => {}
        }
        let Some(link) = link.upgrade() else { return };
        if wake.disconnected.swap(false, Ordering::Relaxed) {
            link.set_state(LinkState::Down);
        }
        link.counters
            .inbox_overflow
            .store(overflow.load(Ordering::Relaxed), Ordering::Relaxed);
        let pubsub_ok = link.ping(&link.pubsub, "PING (pub/sub)").await;
        // Commands that completed within the last one and a half ticks
        // already told us how the command connection is; probe it only when
        // idle or failing. (A flag reset at each tick was not enough: with
        // heartbeats as often as ticks, one landing just either side of a
        // tick left the interval before it "idle" and cost a PING, three
        // extra in 5 s in a test that counts them.)
        let last = link.last_command_ms.load(Ordering::Relaxed);
        let now_ms = link.created.elapsed().as_millis() as u64;
        let used = last != NEVER_USED && now_ms.saturating_sub(last) < recent_ms;
        let commands_ok = if used && !link.commands_failing.load(Ordering::Relaxed) {
            true
        } else {
            let ok = link.ping(&link.commands, "PING (commands)").await;
            link.commands_failing.store(!ok, Ordering::Relaxed);
            ok
        };
        link.set_state(if pubsub_ok && commands_ok {
            LinkState::Up
        } else {
            LinkState::Down
        });
    }
}

/// Keeps published messages; subscribe confirmations and disconnection
/// notices are the driver's business.
fn delivery_of(push: PushInfo) -> Option<Delivery> {
    if push.kind != redis::PushKind::Message {
        return None;
    }
    let mut data = push.data.into_iter();
    let channel = match data.next()? {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
        redis::Value::SimpleString(text) => text,
        _ => return None,
    };
    let payload = match data.next()? {
        redis::Value::BulkString(bytes) => bytes,
        redis::Value::SimpleString(text) => text.into_bytes(),
        _ => return None,
    };
    Some(Delivery { channel, payload })
}

/// rustls needs a process-wide crypto provider; `ring` is the one compiled
/// in. Installing twice is harmless (the first wins).
fn install_tls_provider(url: &RedisUrl) {
    if url.is_tls() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_shows() {
        let url = RedisUrl::parse("redis://:secret@127.0.0.1:6380/2").unwrap();
        assert_eq!(url.to_string(), "redis://:***@127.0.0.1:6380/2");
        assert!(!format!("{url:?}").contains("secret"));
        let url = RedisUrl::parse("rediss://user:hunter2@redis.example:6390").unwrap();
        assert!(url.is_tls());
        assert_eq!(url.to_string(), "rediss://user:***@redis.example:6390");
    }

    #[test]
    fn url_without_password_is_unchanged() {
        let url = RedisUrl::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!(url.to_string(), "redis://127.0.0.1:6379");
    }

    #[test]
    fn bad_url_is_a_clear_error_without_secrets() {
        let err = RedisUrl::parse("http://:secret@host").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("invalid Redis URL"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        let err = RedisUrl::parse("secret").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
