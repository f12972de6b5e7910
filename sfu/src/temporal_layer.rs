//! Which VP8 temporal layers one subscriber gets of the encoding forwarded
//! to it (issue #16 point 2: finer steps than whole simulcast encodings).
//!
//! Chromium encodes each VP8 simulcast encoding as L1T3 (measured: TIDs
//! 0, 2, 1, 2 repeating; the Y bit on the TL2 and TL1 frames right after
//! every other TL0 frame, so a sync point every 8 frames, and on
//! keyframes). Frames of a layer reference only frames of the same or a
//! lower one, so dropping every frame above a temporal target leaves a
//! decodable stream at a half or a quarter of the frame rate.
//!
//! Rules, per picture (all packets of one picture share its fate, so a
//! frame is never cut):
//! - Down at once: the first picture after the target was lowered is
//!   already judged by the new target.
//! - Up only at a sync point, one layer at a time: a frame of the next
//!   layer with the Y bit (it depends on the base layer alone, which the
//!   subscriber has), or a keyframe (every buffer refreshed: straight to
//!   the target). A non-sync frame of a layer not forwarded so far may
//!   reference one the subscriber never got: a corrupt picture. A Y frame
//!   two layers up is not taken either: the layer between it could still
//!   reference frames the subscriber lacks.
//! - A dropped picture is counted, and the picture ids of later pictures
//!   move down by it: the receiver (Chromium's VP8 reference finder) takes
//!   a gap in picture ids for lost frames and holds back every later frame
//!   that might depend on them. TL0PICIDX needs nothing: base-layer frames
//!   are never dropped.
//!
//! Late packets (reordered, or a publisher's retransmission) are judged by
//! the decision made for their picture, remembered for `RECENT` pictures;
//! older unknown ones are dropped (they belong to no picture the
//! subscriber is assembling any more).

use crate::vp8_descriptor::Vp8Descriptor;

/// TIDs are two bits: a target of 3 forwards everything.
pub const ALL_LAYERS: u8 = 3;
/// Pictures whose decision is remembered (two seconds at 30 frames/s).
const RECENT: usize = 64;
/// Picture ids are 15 bits.
const PID_MASK: u16 = 0x7fff;

fn pid_newer(a: u16, b: u16) -> bool {
    let ahead = a.wrapping_sub(b) & PID_MASK;
    ahead != 0 && ahead < 0x4000
}

/// One remembered decision.
#[derive(Debug, Clone, Copy, Default)]
struct Picture {
    picture_id: u16,
    valid: bool,
    forwarded: bool,
    /// Pictures dropped before this one (see `TemporalFilter::skipped`).
    skipped: u16,
}

/// One subscriber's temporal layer choice on one VP8 video.
#[derive(Debug, Clone)]
pub struct TemporalFilter {
    /// Highest temporal layer wanted (the bandwidth allocator's).
    target: u8,
    /// Highest temporal layer forwarded now.
    current: u8,
    /// The newest picture judged (input picture id).
    newest: Option<u16>,
    /// Pictures dropped so far (wrapping like picture ids).
    skipped: u16,
    /// Decisions by picture id modulo `RECENT` (no allocation per packet).
    recent: [Picture; RECENT],
}

impl Default for TemporalFilter {
    fn default() -> Self {
        TemporalFilter {
            target: ALL_LAYERS,
            current: ALL_LAYERS,
            newest: None,
            skipped: 0,
            recent: [Picture::default(); RECENT],
        }
    }
}

impl TemporalFilter {
    /// The highest temporal layer this subscriber should get.
    pub fn set_target(&mut self, target: u8) {
        self.target = target.min(ALL_LAYERS);
    }

    pub fn target(&self) -> u8 {
        self.target
    }

    /// The highest temporal layer forwarded now.
    pub fn current(&self) -> u8 {
        self.current
    }

    /// The next packet comes from another encoding (its picture ids are
    /// unrelated): forget the decisions made on the old one. The switch
    /// happens at a keyframe, which resets the layer anyway.
    pub fn switch_source(&mut self) {
        self.newest = None;
        self.recent = [Picture::default(); RECENT];
    }

    /// Whether the packet described by `d` goes to the subscriber. Packets
    /// without a temporal layer index or a picture id always go (a stream
    /// without temporal layers, H.264 elsewhere).
    pub fn admit(&mut self, d: &Vp8Descriptor) -> bool {
        let (Some(pid), Some(tid)) = (d.picture_id, d.temporal_id) else {
            return true;
        };
        if self.newest.is_some_and(|n| !pid_newer(pid, n)) {
            // A picture already judged, or a late one.
            let slot = &self.recent[pid as usize % RECENT];
            return slot.valid && slot.picture_id == pid && slot.forwarded;
        }
        // The first packet seen of a new picture.
        if d.keyframe_start || self.target < self.current {
            // A keyframe refreshes every reference: any layer may follow.
            self.current = self.target;
        } else if self.target > self.current && d.layer_sync && tid == self.current + 1 {
            self.current = tid;
        }
        let forwarded = tid <= self.current;
        if !forwarded {
            self.skipped = self.skipped.wrapping_add(1) & PID_MASK;
        }
        self.newest = Some(pid);
        self.recent[pid as usize % RECENT] = Picture {
            picture_id: pid,
            valid: true,
            forwarded,
            skipped: self.skipped,
        };
        forwarded
    }

    /// How many pictures were dropped before picture `pid`: its outgoing
    /// picture id moves down by this much. For a picture no longer
    /// remembered (an old retransmission), the count now.
    pub fn skipped_before(&self, pid: u16) -> u16 {
        let slot = &self.recent[pid as usize % RECENT];
        if slot.valid && slot.picture_id == pid {
            slot.skipped
        } else {
            self.skipped
        }
    }
}

#[cfg(test)]
#[path = "temporal_layer_tests.rs"]
mod tests;
