//! Where a publisher's bandwidth estimate starts, in the server's offer.
//!
//! Chromium starts its send-side estimate at 300 kbit/s and finds the rest
//! with two probes right after connecting (at 3 and 6 times the start).
//! A 720p camera as three simulcast encodings needs about 1.3 Mbit/s
//! before Chromium turns on the top one. When those probes come out low or
//! not at all, the estimate climbs from near 1 Mbit/s by about 8 % a
//! second. Measured here (join loops, 1280x720 fake camera, 2-core VM):
//! 3 of 204 unloaded joins and 1 of 32 with one core kept busy took 3.7 s
//! to over 12 s to show three encodings. In every one of them the server
//! had recorded every transport-wide sequence number and sent its
//! feedback. The probes are sent by Chromium's pacer, and a starved CPU
//! stretches them.
//!
//! `x-google-start-bitrate` (kbit/s) in the codec's `a=fmtp` of the
//! section the browser sends into is Chromium's way to start higher; it
//! applies it as a send parameter (from the remote description: our
//! offer). Jitsi sets it the same way. Other browsers ignore it. The start
//! is only where the estimate begins: it falls within a few hundred
//! milliseconds on a link that cannot carry it, as after any probe.

/// Video codecs the parameter is written for (not rtx, red, ulpfec).
const VIDEO_CODECS: [&str; 4] = ["VP8", "VP9", "H264", "AV1"];
const PARAMETER: &str = "x-google-start-bitrate";

/// Adds `x-google-start-bitrate=<kbps>` to every video codec of the
/// m-section that carries the `a=msid:` line `marker` (the publish
/// section's placeholder): to its `a=fmtp` line, or as a new one after its
/// `a=rtpmap`. `kbps` 0, no such section, or a section that has the
/// parameter already: the offer is returned unchanged.
pub fn add_start_bitrate(sdp: &str, marker: &str, kbps: u32) -> String {
    if kbps == 0 || sdp.contains(PARAMETER) {
        return sdp.to_owned();
    }
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = sdp.split(eol).collect();
    let Some((start, end)) = crate::simulcast_offer::section_ranges(&lines)
        .into_iter()
        .find(|&(s, e)| {
            lines[s].starts_with("m=video") && lines[s..e].iter().any(|l| l.trim_end() == marker)
        })
    else {
        return sdp.to_owned();
    };
    // Payload types of the section's video codecs.
    let video_pts: Vec<&str> = lines[start..end]
        .iter()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|rest| {
            let (pt, codec) = rest.split_once(' ')?;
            let name = codec.split('/').next()?;
            VIDEO_CODECS
                .iter()
                .any(|c| c.eq_ignore_ascii_case(name))
                .then_some(pt)
        })
        .collect();
    let has_fmtp = |pt: &str| {
        lines[start..end].iter().any(|l| {
            l.strip_prefix("a=fmtp:")
                .and_then(|r| r.split_once(' '))
                .is_some_and(|(p, _)| p == pt)
        })
    };
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + video_pts.len());
    for (i, line) in lines.iter().enumerate() {
        let inside = (start..end).contains(&i);
        let fmtp_pt = line
            .strip_prefix("a=fmtp:")
            .and_then(|r| r.split_once(' '))
            .map(|(pt, _)| pt);
        match fmtp_pt {
            Some(pt) if inside && video_pts.contains(&pt) => {
                out.push(format!("{line};{PARAMETER}={kbps}"));
            }
            _ => out.push((*line).to_owned()),
        }
        let rtpmap_pt = line
            .strip_prefix("a=rtpmap:")
            .and_then(|r| r.split_once(' '))
            .map(|(pt, _)| pt);
        if let Some(pt) = rtpmap_pt.filter(|pt| inside && video_pts.contains(pt) && !has_fmtp(pt)) {
            out.push(format!("a=fmtp:{pt} {PARAMETER}={kbps}"));
        }
    }
    out.join(eol)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &str = "a=msid:- publish-video";

    fn offer() -> String {
        [
            "v=0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 minptime=10;useinbandfec=1",
            "m=video 9 UDP/TLS/RTP/SAVPF 96 102",
            "a=mid:1",
            MARKER,
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 nack",
            "a=rtpmap:102 H264/90000",
            "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "a=mid:2",
            "a=msid:alice camera",
            "a=rtpmap:96 VP8/90000",
            "",
        ]
        .join("\r\n")
    }

    #[test]
    fn every_video_codec_of_the_publish_section_gets_the_start_and_nothing_else_changes() {
        let out = add_start_bitrate(&offer(), MARKER, 1000);
        let expected = offer()
            .replace(
                "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack",
                "a=rtpmap:96 VP8/90000\r\na=fmtp:96 x-google-start-bitrate=1000\r\na=rtcp-fb:96 nack",
            )
            .replace(
                "profile-level-id=42e01f",
                "profile-level-id=42e01f;x-google-start-bitrate=1000",
            );
        assert_eq!(out, expected);
        // Audio and the forwarded (sendonly) video section are untouched.
        assert!(out.contains("a=fmtp:111 minptime=10;useinbandfec=1\r\n"));
        assert!(out.ends_with("a=msid:alice camera\r\na=rtpmap:96 VP8/90000\r\n"));
    }

    #[test]
    fn off_absent_or_already_there_leaves_the_offer_as_it_is() {
        assert_eq!(add_start_bitrate(&offer(), MARKER, 0), offer());
        assert_eq!(
            add_start_bitrate(&offer(), "a=msid:- nowhere", 1000),
            offer()
        );
        let once = add_start_bitrate(&offer(), MARKER, 1000);
        assert_eq!(add_start_bitrate(&once, MARKER, 1000), once);
        // Lines ending in \n alone.
        let lf = offer().replace("\r\n", "\n");
        assert!(add_start_bitrate(&lf, MARKER, 800)
            .contains("\na=fmtp:96 x-google-start-bitrate=800\n"));
    }
}
