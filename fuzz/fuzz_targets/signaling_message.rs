//! Any WebSocket text a client may send: parsing, then the checks a request
//! goes through before it reaches the rooms directory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use noom_protocol::{check_chat_text, check_name, parse, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let incoming = parse(text);
    if let Ok(request) = incoming.request {
        match request {
            Request::Join { room, name, .. } => {
                let _ = check_name("room", &room);
                let _ = check_name("name", &name);
            }
            Request::Name { name } => {
                let _ = check_name("name", &name);
            }
            Request::Chat { text, .. } => {
                let _ = check_chat_text(&text);
            }
            _ => {}
        }
    }
});
