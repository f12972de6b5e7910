//! Keeping the DTLS roles when the client renegotiates. The server offers
//! `a=setup:actpass` first and the browser answers `active` (it is the
//! DTLS client). When the client later offers itself (a screen share), it
//! writes `actpass` again, and the answer must repeat the role the server
//! already has (`passive`): rtc 0.21.1 answers with its default role
//! (`active`) whatever the running transport does, and Chromium refuses
//! that answer ("Failed to set SSL role for the transport"). The transport
//! itself never changes: only the answer's text is corrected.

use rtc::peer_connection::sdp::{RTCSdpType, RTCSessionDescription};

/// The `a=setup` value of the first m-section (or the session) in `sdp`.
fn setup_of(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|line| line.trim_end().strip_prefix("a=setup:"))
}

/// The server's current DTLS role as an answer's `a=setup` value, from the
/// descriptions of the last completed negotiation: our own answer says it;
/// after our offer, it is the opposite of the client's answer.
pub fn server_setup(
    local: Option<&RTCSessionDescription>,
    remote: Option<&RTCSessionDescription>,
) -> Option<&'static str> {
    let (sdp, ours) = match (local, remote) {
        (Some(l), _) if l.sdp_type == RTCSdpType::Answer => (l.sdp.as_str(), true),
        (_, Some(r)) if r.sdp_type == RTCSdpType::Answer => (r.sdp.as_str(), false),
        _ => return None,
    };
    match (setup_of(sdp)?, ours) {
        ("active", true) | ("passive", false) => Some("active"),
        ("passive", true) | ("active", false) => Some("passive"),
        _ => None,
    }
}

/// `answer` with every `a=setup` line saying `setup`.
pub fn with_setup(answer: &str, setup: &str) -> String {
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive('\n') {
        if line.starts_with("a=setup:") {
            let ending = &line[line.trim_end().len()..];
            out.push_str("a=setup:");
            out.push_str(setup);
            out.push_str(ending);
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description(sdp_type: RTCSdpType, setup: &str) -> RTCSessionDescription {
        let mut d = RTCSessionDescription::default();
        d.sdp_type = sdp_type;
        d.sdp = format!("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:{setup}\r\n");
        d
    }

    #[test]
    fn the_server_keeps_the_role_it_took() {
        let offer = description(RTCSdpType::Offer, "actpass");
        let client_active = description(RTCSdpType::Answer, "active");
        assert_eq!(
            server_setup(Some(&offer), Some(&client_active)),
            Some("passive")
        );
        let client_passive = description(RTCSdpType::Answer, "passive");
        assert_eq!(
            server_setup(Some(&offer), Some(&client_passive)),
            Some("active")
        );
        // After answering a client offer, our answer says it.
        let client_offer = description(RTCSdpType::Offer, "actpass");
        let our_answer = description(RTCSdpType::Answer, "passive");
        assert_eq!(
            server_setup(Some(&our_answer), Some(&client_offer)),
            Some("passive")
        );
        assert_eq!(server_setup(None, None), None);
    }

    #[test]
    fn rewrites_every_setup_line_and_nothing_else() {
        let sdp = "v=0\r\nm=audio 9 X 111\r\na=setup:active\r\na=mid:0\r\nm=video 9 X 96\r\na=setup:active\r\n";
        assert_eq!(
            with_setup(sdp, "passive"),
            "v=0\r\nm=audio 9 X 111\r\na=setup:passive\r\na=mid:0\r\nm=video 9 X 96\r\na=setup:passive\r\n"
        );
    }
}
