//! Which codecs a client accepted for one m-section, read from its SDP.
//!
//! A subscriber that answers a forwarded H.264 track's section with VP8 only
//! (it cannot decode H.264) must get none of its packets, and be told why.
//! rtc 0.21.1 narrows a sender's codecs to the answer's too, but says nothing
//! of why a codec is missing: this module tells "refused" (the section is
//! accepted, without the codec: send `track_unsupported`) from "not
//! negotiated yet" (a section the client has not answered), and keeps the
//! rule "no packet without the codec in the answer" in our own code, where
//! a test can hold it (the fast path writes packets without rtc's checks).

/// What the client said about a track's codec in one m-section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionCodec {
    /// The section is accepted and lists the codec.
    Accepted,
    /// The section is accepted, with other codecs only.
    Refused,
    /// No such section in the SDP, or it is rejected (port 0).
    NotNegotiated,
}

/// Reads m-section `mid` of `sdp` (the client's answer or offer) for a
/// codec named like `mime_type`'s subtype (`video/H264` -> `H264`, any
/// case) in its `a=rtpmap` lines.
pub fn section_codec(sdp: &str, mid: &str, mime_type: &str) -> SectionCodec {
    let name = mime_type.rsplit('/').next().unwrap_or(mime_type);
    let Some(section) = section_of(sdp, mid) else {
        return SectionCodec::NotNegotiated;
    };
    let accepted = section
        .first()
        .and_then(|m| m.split_whitespace().nth(1))
        .is_some_and(|port| port != "0");
    if !accepted {
        return SectionCodec::NotNegotiated;
    }
    let lists = section.iter().any(|line| {
        line.strip_prefix("a=rtpmap:")
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|encoding| encoding.split('/').next())
            .is_some_and(|codec| codec.eq_ignore_ascii_case(name))
    });
    if lists {
        SectionCodec::Accepted
    } else {
        SectionCodec::Refused
    }
}

/// The id m-section `mid` of `sdp` gives header extension `uri` in an
/// `a=extmap` line (None: the section does not use it).
///
/// Negotiated per section, not per connection: Firefox answers
/// transport-wide congestion control on its video sections only, and
/// reports no arrival of an audio packet that carries the transport-wide
/// sequence number anyway (counted as lost, those collapsed its estimate
/// to the floor and paused its videos: `firefox_ice_tcp.test.mjs`).
pub fn section_extension_id(sdp: &str, mid: &str, uri: &str) -> Option<u8> {
    section_of(sdp, mid)?.iter().find_map(|line| {
        let mut words = line.strip_prefix("a=extmap:")?.split_whitespace();
        let id = words.next()?.split('/').next()?.parse().ok()?;
        (words.next()? == uri).then_some(id)
    })
}

/// The lines of the m-section whose `a=mid` is `mid`, `m=` line first.
fn section_of<'a>(sdp: &'a str, mid: &str) -> Option<Vec<&'a str>> {
    let mut section: Option<Vec<&str>> = None;
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            if let Some(done) = section.take().filter(|s| has_mid(s, mid)) {
                return Some(done);
            }
            section = Some(vec![line]);
        } else if let Some(lines) = section.as_mut() {
            lines.push(line);
        }
    }
    section.filter(|s| has_mid(s, mid))
}

fn has_mid(section: &[&str], mid: &str) -> bool {
    section
        .iter()
        .any(|l| l.strip_prefix("a=mid:") == Some(mid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\n\
        o=- 1 2 IN IP4 127.0.0.1\r\n\
        s=-\r\n\
        t=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=mid:0\r\n\
        a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
        a=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
        a=mid:2\r\n\
        a=extmap:3/sendrecv urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
        a=extmap:7 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102 96\r\n\
        a=mid:3\r\n\
        a=rtpmap:102 H264/90000\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 102\r\n\
        a=mid:4\r\n\
        a=rtpmap:102 H264/90000\r\n";

    #[test]
    fn reads_the_codecs_of_one_section() {
        use SectionCodec::*;
        assert_eq!(section_codec(ANSWER, "0", "audio/opus"), Accepted);
        assert_eq!(section_codec(ANSWER, "2", "video/VP8"), Accepted);
        // Section 2 answered VP8 only: an H.264 track there gets nothing.
        assert_eq!(section_codec(ANSWER, "2", "video/H264"), Refused);
        assert_eq!(section_codec(ANSWER, "3", "video/h264"), Accepted);
        assert_eq!(section_codec(ANSWER, "3", "video/VP8"), Accepted);
        // Rejected (port 0), unknown mid, and no SDP at all.
        assert_eq!(section_codec(ANSWER, "4", "video/H264"), NotNegotiated);
        assert_eq!(section_codec(ANSWER, "9", "video/VP8"), NotNegotiated);
        assert_eq!(section_codec("", "0", "audio/opus"), NotNegotiated);
        // A mid that is a prefix of another does not match it.
        assert_eq!(section_codec(ANSWER, "", "video/VP8"), NotNegotiated);
    }

    #[test]
    fn reads_an_extension_id_per_section() {
        const TWCC: &str =
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
        // As Firefox answers: transport-wide feedback on video only.
        assert_eq!(section_extension_id(ANSWER, "2", TWCC), Some(7));
        assert_eq!(section_extension_id(ANSWER, "0", TWCC), None);
        // A direction after the id is skipped.
        assert_eq!(
            section_extension_id(ANSWER, "2", "urn:ietf:params:rtp-hdrext:sdes:mid"),
            Some(3)
        );
        assert_eq!(section_extension_id(ANSWER, "9", TWCC), None);
        assert_eq!(section_extension_id("", "2", TWCC), None);
    }
}
