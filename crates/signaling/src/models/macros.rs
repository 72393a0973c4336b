//! Macros that generate forward-compatible Graph enums and `@odata.type` dispatch.

/// Declares a Graph string enum that parses case-insensitively and keeps unknown values.
macro_rules! graph_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this crate does not know; kept verbatim so it round-trips.
            Unknown(String),
        }

        impl $name {
            /// The wire spelling of this value (camelCase as Graph documents it).
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )+
                    Self::Unknown(s) => s.as_str(),
                }
            }

            /// Parses a wire value, ignoring ASCII case; unknown values become `Unknown`.
            pub fn from_wire(s: &str) -> Self {
                $( if s.eq_ignore_ascii_case($wire) { return Self::$variant; } )+
                Self::Unknown(s.to_owned())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                Ok(Self::from_wire(&s))
            }
        }
    };
}

/// Declares an abstract Graph type whose concrete subtype is chosen by `@odata.type`.
///
/// Deserialization reads the discriminator (with or without `#`, with or without the
/// `microsoft.graph.` namespace, any case); when it is absent, `$guess` may infer the
/// subtype from the properties present. Unknown subtypes are kept whole in `Unknown`.
/// Serialization always writes the canonical `#microsoft.graph.<name>` discriminator.
macro_rules! polymorphic {
    (
        $(#[$meta:meta])*
        $name:ident, guess = $guess:expr, {
            $( $(#[$vmeta:meta])* $variant:ident($ty:ty) = $odata:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        #[allow(clippy::large_enum_variant)] // identity sets are big but short-lived
        pub enum $name {
            $( $(#[$vmeta])* $variant($ty), )+
            /// A subtype this crate does not know; the whole object is kept so it round-trips.
            Unknown(serde_json::Map<String, serde_json::Value>),
        }

        impl $name {
            /// The canonical `@odata.type` of this value, if it is a known subtype.
            pub fn odata_type(&self) -> Option<&'static str> {
                match self {
                    $( Self::$variant(_) => Some(concat!("#microsoft.graph.", $odata)), )+
                    Self::Unknown(_) => None,
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::Error as _;
                match self {
                    $( Self::$variant(v) => {
                        let mut map = match serde_json::to_value(v).map_err(S::Error::custom)? {
                            serde_json::Value::Object(m) => m,
                            _ => return Err(S::Error::custom("polymorphic variant is not an object")),
                        };
                        map.insert(
                            "@odata.type".to_owned(),
                            serde_json::Value::String(concat!("#microsoft.graph.", $odata).to_owned()),
                        );
                        map.serialize(s)
                    } )+
                    Self::Unknown(m) => m.serialize(s),
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::Error as _;
                let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
                let declared = map
                    .get("@odata.type")
                    .and_then(|v| v.as_str())
                    .map($crate::models::short_odata_type);
                let guess: fn(&serde_json::Map<String, serde_json::Value>) -> Option<&'static str> = $guess;
                let chosen: Option<String> = match declared {
                    Some(t) => Some(t),
                    None => guess(&map).map(str::to_owned),
                };
                let Some(chosen) = chosen else { return Ok(Self::Unknown(map)); };
                $(
                    if chosen.eq_ignore_ascii_case($odata) {
                        map.remove("@odata.type");
                        return serde_json::from_value::<$ty>(serde_json::Value::Object(map))
                            .map(Self::$variant)
                            .map_err(D::Error::custom);
                    }
                )+
                Ok(Self::Unknown(map))
            }
        }
    };
}
