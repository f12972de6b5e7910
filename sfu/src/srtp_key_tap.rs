//! Obtains a connection's SRTP master keys from rtc, so forwarded media can
//! be protected outside rtc's per-packet pipeline (see `srtp_session`).
//!
//! rtc 0.21.1 derives its SRTP contexts privately when DTLS completes and
//! offers no accessor for them or for the keying material. The one public
//! door is the crypto provider a connection is built with
//! (`SettingEngineBuilder::with_crypto_provider`): `KeyTap` wraps rtc's
//! default provider, delegates every operation unchanged, and records each
//! `block_encrypt` call. The SRTP key derivation (RFC 3711 4.3, in
//! rtc-srtp's `key_derivation.rs`) is the only caller of that operation in
//! the whole stack, and it passes the master key as the AES key and the
//! master salt (XOR a label and a counter) as the block: enough to rebuild
//! both contexts. This leans on private call order inside rtc, acceptable
//! only because rtc is pinned (`=0.21.1`); `srtp_session` checks every
//! record's shape and refuses anything unexpected, and the connection then
//! stays on rtc's own pipeline for life.

use rtc::crypto::{
    default_provider, ActiveKeyExchange, AeadAlgorithm, AeadCipher, BlockCipherAlgorithm,
    CbcAlgorithm, CbcCipher, CryptoAlgorithm, CryptoError, HashAlgorithm, HmacAlgorithm,
    KeyExchangeAlgorithm, Mac, PublicKey, RTCCrypto, RTCCryptoProvider, RTCRandom, SecretVec,
    SignatureScheme, SigningKey, StreamCipher, StreamCipherAlgorithm,
};
use std::sync::{Arc, Mutex};

/// Recorded `block_encrypt` calls are bounded: one handshake derives 16 at
/// most (two contexts of the widest profile); anything beyond is not an SRTP
/// key derivation this module understands.
const MAX_RECORDS: usize = 32;

/// One `block_encrypt` call: the key and the input block, before encryption.
pub struct BlockRecord {
    pub algorithm: BlockCipherAlgorithm,
    pub key: SecretVec,
    pub block: SecretVec,
}

/// The calls recorded for one connection, shared between its provider and
/// the router.
#[derive(Clone, Default)]
pub struct TappedKeys(Arc<Mutex<Recorded>>);

#[derive(Default)]
struct Recorded {
    records: Vec<BlockRecord>,
    overflowed: bool,
}

impl TappedKeys {
    /// Takes what was recorded so far (the key material leaves the tap);
    /// `None` if more calls came than one handshake makes.
    pub fn take(&self) -> Option<Vec<BlockRecord>> {
        let mut recorded = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let records = std::mem::take(&mut recorded.records);
        (!std::mem::take(&mut recorded.overflowed)).then_some(records)
    }

    fn record(&self, algorithm: BlockCipherAlgorithm, key: &[u8], block: &[u8]) {
        let mut recorded = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if recorded.records.len() >= MAX_RECORDS {
            recorded.overflowed = true;
            return;
        }
        recorded.records.push(BlockRecord {
            algorithm,
            key: SecretVec::new(key.to_vec()),
            block: SecretVec::new(block.to_vec()),
        });
    }
}

/// rtc's default provider, with `block_encrypt` calls recorded.
pub struct KeyTap {
    inner: Arc<dyn RTCCryptoProvider>,
    crypto: TappingCrypto,
}

struct TappingCrypto {
    inner: Arc<dyn RTCCryptoProvider>,
    keys: TappedKeys,
}

impl KeyTap {
    /// A provider for one connection, and the handle to what it records.
    pub fn provider() -> Result<(Arc<dyn RTCCryptoProvider>, TappedKeys), CryptoError> {
        let inner = default_provider()?;
        let keys = TappedKeys::default();
        let tap = KeyTap {
            inner: inner.clone(),
            crypto: TappingCrypto {
                inner,
                keys: keys.clone(),
            },
        };
        Ok((Arc::new(tap), keys))
    }
}

impl RTCCryptoProvider for KeyTap {
    fn name(&self) -> &'static str {
        "noom-srtp-key-tap"
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        &self.crypto
    }

    fn random(&self) -> &dyn RTCRandom {
        self.inner.random()
    }
}

/// Every operation is delegated: one left out would fall back to the trait's
/// "unsupported" default and fail the handshake, so every connection test
/// would catch it.
impl RTCCrypto for TappingCrypto {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.inner.crypto().supports(algorithm)
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.crypto().hash(algorithm, data)
    }

    fn block_encrypt(
        &self,
        algorithm: BlockCipherAlgorithm,
        key: &[u8],
        block: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.keys.record(algorithm, key, block);
        self.inner.crypto().block_encrypt(algorithm, key, block)
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.inner.crypto().new_hmac(algorithm, key)
    }

    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        self.inner.crypto().new_stream_cipher(algorithm, key)
    }

    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        self.inner.crypto().new_aead(algorithm, key)
    }

    fn new_cbc(
        &self,
        algorithm: CbcAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.inner.crypto().new_cbc(algorithm, key)
    }

    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        self.inner.crypto().start_key_exchange(algorithm)
    }

    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().generate_signing_key(scheme)
    }

    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().import_signing_key(scheme, pkcs8_der)
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.inner
            .crypto()
            .verify_signature(scheme, public_key, message, signature)
    }
}
