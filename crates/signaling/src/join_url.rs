//! Teams meeting join URLs → the `chatInfo` + `meetingInfo` Graph expects when joining.
//!
//! Two shapes are understood:
//! - the classic link `https://teams.microsoft.com/l/meetup-join/{threadId}/{messageId}?context={"Tid":..,"Oid":..}`
//!   → `chatInfo{threadId, messageId, replyChainMessageId?}` + `organizerMeetingInfo` whose
//!   organizer user carries `id = Oid` and `tenantId = Tid`;
//! - the short link `https://teams.microsoft.com/meet/{joinMeetingId}?p={passcode}`
//!   → `joinMeetingIdMeetingInfo`.
//!
//! The host is not checked (government clouds and `teams.live.com` use other hosts); the path
//! shape is. Input is bounded to [`MAX_JOIN_URL_LEN`] bytes.

use crate::models::{
    ChatInfo, Extra, Identity, IdentitySet, JoinMeetingIdMeetingInfo, MeetingInfo,
    OrganizerMeetingInfo,
};

/// Longest join URL accepted.
pub const MAX_JOIN_URL_LEN: usize = 8 * 1024;

/// What a join URL tells: enough to build a "join meeting" call body.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinInfo {
    /// The meeting chat (empty for short links).
    pub chat_info: ChatInfo,
    /// The meeting (organizer or join meeting id).
    pub meeting_info: MeetingInfo,
    /// Tenant of the organizer (`Tid`), when the URL names it.
    pub tenant_id: Option<String>,
}

/// Why a join URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinUrlError {
    /// Longer than [`MAX_JOIN_URL_LEN`].
    #[error("join url is longer than {MAX_JOIN_URL_LEN} bytes")]
    TooLong,
    /// Not an absolute http(s) URL.
    #[error("not an http(s) url")]
    NotAUrl,
    /// The path is neither `/l/meetup-join/...` nor `/meet/...`.
    #[error("not a teams meeting join url")]
    NotAMeetingUrl,
    /// The thread id segment is missing or not decodable.
    #[error("join url has no thread id")]
    MissingThread,
    /// The `context` query parameter is missing.
    #[error("join url has no context parameter")]
    MissingContext,
    /// The `context` parameter is not a JSON object.
    #[error("join url context is not a json object")]
    BadContext,
    /// The context names no organizer (`Oid`).
    #[error("join url context has no organizer id (Oid)")]
    MissingOrganizer,
}

/// Parses a Teams meeting join URL.
///
/// # Errors
/// [`JoinUrlError`] says which part of the URL is missing or malformed.
pub fn parse_join_url(input: &str) -> Result<JoinInfo, JoinUrlError> {
    if input.len() > MAX_JOIN_URL_LEN {
        return Err(JoinUrlError::TooLong);
    }
    let url = url::Url::parse(input.trim()).map_err(|_| JoinUrlError::NotAUrl)?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(JoinUrlError::NotAUrl);
    }
    let segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();

    if let Some(pos) = lower.iter().position(|s| s == "meetup-join") {
        return parse_meetup_join(&url, &segments[pos + 1..]);
    }
    if lower.first().map(String::as_str) == Some("meet") {
        let id = segments
            .get(1)
            .and_then(|s| percent_decode(s))
            .filter(|s| !s.is_empty())
            .ok_or(JoinUrlError::NotAMeetingUrl)?;
        let passcode = url
            .query_pairs()
            .find(|(k, _)| k.eq_ignore_ascii_case("p"))
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty());
        return Ok(JoinInfo {
            chat_info: ChatInfo::default(),
            meeting_info: MeetingInfo::JoinMeetingId(JoinMeetingIdMeetingInfo {
                join_meeting_id: Some(id),
                passcode,
                extra: Extra::new(),
            }),
            tenant_id: None,
        });
    }
    Err(JoinUrlError::NotAMeetingUrl)
}

fn parse_meetup_join(url: &url::Url, rest: &[&str]) -> Result<JoinInfo, JoinUrlError> {
    let thread_id = rest
        .first()
        .and_then(|s| percent_decode(s))
        .filter(|s| !s.is_empty())
        .ok_or(JoinUrlError::MissingThread)?;
    let message_id = rest
        .get(1)
        .and_then(|s| percent_decode(s))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "0".to_owned());
    let context = url
        .query_pairs()
        .find(|(k, _)| k.eq_ignore_ascii_case("context"))
        .map(|(_, v)| v.into_owned())
        .ok_or(JoinUrlError::MissingContext)?;
    let ctx: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&context).map_err(|_| JoinUrlError::BadContext)?;
    let field = |name: &str| {
        ctx.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let organizer = field("Oid").ok_or(JoinUrlError::MissingOrganizer)?;
    let tenant = field("Tid");
    let reply_chain = field("MessageId");

    let mut user = Identity::new(organizer, None);
    user.tenant_id = tenant.clone();
    Ok(JoinInfo {
        chat_info: ChatInfo {
            thread_id: Some(thread_id),
            message_id: Some(message_id),
            reply_chain_message_id: reply_chain,
            extra: Extra::new(),
        },
        meeting_info: MeetingInfo::Organizer(OrganizerMeetingInfo {
            organizer: Some(IdentitySet {
                user: Some(user),
                ..IdentitySet::default()
            }),
            extra: Extra::new(),
        }),
        tenant_id: tenant,
    })
}

/// Decodes `%XX` escapes (UTF-8); `None` on a malformed escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CLASSIC: &str = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_NTg0NmQ3NTct%40thread.v2/0?context=%7b%22Tid%22%3a%2272f988bf-86f1-41af-91ab-2d7cd011db47%22%2c%22Oid%22%3a%22550fae72-d251-43ec-868c-373732c2704f%22%7d";

    #[test]
    fn classic_link_gives_chat_info_and_organizer() {
        let info = parse_join_url(CLASSIC).unwrap();
        assert_eq!(
            info.chat_info.thread_id.as_deref(),
            Some("19:meeting_NTg0NmQ3NTct@thread.v2")
        );
        assert_eq!(info.chat_info.message_id.as_deref(), Some("0"));
        assert_eq!(
            info.tenant_id.as_deref(),
            Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
        );
        let MeetingInfo::Organizer(org) = &info.meeting_info else {
            panic!("organizer")
        };
        let user = org.organizer.as_ref().unwrap().user.as_ref().unwrap();
        assert_eq!(
            user.id.as_deref(),
            Some("550fae72-d251-43ec-868c-373732c2704f")
        );
        assert_eq!(
            user.tenant_id.as_deref(),
            Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
        );
        let json = serde_json::to_value(&info.meeting_info).unwrap();
        assert_eq!(json["@odata.type"], "#microsoft.graph.organizerMeetingInfo");
        assert_eq!(
            json["organizer"]["user"]["tenantId"],
            "72f988bf-86f1-41af-91ab-2d7cd011db47"
        );
    }

    #[test]
    fn reply_chain_message_id_comes_from_context() {
        let url = "https://teams.microsoft.com/l/meetup-join/19%3aabc%40thread.tacv2/1600000000000?context=%7b%22Tid%22%3a%22t%22%2c%22Oid%22%3a%22o%22%2c%22MessageId%22%3a%22159%22%7d";
        let info = parse_join_url(url).unwrap();
        assert_eq!(info.chat_info.message_id.as_deref(), Some("1600000000000"));
        assert_eq!(
            info.chat_info.reply_chain_message_id.as_deref(),
            Some("159")
        );
    }

    #[test]
    fn short_link_gives_join_meeting_id() {
        let info =
            parse_join_url("https://teams.microsoft.com/meet/2345678901234?p=AbCdEf").unwrap();
        let MeetingInfo::JoinMeetingId(m) = &info.meeting_info else {
            panic!("join id")
        };
        assert_eq!(m.join_meeting_id.as_deref(), Some("2345678901234"));
        assert_eq!(m.passcode.as_deref(), Some("AbCdEf"));
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        assert_eq!(parse_join_url("not a url"), Err(JoinUrlError::NotAUrl));
        assert_eq!(
            parse_join_url("ftp://x/l/meetup-join/a/0"),
            Err(JoinUrlError::NotAUrl)
        );
        assert_eq!(
            parse_join_url("https://teams.microsoft.com/l/chat/0"),
            Err(JoinUrlError::NotAMeetingUrl)
        );
        assert_eq!(
            parse_join_url("https://teams.microsoft.com/l/meetup-join/19%3aabc%40thread.v2/0"),
            Err(JoinUrlError::MissingContext)
        );
        assert_eq!(
            parse_join_url("https://teams.microsoft.com/l/meetup-join/19%3aabc/0?context=nope"),
            Err(JoinUrlError::BadContext)
        );
        assert_eq!(
            parse_join_url(
                "https://teams.microsoft.com/l/meetup-join/19%3aabc/0?context=%7b%22Tid%22%3a%22t%22%7d"
            ),
            Err(JoinUrlError::MissingOrganizer)
        );
        assert_eq!(
            parse_join_url("https://teams.microsoft.com/l/meetup-join/%ZZ/0?context=%7b%7d"),
            Err(JoinUrlError::MissingThread)
        );
        let long = format!("https://x/{}", "a".repeat(MAX_JOIN_URL_LEN));
        assert_eq!(parse_join_url(&long), Err(JoinUrlError::TooLong));
    }
}
