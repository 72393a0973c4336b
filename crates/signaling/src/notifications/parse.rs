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
/// Two passes over the bytes, no intermediate tree: the first reads only each item's
/// `resourceUrl` (everything else is skipped without allocating), the second deserializes
/// each item's `resourceData` straight into the type its URL names. Building a
/// `serde_json::Value` of the whole batch first and converting it afterwards cost about as
/// much again as the typed parse, on every notification.
///
/// # Errors
/// [`NotificationError`] for malformed JSON, wrong types, missing `changeType`/`resourceUrl`,
/// or too many items.
pub fn parse_notifications(body: &[u8]) -> Result<Vec<Notification>, NotificationError> {
    let malformed = |e: serde_json::Error| NotificationError::Malformed(e.to_string());
    let heads: Envelope = serde_json::from_slice(body).map_err(malformed)?;
    let Some(heads) = heads.value else {
        return Err(NotificationError::Malformed("missing value array".into()));
    };
    if heads.len() > MAX_NOTIFICATIONS_PER_BATCH {
        return Err(NotificationError::TooMany);
    }
    let kinds: Vec<Kind> = heads
        .iter()
        .map(|h| Kind::of(h.resource_url.as_deref().or(h.resource.as_deref())))
        .collect();
    let mut de = serde_json::Deserializer::from_slice(body);
    let items = serde::de::DeserializeSeed::deserialize(EnvelopeSeed(&kinds), &mut de)
        .map_err(malformed)?;
    de.end().map_err(malformed)?;
    items.into_iter().map(finish_one).collect()
}

/// Pass one: the batch's shape and each item's URL.
#[derive(serde::Deserialize)]
struct Envelope {
    value: Option<Vec<Head>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default, deserialize_with = "string_or_none")]
    resource_url: Option<String>,
    #[serde(default, deserialize_with = "string_or_none")]
    resource: Option<String>,
}

/// A string, or `None` for any other JSON value (which pass two reports properly).
fn string_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match <serde_json::Value as serde::Deserialize>::deserialize(d)? {
        Value::String(s) => Ok(Some(s)),
        _ => Ok(None),
    }
}

/// What an item's `resourceUrl` names (the rules [`classify`] used on a parsed tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Call,
    Participants,
    Operation,
    Sessions,
    Other,
}

impl Kind {
    fn of(url: Option<&str>) -> Self {
        let segs = url.and_then(call_segments).unwrap_or_default();
        let kind = segs.get(1).map(|s| s.to_ascii_lowercase());
        match (segs.len(), kind.as_deref()) {
            (1, _) => Self::Call,
            (_, Some("participants")) => Self::Participants,
            (3, Some("operations")) => Self::Operation,
            (_, Some("contentsharingsessions")) => Self::Sessions,
            _ => Self::Other,
        }
    }
}

/// `resourceData` as read in pass two: typed when it has the shape its URL calls for, else
/// the raw value (the rules of [`classify`] then decide).
enum Data {
    Typed(Resource),
    Raw(Value),
}

/// One item after pass two, before its required fields are checked.
struct RawItem {
    change_type: Option<Value>,
    resource_url: Option<Value>,
    data: Option<Data>,
    extra: Extra,
}

fn finish_one(item: RawItem) -> Result<Notification, NotificationError> {
    let change_type = match item.change_type {
        Some(Value::String(s)) => ChangeType::from_wire(&s),
        _ => return Err(NotificationError::Malformed("changeType missing".into())),
    };
    let resource_url = match item
        .resource_url
        .or_else(|| item.extra.get("resource").cloned())
    {
        Some(Value::String(s)) => s,
        _ => return Err(NotificationError::Malformed("resourceUrl missing".into())),
    };
    let resource = match item.data {
        Some(Data::Typed(r)) => r,
        Some(Data::Raw(v)) => classify(&resource_url, v)?,
        None => classify(&resource_url, Value::Null)?,
    };
    Ok(Notification {
        change_type,
        resource_url,
        resource,
        extra: item.extra,
    })
}

struct EnvelopeSeed<'k>(&'k [Kind]);

impl<'de> serde::de::DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Vec<RawItem>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EnvelopeSeed<'_> {
    type Value = Vec<RawItem>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a commsNotifications object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut items = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "value" {
                items = Some(map.next_value_seed(ItemsSeed(self.0))?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        items.ok_or_else(|| serde::de::Error::custom("missing value array"))
    }
}

struct ItemsSeed<'k>(&'k [Kind]);

impl<'de> serde::de::DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = Vec<RawItem>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ItemsSeed<'_> {
    type Value = Vec<RawItem>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of notifications")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(self.0.len());
        for kind in self.0 {
            match seq.next_element_seed(ItemSeed(*kind))? {
                Some(item) => out.push(item),
                None => break,
            }
        }
        // Both passes read the same bytes, so nothing is left; drain defensively anyway.
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(out)
    }
}

struct ItemSeed(Kind);

impl<'de> serde::de::DeserializeSeed<'de> for ItemSeed {
    type Value = RawItem;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ItemSeed {
    type Value = RawItem;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a notification object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut item = RawItem {
            change_type: None,
            resource_url: None,
            data: None,
            extra: Extra::new(),
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "changeType" => item.change_type = Some(map.next_value()?),
                "resourceUrl" => item.resource_url = Some(map.next_value()?),
                "resourceData" => item.data = Some(map.next_value_seed(DataSeed(self.0))?),
                _ => {
                    let v: Value = map.next_value()?;
                    item.extra.insert(key, v);
                }
            }
        }
        Ok(item)
    }
}

struct DataSeed(Kind);

impl<'de> serde::de::DeserializeSeed<'de> for DataSeed {
    type Value = Data;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.0 == Kind::Other {
            return Ok(Data::Raw(serde::Deserialize::deserialize(d)?));
        }
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DataSeed {
    type Value = Data;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("notification resource data")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        use serde::Deserialize as _;
        let de = serde::de::value::MapAccessDeserializer::new(map);
        Ok(match self.0 {
            Kind::Call => Data::Typed(Resource::Call(Box::new(Call::deserialize(de)?))),
            Kind::Participants => {
                Data::Typed(Resource::Participants(vec![Participant::deserialize(de)?]))
            }
            Kind::Operation => Data::Typed(Resource::Operation(Box::new(
                CommsOperation::deserialize(de)?,
            ))),
            Kind::Sessions => Data::Typed(Resource::ContentSharingSessions(vec![
                ContentSharingSession::deserialize(de)?,
            ])),
            Kind::Other => Data::Raw(Value::deserialize(de)?),
        })
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        use serde::Deserialize as _;
        let de = serde::de::value::SeqAccessDeserializer::new(seq);
        Ok(match self.0 {
            Kind::Participants => {
                Data::Typed(Resource::Participants(Vec::<Participant>::deserialize(de)?))
            }
            Kind::Sessions => Data::Typed(Resource::ContentSharingSessions(Vec::<
                ContentSharingSession,
            >::deserialize(
                de
            )?)),
            _ => Data::Raw(Value::deserialize(de)?),
        })
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Data::Raw(Value::Null))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Data::Raw(Value::Bool(v)))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Data::Raw(Value::from(v)))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Data::Raw(Value::from(v)))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Data::Raw(Value::from(v)))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Data::Raw(Value::String(v.to_owned())))
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    /// The former one-tree parse (whole body to `Value`, then each `resourceData` converted):
    /// the two-pass parser must give the same answer.
    fn parse_via_tree(body: &[u8]) -> Result<Vec<Notification>, NotificationError> {
        let root: Value = serde_json::from_slice(body)
            .map_err(|e| NotificationError::Malformed(e.to_string()))?;
        let Some(Value::Array(items)) = root.get("value").cloned() else {
            return Err(NotificationError::Malformed("missing value array".into()));
        };
        items
            .into_iter()
            .map(|item| {
                let Value::Object(mut m) = item else {
                    return Err(NotificationError::Malformed("not an object".into()));
                };
                let change_type = match m.remove("changeType") {
                    Some(Value::String(s)) => ChangeType::from_wire(&s),
                    _ => return Err(NotificationError::Malformed("changeType".into())),
                };
                let resource_url = match m
                    .remove("resourceUrl")
                    .or_else(|| m.get("resource").cloned())
                {
                    Some(Value::String(s)) => s,
                    _ => return Err(NotificationError::Malformed("resourceUrl".into())),
                };
                let data = m.remove("resourceData").unwrap_or(Value::Null);
                let resource = classify(&resource_url, data)?;
                Ok(Notification {
                    change_type,
                    resource_url,
                    resource,
                    extra: m,
                })
            })
            .collect()
    }

    const CALL: &str = "/communications/calls/491f0b00-ffff-4bc9-a43e-b226498ec22a";

    fn participant(i: u32) -> Value {
        json!({
            "@odata.type": "#microsoft.graph.participant",
            "id": format!("p{i}"),
            "info": {"identity": {"user": {"id": format!("u{i}"), "displayName": format!("S {i}")}}},
            "mediaStreams": [{"mediaType": "audio", "sourceId": format!("{}", 100 + i),
                              "direction": "sendReceive", "serverMuted": false}],
            "isMuted": false, "isInLobby": false, "futureProperty": {"x": [1, 2]}
        })
    }

    #[test]
    fn two_passes_match_the_tree_parse() {
        let items = vec![
            // Keys in the order Graph sends them and in sorted order (data before url).
            json!({"@odata.type": "#microsoft.graph.commsNotification", "changeType": "updated",
                   "resourceUrl": format!("{CALL}/participants"),
                   "resourceData": [participant(1), participant(2)]}),
            json!({"resourceData": participant(3), "changeType": "created",
                   "resourceUrl": format!("{CALL}/participants/p3")}),
            json!({"changeType": "updated", "resourceUrl": CALL,
                   "resourceData": {"@odata.type": "#microsoft.graph.call", "state": "established",
                                    "myParticipantId": "p0", "@odata.etag": "W/\"5\""}}),
            json!({"changeType": "deleted", "resourceUrl": format!("{CALL}/operations/op1"),
                   "resourceData": {"@odata.type": "#microsoft.graph.playPromptOperation",
                                    "status": "completed"}}),
            json!({"changeType": "updated", "resourceUrl": format!("{CALL}/contentsharingsessions"),
                   "resourceData": [{"id": "s1"}]}),
            // Legacy `resource` instead of `resourceUrl`, and data of unexpected shapes.
            json!({"changeType": "updated", "resource": CALL, "resourceData": [1, "x"]}),
            json!({"changeType": "updated", "resourceUrl": format!("{CALL}/operations/op2"),
                   "resourceData": "text"}),
            json!({"changeType": "updated", "resourceUrl": format!("{CALL}/contentsharingsessions"),
                   "resourceData": 3}),
            json!({"changeType": "updated", "resourceUrl": "/something/else", "resourceData": {"a": null}}),
            json!({"changeType": "updated", "resourceUrl": CALL}),
        ];
        for item in &items {
            let body =
                json!({"@odata.type": "#microsoft.graph.commsNotifications", "value": [item]})
                    .to_string();
            assert_eq!(
                parse_notifications(body.as_bytes()).unwrap(),
                parse_via_tree(body.as_bytes()).unwrap(),
                "{item}"
            );
        }
        let batch = json!({"value": items, "extra": {"ignored": true}}).to_string();
        let two = parse_notifications(batch.as_bytes()).unwrap();
        assert_eq!(two.len(), items.len());
        assert_eq!(two, parse_via_tree(batch.as_bytes()).unwrap());
        assert!(matches!(&two[0].resource, Resource::Participants(p) if p.len() == 2));
        assert!(matches!(&two[2].resource, Resource::Call(_)));
        assert!(matches!(&two[3].resource, Resource::Operation(_)));
        assert!(matches!(
            &two[5].resource,
            Resource::Unknown(Value::Array(_))
        ));
    }

    #[test]
    fn malformed_batches_are_refused_like_before() {
        let bad: [&[u8]; 9] = [
            b"",
            b"[]",
            b"{}",
            b"{\"value\": 3}",
            b"{\"value\": [3]}",
            b"{\"value\": [{\"resourceUrl\": \"/communications/calls/a\"}]}",
            b"{\"value\": [{\"changeType\": \"updated\"}]}",
            b"{\"value\": [{\"changeType\": \"updated\", \"resourceUrl\": 5, \"resource\": \"/communications/calls/a\"}]}",
            b"{\"value\": [{\"changeType\": \"updated\", \"resourceUrl\": \"/communications/calls/a/participants\", \"resourceData\": 7}]}",
        ];
        for body in bad {
            assert!(
                parse_via_tree(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(
                matches!(
                    parse_notifications(body),
                    Err(NotificationError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let typed_error = json!({"value": [{"changeType": "updated", "resourceUrl": CALL,
                                            "resourceData": {"state": 5}}]})
        .to_string();
        assert!(parse_notifications(typed_error.as_bytes()).is_err());
        let many: Vec<Value> = (0..=MAX_NOTIFICATIONS_PER_BATCH)
            .map(|_| json!({"changeType": "updated", "resourceUrl": CALL}))
            .collect();
        let body = json!({ "value": many }).to_string();
        assert_eq!(
            parse_notifications(body.as_bytes()),
            Err(NotificationError::TooMany)
        );
    }
}
