//! The cluster's Redis groundwork against a real `redis-server`: heartbeats,
//! death, duplicate ids, Redis SIGKILL + restart, outages, atomic placement
//! and garbage on the bus. Each test runs its own server on a free port.

use crate::redis_server;

use noom_signaling::cluster::ask::Question;
use noom_signaling::cluster::bus::{Bus, BusMessage, Envelope};
use noom_signaling::cluster::keys::Keys;
use noom_signaling::cluster::link::{Delivery, Link, LinkError, LinkSettings, LinkState, RedisUrl};
use noom_signaling::cluster::placement::{Claim, Move, Placement, PlacementError};
use noom_signaling::cluster::registry::{
    read_nodes, NodeIdentity, NodeLoad, NodeState, Registry, RegistryError, RegistrySettings,
};
use redis_server::RedisServer;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Upper bound the brief promises for any call while Redis is gone, plus
/// scheduling slack on a loaded test machine.
const FAIL_FAST: Duration = Duration::from_millis(3500);

async fn link(server: &RedisServer) -> (Arc<Link>, mpsc::Receiver<Delivery>) {
    let url = RedisUrl::parse(&server.url()).expect("url");
    Link::connect(url, LinkSettings::default())
        .await
        .expect("link up")
}

fn identity(id: &str) -> NodeIdentity {
    NodeIdentity {
        id: id.to_owned(),
        http_addr: format!("127.0.0.1:80{}", id.len()),
        media_addrs: vec![format!("127.0.0.1:4{}", id.len())],
    }
}

/// 1 s staleness (instead of 5) so death tests wait one second, not five.
fn quick() -> RegistrySettings {
    RegistrySettings {
        heartbeat_interval: Duration::from_millis(200),
        stale_after: Duration::from_secs(1),
    }
}

async fn node(server: &RedisServer, id: &str, settings: RegistrySettings) -> (Arc<Link>, Registry) {
    let (link, _inbox) = link(server).await;
    let registry = Registry::start(link.clone(), Keys::default(), identity(id), settings)
        .await
        .expect("registered");
    (link, registry)
}

/// Waits for a heartbeat that started after this call.
async fn next_beat(registry: &Registry, within: Duration) -> Instant {
    let since = Instant::now();
    let mut status = registry.status();
    let beat = tokio::time::timeout(
        within,
        status.wait_for(|s| s.last_ok.is_some_and(|at| at > since)),
    )
    .await
    .unwrap_or_else(|_| panic!("no successful heartbeat within {within:?}"))
    .expect("registry alive");
    beat.last_ok.expect("beat time")
}

#[tokio::test]
async fn heartbeat_is_visible_to_another_node() {
    if !redis_server::available() {
        return;
    }
    let server = RedisServer::start().await;
    let (_link_a, a) = node(&server, "node-a", RegistrySettings::default()).await;
    let (link_b, _) = link(&server).await;

    let nodes = read_nodes(&link_b, &Keys::default(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(nodes.len(), 1);
    let seen = &nodes[0];
    assert!(seen.is_live(), "{seen:?}");
    assert_eq!(seen.record.id, "node-a");
    assert_eq!(seen.record.http_addr, identity("node-a").http_addr);
    assert_eq!(seen.record.media_addrs, identity("node-a").media_addrs);
    assert_eq!(seen.record.state, NodeState::Serving);

    a.set_load(NodeLoad {
        rooms: 3,
        participants: 11,
        busy_ratio: 0.25,
    });
    next_beat(&a, Duration::from_secs(3)).await;
    let nodes = read_nodes(&link_b, &Keys::default(), Duration::from_secs(5))
        .await
        .unwrap();
    let record = &nodes[0].record;
    assert_eq!((record.rooms, record.participants), (3, 11));
    assert_eq!(record.busy_ratio, 0.25);
    assert!(nodes[0].heartbeat_age < Duration::from_secs(2));
}

#[tokio::test]
async fn a_silent_node_is_dead_after_the_staleness_threshold() {
    if !redis_server::available() {
        return;
    }
    let server = RedisServer::start().await;
    let (_link_a, a) = node(&server, "node-a", quick()).await;
    let (_link_b, b) = node(&server, "node-b", quick()).await;
    let live: Vec<String> = a
        .live_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.record.id)
        .collect();
    assert_eq!(live, ["node-a", "node-b"]);

    drop(b); // stops heartbeating, as if the process had died
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(4);
    let dead = loop {
        let nodes = a.nodes().await.unwrap();
        let b = nodes
            .iter()
            .find(|n| n.record.id == "node-b")
            .expect("record kept");
        if !b.alive {
            break b.clone();
        }
        assert!(
            Instant::now() < deadline,
            "node-b still alive 4 s after its last heartbeat"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(dead.heartbeat_age >= Duration::from_secs(1), "{dead:?}");
    // It died because its heartbeat went stale, not earlier.
    assert!(
        stopped.elapsed() >= Duration::from_millis(700),
        "{:?}",
        stopped.elapsed()
    );
    let live: Vec<String> = a
        .live_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.record.id)
        .collect();
    assert_eq!(live, ["node-a"]);

    // A dead node gets no new room.
    let placement = Placement::new(_link_a.clone(), Keys::default(), quick().stale_after);
    for room in ["r1", "r2", "r3"] {
        assert_eq!(placement.claim(room).await.unwrap().owner(), "node-a");
    }
}

#[tokio::test]
async fn a_duplicate_live_node_id_is_refused() {
    if !redis_server::available() {
        return;
    }
    let server = RedisServer::start().await;
    let (_link_a, first) = node(&server, "node-x", quick()).await;

    let (link_b, _) = link(&server).await;
    let err = Registry::start(link_b.clone(), Keys::default(), identity("node-x"), quick())
        .await
        .err()
        .expect("second process with the same id must be refused");
    assert!(
        matches!(err, RegistryError::DuplicateNodeId { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("\"node-x\" is already used by another live noom process"),
        "{text}"
    );
    // The first node is untouched by the refused attempt.
    let record = read_nodes(&link_b, &Keys::default(), quick().stale_after)
        .await
        .unwrap();
    assert_eq!(record[0].record.instance, first.record().instance);

    // After the first process dies, a restart with the same id is welcome.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(4);
    let second = loop {
        match Registry::start(link_b.clone(), Keys::default(), identity("node-x"), quick()).await {
            Ok(registry) => break registry,
            Err(RegistryError::DuplicateNodeId { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(err) => panic!("restart with the same id failed: {err}"),
        }
    };
    let nodes = second.live_nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].record.instance, second.record().instance);
}

#[tokio::test]
async fn a_node_re_registers_after_redis_restarts_empty() {
    if !redis_server::available() {
        return;
    }
    let mut server = RedisServer::start().await;
    let (link_a, inbox_a) = link(&server).await;
    let a = Registry::start(
        link_a.clone(),
        Keys::default(),
        identity("node-a"),
        RegistrySettings::default(),
    )
    .await
    .unwrap();
    let (bus_a, mut messages_a) =
        Bus::start(link_a.clone(), inbox_a, Keys::default(), "node-a", 64)
            .await
            .unwrap();
    let mut status = link_a.status();

    server.restart().await; // SIGKILL, then a new empty server on the port
    let restarted = Instant::now();
    assert_eq!(
        server.raw(&["HLEN", "noom:nodes"]),
        ":0",
        "restarted Redis is empty"
    );

    let beat = next_beat(&a, Duration::from_secs(10)).await;
    let re_registered = beat.duration_since(restarted);
    // The watch tells that an outage happened, however short: resync.
    tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| s.state == LinkState::Up && s.reconnects >= 1),
    )
    .await
    .expect("link reports the outage and is up again")
    .unwrap();
    println!("re-registration after a Redis restart took {re_registered:?}");
    assert!(re_registered < Duration::from_secs(5), "{re_registered:?}");
    assert!(server
        .raw(&["HGET", "noom:nodes", "node-a"])
        .contains("\"node-a\""));

    // The pub/sub connection re-subscribed by itself: a message addressed to
    // node-a reaches it. PUBLISH answers how many subscribers got it, so
    // wait for the subscription to be back before sending the real one.
    let (link_b, inbox_b) = link(&server).await;
    let (bus_b, _) = Bus::start(link_b, inbox_b, Keys::default(), "node-b", 8)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.raw(&["PUBSUB", "NUMSUB", "noom:bus:node:node-a"]) != "*2" {
        assert!(Instant::now() < deadline, "node-a never re-subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reached = bus_b
        .send_to(
            "node-a",
            BusMessage::Ask {
                id: 17,
                question: Question::Ping {},
            },
        )
        .await
        .unwrap();
    assert!(reached);
    let got = tokio::time::timeout(Duration::from_secs(3), messages_a.recv())
        .await
        .expect("message after restart")
        .unwrap();
    assert_eq!(
        got.message,
        BusMessage::Ask {
            id: 17,
            question: Question::Ping {}
        }
    );
    assert!(link_a.counters.reconnects.load(Ordering::Relaxed) >= 1);
    drop(bus_a);
}

#[tokio::test]
async fn calls_fail_fast_while_redis_is_down_or_hung() {
    if !redis_server::available() {
        return;
    }
    let mut server = RedisServer::start().await;
    let (link_a, _) = link(&server).await;
    let placement = Placement::new(link_a.clone(), Keys::default(), Duration::from_secs(5));
    let mut status = link_a.status();

    // Hung: sockets open, no answers (no RST to notice).
    server.pause();
    let started = Instant::now();
    let err = placement.claim("room").await.unwrap_err();
    let took = started.elapsed();
    server.resume();
    println!("claim against a hung Redis failed after {took:?}: {err}");
    assert!(took < FAIL_FAST, "{took:?}");
    assert!(matches!(err, PlacementError::Link(_)), "{err:?}");

    // Dead: connection refused.
    server.kill();
    for attempt in 0..3 {
        let started = Instant::now();
        let err = link_a
            .query::<String>("PING", &redis::cmd("PING"))
            .await
            .unwrap_err();
        let took = started.elapsed();
        println!("PING #{attempt} against a dead Redis failed after {took:?}: {err}");
        assert!(took < FAIL_FAST, "{took:?}");
        let text = err.to_string();
        assert!(
            text.contains(&server.url().trim_end_matches('/').to_string()),
            "{text}"
        );
    }
    tokio::time::timeout(
        Duration::from_secs(3),
        status.wait_for(|s| s.state == LinkState::Down),
    )
    .await
    .expect("link state goes down")
    .unwrap();

    // A node cannot start against a dead Redis, and says so quickly.
    let started = Instant::now();
    let err = Link::connect(
        RedisUrl::parse(&server.url()).unwrap(),
        LinkSettings::default(),
    )
    .await
    .expect_err("no Redis, no link");
    assert!(started.elapsed() < FAIL_FAST, "{:?}", started.elapsed());
    assert!(
        matches!(err, LinkError::Redis { .. } | LinkError::Unavailable { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_password_in_the_url_works_and_never_shows() {
    if !redis_server::available() {
        return;
    }
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]).await;
    let port = server
        .url()
        .trim_start_matches("redis://127.0.0.1:")
        .trim_end_matches('/')
        .to_owned();
    let good = RedisUrl::parse(&format!("redis://:s3cret-pw@127.0.0.1:{port}/")).unwrap();
    let (link_a, _) = Link::connect(good, LinkSettings::default())
        .await
        .expect("authenticated");
    let pong: String = link_a.query("PING", &redis::cmd("PING")).await.unwrap();
    assert_eq!(pong, "PONG");
    assert!(!format!("{link_a:?}").contains("s3cret-pw"));
    assert!(!link_a.url().to_string().contains("s3cret-pw"));

    let wrong = RedisUrl::parse(&format!("redis://:wrong-pw@127.0.0.1:{port}/")).unwrap();
    let err = Link::connect(wrong, LinkSettings::default())
        .await
        .expect_err("refused");
    let text = format!("{err} / {err:?}");
    assert!(!text.contains("wrong-pw"), "{text}");
    assert!(text.contains("127.0.0.1"), "{text}");
}

/// Three nodes, fifty first joins to one new room at once, spread over the
/// three nodes' own links: one owner, placed once.
#[tokio::test]
async fn fifty_concurrent_first_claims_agree_on_one_owner() {
    if !redis_server::available() {
        return;
    }
    let server = RedisServer::start().await;
    let mut placements = Vec::new();
    let mut registries = Vec::new();
    for id in ["node-a", "node-b", "node-c"] {
        let (link, registry) = node(&server, id, RegistrySettings::default()).await;
        placements.push(Placement::new(
            link,
            Keys::default(),
            Duration::from_secs(5),
        ));
        registries.push(registry);
    }
    let start = Arc::new(tokio::sync::Barrier::new(50));
    let claims: Vec<_> = (0..50)
        .map(|n| {
            let placement = placements[n % 3].clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                placement.claim("standup").await
            })
        })
        .collect();
    let mut owners = BTreeMap::<String, usize>::new();
    let mut placed = 0;
    for claim in claims {
        let claim = claim.await.unwrap().expect("claim");
        if matches!(claim, Claim::Placed { .. }) {
            placed += 1;
        }
        *owners.entry(claim.owner().to_owned()).or_default() += 1;
    }
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(placed, 1, "exactly one claim places the room");
    let owner = owners.keys().next().unwrap().clone();
    assert_eq!(
        placements[0].owner_of("standup").await.unwrap(),
        Some(owner.clone())
    );
    assert_eq!(placements[1].rooms_of(&owner).await.unwrap(), ["standup"]);
    assert_eq!(server.raw(&["HGET", "noom:node_rooms", &owner]), "1");
}

/// Two idle nodes; four one-person rooms opened through one of them land on
/// both. Release and move obey ownership.
#[tokio::test]
async fn new_rooms_go_to_the_least_loaded_node() {
    if !redis_server::available() {
        return;
    }
    let server = RedisServer::start().await;
    let (link_a, _a) = node(&server, "node-a", RegistrySettings::default()).await;
    let (_link_b, _b) = node(&server, "node-b", RegistrySettings::default()).await;
    let through_a = Placement::new(link_a, Keys::default(), Duration::from_secs(5));
    let mut per_node = BTreeMap::<String, usize>::new();
    for room in ["one", "two", "three", "four"] {
        let claim = through_a.claim(room).await.unwrap();
        assert!(matches!(claim, Claim::Placed { .. }), "{claim:?}");
        *per_node.entry(claim.owner().to_owned()).or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([("node-a".into(), 2), ("node-b".into(), 2)])
    );

    // Only the owner releases.
    let owner = through_a.owner_of("one").await.unwrap().unwrap();
    let other = if owner == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    assert!(!through_a.release("one", other).await.unwrap());
    assert!(through_a.release("one", &owner).await.unwrap());
    assert_eq!(through_a.owner_of("one").await.unwrap(), None);

    // A move is a compare-and-set on the old owner.
    let owner = through_a.owner_of("two").await.unwrap().unwrap();
    let other = if owner == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    assert_eq!(
        through_a.move_room("two", other).await.unwrap(),
        Move::NotOwner {
            owner: Some(owner.clone())
        }
    );
    assert_eq!(
        through_a.move_room("two", &owner).await.unwrap(),
        Move::Moved { to: other.into() }
    );
}

/// A draining node keeps its rooms but takes no new one; a dead node's room
/// is taken over by the next claim.
#[tokio::test]
async fn draining_and_dead_owners() {
    if !redis_server::available() {
        return;
    }
    let server = RedisServer::start().await;
    let (link_a, a) = node(&server, "node-a", quick()).await;
    let (_link_b, b) = node(&server, "node-b", quick()).await;
    let placement = Placement::new(link_a, Keys::default(), quick().stale_after);
    // node-a gets the first room (tie broken by id), node-b the second.
    assert_eq!(placement.claim("on-a").await.unwrap().owner(), "node-a");
    assert_eq!(placement.claim("on-b").await.unwrap().owner(), "node-b");

    a.set_state(NodeState::Draining);
    next_beat(&a, Duration::from_secs(2)).await;
    assert_eq!(
        placement.claim("on-a").await.unwrap(),
        Claim::Existing {
            owner: "node-a".into()
        }
    );
    assert_eq!(placement.claim("new").await.unwrap().owner(), "node-b");

    drop(b);
    let deadline = Instant::now() + Duration::from_secs(4);
    let claim = loop {
        match placement.claim("on-b").await {
            Ok(Claim::Existing { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => break other,
        }
    };
    // node-a drains and node-b is dead: nobody can take the room.
    assert!(
        matches!(claim, Err(PlacementError::NoLiveNode { .. })),
        "{claim:?}"
    );
    a.set_state(NodeState::Serving);
    next_beat(&a, Duration::from_secs(2)).await;
    assert_eq!(
        placement.claim("on-b").await.unwrap(),
        Claim::TakenOver {
            owner: "node-a".into(),
            previous: "node-b".into()
        }
    );
}

#[tokio::test]
async fn garbage_on_the_bus_is_counted_and_dropped() {
    if !redis_server::available() {
        return;
    }
    let server = RedisServer::start().await;
    let (link_a, inbox_a) = link(&server).await;
    let (bus_a, mut messages_a) = Bus::start(link_a, inbox_a, Keys::default(), "node-a", 64)
        .await
        .unwrap();
    let (link_b, inbox_b) = link(&server).await;
    let (bus_b, _) = Bus::start(link_b, inbox_b, Keys::default(), "node-b", 64)
        .await
        .unwrap();

    // Broadcasts reach both nodes, addressed messages node-a only.
    for (channel, payload, listeners) in [
        ("noom:bus:all", "not json at all", ":2"),
        (
            "noom:bus:node:node-a",
            r#"{"v":99,"from":"x","kind":"rooms_changed"}"#,
            ":1",
        ),
        ("noom:bus:all", r#"{"v":1,"from":"x","kind":"rm_rf"}"#, ":2"),
        (
            "noom:bus:node:node-a",
            r#"{"v":1,"from":"x","kind":"ask","id":"?"}"#,
            ":1",
        ),
    ] {
        assert_eq!(server.raw(&["PUBLISH", channel, payload]), listeners);
    }
    // Our own broadcast is not handed back to us.
    bus_a.broadcast(BusMessage::RoomsChanged {}).await.unwrap();
    bus_b
        .broadcast(BusMessage::Ask {
            id: 5,
            question: Question::Overview {},
        })
        .await
        .unwrap();
    let got: Envelope = tokio::time::timeout(Duration::from_secs(3), messages_a.recv())
        .await
        .expect("good message after the garbage")
        .unwrap();
    assert_eq!(got.from, "node-b");
    assert_eq!(
        got.message,
        BusMessage::Ask {
            id: 5,
            question: Question::Overview {}
        }
    );
    let counters = &bus_a.counters;
    assert_eq!(counters.not_json.load(Ordering::Relaxed), 1);
    assert_eq!(counters.wrong_version.load(Ordering::Relaxed), 1);
    assert_eq!(counters.unknown_kind.load(Ordering::Relaxed), 1);
    assert_eq!(counters.bad_fields.load(Ordering::Relaxed), 1);
    assert_eq!(counters.rejected(), 4);
    assert_eq!(counters.accepted.load(Ordering::Relaxed), 1);
}

/// Steady-state Redis cost of one idle node (heartbeat + link probes),
/// measured by Redis itself.
#[tokio::test]
async fn steady_state_redis_commands_per_node() {
    if !redis_server::available() {
        return;
    }
    let server = RedisServer::start().await;
    let (_link_a, a) = node(&server, "node-a", RegistrySettings::default()).await;
    next_beat(&a, Duration::from_secs(3)).await; // past start-up (script load)
    assert_eq!(server.raw(&["CONFIG", "RESETSTAT"]), "+OK");
    let window = Duration::from_secs(5);
    let started = Instant::now();
    tokio::time::sleep(window).await; // a measurement window, not a wait for an event
    let stats = server.raw(&["INFO", "commandstats"]);
    let elapsed = started.elapsed();
    let mut per_command = BTreeMap::new();
    for line in stats.lines() {
        let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        // The observer's own commands.
        if name.starts_with("info") || name.starts_with("config") {
            continue;
        }
        let calls: u64 = rest
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        per_command.insert(name.to_owned(), calls);
    }
    // Commands inside scripts are counted too; round trips are what the
    // clients sent (EVALSHA, PING, ...).
    let per_minute = |calls: u64| calls as f64 * 60.0 / elapsed.as_secs_f64();
    let inside_scripts = ["time", "hget", "hset", "hgetall", "hincrby", "hdel"];
    let total: u64 = per_command.values().sum();
    let round_trips: u64 = per_command
        .iter()
        .filter(|(name, _)| !inside_scripts.contains(&name.as_str()))
        .map(|(_, calls)| calls)
        .sum();
    println!(
        "steady state: {per_command:?} in {elapsed:?} = {:.0} round trips/min, {:.0} executed commands/min per node",
        per_minute(round_trips),
        per_minute(total)
    );
    assert!(
        per_command.get("evalsha").copied().unwrap_or(0) >= 4,
        "{per_command:?}"
    );
    assert!(per_minute(round_trips) <= 150.0, "{per_command:?}");
}

/// `rediss://` with a password: TLS through rustls (no system OpenSSL in
/// the client), trusting a throw-away CA made with the openssl CLI.
#[tokio::test]
async fn a_tls_url_with_a_password_works() {
    if !redis_server::available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("noom-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A throw-away CA and a server certificate it signed (webpki refuses a
    // CA certificate presented as the server's own).
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    let script = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=noom-test-ca -keyout ca.key -out ca.pem
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out server.csr
printf 'subjectAltName=IP:127.0.0.1\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out cert.pem
"#;
    let made = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("sh + openssl CLI");
    assert!(made.success(), "openssl could not make test certificates");
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let (ca_arg, cert_arg, key_arg) = (
        ca.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let port_arg = tls_port.to_string();
    let _server = RedisServer::start_with(&[
        "--requirepass",
        "tls-pw",
        "--tls-port",
        &port_arg,
        "--tls-cert-file",
        &cert_arg,
        "--tls-key-file",
        &key_arg,
        "--tls-ca-cert-file",
        &ca_arg,
        "--tls-auth-clients",
        "no",
    ])
    .await;
    // rustls-native-certs reads the trust store named here; only TLS links
    // in this test binary look at it.
    std::env::set_var("SSL_CERT_FILE", &ca);
    let url = RedisUrl::parse(&format!("rediss://:tls-pw@127.0.0.1:{tls_port}/")).unwrap();
    assert_eq!(
        url.to_string(),
        format!("rediss://:***@127.0.0.1:{tls_port}/")
    );
    let (link_a, _) = Link::connect(url, LinkSettings::default())
        .await
        .expect("TLS link up");
    let pong: String = link_a.query("PING", &redis::cmd("PING")).await.unwrap();
    assert_eq!(pong, "PONG");
    let registry = Registry::start(link_a, Keys::default(), identity("tls-node"), quick())
        .await
        .expect("registered over TLS");
    assert_eq!(registry.live_nodes().await.unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
