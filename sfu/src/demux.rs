//! Datagram classification and routing keys.
//!
//! One UDP socket per shard serves every peer connection of that shard, so each
//! datagram must be tied to a connection before webrtc-rs sees it. RFC 7983 tells
//! the protocols apart by the first byte; STUN binding requests carry the ICE
//! username `ours:theirs`, whose first half is the server-chosen ufrag that names
//! the connection. Everything else (DTLS, SRTP, SRTCP, STUN responses) is routed
//! by the remote address learned from STUN.
//!
//! The STUN walk is hand-written rather than using `rtc::stun`: we only need one
//! attribute and must not allocate or fully parse on the per-packet path.

/// What a datagram is, from its first byte (RFC 7983 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    Stun,
    Dtls,
    Rtp,
    /// Anything else: dropped and counted.
    Unknown,
}

pub fn classify(datagram: &[u8]) -> DatagramKind {
    match datagram.first() {
        Some(0..=3) => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) => DatagramKind::Rtp,
        _ => DatagramKind::Unknown,
    }
}

/// The DTLS record content type of application data (RFC 6347): SCTP.
const DTLS_APPLICATION_DATA: u8 = 23;

/// A datagram the client could only have sent once its side of the DTLS
/// handshake was done: SRTP or SRTCP, or DTLS application data (its SCTP).
/// Not authenticated here: a forged one only lets media start as early as
/// it would without the check.
pub fn sent_with_client_keys(kind: DatagramKind, datagram: &[u8]) -> bool {
    kind == DatagramKind::Rtp || datagram.first() == Some(&DTLS_APPLICATION_DATA)
}

const STUN_HEADER_LEN: usize = 20;
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// The local (server) ufrag named by a STUN message's USERNAME attribute, if the
/// datagram is a well-formed STUN message that carries one.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    if datagram.len() < STUN_HEADER_LEN || datagram[4..8] != STUN_MAGIC_COOKIE {
        return None;
    }
    let body_len = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    let body = datagram.get(STUN_HEADER_LEN..STUN_HEADER_LEN + body_len)?;
    let mut rest = body;
    while rest.len() >= 4 {
        let typ = u16::from_be_bytes([rest[0], rest[1]]);
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let value = rest.get(4..4 + len)?;
        if typ == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        // Attributes are padded to a multiple of four bytes.
        let padded = (len + 3) & !3;
        rest = rest.get(4 + padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_protected_datagrams_show_the_client_has_its_keys() {
        let cases: [(&[u8], bool); 6] = [
            (&[0x00, 0x01], false),     // STUN binding request
            (&[22, 0xfe, 0xfd], false), // DTLS handshake (a repeated Finished)
            (&[20, 0xfe, 0xfd], false), // ChangeCipherSpec
            (&[21, 0xfe, 0xfd], false), // alert
            (&[23, 0xfe, 0xfd], true),  // application data: SCTP
            (&[0x80, 96], true),        // SRTP
        ];
        for (datagram, expected) in cases {
            assert_eq!(
                sent_with_client_keys(classify(datagram), datagram),
                expected,
                "{datagram:?}"
            );
        }
    }

    fn stun_with_username(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&STUN_MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    #[test]
    fn classifies_by_first_byte() {
        assert_eq!(classify(&[0x00, 1]), DatagramKind::Stun);
        assert_eq!(classify(&[22, 254]), DatagramKind::Dtls);
        assert_eq!(classify(&[0x80, 96]), DatagramKind::Rtp);
        assert_eq!(classify(&[0x50]), DatagramKind::Unknown);
        assert_eq!(classify(&[]), DatagramKind::Unknown);
    }

    #[test]
    fn finds_local_ufrag_in_username() {
        let msg = stun_with_username("srvUfrag:cliUfrag");
        assert_eq!(stun_local_ufrag(&msg), Some("srvUfrag"));
    }

    #[test]
    fn rejects_truncated_or_foreign_messages() {
        let msg = stun_with_username("abc:def");
        for cut in 0..msg.len() {
            // Never panics; a cut inside the attribute yields None.
            let _ = stun_local_ufrag(&msg[..cut]);
        }
        assert_eq!(stun_local_ufrag(&msg[..msg.len() - 4]), None);
        let mut no_cookie = msg.clone();
        no_cookie[4] = 0;
        assert_eq!(stun_local_ufrag(&no_cookie), None);
    }
}
