//! The VP8 payload descriptor (RFC 7741 section 4.2): parsed, and rewritten
//! so one subscriber sees one continuous picture-id, TL0PICIDX and KEYIDX
//! sequence while the server switches the simulcast encoding behind its
//! track.
//!
//! Each encoding numbers its pictures on its own. A decoder (Chromium's
//! jitter buffer) that sees the picture id jump takes the frames in between
//! for lost and waits for them, so at a switch the new encoding's numbers
//! are shifted to continue the old ones. The output always carries a 15-bit
//! picture id when the input has one (a 7-bit input is widened), so the
//! shift never has to wrap at 127.

use crate::temporal_layer::TemporalFilter;
use bytes::{BufMut, Bytes, BytesMut};

/// What the descriptor says about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Descriptor {
    /// Bytes the descriptor takes at the start of the payload.
    pub len: usize,
    pub start_of_partition: bool,
    pub partition_id: u8,
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
    /// Temporal layer index (TID), when the T bit is set.
    pub temporal_id: Option<u8>,
    /// Layer sync (Y): this frame depends only on the base temporal layer.
    pub layer_sync: bool,
    pub key_idx: Option<u8>,
    /// The packet starts a keyframe (partition 0's start, P bit clear).
    pub keyframe_start: bool,
}

impl Vp8Descriptor {
    /// Parses the descriptor; `None` for a payload too short to hold it.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let first = *payload.first()?;
        let mut d = Vp8Descriptor {
            start_of_partition: first & 0x10 != 0,
            partition_id: first & 0x07,
            ..Default::default()
        };
        let mut at = 1;
        if first & 0x80 != 0 {
            let x = *payload.get(at)?;
            at += 1;
            if x & 0x80 != 0 {
                let pid = *payload.get(at)?;
                if pid & 0x80 != 0 {
                    let low = *payload.get(at + 1)?;
                    d.picture_id = Some(u16::from(pid & 0x7f) << 8 | u16::from(low));
                    at += 2;
                } else {
                    d.picture_id = Some(u16::from(pid));
                    at += 1;
                }
            }
            if x & 0x40 != 0 {
                d.tl0_pic_idx = Some(*payload.get(at)?);
                at += 1;
            }
            if x & 0x30 != 0 {
                let tk = *payload.get(at)?;
                if x & 0x20 != 0 {
                    d.temporal_id = Some(tk >> 6);
                    d.layer_sync = tk & 0x20 != 0;
                }
                if x & 0x10 != 0 {
                    d.key_idx = Some(tk & 0x1f);
                }
                at += 1;
            }
        }
        d.len = at;
        d.keyframe_start = d.start_of_partition
            && d.partition_id == 0
            && payload.get(at).is_some_and(|h| h & 0x01 == 0);
        Some(d)
    }

    /// Width and height from a keyframe's uncompressed header (RFC 6386
    /// section 9.1), when `payload` starts a keyframe.
    pub fn keyframe_size(&self, payload: &[u8]) -> Option<(u16, u16)> {
        if !self.keyframe_start {
            return None;
        }
        let frame = payload.get(self.len..self.len + 10)?;
        if frame[3..6] != [0x9d, 0x01, 0x2a] {
            return None;
        }
        let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
        let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
        Some((width, height))
    }

    /// The payload with this descriptor's picture id, TL0PICIDX and KEYIDX
    /// replaced (the fields present stay present; the picture id becomes
    /// 15 bits), everything after the descriptor unchanged.
    pub fn rewrite(
        &self,
        payload: &[u8],
        picture_id: Option<u16>,
        tl0_pic_idx: Option<u8>,
        key_idx: Option<u8>,
    ) -> Bytes {
        let mut out = BytesMut::with_capacity(payload.len() + 1);
        out.put_u8(payload[0]);
        if payload[0] & 0x80 != 0 {
            let x = payload[1];
            out.put_u8(x);
            if let Some(pid) = picture_id.or(self.picture_id) {
                out.put_u16(0x8000 | (pid & 0x7fff));
            }
            if let Some(tl0) = tl0_pic_idx.or(self.tl0_pic_idx) {
                out.put_u8(tl0);
            }
            if x & 0x30 != 0 {
                let tk = payload[self.len - 1];
                let key = key_idx.or(self.key_idx).unwrap_or(0) & 0x1f;
                out.put_u8(if x & 0x10 != 0 { (tk & 0xe0) | key } else { tk });
            }
        }
        out.put_slice(&payload[self.len..]);
        out.freeze()
    }
}

/// One subscriber's picture-id, TL0PICIDX and KEYIDX space (the VP8 half
/// of what `RtpMunger` does for sequence numbers and timestamps), and the
/// temporal layers it gets (pictures dropped there leave no gap in its
/// picture ids).
#[derive(Debug, Default, Clone)]
pub struct Vp8Munger {
    pub temporal: TemporalFilter,
    started: bool,
    /// The next packet comes from another encoding: continue after the last
    /// output instead of mapping by the old offsets.
    resync: bool,
    pid_offset: u16,
    tl0_offset: u8,
    key_offset: u8,
    last_pid: u16,
    last_tl0: u8,
    last_key: u8,
}

impl Vp8Munger {
    /// The next packet is from another encoding (a layer switch, a restarted
    /// publisher).
    pub fn switch_source(&mut self) {
        if self.started {
            self.resync = true;
        }
        self.temporal.switch_source();
    }

    /// Whether the packet with descriptor `d` goes to the subscriber at
    /// all (its temporal layer); a packet without a descriptor does.
    pub fn admit(&mut self, d: Option<&Vp8Descriptor>) -> bool {
        d.is_none_or(|d| self.temporal.admit(d))
    }

    /// The payload as this subscriber must see it.
    pub fn rewrite(&mut self, payload: &Bytes) -> Bytes {
        self.rewrite_parsed(payload, Vp8Descriptor::parse(payload).as_ref())
    }

    /// `rewrite` with the payload's descriptor already parsed (`d`), so the
    /// packet path reads it once for `admit` and the rewrite.
    pub fn rewrite_parsed(&mut self, payload: &Bytes, d: Option<&Vp8Descriptor>) -> Bytes {
        let Some(d) = d else {
            return payload.clone();
        };
        // Pictures dropped before this one (temporal layers above the
        // subscriber's): its id moves down by that many.
        let skipped = d.picture_id.map_or(0, |p| self.temporal.skipped_before(p));
        if self.resync {
            // The new encoding's first picture follows the last one sent.
            if let Some(pid) = d.picture_id {
                self.pid_offset = self
                    .last_pid
                    .wrapping_add(1)
                    .wrapping_add(skipped)
                    .wrapping_sub(pid)
                    & 0x7fff;
            }
            if let Some(tl0) = d.tl0_pic_idx {
                self.tl0_offset = self.last_tl0.wrapping_add(1).wrapping_sub(tl0);
            }
            if let Some(key) = d.key_idx {
                self.key_offset = self.last_key.wrapping_add(1).wrapping_sub(key) & 0x1f;
            }
            self.resync = false;
        }
        // The first packet sets the newest values whatever they are.
        let first = !std::mem::replace(&mut self.started, true);
        let shift = self.pid_offset.wrapping_sub(skipped) & 0x7fff;
        let pid = d.picture_id.map(|p| p.wrapping_add(shift) & 0x7fff);
        let tl0 = d.tl0_pic_idx.map(|t| t.wrapping_add(self.tl0_offset));
        let key = d.key_idx.map(|k| k.wrapping_add(self.key_offset) & 0x1f);
        // Newest values, for the next switch (a picture id that went back is
        // a late packet: it does not move the sequence).
        if let Some(p) = pid {
            if first || (p.wrapping_sub(self.last_pid) & 0x7fff) < 0x4000 {
                self.last_pid = p;
            }
        }
        if let Some(t) = tl0 {
            if first || t.wrapping_sub(self.last_tl0) < 0x80 {
                self.last_tl0 = t;
            }
        }
        if let Some(k) = key {
            self.last_key = k;
        }
        let widen =
            d.picture_id.is_some_and(|p| p < 0x80) && payload.get(2).is_some_and(|b| b & 0x80 == 0);
        if shift == 0 && self.tl0_offset == 0 && self.key_offset == 0 && !widen {
            return payload.clone();
        }
        d.rewrite(payload, pid, tl0, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor with X, I (15-bit), L, T and K set.
    fn packet(pid: u16, tl0: u8, tid: u8, sync: bool, key_idx: u8, keyframe: bool) -> Bytes {
        let mut p = vec![
            0x90,
            0xF0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            tid << 6 | u8::from(sync) << 5 | key_idx,
        ];
        // VP8 payload header: P bit clear for a keyframe, then the start code
        // and 640x360.
        p.extend_from_slice(&[
            u8::from(!keyframe),
            0,
            0,
            0x9d,
            0x01,
            0x2a,
            0x80,
            0x02,
            0x68,
            0x01,
        ]);
        Bytes::from(p)
    }

    #[test]
    fn parses_every_field_and_the_keyframe_size() {
        let p = packet(0x1234, 7, 2, true, 5, true);
        let d = Vp8Descriptor::parse(&p).unwrap();
        assert_eq!(d.len, 6);
        assert_eq!(d.picture_id, Some(0x1234));
        assert_eq!(d.tl0_pic_idx, Some(7));
        assert_eq!(
            (d.temporal_id, d.layer_sync, d.key_idx),
            (Some(2), true, Some(5))
        );
        assert!(d.keyframe_start);
        assert_eq!(d.keyframe_size(&p), Some((640, 360)));
        let delta = packet(1, 1, 0, false, 0, false);
        let d = Vp8Descriptor::parse(&delta).unwrap();
        assert!(!d.keyframe_start);
        assert_eq!(d.keyframe_size(&delta), None);
        // 7-bit picture id, no other field.
        let d = Vp8Descriptor::parse(&[0x90, 0x80, 0x05, 0x00]).unwrap();
        assert_eq!((d.picture_id, d.len, d.keyframe_start), (Some(5), 3, true));
        // Truncated input never panics.
        for cut in 0..p.len() {
            let _ = Vp8Descriptor::parse(&p[..cut]);
        }
        assert_eq!(Vp8Descriptor::parse(&[]), None);
    }

    #[test]
    fn rewrites_fields_and_keeps_the_frame() {
        let p = packet(0x1234, 7, 2, true, 5, false);
        let d = Vp8Descriptor::parse(&p).unwrap();
        let out = d.rewrite(&p, Some(0x7fff), Some(255), Some(31));
        let o = Vp8Descriptor::parse(&out).unwrap();
        assert_eq!(
            (o.picture_id, o.tl0_pic_idx, o.key_idx),
            (Some(0x7fff), Some(255), Some(31))
        );
        assert_eq!((o.temporal_id, o.layer_sync), (Some(2), true));
        assert_eq!(&out[o.len..], &p[d.len..]);
    }

    #[test]
    fn a_seven_bit_picture_id_is_widened() {
        let p = Bytes::from_static(&[0x90, 0x80, 0x05, 0x01, 0xAA]);
        let mut m = Vp8Munger::default();
        let out = m.rewrite(&p);
        assert_eq!(&out[..], &[0x90, 0x80, 0x80, 0x05, 0x01, 0xAA]);
    }

    #[test]
    fn a_switch_continues_from_any_first_picture_id() {
        // The first encoding starts far from 0, in either half of the space
        // (a picture id behind the last one sent makes the decoder drop
        // every later frame as old).
        for first in [22_146u16, 5_000, 0x7fff] {
            let mut m = Vp8Munger::default();
            m.rewrite(&packet(first, 200, 0, false, 0, true));
            m.switch_source();
            let out = m.rewrite(&packet(40, 3, 0, false, 0, true));
            let d = Vp8Descriptor::parse(&out).unwrap();
            assert_eq!(
                d.picture_id,
                Some(first.wrapping_add(1) & 0x7fff),
                "after {first}"
            );
            assert_eq!(d.tl0_pic_idx, Some(201));
        }
    }

    #[test]
    fn a_switch_continues_picture_id_tl0_and_keyidx() {
        let mut m = Vp8Munger::default();
        // Encoding A: pictures 100..=102, TL0 10, KEYIDX 3.
        for pid in 100..=102u16 {
            let out = m.rewrite(&packet(pid, 10, 0, false, 3, pid == 100));
            assert_eq!(
                Vp8Descriptor::parse(&out).unwrap().picture_id,
                Some(pid),
                "identity before a switch"
            );
        }
        // Encoding B's keyframe: unrelated numbers, near the 15-bit wrap.
        m.switch_source();
        let out = m.rewrite(&packet(0x7ffe, 200, 0, false, 30, true));
        let d = Vp8Descriptor::parse(&out).unwrap();
        assert_eq!(
            (d.picture_id, d.tl0_pic_idx, d.key_idx),
            (Some(103), Some(11), Some(4))
        );
        // B's next pictures follow, across its own wrap.
        let out = m.rewrite(&packet(0x7fff, 200, 2, false, 30, false));
        assert_eq!(Vp8Descriptor::parse(&out).unwrap().picture_id, Some(104));
        let out = m.rewrite(&packet(0, 201, 0, false, 30, false));
        let d = Vp8Descriptor::parse(&out).unwrap();
        assert_eq!((d.picture_id, d.tl0_pic_idx), (Some(105), Some(12)));
        // A packet of a picture already sent (a later packet of one frame)
        // maps the same way.
        let out = m.rewrite(&packet(0x7fff, 200, 2, false, 30, false));
        assert_eq!(Vp8Descriptor::parse(&out).unwrap().picture_id, Some(104));
        // And back to A: continues again after 105.
        m.switch_source();
        let out = m.rewrite(&packet(110, 12, 0, false, 4, true));
        let d = Vp8Descriptor::parse(&out).unwrap();
        assert_eq!(
            (d.picture_id, d.tl0_pic_idx, d.key_idx),
            (Some(106), Some(13), Some(5))
        );
    }
}
