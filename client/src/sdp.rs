//! SDP inspection: the m-sections of an offer or answer, as far as the
//! contract cares (kind, port, mid, direction, msid), and the candidate
//! rewriting that routes media through a relay.

use std::collections::BTreeSet;

/// The parts of one m-section the tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub index: usize,
    pub kind: String,
    pub port: u16,
    pub mid: Option<String>,
    /// `sendrecv` when the section has no direction attribute.
    pub direction: String,
    /// `(stream id, track id)` from `a=msid:`.
    pub msid: Option<(String, String)>,
}

impl MediaSection {
    /// Rejected (port 0) or inactive: carries no media.
    pub fn is_dead(&self) -> bool {
        self.port == 0 || self.direction == "inactive"
    }

    pub fn short(&self) -> String {
        format!(
            "#{} {} mid={} {} port={}{}",
            self.index,
            self.kind,
            self.mid.as_deref().unwrap_or("-"),
            self.direction,
            self.port,
            self.msid
                .as_ref()
                .map(|(s, t)| format!(" msid={s} {t}"))
                .unwrap_or_default()
        )
    }
}

/// Splits an SDP into its m-sections.
pub fn parse_sections(sdp: &str) -> Vec<MediaSection> {
    let mut out: Vec<MediaSection> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            let mut parts = rest.split_whitespace();
            let kind = parts.next().unwrap_or("").to_owned();
            let port = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            out.push(MediaSection {
                index: out.len(),
                kind,
                port,
                mid: None,
                direction: "sendrecv".to_owned(),
                msid: None,
            });
            continue;
        }
        let Some(m) = out.last_mut() else { continue };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            m.mid = Some(mid.trim().to_owned());
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            let mut parts = msid.split_whitespace();
            let stream = parts.next().unwrap_or("").to_owned();
            let track = parts.next().unwrap_or("").to_owned();
            m.msid = Some((stream, track));
        } else if matches!(
            line,
            "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
        ) {
            m.direction = line[2..].to_owned();
        }
    }
    out
}

/// The set of `(stream id, kind)` the live sendonly sections of an offer carry.
pub fn forwarded_in_offer(sdp: &str) -> BTreeSet<(String, String)> {
    parse_sections(sdp)
        .into_iter()
        .filter(|m| m.direction == "sendonly" && m.port != 0)
        .filter_map(|m| m.msid.map(|(s, _)| (s, m.kind)))
        .collect()
}

/// Behind a relay, our own candidates stay out of the answer.
pub fn strip_candidates(sdp: &str, rewrite: Option<(u16, u16)>) -> String {
    if rewrite.is_none() {
        return sdp.to_owned();
    }
    sdp.split("\r\n")
        .filter(|l| !l.starts_with("a=candidate:") && !l.starts_with("a=end-of-candidates"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Applies `MediaOptions::candidate_rewrite` to SDP or a candidate line.
pub fn rewrite_candidates(text: &str, rewrite: Option<(u16, u16)>) -> String {
    match rewrite {
        Some((from, to)) => text.replace(
            &format!(" 127.0.0.1 {from} typ"),
            &format!(" 127.0.0.1 {to} typ"),
        ),
        None => text.to_owned(),
    }
}
