//! Just enough of the H.264 RTP payload format (RFC 6184, packetization
//! mode 1) to tell where a keyframe starts.
//!
//! Chromium (OpenH264) sends every IDR picture with its SPS and PPS in
//! front, aggregated into one STAP-A when they fit, the IDR slice itself
//! often fragmented (FU-A). A decoder that joins there needs all three, so
//! the packet carrying the SPS is where a subscriber can start. An IDR
//! slice start without an SPS in the same packet (SPS/PPS sent as their own
//! packets, or a sender that does not repeat them) still counts: the
//! keyframe cache and the down tracks take the first such packet of a
//! frame, and a decoder that lacks the parameter sets asks again.

/// NAL unit types (RFC 6184 section 5.2, H.264 table 7-1).
const NAL_IDR_SLICE: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// True when this packet carries an SPS or the start of an IDR slice: as a
/// single NAL unit packet, inside a STAP-A, or as the first fragment of an
/// FU-A.
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        NAL_STAP_A => stap_a_units(&payload[1..]).any(|unit| starts_keyframe(unit[0] & 0x1f)),
        NAL_FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && starts_keyframe(fu & 0x1f)),
        single => starts_keyframe(single),
    }
}

fn starts_keyframe(nal_type: u8) -> bool {
    matches!(nal_type, NAL_IDR_SLICE | NAL_SPS)
}

/// The non-empty NAL units of a STAP-A body (each behind a 16-bit size); a
/// truncated unit ends the walk.
fn stap_a_units(mut body: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let [hi, lo, rest @ ..] = body else {
            return None;
        };
        let size = usize::from(*hi) << 8 | usize::from(*lo);
        if size == 0 || size > rest.len() {
            return None;
        }
        let (unit, next) = rest.split_at(size);
        body = next;
        Some(unit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NAL header byte: forbidden bit 0, NRI 3, type `t`.
    fn nal(t: u8) -> u8 {
        0x60 | t
    }

    #[test]
    fn single_nal_unit_packets() {
        assert!(is_keyframe_start(&[nal(NAL_IDR_SLICE), 0x88, 0x84]));
        assert!(is_keyframe_start(&[nal(NAL_SPS), 0x42, 0xe0, 0x1f]));
        // A non-IDR slice and a PPS alone do not start a keyframe.
        assert!(!is_keyframe_start(&[nal(1), 0x9a, 0x02]));
        assert!(!is_keyframe_start(&[nal(8), 0xce, 0x3c]));
        assert!(!is_keyframe_start(&[]));
    }

    #[test]
    fn stap_a_with_parameter_sets_and_idr() {
        let stap = [
            nal(NAL_STAP_A),
            0x00,
            0x04,
            nal(NAL_SPS),
            0x42,
            0xe0,
            0x1f,
            0x00,
            0x02,
            nal(8),
            0xce,
            0x00,
            0x03,
            nal(NAL_IDR_SLICE),
            0x88,
            0x84,
        ];
        assert!(is_keyframe_start(&stap));
        // An IDR alone behind a PPS is found too.
        let pps_idr = [nal(NAL_STAP_A), 0, 2, nal(8), 0xce, 0, 2, nal(5), 0x88];
        assert!(is_keyframe_start(&pps_idr));
        // Aggregated non-IDR slices are not.
        let deltas = [nal(NAL_STAP_A), 0, 2, nal(1), 0x9a, 0, 2, nal(1), 0x9b];
        assert!(!is_keyframe_start(&deltas));
        // A size beyond the packet ends the walk before the IDR.
        let cut = [nal(NAL_STAP_A), 0, 2, nal(8), 0xce, 0, 9, nal(5), 0x88];
        assert!(!is_keyframe_start(&cut));
        for len in 0..stap.len() {
            let _ = is_keyframe_start(&stap[..len]);
        }
    }

    #[test]
    fn fu_a_fragments() {
        let fu_indicator = nal(NAL_FU_A);
        // Start bit and IDR type: the start of a keyframe's slice.
        assert!(is_keyframe_start(&[fu_indicator, 0x80 | 5, 0x88]));
        // A middle or end fragment of the same IDR is not its start.
        assert!(!is_keyframe_start(&[fu_indicator, 5, 0x11]));
        assert!(!is_keyframe_start(&[fu_indicator, 0x40 | 5, 0x11]));
        // The start of a non-IDR slice.
        assert!(!is_keyframe_start(&[fu_indicator, 0x80 | 1, 0x9a]));
        // Truncated: no FU header.
        assert!(!is_keyframe_start(&[fu_indicator]));
    }
}
