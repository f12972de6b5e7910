//! Driving one of rtc's interceptors by hand, for tests that check our
//! replacements against it (`nack_requests`, `receiver_reports`).

use std::time::Instant;

use rtc::interceptor::{AttributedPacket, Interceptor, Packet, TaggedPacket};
use rtc::shared::TransportContext;

/// Gives `packet` to the interceptor as read at `now`, and takes it back.
pub fn read(rtc: &mut dyn Interceptor, packet: Packet, now: Instant) {
    let message = TaggedPacket {
        now,
        transport: TransportContext::default(),
        message: AttributedPacket::new(packet),
    };
    rtc.handle_read(message).expect("rtc reads it");
    while rtc.poll_read().is_some() {}
}

/// Runs the interceptor's timer at `now`: the RTCP packets it then wrote,
/// each of which must be a `T`.
pub fn written<T: Clone + 'static>(rtc: &mut dyn Interceptor, now: Instant) -> Vec<T> {
    rtc.handle_timeout(now).expect("rtc's timer");
    let mut out = Vec::new();
    while let Some(message) = rtc.poll_write() {
        let Packet::Rtcp(packets) = message.message.packet else {
            panic!("rtc wrote RTP");
        };
        for packet in packets {
            let typed = packet.as_any().downcast_ref::<T>().unwrap_or_else(|| {
                panic!(
                    "rtc wrote another RTCP packet than {}",
                    std::any::type_name::<T>()
                )
            });
            out.push(typed.clone());
        }
    }
    out
}
