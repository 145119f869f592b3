//! A request's `payload` or a response's `data` as it travels: the JSON text
//! it arrived as, or a parsed value.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// The argument of a request or the result in a response.
///
/// A JSON frame's payload stays the text it arrived as ([`Payload::Raw`],
/// checked to be valid JSON when the frame was decoded) until something
/// needs its structure. A handler taking a typed struct reads it straight
/// from that text; a handler handing it back (`system:echo`) or a relay
/// writes the same text out. No tree of `Value`s is built, written out and
/// freed in between: a tenth of the instructions of a `system:echo`
/// (docs/benchmarks.md). MessagePack frames and values made by the server
/// are [`Payload::Value`].
///
/// ```
/// use helios_protocol::Payload;
/// let p = Payload::from(serde_json::json!({"a": 1}));
/// assert_eq!(p.into_value().unwrap(), serde_json::json!({"a": 1}));
/// ```
#[derive(Debug, Clone)]
pub enum Payload {
    /// JSON text, as it came in.
    Raw(Box<RawValue>),
    /// A parsed value.
    Value(Value),
}

impl Payload {
    /// The payload as a `Value`, parsing raw text.
    ///
    /// # Errors
    /// Raw text that `Value` cannot hold: nested deeper than serde_json's
    /// recursion limit.
    pub fn into_value(self) -> serde_json::Result<Value> {
        match self {
            Self::Value(v) => Ok(v),
            Self::Raw(raw) => serde_json::from_str(raw.get()),
        }
    }

    /// The payload as a `T`, read straight from raw text (no `Value` in
    /// between).
    ///
    /// # Errors
    /// The payload does not fit `T`.
    pub fn deserialize_into<T: DeserializeOwned>(self) -> serde_json::Result<T> {
        match self {
            Self::Value(v) => serde_json::from_value(v),
            Self::Raw(raw) => serde_json::from_str(raw.get()),
        }
    }
}

impl Default for Payload {
    fn default() -> Self {
        Self::Value(Value::Null)
    }
}

impl From<Value> for Payload {
    fn from(v: Value) -> Self {
        Self::Value(v)
    }
}

impl From<Box<RawValue>> for Payload {
    fn from(raw: Box<RawValue>) -> Self {
        Self::Raw(raw)
    }
}

/// Equal when they hold the same JSON value, however written.
impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Value(a), Self::Value(b)) => a == b,
            (Self::Raw(a), Self::Raw(b)) if a.get() == b.get() => true,
            _ => self.clone().into_value().ok() == other.clone().into_value().ok(),
        }
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        match self {
            Self::Value(v) => v == other,
            Self::Raw(_) => self.clone().into_value().ok().as_ref() == Some(other),
        }
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(v) => v.serialize(serializer),
            // serde_json's serializers (to text and to `Value`), the
            // human-readable ones here, write raw text as it is; a binary
            // format (MessagePack) gets the parsed value.
            Self::Raw(raw) if serializer.is_human_readable() => raw.serialize(serializer),
            Self::Raw(raw) => serde_json::from_str::<Value>(raw.get())
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // serde_json (the human-readable format here) can keep the text;
        // MessagePack has none to keep.
        if deserializer.is_human_readable() {
            Box::<RawValue>::deserialize(deserializer).map(Self::Raw)
        } else {
            Value::deserialize(deserializer).map(Self::Value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_text_is_kept_and_written_back_as_it_came() {
        let p: Payload = serde_json::from_str(r#"{"b": [1, 2.5], "a":"x"}"#).expect("json");
        assert!(matches!(p, Payload::Raw(_)));
        assert_eq!(
            serde_json::to_string(&p).expect("text"),
            r#"{"b": [1, 2.5], "a":"x"}"#
        );
        assert_eq!(p, json!({"a": "x", "b": [1, 2.5]}));
    }

    #[test]
    fn messagepack_gets_values_both_ways() {
        let raw: Payload = serde_json::from_str(r#"{"a":[1,"x"]}"#).expect("json");
        let packed = rmp_serde::to_vec_named(&raw).expect("packs");
        assert_eq!(
            packed,
            rmp_serde::to_vec_named(&json!({"a": [1, "x"]})).expect("packs")
        );
        let back: Payload = rmp_serde::from_slice(&packed).expect("unpacks");
        assert!(matches!(back, Payload::Value(_)));
        assert_eq!(back, raw);
    }

    #[test]
    fn typed_reads_come_from_the_text() {
        #[derive(Deserialize, PartialEq, Debug)]
        struct Point {
            x: i32,
            y: i32,
        }
        let raw: Payload = serde_json::from_str(r#"{"x":1,"y":-2}"#).expect("json");
        assert_eq!(
            raw.deserialize_into::<Point>().expect("fits"),
            Point { x: 1, y: -2 }
        );
        let wrong: Payload = serde_json::from_str(r#"{"x":"1"}"#).expect("json");
        assert!(wrong.deserialize_into::<Point>().is_err());
    }

    #[test]
    fn to_value_parses_raw_text() {
        let raw: Payload = serde_json::from_str("[true,null]").expect("json");
        assert_eq!(
            serde_json::to_value(&raw).expect("value"),
            json!([true, null])
        );
    }
}
