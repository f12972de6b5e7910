//! A client candidate named by mDNS (`<uuid>.local`, what Firefox sends for
//! its host addresses by default) is accepted and sends nothing: the server
//! reaches such a client through the peer-reflexive candidate its checks
//! create, and an mDNS query from the media socket could never be answered
//! (see `engine::build_peer_connection`).

use super::Router;
use crate::command::Command;
use crate::engine;
use crate::events::{EventSink, IceCandidate, MediaEvent};
use crate::settings::MediaSettings;
use crate::stats::ShardStats;
use rtc::peer_connection::sdp::RTCSessionDescription;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn server_addr() -> SocketAddr {
    "10.0.0.1:40000".parse().expect("addr")
}

fn settings() -> MediaSettings {
    MediaSettings::single_shard(server_addr(), false)
}

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<MediaEvent>>>);

impl EventSink for Events {
    fn deliver(&self, event: MediaEvent) {
        self.0.lock().expect("events").push(event);
    }
}

#[test]
fn an_mdns_candidate_is_accepted_and_sends_no_multicast_query() {
    let start = Instant::now();
    let stats = Arc::new(ShardStats::default());
    let mut router = Router::new(0, vec![server_addr()], &settings(), stats);
    let events = Events::default();
    // Every destination the router sends to.
    let mut sent_to: Vec<SocketAddr> = Vec::new();
    router.handle_command(
        Command::Join {
            room: "r".into(),
            participant: "p".into(),
            sink: Box::new(events.clone()),
        },
        start,
        &mut |_: usize, to: SocketAddr, _: &[u8]| sent_to.push(to),
    );
    let offer = std::mem::take(&mut *events.0.lock().expect("events"))
        .into_iter()
        .find_map(|e| match e {
            MediaEvent::Offer { sdp } => Some(sdp),
            _ => None,
        })
        .expect("the server offers on join");
    let mut client = engine::build_peer_connection(
        "clientufrag0000",
        "clientpassword00000000000000000",
        &["10.0.0.2:50000".parse().expect("addr")],
        false,
        start,
    )
    .expect("client")
    .pc;
    client
        .set_remote_description(start, RTCSessionDescription::offer(offer).expect("offer"))
        .expect("set offer");
    let answer = client.create_answer(None).expect("answer");
    client
        .set_local_description(start, answer)
        .expect("set answer");
    router.handle_command(
        Command::Answer {
            participant: "p".into(),
            sdp: client.local_description().expect("local").sdp,
            reply: Box::new(|r| r.expect("answer accepted")),
        },
        start,
        &mut |_: usize, to: SocketAddr, _: &[u8]| sent_to.push(to),
    );

    let accepted = Arc::new(Mutex::new(None));
    let reply = accepted.clone();
    router.handle_command(
        Command::Candidate {
            participant: "p".into(),
            candidate: Some(IceCandidate {
                candidate: "candidate:0 1 UDP 2122252543 5d9c6a8e-4f1b-4c52-9a57-0c3e2f1b7d64.local 53214 typ host"
                    .into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: None,
            }),
            reply: Box::new(move |r| *reply.lock().expect("reply") = Some(r.map_err(|e| e.to_string()))),
        },
        start,
        &mut |_: usize, to: SocketAddr, _: &[u8]| sent_to.push(to),
    );
    assert_eq!(
        *accepted.lock().expect("reply"),
        Some(Ok(())),
        "the mDNS candidate is accepted"
    );
    // Two seconds of the server's timers (its checks and any query would go
    // out in the first tens of milliseconds).
    let mut now = start;
    while now - start < Duration::from_secs(2) {
        now = router
            .next_deadline()
            .map_or(now + Duration::from_millis(20), |t| t.max(now))
            .min(start + Duration::from_secs(2));
        router.handle_timeouts(now, &mut |_: usize, to: SocketAddr, _: &[u8]| {
            sent_to.push(to)
        });
        now += Duration::from_millis(1);
    }
    let multicast: Vec<_> = sent_to.iter().filter(|a| a.ip().is_multicast()).collect();
    assert!(
        multicast.is_empty(),
        "the server sent to multicast addresses: {multicast:?}"
    );
}
