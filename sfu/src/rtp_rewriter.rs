//! Per-subscriber rewriting of a forwarded RTP packet's identity.
//!
//! webrtc-rs' `write_rtp` rejects rather than rewrites: the SSRC must be the
//! subscriber-side sender's, the payload type one negotiated on that
//! connection and every header-extension id one negotiated there. Payload
//! types and extension ids are chosen per connection during negotiation, so
//! the mapping is computed per subscriber after each answer.
//!
//! Only end-to-end extensions are forwarded (audio level, video orientation).
//! Hop-by-hop ones (transport-wide-cc, abs-send-time, mid, rid) describe the
//! publisher's leg and would mislead the subscriber, so they are dropped.

use rtc::rtp;
use rtc::sdp::extmap::{AUDIO_LEVEL_URI, VIDEO_ORIENTATION_URI};

/// Header extensions that mean the same on every leg.
pub const END_TO_END_EXTENSIONS: &[&str] = &[AUDIO_LEVEL_URI, VIDEO_ORIENTATION_URI];

/// The negotiated identity of a forwarded stream on one subscriber's connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtpRewriter {
    pub ssrc: u32,
    pub payload_type: u8,
    /// (publisher-side id, subscriber-side id) of each forwarded extension.
    pub extension_ids: Vec<(u8, u8)>,
    /// The subscriber's id for the transport-wide sequence number in this
    /// track's m-section; None where its answer left the extension out
    /// (such packets go unnumbered: numbered, they would be counted lost).
    pub transport_cc_id: Option<u8>,
}

impl RtpRewriter {
    /// Builds the extension map from both legs' negotiated (uri, id) lists.
    pub fn map_extensions<'a>(
        publisher: impl IntoIterator<Item = (&'a str, u8)> + Clone,
        subscriber: impl IntoIterator<Item = (&'a str, u8)>,
    ) -> Vec<(u8, u8)> {
        subscriber
            .into_iter()
            .filter(|(uri, _)| END_TO_END_EXTENSIONS.contains(uri))
            .filter_map(|(uri, out_id)| {
                publisher
                    .clone()
                    .into_iter()
                    .find(|(p_uri, _)| *p_uri == uri)
                    .map(|(_, in_id)| (in_id, out_id))
            })
            .collect()
    }

    /// The header `source` gets on this subscriber's leg, as `rewrite`
    /// makes it, built in `extensions` (a list the caller reuses, cleared
    /// here): no allocation per packet once the list has room.
    pub fn rewritten_header(
        &self,
        source: &rtp::Header,
        mut extensions: Vec<rtp::header::Extension>,
    ) -> rtp::Header {
        extensions.clear();
        for ext in &source.extensions {
            if let Some(&(_, to)) = self.extension_ids.iter().find(|(from, _)| *from == ext.id) {
                extensions.push(rtp::header::Extension {
                    id: to,
                    payload: ext.payload.clone(),
                });
            }
        }
        let kept = !extensions.is_empty();
        rtp::Header {
            version: source.version,
            padding: source.padding,
            extension: source.extension && kept,
            marker: source.marker,
            payload_type: self.payload_type,
            sequence_number: source.sequence_number,
            timestamp: source.timestamp,
            ssrc: self.ssrc,
            csrc: source.csrc.clone(),
            extension_profile: if kept { source.extension_profile } else { 0 },
            extensions,
            extensions_padding: 0,
        }
    }

    /// Rewrites `packet` in place for this subscriber.
    pub fn rewrite(&self, packet: &mut rtp::Packet) {
        let header = &mut packet.header;
        header.ssrc = self.ssrc;
        header.payload_type = self.payload_type;
        header.extensions.retain_mut(|ext| {
            match self.extension_ids.iter().find(|(from, _)| *from == ext.id) {
                Some(&(_, to)) => {
                    ext.id = to;
                    true
                }
                None => false,
            }
        });
        // The parsed padding belonged to the publisher's extension block; the
        // marshaller pads the rewritten block itself (a stale value makes
        // webrtc-rs' size check reject the packet).
        header.extensions_padding = 0;
        if header.extensions.is_empty() {
            header.extension = false;
            header.extension_profile = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet_with_extensions(ids: &[u8]) -> rtp::Packet {
        let mut header = rtp::Header {
            ssrc: 1111,
            payload_type: 111,
            sequence_number: 7,
            timestamp: 99,
            extension: true,
            extension_profile: 0xBEDE,
            ..Default::default()
        };
        for &id in ids {
            header.extensions.push(rtp::header::Extension {
                id,
                payload: Bytes::from_static(&[0x80]),
            });
        }
        rtp::Packet {
            header,
            payload: Bytes::from_static(b"opus"),
        }
    }

    #[test]
    fn maps_identity_and_keeps_only_end_to_end_extensions() {
        let publisher = [
            (AUDIO_LEVEL_URI, 1u8),
            (
                "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
                2,
            ),
            ("urn:ietf:params:rtp-hdrext:sdes:mid", 4),
        ];
        let subscriber = [
            ("urn:ietf:params:rtp-hdrext:sdes:mid", 3u8),
            (AUDIO_LEVEL_URI, 9),
        ];
        let rewriter = RtpRewriter {
            ssrc: 2222,
            payload_type: 109,
            extension_ids: RtpRewriter::map_extensions(publisher, subscriber),
            transport_cc_id: None,
        };
        assert_eq!(rewriter.extension_ids, vec![(1, 9)]);

        let mut p = packet_with_extensions(&[1, 2, 4]);
        p.header.extensions_padding = 3;
        rewriter.rewrite(&mut p);
        // What is written is what was announced: webrtc-rs checks this.
        use rtc::shared::marshal::{Marshal, MarshalSize};
        let mut buf = vec![0u8; p.marshal_size()];
        assert_eq!(p.marshal_to(&mut buf).unwrap(), p.marshal_size());
        assert_eq!(p.header.ssrc, 2222);
        assert_eq!(p.header.payload_type, 109);
        assert_eq!(p.header.extensions.len(), 1);
        assert_eq!(p.header.extensions[0].id, 9);
        // Sequence number and timestamp pass through untouched.
        assert_eq!((p.header.sequence_number, p.header.timestamp), (7, 99));
    }

    #[test]
    fn clears_extension_flag_when_nothing_is_forwarded() {
        let rewriter = RtpRewriter {
            ssrc: 5,
            payload_type: 96,
            extension_ids: vec![],
            transport_cc_id: None,
        };
        let mut p = packet_with_extensions(&[2, 3]);
        p.header.extensions_padding = 3;
        rewriter.rewrite(&mut p);
        assert!(!p.header.extension);
        assert_eq!(p.header.extensions_padding, 0);
        assert!(p.header.extensions.is_empty());
    }

    /// The header built afresh is the one `rewrite` makes, with or without
    /// extensions left, whatever the reused list held before.
    #[test]
    fn a_header_built_afresh_equals_the_rewritten_one() {
        let rewriter = RtpRewriter {
            ssrc: 2222,
            payload_type: 109,
            extension_ids: vec![(1, 9), (5, 6)],
            transport_cc_id: None,
        };
        let mut scratch = vec![rtp::header::Extension {
            id: 14,
            payload: Bytes::from_static(&[1]),
        }];
        for ids in [&[1u8, 2, 4][..], &[2, 3], &[5, 1], &[]] {
            let mut p = packet_with_extensions(ids);
            p.header.extensions_padding = 3;
            p.header.extension = !ids.is_empty();
            p.header.marker = ids.len() == 2;
            p.header.csrc = vec![77];
            let fresh = rewriter.rewritten_header(&p.header, std::mem::take(&mut scratch));
            rewriter.rewrite(&mut p);
            assert_eq!(fresh, p.header, "extensions {ids:?}");
            scratch = fresh.extensions;
        }
    }
}
