//! The DTLS handshake between the router and a real webrtc-rs client over a
//! simulated link, with time as an input: a lost handshake flight must cost
//! a retransmission, never the connection.
//!
//! The server offers, so the client is the DTLS client. Each datagram takes
//! `LATENCY` unless a test says otherwise; nothing is lost unless a test
//! drops it.

use super::Router;
use crate::command::Command;
use crate::engine;
use crate::events::{ConnectionState, EventSink, MediaEvent};
use crate::settings::MediaSettings;
use crate::stats::{ShardStats, ShardStatsSnapshot};
use bytes::BytesMut;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::RTCPeerConnection;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LATENCY: Duration = Duration::from_millis(5);
/// Long enough for every retransmission budget involved (rtc-dtls: seven
/// more tries, one second apart).
const GIVE_UP_AFTER: Duration = Duration::from_secs(20);

fn server_addr() -> SocketAddr {
    "10.0.0.1:40000".parse().expect("addr")
}

fn client_addr() -> SocketAddr {
    "10.0.0.2:50000".parse().expect("addr")
}

fn settings() -> MediaSettings {
    MediaSettings::single_shard(server_addr(), true)
}

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<MediaEvent>>>);

impl EventSink for Events {
    fn deliver(&self, event: MediaEvent) {
        self.0.lock().expect("events").push(event);
    }
}

impl Events {
    fn take(&self) -> Vec<MediaEvent> {
        std::mem::take(&mut *self.0.lock().expect("events"))
    }
}

/// The handshake message type of a datagram's first record when it is an
/// epoch-0 handshake record (1 ClientHello, 2 ServerHello, 3
/// HelloVerifyRequest).
fn handshake_type(datagram: &[u8]) -> Option<u8> {
    (datagram.len() > 13 && datagram[0] == 22 && datagram[3..5] == [0, 0]).then(|| datagram[13])
}

/// A STUN Binding success response.
fn is_stun_success(datagram: &[u8]) -> bool {
    datagram.get(..2) == Some(&[0x01, 0x01])
}

fn handshake_sequence(datagram: &[u8]) -> Option<u16> {
    let bytes = datagram.get(17..19)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

enum Direction {
    ToServer,
    ToClient,
}

/// What a test does to one datagram: deliver it after this delay, or drop it.
type Link<'a> = dyn FnMut(&Direction, &[u8]) -> Option<Duration> + 'a;

struct Outcome {
    connected_after: Option<Duration>,
    server_hellos_sent: usize,
    /// The server's counters when the run ended.
    stats: ShardStatsSnapshot,
}

/// Joins one participant, answers its offer with a webrtc-rs client and runs
/// both ends over `link` until the server reports the connection up or
/// `GIVE_UP_AFTER` passes.
fn handshake_over(link: &mut Link<'_>) -> Outcome {
    let start = Instant::now();
    let mut now = start;
    let stats = Arc::new(ShardStats::default());
    let mut router = Router::new(0, vec![server_addr()], &settings(), stats.clone());
    let events = Events::default();
    let mut to_client: Vec<Vec<u8>> = Vec::new();
    router.handle_command(
        Command::Join {
            room: "r".into(),
            participant: "p".into(),
            sink: Box::new(events.clone()),
        },
        now,
        &mut |_: usize, _: SocketAddr, data: &[u8]| to_client.push(data.to_vec()),
    );
    let engine::BuiltConnection {
        pc: mut client,
        candidates: client_candidates,
        ..
    } = engine::build_peer_connection(
        "clientufrag0000",
        "clientpassword00000000000000000",
        &[client_addr()],
        false,
        now,
    )
    .expect("client");
    for event in events.take() {
        match event {
            MediaEvent::Offer { sdp } => {
                client
                    .set_remote_description(now, RTCSessionDescription::offer(sdp).expect("offer"))
                    .expect("set offer");
                let answer = client.create_answer(None).expect("answer");
                client
                    .set_local_description(now, answer)
                    .expect("set answer");
                let sdp = client.local_description().expect("local").sdp;
                router.handle_command(
                    Command::Answer {
                        participant: "p".into(),
                        sdp,
                        reply: Box::new(|r| r.expect("answer accepted")),
                    },
                    now,
                    &mut |_: usize, _: SocketAddr, data: &[u8]| to_client.push(data.to_vec()),
                );
            }
            MediaEvent::Candidate(c) => client
                .add_remote_candidate(RTCIceCandidateInit {
                    candidate: c.candidate,
                    sdp_mid: c.sdp_mid,
                    sdp_mline_index: c.sdp_mline_index,
                    username_fragment: c.username_fragment,
                    ..Default::default()
                })
                .expect("server candidate"),
            _ => {}
        }
    }
    for candidate in client_candidates {
        router.handle_command(
            Command::Candidate {
                participant: "p".into(),
                candidate: Some(crate::events::IceCandidate {
                    candidate: candidate.candidate,
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                    username_fragment: None,
                }),
                reply: Box::new(|r| r.expect("client candidate accepted")),
            },
            now,
            &mut |_: usize, _: SocketAddr, data: &[u8]| to_client.push(data.to_vec()),
        );
    }

    // Datagrams in flight: arrival time, direction, bytes.
    let mut in_flight: Vec<(Instant, Direction, Vec<u8>)> = Vec::new();
    let mut server_hellos_sent = 0;
    let mut send_all = |now: Instant,
                        in_flight: &mut Vec<_>,
                        to_client: &mut Vec<Vec<u8>>,
                        client: &mut RTCPeerConnection| {
        for data in to_client.drain(..) {
            server_hellos_sent += usize::from(handshake_type(&data) == Some(2));
            if let Some(delay) = link(&Direction::ToClient, &data) {
                in_flight.push((now + delay, Direction::ToClient, data));
            }
        }
        while let Some(msg) = client.poll_write() {
            let data = msg.message.to_vec();
            if let Some(delay) = link(&Direction::ToServer, &data) {
                in_flight.push((now + delay, Direction::ToServer, data));
            }
        }
    };
    let mut connected_after = None;
    while connected_after.is_none() && now - start < GIVE_UP_AFTER {
        // Events first: rtc acts on some only when they are polled (its
        // DTLS client starts on the selected-pair event), and what that
        // writes leaves now, as it would from a real client.
        while client.poll_event().is_some() {}
        while client.poll_read().is_some() {}
        send_all(now, &mut in_flight, &mut to_client, &mut client);
        let next = in_flight
            .iter()
            .map(|(at, _, _)| *at)
            .chain(router.next_deadline())
            .chain(client.poll_timeout())
            .min()
            .expect("something is always scheduled while connecting");
        now = now.max(next);
        // Arrivals first, in order, then timers.
        in_flight.sort_by_key(|(at, _, _)| *at);
        let due = in_flight.iter().take_while(|(at, _, _)| *at <= now).count();
        for (_, direction, data) in in_flight.drain(..due) {
            match direction {
                Direction::ToServer => {
                    let mut send =
                        |_: usize, _: SocketAddr, data: &[u8]| to_client.push(data.to_vec());
                    router.handle_datagram(0, client_addr(), &data, now, &mut send);
                    router.flush(now, &mut send);
                }
                Direction::ToClient => {
                    let _ = client.handle_read(TaggedBytesMut {
                        now,
                        transport: TransportContext {
                            local_addr: client_addr(),
                            peer_addr: server_addr(),
                            ecn: None,
                            transport_protocol: TransportProtocol::UDP,
                        },
                        message: BytesMut::from(&data[..]),
                    });
                }
            }
        }
        router.handle_timeouts(now, &mut |_: usize, _: SocketAddr, data: &[u8]| {
            to_client.push(data.to_vec())
        });
        if client.poll_timeout().is_some_and(|t| t <= now) {
            let _ = client.handle_timeout(now);
        }
        if events
            .take()
            .contains(&MediaEvent::ConnectionState(ConnectionState::Connected))
        {
            connected_after = Some(now - start);
        }
    }
    Outcome {
        connected_after,
        server_hellos_sent,
        stats: stats.snapshot(),
    }
}

#[test]
fn connects_over_a_clean_link() {
    let outcome = handshake_over(&mut |_, _| Some(LATENCY));
    let after = outcome.connected_after.expect("connected");
    assert!(after < Duration::from_millis(500), "took {after:?}");
    assert_eq!(outcome.server_hellos_sent, 1);
    // The SRTP keys the handshake derived were recovered (`srtp_key_tap`):
    // forwarded media will take the fast path.
    assert_eq!(
        (
            outcome.stats.fast_path_connections,
            outcome.stats.fast_path_refused
        ),
        (1, 0)
    );
}

/// The server's flight 4 is lost, and the client's repeated ClientHello
/// (its request for that flight) reaches the server before the server's own
/// retransmission timer fires: here because the first ClientHello with the
/// cookie was delayed (jitter), for browsers also because their first DTLS
/// timeout is far shorter than rtc-dtls' one second. Before the fix the
/// repeat disarmed the server's timer and the connection never came up.
#[test]
fn a_lost_server_hello_flight_is_sent_again_although_the_client_asks_first() {
    let mut cookie_hellos = 0;
    let mut server_hellos = 0;
    let mut hellos_before_resend = 0;
    let outcome = handshake_over(&mut |direction, data| match direction {
        Direction::ToServer
            if handshake_type(data) == Some(1) && handshake_sequence(data) == Some(1) =>
        {
            cookie_hellos += 1;
            // The first copy is slow; the client's retransmission is not.
            Some(if cookie_hellos == 1 {
                LATENCY * 10
            } else {
                LATENCY
            })
        }
        Direction::ToClient if handshake_type(data) == Some(2) => {
            server_hellos += 1;
            if server_hellos == 2 {
                hellos_before_resend = cookie_hellos;
            }
            (server_hellos > 1).then_some(LATENCY)
        }
        _ => Some(LATENCY),
    });
    let after = outcome
        .connected_after
        .expect("the connection must come up after the lost flight is resent");
    assert!(after < Duration::from_secs(3), "took {after:?}");
    assert_eq!(outcome.server_hellos_sent, 2, "flight 4 sent twice");
    assert_eq!(
        hellos_before_resend, 2,
        "the client's repeated ClientHello came before the server's retransmission"
    );
}

/// The HelloVerifyRequest is lost: the client repeats its first ClientHello,
/// which the server must answer (the repeat filter must let it through).
#[test]
fn a_lost_hello_verify_request_is_answered_again() {
    let mut verify_requests = 0;
    let outcome = handshake_over(&mut |direction, data| match direction {
        Direction::ToClient if handshake_type(data) == Some(3) => {
            verify_requests += 1;
            (verify_requests > 1).then_some(LATENCY)
        }
        _ => Some(LATENCY),
    });
    let after = outcome.connected_after.expect("connected");
    assert!(after < Duration::from_secs(3), "took {after:?}");
    assert_eq!(verify_requests, 2);
}

/// The client's first ClientHello overtakes the success response that lets
/// the server (the controlling ICE agent) select its pair: here the
/// client's STUN success responses take 100 ms, everything else 5 ms.
/// Browsers send their hello as soon as one of their own checks succeeds,
/// so with them the same race is decided by the server's check tick. rtc
/// drops DTLS that comes before a pair is selected; the server must answer
/// the hello anyway instead of waiting for the client's DTLS retransmission
/// a second later.
#[test]
fn a_client_hello_that_overtakes_the_nomination_is_answered_at_once() {
    const SLOW_SUCCESS: Duration = Duration::from_millis(100);
    let mut first_hellos = 0;
    let outcome = handshake_over(&mut |direction, data| match direction {
        Direction::ToServer if is_stun_success(data) => Some(SLOW_SUCCESS),
        Direction::ToServer => {
            if handshake_type(data) == Some(1) && handshake_sequence(data) == Some(0) {
                first_hellos += 1;
            }
            Some(LATENCY)
        }
        Direction::ToClient => Some(LATENCY),
    });
    let after = outcome.connected_after.expect("connected");
    assert!(
        after < Duration::from_secs(1),
        "took {after:?}: the client had to retransmit its ClientHello"
    );
    assert_eq!(first_hellos, 1, "the first ClientHello was answered");
    assert_eq!(
        outcome.stats.early_dtls_replayed, 1,
        "the hello came before the pair was selected (else this test tests nothing)"
    );
    assert_eq!(outcome.stats.early_dtls_dropped, 0);
}

/// DTLS from a connection's address before its ICE is up is held only up to
/// the hold's bounds, and what is held goes away with the connection: both
/// counted, nothing kept.
#[test]
fn early_dtls_beyond_the_hold_or_of_a_departed_peer_is_dropped_and_counted() {
    use crate::early_dtls::MAX_HELD_DATAGRAMS;
    let now = Instant::now();
    let stats = Arc::new(ShardStats::default());
    let mut router = Router::new(0, vec![server_addr()], &settings(), stats.clone());
    let mut ignore = |_: usize, _: SocketAddr, _: &[u8]| {};
    router.handle_command(
        Command::Join {
            room: "r".into(),
            participant: "p".into(),
            sink: Box::new(Events::default()),
        },
        now,
        &mut ignore,
    );
    router.fuzz_learn_route("p", 0, client_addr());
    let extra = 2;
    for fill in 0..(MAX_HELD_DATAGRAMS + extra) as u8 {
        // An epoch-0 handshake record that is not a ClientHello.
        let record = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, fill];
        router.handle_datagram(0, client_addr(), &record, now, &mut ignore);
    }
    router.flush(now, &mut ignore);
    assert_eq!(stats.snapshot().early_dtls_dropped, extra as u64);
    router.handle_command(
        Command::Leave {
            participant: "p".into(),
        },
        now,
        &mut ignore,
    );
    let after = stats.snapshot();
    assert_eq!(
        after.early_dtls_dropped,
        (MAX_HELD_DATAGRAMS + extra) as u64
    );
    assert_eq!(after.early_dtls_replayed, 0);
    assert_eq!(after.peers, 0);
}
