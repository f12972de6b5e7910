//! Just enough of the VP8 RTP payload format (RFC 7741) to tell where a
//! keyframe starts.

/// True when this packet starts a VP8 keyframe: the start of partition 0
/// whose payload header has the inverse key-frame flag P cleared.
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let extended = first & 0x80 != 0;
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = payload.get(at) else {
            return false;
        };
        at += 1;
        if x & 0x80 != 0 {
            // PictureID: one byte, or two when its M bit is set.
            let Some(&pid) = payload.get(at) else {
                return false;
            };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    payload.get(at).is_some_and(|header| header & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_keyframes_with_and_without_extensions() {
        // S=1, PID=0, no extension; payload header P=0.
        assert!(is_keyframe_start(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // P=1: an interframe.
        assert!(!is_keyframe_start(&[0x10, 0x01]));
        // X=1, I=1 with a 15-bit picture id, then the payload header.
        assert!(is_keyframe_start(&[0x90, 0x80, 0x81, 0x23, 0x00]));
        assert!(!is_keyframe_start(&[0x90, 0x80, 0x81, 0x23, 0x01]));
        // X=1, I, L, T present.
        assert!(is_keyframe_start(&[0x90, 0xE0, 0x12, 0x05, 0x40, 0x00]));
        // Not the start of the partition.
        assert!(!is_keyframe_start(&[0x00, 0x00]));
        // Truncated input never panics.
        for cut in 0..6 {
            let _ = is_keyframe_start(&[0x90, 0xE0, 0x92, 0x05, 0x40, 0x00][..cut]);
        }
        assert!(!is_keyframe_start(&[]));
    }
}
