//! Checks on an incoming offer before it reaches str0m: the engine refuses an offer with no
//! m-line at all, and an audio or video m-line whose codecs it cannot forward, with a typed
//! error the signaling side can show (str0m would otherwise answer with a rejected m-line and
//! the client would wait for media that never comes). It also notes whether the offer has
//! data channels (an application m-line), which decides whether the participant receives the
//! room's relayed channels.
//!
//! This is a scan of `m=` and `a=rtpmap:` lines only; the full parse is str0m's.

use crate::error::SdpError;

/// Codecs the engine forwards (str0m's defaults), lower case as in `a=rtpmap`.
const FORWARDED_CODECS: &[&str] = &["opus", "vp8", "vp9", "h264", "h265", "av1"];

/// Most m-lines an offer may have.
pub(crate) const MAX_MEDIA_SECTIONS: usize = 32;

/// Largest offer accepted, in bytes.
pub(crate) const MAX_SDP_LEN: usize = 64 * 1024;

#[derive(Debug)]
struct Section<'a> {
    kind: &'a str,
    port_zero: bool,
    /// `a=bundle-only`: port 0 only because it rides on the bundle's transport (Firefox
    /// with `max-bundle`), not rejected.
    bundle_only: bool,
    supported: bool,
}

impl Section<'_> {
    fn rejected(&self) -> bool {
        self.port_zero && !self.bundle_only
    }
}

/// What the engine needs to know of an offer it will accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OfferSummary {
    /// An application m-line (SCTP data channels) that is not rejected (port 0 without
    /// `a=bundle-only`).
    pub(crate) data_channels: bool,
}

/// Refuses offers the engine cannot serve; see the module documentation.
pub(crate) fn check_offer(sdp: &str) -> Result<OfferSummary, SdpError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(SdpError::Invalid(format!(
            "longer than {MAX_SDP_LEN} bytes"
        )));
    }
    let mut sections: Vec<Section<'_>> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("m=") {
            let mut fields = rest.split_ascii_whitespace();
            let kind = fields.next().unwrap_or("");
            let port_zero = fields.next() == Some("0");
            sections.push(Section {
                kind,
                port_zero,
                bundle_only: false,
                supported: false,
            });
            if sections.len() > MAX_MEDIA_SECTIONS {
                return Err(SdpError::Invalid(format!(
                    "more than {MAX_MEDIA_SECTIONS} media sections"
                )));
            }
        } else if line == "a=bundle-only" {
            if let Some(section) = sections.last_mut() {
                section.bundle_only = true;
            }
        } else if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            let codec = rest
                .split_ascii_whitespace()
                .nth(1)
                .and_then(|enc| enc.split('/').next())
                .unwrap_or("");
            if let Some(section) = sections.last_mut()
                && FORWARDED_CODECS
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(codec))
            {
                section.supported = true;
            }
        }
    }
    if sections.is_empty() {
        return Err(SdpError::NoMedia);
    }
    for (index, s) in sections.iter().enumerate() {
        let media = s.kind == "audio" || s.kind == "video";
        if media && !s.rejected() && !s.supported {
            return Err(SdpError::UnsupportedCodecs {
                index,
                kind: s.kind.to_string(),
            });
        }
    }
    let data_channels = sections
        .iter()
        .any(|s| s.kind == "application" && !s.rejected());
    Ok(OfferSummary { data_channels })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
    const NO_DATA: OfferSummary = OfferSummary {
        data_channels: false,
    };

    #[test]
    fn no_media_section_is_refused() {
        assert_eq!(check_offer(HEADER), Err(SdpError::NoMedia));
        assert_eq!(check_offer(""), Err(SdpError::NoMedia));
    }

    #[test]
    fn bundle_only_sections_count_as_present() {
        // Firefox with max-bundle: later m-lines have port 0 and a=bundle-only.
        let sdp = format!(
            "{HEADER}m=audio 9 UDP/TLS/RTP/SAVPF 109\r\na=rtpmap:109 opus/48000/2\r\n\
             m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\na=bundle-only\r\n"
        );
        assert_eq!(
            check_offer(&sdp),
            Ok(OfferSummary {
                data_channels: true
            })
        );
        let sdp = format!(
            "{HEADER}m=audio 9 UDP/TLS/RTP/SAVPF 109\r\na=rtpmap:109 opus/48000/2\r\n\
             m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=bundle-only\r\na=rtpmap:96 FOO/90000\r\n"
        );
        assert!(matches!(
            check_offer(&sdp),
            Err(SdpError::UnsupportedCodecs { index: 1, .. })
        ));
        // Port 0 alone is a rejected section: no data channels.
        let sdp = format!(
            "{HEADER}m=audio 9 UDP/TLS/RTP/SAVPF 109\r\na=rtpmap:109 opus/48000/2\r\n\
             m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        );
        assert_eq!(check_offer(&sdp), Ok(NO_DATA));
    }

    #[test]
    fn supported_codecs_pass() {
        let sdp = format!(
            "{HEADER}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n"
        );
        assert_eq!(check_offer(&sdp), Ok(NO_DATA));
    }

    #[test]
    fn data_channel_only_passes() {
        let sdp = format!("{HEADER}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n");
        assert_eq!(
            check_offer(&sdp),
            Ok(OfferSummary {
                data_channels: true
            })
        );
        let rejected = format!("{HEADER}m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n");
        assert_eq!(check_offer(&rejected), Ok(NO_DATA));
    }

    #[test]
    fn unsupported_codecs_are_refused() {
        let sdp = format!(
            "{HEADER}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 98\r\na=rtpmap:98 theora/90000\r\n"
        );
        assert_eq!(
            check_offer(&sdp),
            Err(SdpError::UnsupportedCodecs {
                index: 1,
                kind: "video".into()
            })
        );
    }

    #[test]
    fn rejected_m_line_is_ignored() {
        let sdp = format!(
            "{HEADER}m=video 0 UDP/TLS/RTP/SAVPF 98\r\na=rtpmap:98 theora/90000\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
        );
        assert_eq!(check_offer(&sdp), Ok(NO_DATA));
    }

    #[test]
    fn oversized_offer_is_refused() {
        let sdp = "a".repeat(MAX_SDP_LEN + 1);
        assert!(matches!(check_offer(&sdp), Err(SdpError::Invalid(_))));
    }
}
