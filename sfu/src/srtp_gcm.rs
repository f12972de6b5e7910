//! AES-128-GCM SRTP protection of outgoing RTP in the caller's own buffer
//! (RFC 7714), for the fast path.
//!
//! rtc-srtp 0.21.1's `Context::encrypt_rtp_with_header` copies every packet
//! into a newly allocated buffer before sealing it and looks its stream's
//! rollover state up in a SipHash map: an allocation, a copy and a hash per
//! forwarded packet and subscriber, which the per-packet profile showed
//! (issue #15). The crate has no in-place API, so this module does the
//! same protection on the buffer the packet was marshalled into, with the
//! same cipher object rtc uses (`RTCCrypto::new_aead` of rtc's crypto
//! provider). Only the AEAD profile: Chromium and Firefox pick it when
//! offered; a connection that negotiates AES-CM + HMAC keeps rtc's context.
//!
//! Tested against rtc-srtp: the same keys give byte-identical packets,
//! across a sequence-number wrap and for retransmissions of older packets.

use crate::FastMap;
use rtc::crypto::{AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, RTCCrypto};

/// Bytes of the authentication tag appended to each packet.
pub const TAG_LEN: usize = 16;
/// RFC 3711 4.3 labels for the SRTP session key and salt.
const LABEL_ENCRYPTION: u8 = 0x00;
const LABEL_SALT: u8 = 0x02;
pub const SALT_LEN: usize = 12;
const KEY_LEN: usize = 16;

/// Seals outgoing RTP in place with one direction's keys.
pub struct GcmSealer {
    cipher: Box<dyn AeadCipher>,
    salt: [u8; SALT_LEN],
    streams: FastMap<u32, Rollover>,
}

impl GcmSealer {
    /// Derives the session key and salt from a master key and salt (RFC
    /// 3711 4.3.3 with a key derivation rate of 0, as DTLS-SRTP uses) and
    /// keys the cipher.
    pub fn new(
        crypto: &dyn RTCCrypto,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<Self, String> {
        let (cipher, salt) = session_cipher(crypto, master_key, master_salt)?;
        Ok(GcmSealer {
            cipher,
            salt,
            streams: FastMap::default(),
        })
    }

    /// Protects the marshalled packet in `packet` (header of `header_len`
    /// bytes, then payload): encrypts the payload where it is and appends
    /// the tag. No allocation once `packet` has room for the tag.
    pub fn seal(
        &mut self,
        packet: &mut Vec<u8>,
        header_len: usize,
        ssrc: u32,
        seq: u16,
    ) -> Result<(), String> {
        if header_len > packet.len() {
            return Err("header longer than the packet".into());
        }
        let roc = self.streams.entry(ssrc).or_default().roc_for(seq);
        let nonce = nonce(&self.salt, ssrc, roc, seq);
        let mut tag = [0u8; TAG_LEN];
        let (aad, payload) = packet.split_at_mut(header_len);
        self.cipher
            .seal_in_place(&nonce, aad, payload, &mut tag)
            .map_err(|e| e.to_string())?;
        packet.extend_from_slice(&tag);
        Ok(())
    }
}

/// One direction's AES-128-GCM session cipher and salt, derived from its
/// master key and salt (RFC 3711 4.3.3 with a key derivation rate of 0, as
/// DTLS-SRTP uses), through rtc's crypto provider.
pub fn session_cipher(
    crypto: &dyn RTCCrypto,
    master_key: &[u8],
    master_salt: &[u8],
) -> Result<(Box<dyn AeadCipher>, [u8; SALT_LEN]), String> {
    if master_key.len() != KEY_LEN || master_salt.len() != SALT_LEN {
        return Err("not an AES-128-GCM master key and salt".into());
    }
    let derive = |label: u8| -> Result<[u8; 16], String> {
        let mut block = [0u8; 16];
        block[..SALT_LEN].copy_from_slice(master_salt);
        block[7] ^= label;
        crypto
            .block_encrypt(BlockCipherAlgorithm::Aes128, master_key, &mut block)
            .map_err(|e| e.to_string())?;
        Ok(block)
    };
    let key = derive(LABEL_ENCRYPTION)?;
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&derive(LABEL_SALT)?[..SALT_LEN]);
    let cipher = crypto
        .new_aead(AeadAlgorithm::Aes128Gcm, &key)
        .map_err(|e| e.to_string())?;
    Ok((cipher, salt))
}

/// The IV of one packet (RFC 7714 8.1): the session salt XOR SSRC,
/// rollover counter and sequence number.
pub fn nonce(salt: &[u8; SALT_LEN], ssrc: u32, roc: u32, seq: u16) -> [u8; SALT_LEN] {
    let mut nonce = [0u8; SALT_LEN];
    nonce[2..6].copy_from_slice(&ssrc.to_be_bytes());
    nonce[6..10].copy_from_slice(&roc.to_be_bytes());
    nonce[10..12].copy_from_slice(&seq.to_be_bytes());
    for (n, s) in nonce.iter_mut().zip(salt) {
        *n ^= s;
    }
    nonce
}

/// One stream's rollover counter as its sender keeps it (RFC 3711 3.3.1):
/// the highest sequence number sent and how often the numbers wrapped. A
/// packet numbered below the highest by more than half the space was sent
/// after a wrap; one above it by more than half was sent before the last
/// wrap (a retransmission) and uses the previous counter.
#[derive(Default)]
struct Rollover {
    /// (rollover counter, highest sequence number) once a packet was sent.
    highest: Option<(u32, u16)>,
}

impl Rollover {
    fn roc_for(&mut self, seq: u16) -> u32 {
        const HALF: u16 = 1 << 15;
        let Some((roc, highest)) = self.highest else {
            self.highest = Some((0, seq));
            return 0;
        };
        let ahead = seq.wrapping_sub(highest);
        if ahead == 0 {
            roc
        } else if ahead < HALF {
            // Newer: past a wrap if the number is lower.
            let roc = if seq < highest {
                roc.wrapping_add(1)
            } else {
                roc
            };
            self.highest = Some((roc, seq));
            roc
        } else if seq > highest {
            // Older, from before the last wrap (never below counter 0).
            roc.saturating_sub(1)
        } else {
            roc
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
    use rtc::srtp::protection_profile::ProtectionProfile;

    const KEY: [u8; 16] = [
        0x0d, 0xcd, 0x21, 0x3e, 0x4c, 0xbc, 0xf2, 0x8f, 0x01, 0x7f, 0x69, 0x94, 0x40, 0x1e, 0x28,
        0x89,
    ];
    const SALT: [u8; 12] = [
        0x62, 0x77, 0x60, 0x38, 0xc0, 0x6d, 0xc9, 0x41, 0x9f, 0x6d, 0xd9, 0x43,
    ];

    fn marshalled(ssrc: u32, seq: u16, payload_len: usize) -> (rtp::Header, Vec<u8>) {
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: 90_000u32.wrapping_mul(seq as u32),
                ssrc,
                marker: seq.is_multiple_of(3),
                ..Default::default()
            },
            payload: (0..payload_len).map(|i| i as u8).collect::<Vec<_>>().into(),
        };
        let mut buf = vec![0u8; packet.marshal_size()];
        let n = packet.marshal_to(&mut buf).unwrap();
        buf.truncate(n);
        (packet.header, buf)
    }

    /// The same packets sealed here and by rtc-srtp are byte for byte the
    /// same: a wrap of the sequence numbers, a retransmission from before
    /// it, two streams.
    #[test]
    fn seals_exactly_as_rtc_srtp_does() {
        let provider = default_provider().unwrap();
        let crypto = provider.crypto();
        let mut ours = GcmSealer::new(crypto, &KEY, &SALT).unwrap();
        let mut theirs = Context::new(
            &KEY,
            &SALT,
            ProtectionProfile::AeadAes128Gcm,
            None,
            None,
            crypto,
        )
        .unwrap();
        let sends: &[(u32, u16)] = &[
            (1, 65_530),
            (2, 10),
            (1, 65_533),
            (1, 65_535),
            (1, 0),
            (1, 65_534), // a retransmission from before the wrap
            (1, 1),
            (2, 11),
            (1, 3),
            (1, 40_000),
            (1, 60_000),
            (1, 5),
        ];
        for &(ssrc, seq) in sends {
            let (header, mut packet) = marshalled(ssrc, seq, 200 + seq as usize % 50);
            let expected = theirs.encrypt_rtp_with_header(&packet, &header).unwrap();
            ours.seal(&mut packet, header.marshal_size(), ssrc, seq)
                .unwrap();
            assert_eq!(packet, expected.as_ref(), "ssrc {ssrc} seq {seq}");
        }
    }

    #[test]
    fn the_rollover_counter_follows_wraps_and_late_packets() {
        let mut r = Rollover::default();
        assert_eq!(r.roc_for(65_000), 0);
        assert_eq!(r.roc_for(65_535), 0);
        assert_eq!(r.roc_for(2), 1);
        assert_eq!(r.roc_for(65_534), 0, "late: before the wrap");
        assert_eq!(r.roc_for(3), 1);
        assert_eq!(r.roc_for(30_000), 1);
        assert_eq!(r.roc_for(2), 1, "late, same cycle");
        // Counter 0 never goes below 0.
        let mut first = Rollover::default();
        assert_eq!(first.roc_for(10), 0);
        assert_eq!(first.roc_for(60_000), 0);
    }

    #[test]
    fn refuses_keys_of_another_profile() {
        let provider = default_provider().unwrap();
        assert!(GcmSealer::new(provider.crypto(), &[0u8; 32], &SALT).is_err());
        assert!(GcmSealer::new(provider.crypto(), &KEY, &[0u8; 14]).is_err());
    }
}
