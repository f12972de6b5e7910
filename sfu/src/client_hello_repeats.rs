//! Keeps a client's repeated DTLS ClientHello away from webrtc-rs, so a lost
//! server flight is still retransmitted.
//!
//! Why: in rtc-dtls 0.21.1 (`handshaker.rs`, `wait()`), *any* handshake
//! record that arrives while the server waits for the client's next flight
//! clears the server's retransmission timer, before the record is even known
//! to complete that flight. A client that lost the server's flight 4
//! (ServerHello .. ServerHelloDone) sends its ClientHello again, which is how
//! DTLS asks for the flight to be repeated (RFC 6347 section 4.2.4). rtc-dtls
//! neither answers it nor re-arms the timer, so the server waits for ever and
//! the client keeps repeating its ClientHello until it gives up: the
//! connection never comes up. Whether the repeat beats the server's own
//! 1-second timer is a race (jitter; browsers start their DTLS timer from the
//! ICE round-trip time, well under a second on most paths).
//!
//! Dropping such a repeat leaves the server's timer armed, and it sends the
//! flight again within a second. Only a ClientHello the connection has
//! already taken in is dropped, with one exception: a repeat of the first
//! ClientHello (message sequence 0) while no later one arrived, which is how
//! a client says it lost the HelloVerifyRequest; rtc-dtls answers that one
//! correctly (it re-parses it as a fresh hello). rtc-dtls cannot be patched
//! from here (no fork, no vendoring), and its API offers no way to re-arm the
//! timer: `handle_timeout` only acts on a timer that is set.

/// DTLS record header: type, version (2), epoch (2), sequence number (6),
/// length (2).
const RECORD_HEADER_LEN: usize = 13;
/// Handshake header: type, length (3), message sequence (2), fragment
/// offset (3), fragment length (3).
const HANDSHAKE_HEADER_LEN: usize = 12;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_TYPE_CLIENT_HELLO: u8 = 1;

/// The message sequence of a datagram that is exactly one record holding one
/// whole (unfragmented) epoch-0 ClientHello; `None` for anything else.
pub fn client_hello_sequence(datagram: &[u8]) -> Option<u16> {
    let record = datagram.get(..RECORD_HEADER_LEN)?;
    if record[0] != CONTENT_TYPE_HANDSHAKE || record[3..5] != [0, 0] {
        return None;
    }
    let record_len = u16::from_be_bytes([record[11], record[12]]) as usize;
    if datagram.len() != RECORD_HEADER_LEN + record_len {
        return None;
    }
    let handshake = datagram.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN)?;
    if handshake[0] != HANDSHAKE_TYPE_CLIENT_HELLO {
        return None;
    }
    let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
    let (length, offset, fragment) = (
        u24(&handshake[1..4]),
        u24(&handshake[6..9]),
        u24(&handshake[9..12]),
    );
    if offset != 0 || fragment != length {
        return None;
    }
    Some(u16::from_be_bytes([handshake[4], handshake[5]]))
}

/// One connection's record of the ClientHellos it has been given.
#[derive(Debug, Default)]
pub struct ClientHelloRepeats {
    highest_admitted: Option<u16>,
}

impl ClientHelloRepeats {
    /// Whether `datagram` may go on to the connection: false only for a
    /// ClientHello the connection already has (see the module doc).
    pub fn admit(&mut self, datagram: &[u8]) -> bool {
        let Some(sequence) = client_hello_sequence(datagram) else {
            return true;
        };
        match self.highest_admitted {
            Some(highest) if sequence < highest => false,
            Some(highest) if sequence == highest => sequence == 0,
            _ => {
                self.highest_admitted = Some(sequence);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram with one ClientHello record: `body` bytes of hello,
    /// `fragment` of them in this record.
    fn client_hello(sequence: u16, body: usize, fragment: usize) -> Vec<u8> {
        let mut d = vec![CONTENT_TYPE_HANDSHAKE, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 7];
        d.extend_from_slice(&((HANDSHAKE_HEADER_LEN + fragment) as u16).to_be_bytes());
        d.push(HANDSHAKE_TYPE_CLIENT_HELLO);
        d.extend_from_slice(&(body as u32).to_be_bytes()[1..]);
        d.extend_from_slice(&sequence.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0]);
        d.extend_from_slice(&(fragment as u32).to_be_bytes()[1..]);
        d.extend(std::iter::repeat_n(0xab, fragment));
        d
    }

    #[test]
    fn reads_the_sequence_of_a_whole_client_hello_only() {
        assert_eq!(client_hello_sequence(&client_hello(1, 40, 40)), Some(1));
        assert_eq!(client_hello_sequence(&client_hello(1, 40, 20)), None);
        let mut server_hello = client_hello(1, 40, 40);
        server_hello[RECORD_HEADER_LEN] = 2;
        assert_eq!(client_hello_sequence(&server_hello), None);
        let mut later_epoch = client_hello(1, 40, 40);
        later_epoch[4] = 1;
        assert_eq!(client_hello_sequence(&later_epoch), None);
        let mut two_records = client_hello(1, 40, 40);
        two_records.extend_from_slice(&client_hello(1, 40, 40));
        assert_eq!(client_hello_sequence(&two_records), None);
        let whole = client_hello(1, 40, 40);
        for cut in 0..whole.len() {
            assert_eq!(client_hello_sequence(&whole[..cut]), None);
        }
        assert_eq!(client_hello_sequence(&[0x80, 96, 0, 1]), None);
    }

    #[test]
    fn drops_repeats_of_a_client_hello_already_taken_in() {
        let mut repeats = ClientHelloRepeats::default();
        let (first, cookie) = (client_hello(0, 40, 40), client_hello(1, 60, 60));
        assert!(repeats.admit(&first));
        // The HelloVerifyRequest was lost: the first hello again must pass.
        assert!(repeats.admit(&first));
        assert!(repeats.admit(&cookie));
        // Flight 4 was lost: the hello with the cookie again must not pass,
        // nor a late copy of the first one.
        assert!(!repeats.admit(&cookie));
        assert!(!repeats.admit(&first));
        // Fragments and every other datagram always pass.
        assert!(repeats.admit(&client_hello(1, 60, 30)));
        assert!(repeats.admit(&[0x80, 96, 0, 1]));
    }
}
