//! A connection's own SRTP contexts, rebuilt from the master keys the
//! `KeyTap` saw rtc derive its contexts from when DTLS completed.
//!
//! rtc builds the local (outbound) context first and the remote one second
//! (`DtlsHandler::update_srtp_contexts`), each by deriving session keys from
//! its master key and salt: every derivation is one or two AES blocks of
//! `salt XOR label XOR counter` under the master key. So the records group
//! into two keys in first-seen order; each group's first block (label 0,
//! counter 0) is the salt; the labels present tell the profile. Before any
//! of it is trusted, the contexts are derived again from the recovered key
//! and salt and must make exactly the recorded calls: a change in rtc's
//! derivation shows up here as a refusal, never as media nobody can decrypt.

use crate::srtp_gcm::GcmSealer;
use crate::srtp_gcm_open::{GcmOpener, OpenError};
use crate::srtp_key_tap::{BlockRecord, KeyTap};
use bytes::BytesMut;
use rtc::crypto::{BlockCipherAlgorithm, RTCCrypto};
use rtc::rtp;
use rtc::shared::marshal::{MarshalSize, Unmarshal};
use rtc::srtp::context::Context;
use rtc::srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc::srtp::protection_profile::ProtectionProfile;

/// rtc's replay window for the remote context (`dtls.rs`, 64 packets).
const REPLAY_WINDOW: usize = 64;

/// Labels of RFC 3711 4.3.2 that only the HMAC profiles derive.
const AUTH_LABELS: [u8; 2] = [0x01, 0x04];

/// Both directions of one connection's SRTP.
pub struct SrtpSession {
    pub profile: ProtectionProfile,
    /// Protects what the server sends.
    pub local: Outbound,
    /// Checks what the client sends (replay window as rtc's).
    pub remote: Context,
    /// Checks and opens the client's RTP in place, for AES-128-GCM
    /// (`srtp_gcm_open.rs`); RTCP, and RTP of the other profiles, go
    /// through `remote`.
    pub remote_rtp: Option<GcmOpener>,
}

/// The inbound half of a session: what reads a client's SRTP on the fast
/// path.
pub struct InboundSrtp {
    pub rtp: Option<GcmOpener>,
    pub context: Context,
}

impl InboundSrtp {
    /// Checks and decrypts an RTP datagram and parses it; the payload and
    /// header extensions are slices of one buffer, not copies.
    pub fn open_rtp(&mut self, datagram: &[u8]) -> Result<rtp::Packet, OpenError> {
        let plain = match self.rtp.as_mut() {
            Some(opener) => {
                let mut buf = BytesMut::from(datagram);
                opener.open(&mut buf)?;
                buf
            }
            None => {
                let header =
                    rtp::Header::unmarshal(&mut &datagram[..]).map_err(|_| OpenError::Refused)?;
                self.context
                    .decrypt_rtp_with_header(datagram, &header)
                    .map_err(rtc_refusal)?
            }
        };
        rtp::Packet::unmarshal(&mut plain.freeze()).map_err(|_| OpenError::Unparsable)
    }

    /// Checks and decrypts an SRTCP datagram.
    pub fn open_rtcp(&mut self, datagram: &[u8]) -> Result<BytesMut, OpenError> {
        self.context.decrypt_rtcp(datagram).map_err(rtc_refusal)
    }
}

/// rtc-srtp's refusals, told apart as ours are.
fn rtc_refusal(err: rtc::shared::error::Error) -> OpenError {
    use rtc::shared::error::Error;
    match err {
        Error::SrtpSsrcDuplicated(..) | Error::SrtcpSsrcDuplicated(..) => OpenError::Replay,
        _ => OpenError::Refused,
    }
}

/// What protects the server's outgoing RTP: our in-place AES-128-GCM
/// (`srtp_gcm.rs`: no copy, no allocation), or rtc's context for the
/// other profiles.
pub enum Outbound {
    InPlace(GcmSealer),
    Rtc(Context),
}

impl Outbound {
    /// Protects the marshalled packet in `packet` (whose header is
    /// `header`): in place (None: `packet` is now the datagram), or into
    /// the returned datagram.
    pub fn protect(
        &mut self,
        packet: &mut Vec<u8>,
        header: &rtp::Header,
    ) -> Result<Option<BytesMut>, String> {
        match self {
            Outbound::InPlace(sealer) => sealer
                .seal(
                    packet,
                    header.marshal_size(),
                    header.ssrc,
                    header.sequence_number,
                )
                .map(|()| None),
            Outbound::Rtc(context) => context
                .encrypt_rtp_with_header(packet, header)
                .map(Some)
                .map_err(|e| e.to_string()),
        }
    }
}

/// The master key and salt of one direction.
struct MasterKey<'a> {
    algorithm: BlockCipherAlgorithm,
    key: &'a [u8],
    blocks: Vec<&'a [u8]>,
}

impl SrtpSession {
    /// Rebuilds both contexts from a handshake's recorded derivations.
    pub fn from_records(records: &[BlockRecord], crypto: &dyn RTCCrypto) -> Result<Self, String> {
        let mut groups: Vec<MasterKey<'_>> = Vec::new();
        for record in records {
            let key = record.key.as_ref();
            match groups.iter_mut().find(|g| g.key == key) {
                Some(group) if group.algorithm == record.algorithm => {
                    group.blocks.push(record.block.as_ref())
                }
                Some(_) => return Err("one key used with two AES variants".into()),
                None => groups.push(MasterKey {
                    algorithm: record.algorithm,
                    key,
                    blocks: vec![record.block.as_ref()],
                }),
            }
        }
        let [local, remote] = groups.as_slice() else {
            return Err(format!("{} master keys recorded, not 2", groups.len()));
        };
        let (profile, local_salt) = local.profile_and_salt()?;
        let (remote_profile, remote_salt) = remote.profile_and_salt()?;
        if profile as u16 != remote_profile as u16 {
            return Err("the two directions derived different profiles".into());
        }
        local.check_rederivation(profile, &local_salt)?;
        remote.check_rederivation(profile, &remote_salt)?;
        let build = |key: &[u8], salt: &[u8], replay: bool| {
            let (rtp, rtcp) = if replay {
                (
                    Some(srtp_replay_protection(REPLAY_WINDOW)),
                    Some(srtcp_replay_protection(REPLAY_WINDOW)),
                )
            } else {
                (None, None)
            };
            Context::new(key, salt, profile, rtp, rtcp, crypto).map_err(|e| e.to_string())
        };
        let outbound = match profile {
            ProtectionProfile::AeadAes128Gcm => {
                Outbound::InPlace(GcmSealer::new(crypto, local.key, &local_salt)?)
            }
            _ => Outbound::Rtc(build(local.key, &local_salt, false)?),
        };
        let remote_rtp = match profile {
            ProtectionProfile::AeadAes128Gcm => {
                Some(GcmOpener::new(crypto, remote.key, &remote_salt)?)
            }
            _ => None,
        };
        Ok(SrtpSession {
            profile,
            local: outbound,
            remote: build(remote.key, &remote_salt, true)?,
            remote_rtp,
        })
    }
}

impl MasterKey<'_> {
    /// The profile the derivations belong to, and the master salt.
    fn profile_and_salt(&self) -> Result<(ProtectionProfile, Vec<u8>), String> {
        let first = self.blocks[0];
        if first.len() != 16 || self.blocks.iter().any(|b| b.len() != 16) {
            return Err("a derivation block is not 16 bytes".into());
        }
        // Label 0 and counter 0 come first: the block is the salt itself.
        if first[14..] != [0, 0] {
            return Err("the first derivation has a counter".into());
        }
        let mut labels = Vec::new();
        for block in &self.blocks {
            let same_elsewhere = (0..14).all(|i| i == 7 || block[i] == first[i]);
            if !same_elsewhere {
                return Err("a derivation block differs outside its label and counter".into());
            }
            labels.push(block[7] ^ first[7]);
        }
        let with_auth = AUTH_LABELS.iter().all(|l| labels.contains(l));
        let profile = match (self.algorithm, self.key.len(), with_auth) {
            (BlockCipherAlgorithm::Aes128, 16, false) => ProtectionProfile::AeadAes128Gcm,
            (BlockCipherAlgorithm::Aes128, 16, true) => ProtectionProfile::Aes128CmHmacSha1_80,
            (BlockCipherAlgorithm::Aes256, 32, false) => ProtectionProfile::AeadAes256Gcm,
            _ => return Err("derivations of a profile Noom does not negotiate".into()),
        };
        let salt = first[..profile.salt_len()].to_vec();
        // GCM's 12-byte salt leaves bytes 12 and 13 of the block zero.
        if first[profile.salt_len()..14].iter().any(|&b| b != 0) {
            return Err("the salt is longer than the profile's".into());
        }
        Ok((profile, salt))
    }

    /// Derives a context from the recovered key and salt through a fresh
    /// tap: it must make exactly the recorded calls.
    fn check_rederivation(&self, profile: ProtectionProfile, salt: &[u8]) -> Result<(), String> {
        let (provider, tapped) = KeyTap::provider().map_err(|e| e.to_string())?;
        Context::new(self.key, salt, profile, None, None, provider.crypto())
            .map_err(|e| e.to_string())?;
        let again = tapped.take().unwrap_or_default();
        let same = again.len() == self.blocks.len()
            && again
                .iter()
                .zip(&self.blocks)
                .all(|(r, b)| r.key.as_ref() == self.key && r.block.as_ref() == *b);
        if same {
            Ok(())
        } else {
            Err("deriving again from the recovered key and salt differs".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp;
    use rtc::shared::marshal::{Marshal, Unmarshal};

    fn packet(ssrc: u32, seq: u16) -> Vec<u8> {
        rtp::Packet {
            header: rtp::Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: 1234,
                ssrc,
                ..Default::default()
            },
            payload: vec![7u8; 100].into(),
        }
        .marshal()
        .expect("marshal")
        .to_vec()
    }

    /// Builds the two contexts the way rtc does (local first) through a tap,
    /// then checks the rebuilt ones protect exactly like the originals.
    fn round_trip(profile: ProtectionProfile) {
        let (provider, tapped) = KeyTap::provider().expect("provider");
        let crypto = provider.crypto();
        let key_len = profile.key_len();
        let (local_key, local_salt) = (vec![1u8; key_len], vec![2u8; profile.salt_len()]);
        let (remote_key, remote_salt) = (vec![3u8; key_len], vec![4u8; profile.salt_len()]);
        let mut local = Context::new(&local_key, &local_salt, profile, None, None, crypto)
            .expect("local context");
        let mut remote_sender =
            Context::new(&remote_key, &remote_salt, profile, None, None, crypto)
                .expect("remote context");
        let records = tapped.take().expect("not overflowed");
        let mut session = SrtpSession::from_records(&records, crypto).expect("rebuilt");
        assert_eq!(session.profile as u16, profile as u16);

        let plain = packet(0x1234_5678, 65_535);
        let theirs = local.encrypt_rtp(&plain).expect("encrypt");
        let header = rtp::Header::unmarshal(&mut &plain[..]).expect("header");
        let mut ours = plain.clone();
        if let Some(datagram) = session.local.protect(&mut ours, &header).expect("protect") {
            ours = datagram.to_vec();
        }
        assert_eq!(
            &theirs[..],
            &ours[..],
            "{profile:?}: local protection differs"
        );

        let sent = remote_sender.encrypt_rtp(&plain).expect("encrypt");
        let decrypted = session.remote.decrypt_rtp(&sent).expect("decrypts");
        assert_eq!(&decrypted[..], &plain[..]);
        assert!(
            session.remote.decrypt_rtp(&sent).is_err(),
            "a replay must be refused"
        );
    }

    #[test]
    fn rebuilt_contexts_protect_like_rtc_for_every_negotiated_profile() {
        round_trip(ProtectionProfile::AeadAes128Gcm);
        round_trip(ProtectionProfile::AeadAes256Gcm);
        round_trip(ProtectionProfile::Aes128CmHmacSha1_80);
    }

    #[test]
    fn anything_but_two_master_keys_is_refused() {
        let (provider, tapped) = KeyTap::provider().expect("provider");
        let profile = ProtectionProfile::AeadAes128Gcm;
        Context::new(&[1; 16], &[2; 12], profile, None, None, provider.crypto()).expect("ctx");
        let one = tapped.take().expect("records");
        assert!(SrtpSession::from_records(&one, provider.crypto()).is_err());
        for key in [[1u8; 16], [3; 16], [5; 16]] {
            Context::new(&key, &[2; 12], profile, None, None, provider.crypto()).expect("ctx");
        }
        let three = tapped.take().expect("records");
        assert!(SrtpSession::from_records(&three, provider.crypto()).is_err());
    }

    #[test]
    fn a_tampered_record_is_refused() {
        let (provider, tapped) = KeyTap::provider().expect("provider");
        let profile = ProtectionProfile::Aes128CmHmacSha1_80;
        for key in [[1u8; 16], [3; 16]] {
            Context::new(&key, &[2; 14], profile, None, None, provider.crypto()).expect("ctx");
        }
        let mut records = tapped.take().expect("records");
        records[2].block.as_mut()[3] ^= 1;
        assert!(SrtpSession::from_records(&records, provider.crypto()).is_err());
    }
}
