//! Parsing of a `commsNotifications` batch into typed notifications.

use crate::models::{Call, ChangeType, CommsOperation, ContentSharingSession, Extra, Participant};
use serde_json::Value;

/// Most notifications accepted in one batch.
pub const MAX_NOTIFICATIONS_PER_BATCH: usize = 1000;

/// Why a notification body was refused (answer 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotificationError {
    /// Not JSON, or not the `commsNotifications` shape.
    #[error("malformed notification body: {0}")]
    Malformed(String),
    /// More than [`MAX_NOTIFICATIONS_PER_BATCH`] items.
    #[error("too many notifications in one batch")]
    TooMany,
}

/// What a notification is about, decided from its `resourceUrl` (and `@odata.type`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Resource {
    /// `/communications/calls/{id}`.
    Call(Box<Call>),
    /// `/communications/calls/{id}/participants[/{id}]`: one or more roster entries.
    Participants(Vec<Participant>),
    /// `/communications/calls/{id}/operations/{id}`.
    Operation(Box<CommsOperation>),
    /// `/communications/calls/{id}/contentsharingsessions`.
    ContentSharingSessions(Vec<ContentSharingSession>),
    /// Anything else, kept raw.
    Unknown(Value),
}

/// One `commsNotification`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// `created`, `updated` or `deleted`.
    pub change_type: ChangeType,
    /// `resourceUrl` (or the legacy `resource`).
    pub resource_url: String,
    /// The typed `resourceData`.
    pub resource: Resource,
    /// The notification's other properties (`callbackUri`, `@odata.type`, ...).
    pub extra: Extra,
}

impl Notification {
    /// The call id named by `resourceUrl`.
    pub fn call_id(&self) -> Option<&str> {
        call_segments(&self.resource_url).and_then(|s| s.first().copied())
    }
}

/// Splits `/communications/calls/{id}/...` (or legacy `/app/calls/...`) after `calls/`.
fn call_segments(url: &str) -> Option<Vec<&str>> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let pos = segs.iter().position(|s| s.eq_ignore_ascii_case("calls"))?;
    let rest = segs[pos + 1..].to_vec();
    if rest.is_empty() { None } else { Some(rest) }
}

/// Parses a `commsNotifications` body. Call only after the token was verified.
///
/// # Errors
/// [`NotificationError`] for malformed JSON, wrong types, missing `changeType`/`resourceUrl`,
/// or too many items.
pub fn parse_notifications(body: &[u8]) -> Result<Vec<Notification>, NotificationError> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| NotificationError::Malformed(e.to_string()))?;
    let items = match root {
        Value::Object(mut m) => match m.remove("value") {
            Some(Value::Array(a)) => a,
            _ => return Err(NotificationError::Malformed("missing value array".into())),
        },
        _ => return Err(NotificationError::Malformed("body is not an object".into())),
    };
    if items.len() > MAX_NOTIFICATIONS_PER_BATCH {
        return Err(NotificationError::TooMany);
    }
    items.into_iter().map(parse_one).collect()
}

fn parse_one(item: Value) -> Result<Notification, NotificationError> {
    let Value::Object(mut m) = item else {
        return Err(NotificationError::Malformed(
            "notification is not an object".into(),
        ));
    };
    let change_type = match m.remove("changeType") {
        Some(Value::String(s)) => ChangeType::from_wire(&s),
        _ => return Err(NotificationError::Malformed("changeType missing".into())),
    };
    let resource_url = match m
        .remove("resourceUrl")
        .or_else(|| m.get("resource").cloned())
    {
        Some(Value::String(s)) => s,
        _ => return Err(NotificationError::Malformed("resourceUrl missing".into())),
    };
    let data = m.remove("resourceData").unwrap_or(Value::Null);
    let resource = classify(&resource_url, data)?;
    Ok(Notification {
        change_type,
        resource_url,
        resource,
        extra: m,
    })
}

fn classify(url: &str, data: Value) -> Result<Resource, NotificationError> {
    let bad =
        |what: &str, e: serde_json::Error| NotificationError::Malformed(format!("{what}: {e}"));
    let segs = call_segments(url).unwrap_or_default();
    let kind = segs.get(1).map(|s| s.to_ascii_lowercase());
    match (segs.len(), kind.as_deref()) {
        (1, _) if data.is_object() => Ok(Resource::Call(Box::new(
            serde_json::from_value(data).map_err(|e| bad("call", e))?,
        ))),
        (_, Some("participants")) => {
            let list = match data {
                Value::Array(_) => serde_json::from_value(data),
                Value::Object(_) => serde_json::from_value(data).map(|p| vec![p]),
                _ => {
                    return Err(NotificationError::Malformed(
                        "participants data missing".into(),
                    ));
                }
            };
            Ok(Resource::Participants(
                list.map_err(|e| bad("participants", e))?,
            ))
        }
        (3, Some("operations")) if data.is_object() => Ok(Resource::Operation(Box::new(
            serde_json::from_value(data).map_err(|e| bad("operation", e))?,
        ))),
        (_, Some("contentsharingsessions")) => {
            let list = match data {
                Value::Array(_) => serde_json::from_value(data),
                Value::Object(_) => serde_json::from_value(data).map(|p| vec![p]),
                _ => Ok(Vec::new()),
            };
            Ok(Resource::ContentSharingSessions(
                list.map_err(|e| bad("sessions", e))?,
            ))
        }
        _ => Ok(Resource::Unknown(data)),
    }
}
