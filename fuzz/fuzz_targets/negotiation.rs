//! Arbitrary SDP applied by the server: as the answer to its offer, as a
//! client's offer, and as a trickled candidate.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sdp) = std::str::from_utf8(data) {
        noom_sfu::fuzzing::negotiation(sdp);
    }
});
