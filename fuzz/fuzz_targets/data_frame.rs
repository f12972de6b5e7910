//! Data-channel frames as the relay parses them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = noom_sfu::parse_client(data) {
        let _ = noom_sfu::parse_file_offer(frame.body);
    }
    let _ = noom_sfu::parse_file_offer(data);
});
