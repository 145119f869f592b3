//! Text that every request carries and that is almost always short: its
//! `requestId` (a UUID is 36 bytes) and its `method`. Kept in place up to
//! [`ShortStr::INLINE`] bytes, so decoding a request allocates for neither;
//! a longer one is shared behind an `Arc`, so a clone never copies it.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use arrayvec::ArrayString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An immutable string that does not allocate when it is short.
///
/// It compares, hashes and prints as the `str` it holds.
///
/// ```
/// use helios_protocol::ShortStr;
/// let method = ShortStr::from("user:get");
/// assert_eq!(method, "user:get");
/// assert_eq!(method.len(), 8);
/// assert_eq!(format!("{method}"), "user:get");
/// ```
#[derive(Clone)]
pub struct ShortStr(Repr);

#[derive(Clone)]
enum Repr {
    Inline(ArrayString<{ ShortStr::INLINE }>),
    Shared(Arc<str>),
}

impl ShortStr {
    /// The longest text kept in place, in bytes.
    pub const INLINE: usize = 40;

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(s) => s.as_str(),
            Repr::Shared(s) => s,
        }
    }

    /// Owned text: copied in place when short, else made the shared text
    /// (moved, where it is an `Arc` already).
    fn from_owned<T: AsRef<str> + Into<Arc<str>>>(s: T) -> Self {
        if s.as_ref().len() <= Self::INLINE {
            Self::from(s.as_ref())
        } else {
            Self(Repr::Shared(s.into()))
        }
    }
}

impl Default for ShortStr {
    fn default() -> Self {
        Self(Repr::Inline(ArrayString::new()))
    }
}

impl From<&str> for ShortStr {
    fn from(s: &str) -> Self {
        match ArrayString::from(s) {
            Ok(inline) => Self(Repr::Inline(inline)),
            Err(_) => Self(Repr::Shared(Arc::from(s))),
        }
    }
}

impl From<&String> for ShortStr {
    fn from(s: &String) -> Self {
        Self::from(s.as_str())
    }
}

impl From<String> for ShortStr {
    fn from(s: String) -> Self {
        Self::from_owned(s)
    }
}

impl From<Box<str>> for ShortStr {
    fn from(s: Box<str>) -> Self {
        Self::from_owned(s)
    }
}

/// Shares a long `Arc` as it is; a short one is copied in place.
impl From<Arc<str>> for ShortStr {
    fn from(s: Arc<str>) -> Self {
        Self::from_owned(s)
    }
}

impl From<std::borrow::Cow<'_, str>> for ShortStr {
    fn from(s: std::borrow::Cow<'_, str>) -> Self {
        match s {
            std::borrow::Cow::Borrowed(s) => Self::from(s),
            std::borrow::Cow::Owned(s) => Self::from(s),
        }
    }
}

impl From<ShortStr> for String {
    fn from(s: ShortStr) -> Self {
        s.as_str().to_owned()
    }
}

impl Deref for ShortStr {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ShortStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Hashes as its `str`, so maps keyed by it can be searched with a `&str`.
impl Borrow<str> for ShortStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for ShortStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq for ShortStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ShortStr {}

impl PartialOrd for ShortStr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ShortStr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for ShortStr {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<ShortStr> for str {
    fn eq(&self, other: &ShortStr) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<ShortStr> for String {
    fn eq(&self, other: &ShortStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<ShortStr> for &str {
    fn eq(&self, other: &ShortStr) -> bool {
        *self == other.as_str()
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ShortStr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ShortStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ShortStr;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ShortStr, E> {
                Ok(ShortStr::from(v))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<ShortStr, E> {
                Ok(ShortStr::from(v))
            }

            // As `String` does: UTF-8 bytes (a MessagePack `bin`) are text too.
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ShortStr, E> {
                std::str::from_utf8(v)
                    .map(ShortStr::from)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Bytes(v), &self))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn short_text_is_kept_in_place_and_long_text_is_shared() {
        let uuid = "3f2b6c1e-9a4d-4f7e-8b21-0c5d6e7f8a9b";
        assert!(matches!(ShortStr::from(uuid).0, Repr::Inline(_)));
        let edge = "x".repeat(ShortStr::INLINE);
        assert!(matches!(ShortStr::from(edge.as_str()).0, Repr::Inline(_)));
        let long = "y".repeat(ShortStr::INLINE + 1);
        let shared = ShortStr::from(long.clone());
        assert!(matches!(shared.0, Repr::Shared(_)));
        assert_eq!(shared, long);
        assert_eq!(shared.clone().as_str(), long);
        assert_eq!(ShortStr::from(edge.clone()), edge);
        let arc: Arc<str> = Arc::from(long.as_str());
        match ShortStr::from(Arc::clone(&arc)).0 {
            Repr::Shared(s) => assert!(Arc::ptr_eq(&s, &arc), "a long Arc is shared, not copied"),
            Repr::Inline(_) => panic!("{} bytes kept in place", long.len()),
        }
        assert_eq!(long, ShortStr::from(long.clone().into_boxed_str()));
        assert_eq!(ShortStr::from(std::borrow::Cow::Borrowed("c")), "c");
    }

    #[test]
    fn is_no_larger_than_the_request_id_docs_say() {
        assert!(std::mem::size_of::<ShortStr>() <= 48);
    }

    #[test]
    fn compares_and_hashes_as_its_text_whatever_its_form() {
        let long = "z".repeat(100);
        let mut map = HashMap::new();
        map.insert(ShortStr::from("a:b"), 1);
        map.insert(ShortStr::from(long.as_str()), 2);
        assert_eq!(map.get("a:b"), Some(&1));
        assert_eq!(map.get(long.as_str()), Some(&2));
        assert!(ShortStr::from("a").as_str() < long.as_str());
        assert_eq!("a:b", ShortStr::from("a:b"));
        assert_eq!(ShortStr::default(), "");
    }

    #[test]
    fn round_trips_through_serde_as_a_string() {
        let s: ShortStr = serde_json::from_str(r#""h\u00e9llo""#).expect("string");
        assert_eq!(s, "héllo");
        assert_eq!(serde_json::to_string(&s).expect("json"), r#""héllo""#);
        let err = serde_json::from_str::<ShortStr>("12").expect_err("not a string");
        assert!(err.to_string().contains("a string"), "{err}");
        // MessagePack `bin 8` of b"ab", then of a byte that is not UTF-8.
        let bin = [0xc4, 2, b'a', b'b'];
        assert_eq!(
            rmp_serde::from_slice::<ShortStr>(&bin).expect("bin as text"),
            "ab"
        );
        assert!(rmp_serde::from_slice::<ShortStr>(&[0xc4, 1, 0xff]).is_err());
    }
}
