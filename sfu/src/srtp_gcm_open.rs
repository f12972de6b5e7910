//! AES-128-GCM SRTP checking and decryption of a publisher's RTP (RFC
//! 7714) in one buffer, for the fast path: the counterpart of
//! `srtp_gcm.rs`.
//!
//! rtc-srtp 0.21.1's `Context::decrypt_rtp_with_header` wants the packet's
//! parsed header first (a `Vec` and one copied `Bytes` per header
//! extension, before anything is known to be authentic), looks the
//! stream's state up in a SipHash map and checks replays with a
//! general-purpose big-integer window, then copies the packet into a new
//! buffer to open it. Here the header's length is read off its bytes, the
//! state is found by SSRC in an FxHash map, the replay window is one `u64`
//! (64 packets, rtc's size for the remote context), and the packet is
//! opened in the buffer it came in, which the parsed packet then slices
//! (payload and extensions without a copy).
//!
//! Tested against rtc-srtp: packets it seals open here to the same bytes,
//! across a sequence-number wrap, and what it refuses (replays, forgeries,
//! packets too old for the window) is refused here.

use crate::srtp_gcm::{nonce, session_cipher, SALT_LEN, TAG_LEN};
use crate::FastMap;
use bytes::BytesMut;
use rtc::crypto::{AeadCipher, RTCCrypto};

/// Packets a replayed one may lag the newest by and still be told apart.
const REPLAY_WINDOW: u64 = 64;

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Seen before, or older than the replay window: dropped, and no sign
    /// of wrong keys.
    Replay,
    /// Not RTP, too short, or failing authentication.
    Refused,
    /// Authentic, but not a packet that parses.
    Unparsable,
}

/// Checks and decrypts one direction's SRTP with its keys.
pub struct GcmOpener {
    cipher: Box<dyn AeadCipher>,
    salt: [u8; SALT_LEN],
    streams: FastMap<u32, ReceivedIndex>,
}

/// The SSRC of an RTP datagram (bytes 8 to 11), if it is long enough.
pub fn rtp_ssrc(datagram: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(datagram.get(8..12)?.try_into().ok()?))
}

/// The length of an RTP datagram's header (fixed part, CSRCs, extension),
/// read off its bytes; `None` when it does not fit in the datagram.
pub fn rtp_header_len(datagram: &[u8]) -> Option<usize> {
    let first = *datagram.first()?;
    if first >> 6 != 2 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = datagram.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (len <= datagram.len()).then_some(len)
}

impl GcmOpener {
    pub fn new(
        crypto: &dyn RTCCrypto,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<Self, String> {
        let (cipher, salt) = session_cipher(crypto, master_key, master_salt)?;
        Ok(GcmOpener {
            cipher,
            salt,
            streams: FastMap::default(),
        })
    }

    /// Checks and decrypts the SRTP datagram in `packet` where it is; on
    /// success `packet` holds the plain RTP packet (tag removed). Nothing
    /// changes on failure but the buffer's contents.
    pub fn open(&mut self, packet: &mut BytesMut) -> Result<(), OpenError> {
        let header_len = rtp_header_len(packet).ok_or(OpenError::Refused)?;
        if packet.len() < header_len + TAG_LEN {
            return Err(OpenError::Refused);
        }
        let ssrc = rtp_ssrc(packet).ok_or(OpenError::Refused)?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let state = self.streams.entry(ssrc).or_default();
        let index = state.estimate(seq);
        if state.is_replay(index) {
            return Err(OpenError::Replay);
        }
        let roc = (index >> 16) as u32;
        let nonce = nonce(&self.salt, ssrc, roc, seq);
        let tag_at = packet.len() - TAG_LEN;
        let (body, tag) = packet.split_at_mut(tag_at);
        let (aad, payload) = body.split_at_mut(header_len);
        self.cipher
            .open_in_place(&nonce, aad, payload, tag)
            .map_err(|_| OpenError::Refused)?;
        state.accept(index);
        packet.truncate(tag_at);
        Ok(())
    }
}

/// One stream's packet index as its receiver tracks it (RFC 3711 3.3.1 and
/// appendix A): the highest index authenticated, and which of the 64
/// before it arrived.
#[derive(Default)]
struct ReceivedIndex {
    /// Highest index accepted (rollover counter << 16 | sequence number),
    /// once a packet was.
    highest: Option<u64>,
    /// Bit i: index `highest - i` was accepted.
    window: u64,
}

impl ReceivedIndex {
    /// The index of a packet numbered `seq`: the rollover counter that
    /// puts it nearest the highest index seen.
    fn estimate(&self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            return u64::from(seq);
        };
        let roc = highest >> 16;
        let s_l = highest as u16;
        let seq = u64::from(seq);
        let v = if s_l < 0x8000 {
            if seq > u64::from(s_l) + 0x8000 {
                // From before the last wrap (never before counter 0).
                roc.checked_sub(1)
            } else {
                Some(roc)
            }
        } else if u64::from(s_l) - 0x8000 > seq {
            Some(roc + 1)
        } else {
            Some(roc)
        };
        // A packet from before counter 0 cannot be authentic: give it an
        // index below the window so it is refused as a replay.
        v.map_or(0, |v| v << 16 | seq)
    }

    fn is_replay(&self, index: u64) -> bool {
        let Some(highest) = self.highest else {
            return false;
        };
        if index > highest {
            return false;
        }
        let behind = highest - index;
        behind >= REPLAY_WINDOW || self.window & (1 << behind) != 0
    }

    fn accept(&mut self, index: u64) {
        match self.highest {
            Some(highest) if index <= highest => self.window |= 1 << (highest - index),
            Some(highest) => {
                let ahead = index - highest;
                self.window = if ahead >= REPLAY_WINDOW {
                    0
                } else {
                    self.window << ahead
                } | 1;
                self.highest = Some(index);
            }
            None => {
                self.highest = Some(index);
                self.window = 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::crypto::default_provider;
    use rtc::rtp;
    use rtc::shared::marshal::{Marshal, MarshalSize};
    use rtc::srtp::context::Context;
    use rtc::srtp::option::srtp_replay_protection;
    use rtc::srtp::protection_profile::ProtectionProfile;

    const KEY: [u8; 16] = [3; 16];
    const SALT: [u8; 12] = [5; 12];

    fn context(replay: bool) -> Context {
        let provider = default_provider().unwrap();
        Context::new(
            &KEY,
            &SALT,
            ProtectionProfile::AeadAes128Gcm,
            replay.then(|| srtp_replay_protection(64)),
            None,
            provider.crypto(),
        )
        .unwrap()
    }

    fn opener() -> GcmOpener {
        GcmOpener::new(default_provider().unwrap().crypto(), &KEY, &SALT).unwrap()
    }

    /// A packet with a header extension (as browsers send them) and CSRCs
    /// when `csrcs`, marshalled.
    fn plain(ssrc: u32, seq: u16, csrcs: bool) -> Vec<u8> {
        let mut header = rtp::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: 3000u32.wrapping_mul(u32::from(seq)),
            ssrc,
            csrc: if csrcs { vec![7, 8] } else { Vec::new() },
            ..Default::default()
        };
        header
            .set_extension(3, bytes::Bytes::from_static(&[1, 2]))
            .unwrap();
        let packet = rtp::Packet {
            header,
            payload: (0..300)
                .map(|i| (i + seq as usize) as u8)
                .collect::<Vec<_>>()
                .into(),
        };
        let mut buf = vec![0u8; packet.marshal_size()];
        let n = packet.marshal_to(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    /// Sealed by rtc-srtp, opened here to the same plain bytes; opened by
    /// rtc-srtp with the same verdict for every datagram.
    #[test]
    fn opens_what_rtc_srtp_seals_and_refuses_what_it_refuses() {
        let mut sender = context(false);
        let mut reference = context(true);
        let mut ours = opener();
        let sends: &[(u32, u16, bool)] = &[
            (1, 65_530, false),
            (2, 10, true),
            (1, 65_533, false),
            (1, 65_535, false),
            (1, 0, false),
            (1, 65_534, false), // late, from before the wrap
            (1, 1, false),
            (1, 1, false), // a replay
            (2, 11, false),
            (1, 3, false),
            (1, 65_532, false), // older than the window? no: 7 behind
            (1, 200, false),
            (1, 100, false), // 100 behind: too old
            (1, 40_000, false),
            (1, 60_000, false),
            (1, 5, false),
        ];
        for &(ssrc, seq, csrcs) in sends {
            let plain = plain(ssrc, seq, csrcs);
            let sealed = sender.encrypt_rtp(&plain).unwrap();
            let theirs = reference.decrypt_rtp(&sealed);
            let mut buf = BytesMut::from(&sealed[..]);
            let result = ours.open(&mut buf);
            match (&theirs, result) {
                (Ok(opened), Ok(())) => {
                    assert_eq!(&buf[..], &opened[..], "ssrc {ssrc} seq {seq}");
                    assert_eq!(&buf[..], &plain[..]);
                }
                (Err(_), Err(OpenError::Replay)) => {}
                _ => panic!("ssrc {ssrc} seq {seq}: rtc {theirs:?}, ours {result:?}"),
            }
        }
    }

    #[test]
    fn a_forged_or_cut_packet_is_refused_and_changes_nothing() {
        let mut sender = context(false);
        let mut ours = opener();
        let sealed = sender.encrypt_rtp(&plain(9, 500, false)).unwrap();
        let mut forged = BytesMut::from(&sealed[..]);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(ours.open(&mut forged), Err(OpenError::Refused));
        for len in [0, 3, 11, 20, 30] {
            let mut cut = BytesMut::from(&sealed[..len.min(sealed.len())]);
            assert_eq!(ours.open(&mut cut), Err(OpenError::Refused), "{len} bytes");
        }
        // The genuine packet still opens: the forgery was not recorded.
        let mut genuine = BytesMut::from(&sealed[..]);
        assert_eq!(ours.open(&mut genuine), Ok(()));
        assert_eq!(
            ours.open(&mut BytesMut::from(&sealed[..])),
            Err(OpenError::Replay)
        );
    }

    #[test]
    fn header_lengths_are_read_off_the_bytes() {
        let with_ext = plain(1, 1, true);
        let header = {
            use rtc::shared::marshal::Unmarshal;
            rtp::Header::unmarshal(&mut &with_ext[..]).unwrap()
        };
        assert_eq!(rtp_header_len(&with_ext), Some(header.marshal_size()));
        assert_eq!(rtp_ssrc(&with_ext), Some(1));
        assert_eq!(rtp_header_len(&[0x80; 11]), None);
        // An extension longer than the datagram.
        let mut long = with_ext[..20].to_vec();
        long[0] = 0x90;
        long[14] = 0xff;
        long[15] = 0xff;
        assert_eq!(rtp_header_len(&long), None);
        assert_eq!(rtp_header_len(&[0x40; 12]), None, "version 1");
    }

    #[test]
    fn indexes_follow_wraps_and_the_window_slides() {
        let mut r = ReceivedIndex::default();
        for seq in [65_500u16, 65_535, 0, 1] {
            let i = r.estimate(seq);
            assert!(!r.is_replay(i));
            r.accept(i);
        }
        assert_eq!(r.highest, Some(1 << 16 | 1));
        assert_eq!(r.estimate(65_535), 65_535, "late, before the wrap");
        assert!(r.is_replay(r.estimate(65_535)));
        assert!(!r.is_replay(r.estimate(65_534)));
        assert!(r.is_replay(r.estimate(65_500)), "older than 64 packets");
        let far = r.estimate(30_000);
        r.accept(far);
        assert_eq!(r.window, 1);
    }
}
