//! Which simulcast encoding each receiver got of each publisher, and the
//! video loss of a simulcast run, from what the payloads carry (the
//! publisher's `(ssrc, seq)` stamp and the rid letter, see
//! `noom_client::simulcast_publish`). A receiver gets one encoding of each
//! publisher, so "sent times fan-out" does not tell what it should get:
//! the sequence numbers it saw do.

use std::collections::HashMap;
use std::sync::Mutex;

use noom_client::simulcast_publish::{rid_of_payload, LAYERS};

use crate::media::read_stamp;

/// One publisher encoding as one receiver saw it in the window.
struct Stream {
    rid: &'static str,
    first: u16,
    /// Highest sequence number seen, as a distance from `first`.
    span: u16,
    count: u64,
}

/// One receiver's simulcast video streams during the measurement window.
#[derive(Default)]
pub struct LayerCounts {
    streams: Mutex<HashMap<u32, Stream>>,
}

/// Every receiver's streams added up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LayerTotals {
    /// Packets received per encoding (q, h, f).
    pub packets: [u64; 3],
    /// (receiver, publisher encoding) streams per encoding.
    pub streams: [u64; 3],
    /// Packets the streams' sequence ranges span.
    pub expected: u64,
    pub received: u64,
}

impl LayerCounts {
    /// A video payload arrived (call only while measuring).
    pub fn on_video(&self, payload: &[u8]) {
        let (Some((ssrc, seq)), Some(rid)) = (read_stamp(payload), rid_of_payload(payload)) else {
            return;
        };
        let mut streams = self.streams.lock().unwrap();
        let s = streams.entry(ssrc).or_insert(Stream {
            rid,
            first: seq,
            span: 0,
            count: 0,
        });
        s.count += 1;
        let d = seq.wrapping_sub(s.first);
        if d < 0x8000 && d > s.span {
            s.span = d;
        }
    }

    pub fn add_to(&self, t: &mut LayerTotals) {
        for s in self.streams.lock().unwrap().values() {
            let Some(i) = LAYERS.iter().position(|l| l.rid == s.rid) else {
                continue;
            };
            t.packets[i] += s.count;
            t.streams[i] += 1;
            t.expected += u64::from(s.span) + 1;
            t.received += s.count;
        }
    }
}

impl LayerTotals {
    pub fn loss(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        (1.0 - self.received as f64 / self.expected as f64).max(0.0)
    }

    /// `{"q": .., "h": .., "f": ..}` of one of the per-encoding arrays.
    pub fn by_rid(v: [u64; 3]) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (l, n) in LAYERS.iter().zip(v) {
            m.insert(l.rid.to_owned(), n.into());
        }
        serde_json::Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use noom_client::simulcast_publish::{vp8_payload, Vp8Picture};

    #[test]
    fn counts_streams_by_rid_and_loss_by_sequence_range() {
        let c = LayerCounts::default();
        let pic = Vp8Picture {
            picture_id: 1,
            tl0_pic_idx: 1,
            first_of_frame: true,
            key: false,
        };
        for seq in [65_530u16, 65_531, 65_533, 2] {
            c.on_video(&vp8_payload(300, pic, &LAYERS[2], 7, seq));
        }
        c.on_video(&vp8_payload(300, pic, &LAYERS[0], 8, 5));
        c.on_video(&crate::media::video_payload(300, true, false, 9, 1)); // not simulcast
        let mut t = LayerTotals::default();
        c.add_to(&mut t);
        assert_eq!(t.packets, [1, 0, 4]);
        assert_eq!(t.streams, [1, 0, 1]);
        assert_eq!((t.expected, t.received), (9 + 1, 5));
        assert!((t.loss() - 0.5).abs() < 1e-9);
    }
}
