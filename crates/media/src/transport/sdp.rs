//! A small, strict look at a WHIP offer before it reaches the WebRTC stack: is it SDP at all,
//! does it carry audio, does it offer Opus/48000/2, and which payload types and header
//! extension ids did the sender pick (the answer keeps the offer's numbers).

/// RFC 6464 client-to-mixer audio level extension URI.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// Largest offer accepted, in bytes (the WHIP layer also bounds the HTTP body).
pub const MAX_OFFER_LEN: usize = 64 * 1024;

/// Most `m=` sections accepted in one offer.
pub const MAX_MEDIA_SECTIONS: usize = 16;

/// Most `a=fingerprint` values kept from one offer (further ones are ignored).
pub const MAX_FINGERPRINTS: usize = 8;

/// What the offer says about audio.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OfferAudio {
    /// Number of `m=audio` sections that offer Opus.
    pub audio_sections: usize,
    /// Opus payload type (of the first audio section offering it).
    pub opus_payload_type: u8,
    /// `telephone-event/48000` payload type, if offered.
    pub telephone_event_payload_type: Option<u8>,
    /// RFC 6464 audio-level extension id, if offered.
    pub audio_level_id: Option<u8>,
    /// The offer's ICE username fragment (session or first media level).
    pub ice_ufrag: Option<String>,
    /// Whether the offer carries a DTLS fingerprint (it must, or there is no DTLS-SRTP).
    pub has_fingerprint: bool,
    /// The offer's DTLS certificate fingerprints (`a=fingerprint:<hash> <hex>`, session or
    /// media level), as (hash function in lower case, hex value in lower case); at most
    /// [`MAX_FINGERPRINTS`]. The peer's certificate must match one of them.
    pub fingerprints: Vec<(String, String)>,
    /// The offer's DTLS role (`a=setup:` value in lower case: `actpass`, `active`, `passive`),
    /// from its first such line.
    pub dtls_setup: Option<String>,
    /// Whether the first Opus section lets us send audio back (`sendrecv` or `recvonly`): then
    /// the bot gets a playback stream.
    pub wants_audio_back: bool,
}

/// Per-`m=` state while scanning.
#[derive(Default)]
struct Section {
    opus: Option<u8>,
    tel: Option<u8>,
    level: Option<u8>,
    /// `a=sendonly` / `a=inactive`: the offerer will not receive.
    no_receive: bool,
}

/// Why an offer was refused before negotiation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// Not SDP (no `v=0`, not UTF-8, bad line).
    #[error("malformed sdp: {0}")]
    Malformed(&'static str),
    /// Too large or too many sections.
    #[error("offer too large")]
    TooLarge,
    /// No `m=audio` section.
    #[error("offer has no audio")]
    NoAudio,
    /// Audio offered, but not Opus/48000/2.
    #[error("no common audio codec (need opus/48000/2)")]
    NoCommonCodec,
    /// No `a=fingerprint`, so DTLS-SRTP cannot be verified.
    #[error("offer has no dtls fingerprint")]
    NoFingerprint,
}

/// Inspects an offer.
///
/// # Errors
/// [`OfferError`] when the offer is malformed, too large, has no audio, no Opus/48000/2, or no
/// DTLS fingerprint.
pub fn inspect_offer(sdp: &str) -> Result<OfferAudio, OfferError> {
    if sdp.len() > MAX_OFFER_LEN {
        return Err(OfferError::TooLarge);
    }
    let mut lines = sdp.lines().map(|l| l.trim_end_matches('\r'));
    if lines.next() != Some("v=0") {
        return Err(OfferError::Malformed("first line is not v=0"));
    }
    let mut out = OfferAudio::default();
    let mut sections = 0usize;
    let mut any_audio = false;
    // State of the current m= section.
    let mut in_audio = false;
    let mut sec = Section::default();
    let finish = |out: &mut OfferAudio, in_audio: bool, sec: &Section| {
        if in_audio && let Some(pt) = sec.opus {
            if out.audio_sections == 0 {
                out.opus_payload_type = pt;
                out.telephone_event_payload_type = sec.tel;
                out.audio_level_id = sec.level;
                out.wants_audio_back = !sec.no_receive;
            }
            out.audio_sections += 1;
        }
    };
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let bytes = line.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
            return Err(OfferError::Malformed("line is not <letter>=<value>"));
        }
        let value = &line[2..];
        match bytes[0] {
            b'm' => {
                finish(&mut out, in_audio, &sec);
                sections += 1;
                if sections > MAX_MEDIA_SECTIONS {
                    return Err(OfferError::TooLarge);
                }
                let mut parts = value.split(' ');
                let kind = parts.next().unwrap_or_default();
                let port = parts.next().unwrap_or_default();
                if parts.next().is_none() || port.parse::<u16>().is_err() {
                    return Err(OfferError::Malformed("bad m= line"));
                }
                // A zero port is a rejected/disabled section.
                in_audio = kind == "audio" && port != "0";
                any_audio |= kind == "audio";
                sec = Section::default();
            }
            b'a' => {
                if let Some(rest) = value.strip_prefix("rtpmap:") {
                    let Some((pt, codec)) = rest.split_once(' ') else {
                        return Err(OfferError::Malformed("bad rtpmap"));
                    };
                    let pt: u8 = pt
                        .parse()
                        .map_err(|_| OfferError::Malformed("bad rtpmap pt"))?;
                    let codec = codec.to_ascii_lowercase();
                    if codec == "opus/48000/2" && sec.opus.is_none() {
                        sec.opus = Some(pt);
                    } else if codec == "telephone-event/48000" && sec.tel.is_none() {
                        sec.tel = Some(pt);
                    }
                } else if let Some(rest) = value.strip_prefix("extmap:") {
                    let Some((id, uri)) = rest.split_once(' ') else {
                        return Err(OfferError::Malformed("bad extmap"));
                    };
                    let id = id.split('/').next().unwrap_or_default();
                    let id: u8 = id
                        .parse()
                        .map_err(|_| OfferError::Malformed("bad extmap id"))?;
                    if uri.split(' ').next() == Some(AUDIO_LEVEL_URI) && (1..=14).contains(&id) {
                        sec.level = Some(id);
                    }
                } else if let Some(ufrag) = value.strip_prefix("ice-ufrag:") {
                    if out.ice_ufrag.is_none() {
                        out.ice_ufrag = Some(ufrag.trim().to_owned());
                    }
                } else if let Some(setup) = value.strip_prefix("setup:") {
                    if out.dtls_setup.is_none() {
                        out.dtls_setup = Some(setup.trim().to_ascii_lowercase());
                    }
                } else if value == "sendonly" || value == "inactive" {
                    sec.no_receive = true;
                } else if let Some(rest) = value.strip_prefix("fingerprint:") {
                    out.has_fingerprint = true;
                    if let Some((hash, hex)) = rest.trim().split_once(' ')
                        && out.fingerprints.len() < MAX_FINGERPRINTS
                    {
                        let fp = (hash.to_ascii_lowercase(), hex.trim().to_ascii_lowercase());
                        if !out.fingerprints.contains(&fp) {
                            out.fingerprints.push(fp);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    finish(&mut out, in_audio, &sec);
    if !any_audio {
        return Err(OfferError::NoAudio);
    }
    if out.audio_sections == 0 {
        return Err(OfferError::NoCommonCodec);
    }
    if !out.has_fingerprint {
        return Err(OfferError::NoFingerprint);
    }
    Ok(out)
}

/// Completes our (non-trickle, ICE-lite) answer for WHIP peers: every `m=` section carries the
/// RTP candidates and `a=end-of-candidates` (some stacks, e.g. aiortc, wait for more candidates
/// without it), and RTCP-component candidates are dropped (we require rtcp-mux).
pub fn finish_answer(sdp: &str) -> String {
    let is_candidate = |l: &str| l.starts_with("a=candidate:");
    let rtp_candidate = |l: &str| is_candidate(l) && l.split(' ').nth(1) == Some("1");
    let candidates: Vec<&str> = sdp
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| rtp_candidate(l))
        .collect();
    let mut out = String::with_capacity(sdp.len() + 256);
    let mut in_media = false;
    let close_section = |out: &mut String| {
        for c in &candidates {
            out.push_str(c);
            out.push_str("\r\n");
        }
        out.push_str("a=end-of-candidates\r\n");
    };
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() || is_candidate(line) || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("m=") {
            if in_media {
                close_section(&mut out);
            }
            in_media = true;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if in_media {
        close_section(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=fingerprint:sha-256 AA:BB\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 101\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/48000\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=sendonly\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";

    #[test]
    fn reads_audio_parameters() {
        let a = inspect_offer(OFFER).unwrap();
        assert_eq!(a.audio_sections, 2);
        assert_eq!(a.opus_payload_type, 111);
        assert_eq!(a.telephone_event_payload_type, Some(101));
        assert_eq!(a.audio_level_id, Some(1));
        assert_eq!(a.ice_ufrag.as_deref(), Some("abcd"));
        assert!(!a.wants_audio_back, "first section is sendonly");
        assert_eq!(a.fingerprints, vec![("sha-256".into(), "aa:bb".into())]);
        assert_eq!(a.dtls_setup, None);
        let actpass = OFFER.replacen("a=sendonly\r\n", "a=setup:ACTPASS\r\n", 1);
        assert_eq!(
            inspect_offer(&actpass).unwrap().dtls_setup.as_deref(),
            Some("actpass")
        );
        let sendrecv = OFFER.replacen("a=sendonly\r\n", "", 1);
        assert!(inspect_offer(&sendrecv).unwrap().wants_audio_back);
    }

    #[test]
    fn rejects_bad_offers() {
        assert_eq!(
            inspect_offer("hello"),
            Err(OfferError::Malformed("first line is not v=0"))
        );
        assert!(matches!(
            inspect_offer("v=0\r\nnonsense\r\n"),
            Err(OfferError::Malformed(_))
        ));
        let video =
            "v=0\r\na=fingerprint:x\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(inspect_offer(video), Err(OfferError::NoAudio));
        let pcmu =
            "v=0\r\na=fingerprint:x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n";
        assert_eq!(inspect_offer(pcmu), Err(OfferError::NoCommonCodec));
        let nofp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(inspect_offer(nofp), Err(OfferError::NoFingerprint));
        let many = format!("v=0\r\n{}", "m=audio 9 X 111\r\n".repeat(20));
        assert_eq!(inspect_offer(&many), Err(OfferError::TooLarge));
        assert_eq!(
            inspect_offer(&"x".repeat(MAX_OFFER_LEN + 1)),
            Err(OfferError::TooLarge)
        );
    }

    #[test]
    fn answer_gets_candidates_everywhere() {
        let a = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\na=candidate:1 1 udp 5 1.2.3.4 5 typ host\r\n\
a=candidate:1 2 udp 5 1.2.3.4 5 typ host\r\nm=audio 9 X 111\r\na=mid:1\r\n";
        let f = finish_answer(a);
        assert_eq!(f.matches("a=candidate:1 1 udp").count(), 2);
        assert_eq!(f.matches("a=candidate:1 2 udp").count(), 0);
        assert_eq!(f.matches("a=end-of-candidates").count(), 2);
        assert!(f.starts_with("v=0\r\nm=audio"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,400}") {
            let _ = inspect_offer(&s);
        }
    }
}
