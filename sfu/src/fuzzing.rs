//! Entry points for the fuzz targets in `fuzz/` (not part of the API).
//!
//! They drive the real code paths with a shard-less [`Router`]: a datagram
//! from a remote address the router has learned for a live peer connection
//! (so DTLS, SRTP, RTP and RTCP parsing are reached, not just the demux), and
//! arbitrary SDP applied as an answer to a real server offer or as a client
//! offer. Nothing may panic.

use crate::command::Command;
use crate::events::{EventSink, IceCandidate, MediaEvent};
use crate::router::Router;
use crate::settings::MediaSettings;
use std::net::SocketAddr;
use std::time::Instant;

struct NoSink;
impl EventSink for NoSink {
    fn deliver(&self, _event: MediaEvent) {}
}

fn settings() -> MediaSettings {
    MediaSettings::single_shard("127.0.0.1:0".parse().expect("addr"), true)
}

/// A router with two joined participants in one room; the first one's
/// connection answers datagrams from `source()`.
pub struct FuzzRouter {
    router: Router,
}

const LOCAL: &str = "127.0.0.1:50000";

pub fn source() -> SocketAddr {
    "127.0.0.1:40000".parse().expect("addr")
}

impl Default for FuzzRouter {
    fn default() -> Self {
        let stats = Default::default();
        let mut router = Router::new(0, vec![LOCAL.parse().expect("addr")], &settings(), stats);
        let now = Instant::now();
        let mut send = |_: usize, _: SocketAddr, _: &[u8]| {};
        for who in ["a", "b"] {
            router.handle_command(
                Command::Join {
                    room: "r".into(),
                    participant: who.into(),
                    sink: Box::new(NoSink),
                },
                now,
                &mut send,
            );
        }
        router.fuzz_learn_route("a", 0, source());
        FuzzRouter { router }
    }
}

impl FuzzRouter {
    /// One datagram from the learned remote address, then timers.
    pub fn datagram(&mut self, data: &[u8]) {
        let now = Instant::now();
        let mut send = |_: usize, _: SocketAddr, _: &[u8]| {};
        self.router
            .handle_datagram(0, source(), data, now, &mut send);
        self.router.flush(now, &mut send);
        self.router.handle_timeouts(now, &mut send);
    }
}

/// Applies `sdp` as the answer to a fresh server offer, as a client offer,
/// and as a trickled candidate line.
pub fn negotiation(sdp: &str) {
    let mut fuzz = FuzzRouter::default();
    let now = Instant::now();
    let mut send = |_: usize, _: SocketAddr, _: &[u8]| {};
    for command in [
        Command::Answer {
            participant: "a".into(),
            sdp: sdp.to_owned(),
            reply: Box::new(|_| {}),
        },
        Command::Offer {
            participant: "b".into(),
            sdp: sdp.to_owned(),
            reply: Box::new(|_| {}),
        },
        Command::Candidate {
            participant: "a".into(),
            candidate: Some(IceCandidate {
                candidate: sdp.lines().next().unwrap_or_default().to_owned(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: None,
            }),
            reply: Box::new(|_| {}),
        },
    ] {
        fuzz.router.handle_command(command, now, &mut send);
    }
}
