//! Asking a publisher for simulcast in the server's offer.
//!
//! rtc 0.21.1 has no API for receive-side rid and simulcast lines, so they
//! are written into the offer's text before `set_local_description` (which
//! parses it again). Chromium and Firefox, answering such an offer, send
//! their camera as three encodings (`a=simulcast:send q;h;f`); a client that
//! does not support simulcast answers without the lines and sends one
//! encoding, which the server forwards as before.

/// The rids the server asks for, lowest resolution first (RFC 8853 order of
/// preference is the order of the `a=simulcast` list).
pub const RIDS: [&str; 3] = ["q", "h", "f"];

/// The rank of encoding `rid` among its track's, lowest first: the
/// server's own rids by [`RIDS`], any other after them in `order` (the
/// client's `a=simulcast` list, lowest first as the contract has it: a
/// client may offer its camera's encodings itself, with any rids).
pub fn rid_rank(rid: &str, order: &[String]) -> usize {
    RIDS.iter()
        .position(|r| *r == rid)
        .unwrap_or_else(|| RIDS.len() + order.iter().position(|r| r == rid).unwrap_or(order.len()))
}

/// The rids a client sends in the m-section `mid` of its `sdp`, in its
/// `a=simulcast:send` order (paused `~` marks and alternatives flattened);
/// empty without one.
pub fn simulcast_send_order(sdp: &str, mid: &str) -> Vec<String> {
    for section in sdp.split("\nm=").skip(1) {
        let lines = || section.lines().map(str::trim_end);
        if !lines().any(|l| l.strip_prefix("a=mid:") == Some(mid)) {
            continue;
        }
        let Some(value) = lines().find_map(|l| l.strip_prefix("a=simulcast:")) else {
            return Vec::new();
        };
        let words: Vec<&str> = value.split_whitespace().collect();
        return words
            .chunks(2)
            .filter(|pair| pair.len() == 2 && pair[0] == "send")
            .flat_map(|pair| pair[1].split([';', ',']))
            .map(|r| r.trim_start_matches('~').to_owned())
            .filter(|r| !r.is_empty())
            .collect();
    }
    Vec::new()
}

/// Each m-section of an SDP split into `lines`: (its `m=` line's index,
/// the index after its last line).
pub fn section_ranges(lines: &[&str]) -> Vec<(usize, usize)> {
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("m="))
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &s)| (s, starts.get(n + 1).copied().unwrap_or(lines.len())))
        .collect()
}

/// Adds `a=rid:<id> recv` and `a=simulcast:recv q;h;f` to the video
/// m-section that carries `a=msid:` line `marker` (the publish section's
/// placeholder). An offer that has them already, or has no such section,
/// is returned unchanged.
pub fn add_simulcast_recv(sdp: &str, marker: &str) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = sdp.split(eol).collect();
    let mut target = None;
    for (start, end) in section_ranges(&lines) {
        let section = &lines[start..end];
        let is_video = section[0].starts_with("m=video");
        let is_publish = section.iter().any(|l| l.trim_end() == marker);
        let has_simulcast = section.iter().any(|l| l.starts_with("a=simulcast:"));
        if is_video && is_publish && !has_simulcast {
            // Insert before the section's trailing empty line, if any.
            let mut at = end;
            while at > start + 1 && lines[at - 1].is_empty() {
                at -= 1;
            }
            target = Some(at);
            break;
        }
    }
    let Some(at) = target else {
        return sdp.to_owned();
    };
    let mut added: Vec<String> = RIDS.iter().map(|r| format!("a=rid:{r} recv")).collect();
    added.push(format!("a=simulcast:recv {}", RIDS.join(";")));
    let mut out: Vec<&str> = Vec::with_capacity(lines.len() + added.len());
    out.extend_from_slice(&lines[..at]);
    out.extend(added.iter().map(String::as_str));
    out.extend_from_slice(&lines[at..]);
    out.join(eol)
}

/// Removes the rid and simulcast lines of every m-section of an answer
/// whose sender declares fewer SSRCs than rids (and some at all): it sends
/// one plain stream. rtc-based clients answer our simulcast offer that way
/// (their SDP mirrors the offered rids whatever they send), and rtc would
/// then wait for rid-tagged packets that never come. Browsers declare no
/// SSRC for their encodings (Chromium) or one per rid (Firefox); both keep
/// their lines.
pub fn drop_unbacked_simulcast(answer: &str) -> String {
    let eol = if answer.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let mut out: Vec<&str> = Vec::new();
    let mut section: Vec<&str> = Vec::new();
    fn flush<'a>(section: &mut Vec<&'a str>, out: &mut Vec<&'a str>) {
        let rids = section.iter().filter(|l| l.starts_with("a=rid:")).count();
        let mut ssrcs: Vec<&str> = section
            .iter()
            .filter_map(|l| l.strip_prefix("a=ssrc:"))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        ssrcs.sort_unstable();
        ssrcs.dedup();
        let repairs = section
            .iter()
            .filter_map(|l| l.strip_prefix("a=ssrc-group:FID "))
            .filter_map(|rest| rest.split_whitespace().nth(1))
            .count();
        let primaries = ssrcs.len().saturating_sub(repairs);
        let plain = rids > 1 && primaries > 0 && primaries < rids;
        out.extend(
            section
                .drain(..)
                .filter(|l| !(plain && (l.starts_with("a=rid:") || l.starts_with("a=simulcast:")))),
        );
    }
    for line in answer.split(eol) {
        if line.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        section.push(line);
    }
    flush(&mut section, &mut out);
    out.join(eol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_sends_one_stream_loses_its_mirrored_rids() {
        let head = "v=0\r\nm=audio 9 x 111\r\na=mid:0\r\na=ssrc:5 cname:a\r\n";
        let rids = "a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n";
        // An rtc client: one SSRC, three mirrored rids.
        let plain = format!("{head}m=video 9 x 96\r\na=mid:1\r\n{rids}a=ssrc:7 cname:a\r\na=ssrc:7 msid:a v\r\na=sendonly\r\n");
        let fixed = drop_unbacked_simulcast(&plain);
        assert!(
            !fixed.contains("a=rid") && !fixed.contains("a=simulcast"),
            "{fixed}"
        );
        assert!(fixed.contains("a=ssrc:7 msid:a v\r\na=sendonly\r\n"));
        assert!(fixed.starts_with(head));
        // Chromium: no SSRC lines for its encodings.
        let chromium = format!("{head}m=video 9 x 96\r\na=mid:1\r\n{rids}a=sendonly\r\n");
        assert_eq!(drop_unbacked_simulcast(&chromium), chromium);
        // Firefox: one SSRC per rid, each with an RTX repair SSRC.
        let firefox = format!(
            "{head}m=video 9 x 96\r\na=mid:1\r\n{rids}a=ssrc:1 cname:f\r\na=ssrc:2 cname:f\r\na=ssrc:3 cname:f\r\n\
             a=ssrc:4 cname:f\r\na=ssrc:5 cname:f\r\na=ssrc:6 cname:f\r\n\
             a=ssrc-group:FID 1 4\r\na=ssrc-group:FID 2 5\r\na=ssrc-group:FID 3 6\r\na=sendonly\r\n"
        );
        assert_eq!(drop_unbacked_simulcast(&firefox), firefox);
    }

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:- publish-audio\r\na=recvonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:- publish-video\r\na=recvonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=msid:alice t4\r\na=sendonly\r\n";

    #[test]
    fn adds_rids_to_the_publish_video_section_only() {
        let out = add_simulcast_recv(OFFER, "a=msid:- publish-video");
        let sections: Vec<&str> = out.split("m=").collect();
        assert!(!sections[1].contains("a=rid"), "audio untouched");
        assert!(sections[2].ends_with(
            "a=recvonly\r\na=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f\r\n"
        ));
        assert!(
            !sections[3].contains("a=rid"),
            "forwarded section untouched"
        );
        // Idempotent: a second pass adds nothing.
        assert_eq!(add_simulcast_recv(&out, "a=msid:- publish-video"), out);
    }

    #[test]
    fn ranks_any_rids_in_the_clients_order_after_the_servers() {
        let offer = "v=0\r\nm=audio 9 x 111\r\na=mid:0\r\n\
            m=video 9 x 96\r\na=mid:2\r\na=rid:hi send\r\na=rid:lo send\r\na=rid:mid send\r\n\
            a=simulcast:send lo;~mid;hi\r\na=sendonly\r\n";
        let order = simulcast_send_order(offer, "2");
        assert_eq!(
            order,
            ["lo", "mid", "hi"],
            "the a=simulcast order, not the a=rid lines'"
        );
        let ranks: Vec<usize> = ["lo", "mid", "hi", "other"]
            .iter()
            .map(|r| rid_rank(r, &order))
            .collect();
        assert_eq!(ranks, [3, 4, 5, 6]);
        assert_eq!(["q", "h", "f"].map(|r| rid_rank(r, &order)), [0, 1, 2]);
        assert!(
            simulcast_send_order(offer, "0").is_empty(),
            "no simulcast there"
        );
        assert!(
            simulcast_send_order(offer, "7").is_empty(),
            "no such section"
        );
        assert_eq!(
            simulcast_send_order(
                "v=0\r\nm=video 9 x 96\r\na=mid:1\r\na=simulcast:recv x send a,b;c\r\n",
                "1"
            ),
            ["a", "b", "c"],
            "the send list of both, alternatives flattened"
        );
    }

    #[test]
    fn leaves_an_offer_without_the_section_alone() {
        assert_eq!(add_simulcast_recv(OFFER, "a=msid:- nothing"), OFFER);
        assert_eq!(add_simulcast_recv("", "x"), "");
    }
}
