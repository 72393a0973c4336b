//! Serde types for the Graph v1.0 cloud-communications resources.
//!
//! Forward compatibility is the rule: every object keeps the properties it does not know in
//! an `extra` map (they are written back unchanged), every enum keeps unknown values in an
//! `Unknown` variant, and abstract types dispatch on `@odata.type` with an `Unknown` fallback
//! that keeps the whole object. Nothing here fails because Graph added something.

#[macro_use]
mod macros;
mod call;
mod enums;
mod misc;
mod operation;
mod participant;
mod requests;

pub use call::*;
pub use enums::*;
pub use misc::*;
pub use operation::*;
pub use participant::*;
pub use requests::*;

use serde::{Deserialize, Deserializer};

/// Unknown JSON properties of an open Graph type, kept so that they round-trip.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// Strips `#` and the `microsoft.graph.` namespace from an `@odata.type` value.
pub fn short_odata_type(t: &str) -> String {
    let t = t.trim_start_matches('#');
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("microsoft.graph.") {
        t["microsoft.graph.".len()..].to_owned()
    } else {
        t.to_owned()
    }
}

/// OData may send Int64 as a JSON number or as a string; accept both.
pub(crate) fn de_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error as _;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| D::Error::custom("integer out of range")),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| D::Error::custom("expected an integer")),
        Some(_) => Err(D::Error::custom("expected an integer")),
    }
}

/// A page of a Graph collection (`{"value": [...], "@odata.nextLink": ...}`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(bound(
    deserialize = "T: serde::de::DeserializeOwned",
    serialize = "T: serde::Serialize"
))]
pub struct Collection<T> {
    /// The items of this page.
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    /// The URL of the next page, if any.
    #[serde(
        rename = "@odata.nextLink",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub next_link: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}
