//! Datagrams on a media port from an address routed to a live connection:
//! demux, STUN, DTLS, SRTP/SRTCP, and (first) the pure per-packet pieces.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    static ROUTER: RefCell<noom_sfu::fuzzing::FuzzRouter> = RefCell::new(Default::default());
}

fuzz_target!(|data: &[u8]| {
    let _ = noom_sfu::classify(data);
    let _ = noom_sfu::stun_local_ufrag(data);
    let _ = noom_sfu::is_keyframe_start(data);
    ROUTER.with(|router| router.borrow_mut().datagram(data));
});
