//! Method-name rules (spec §4) in strict and permissive mode.

use std::fmt;

/// Namespaces reserved for built-ins (spec §4.2 plus `helios`).
pub const RESERVED_NAMESPACES: [&str; 4] = ["system", "internal", "stream", "helios"];

/// How method names are checked.
///
/// ```
/// use helios_protocol::ParseMode;
/// assert!(ParseMode::Strict.check_method("user:create").is_ok());
/// assert!(ParseMode::Strict.check_method("user.get").is_err());
/// assert!(ParseMode::Permissive.check_method("user.get").is_ok());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ParseMode {
    /// The spec: starts with a letter, then letters, digits, `_` and `:`,
    /// at least 3 characters, in the form `namespace:action` (no empty
    /// segment).
    #[default]
    Strict,
    /// Also accepts `.` and `-` and names without a namespace (`user.get`,
    /// `ping`), as the newer Bun Helios did.
    Permissive,
}

impl ParseMode {
    /// Checks a method name against this mode's rules.
    ///
    /// # Errors
    /// A [`MethodNameError`] saying which rule the name breaks.
    pub fn check_method(self, name: &str) -> Result<(), MethodNameError> {
        let mut chars = name.chars();
        match chars.next() {
            None => return Err(MethodNameError::Empty),
            Some(c) if !c.is_ascii_alphabetic() => return Err(MethodNameError::FirstNotLetter),
            Some(_) => {}
        }
        if name.len() < 3 {
            return Err(MethodNameError::TooShort);
        }
        if name.len() > MAX_METHOD_LEN {
            return Err(MethodNameError::TooLong);
        }
        let allowed = |c: char| match self {
            Self::Strict => c.is_ascii_alphanumeric() || c == '_' || c == ':',
            Self::Permissive => c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '-'),
        };
        if let Some(c) = name.chars().find(|c| !allowed(*c)) {
            return Err(MethodNameError::BadChar(c));
        }
        let separators: &[char] = match self {
            Self::Strict => &[':'],
            Self::Permissive => &[':', '.'],
        };
        if self == Self::Strict && !name.contains(':') {
            return Err(MethodNameError::NoNamespace);
        }
        if name.split(separators).any(str::is_empty) {
            return Err(MethodNameError::EmptySegment);
        }
        Ok(())
    }
}

/// Longest method name accepted.
pub const MAX_METHOD_LEN: usize = 256;

/// The namespace of a method name: the part before the first `:` (or `.`).
///
/// ```
/// assert_eq!(helios_protocol::namespace_of("user:create"), "user");
/// assert_eq!(helios_protocol::namespace_of("user.get"), "user");
/// ```
pub fn namespace_of(name: &str) -> &str {
    name.split([':', '.']).next().unwrap_or(name)
}

/// Whether a method name lies in a reserved namespace.
///
/// ```
/// assert!(helios_protocol::is_reserved("system:ping"));
/// assert!(!helios_protocol::is_reserved("chat:send"));
/// ```
pub fn is_reserved(name: &str) -> bool {
    RESERVED_NAMESPACES.contains(&namespace_of(name))
}

/// A rule a method name breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MethodNameError {
    /// The name is empty.
    Empty,
    /// The first character is not a letter.
    FirstNotLetter,
    /// Fewer than 3 characters.
    TooShort,
    /// More than [`MAX_METHOD_LEN`] bytes.
    TooLong,
    /// A character outside the allowed set.
    BadChar(char),
    /// Strict mode requires `namespace:action`.
    NoNamespace,
    /// A separator with nothing on one side.
    EmptySegment,
}

impl fmt::Display for MethodNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("method name is empty"),
            Self::FirstNotLetter => f.write_str("method name must start with a letter"),
            Self::TooShort => f.write_str("method name must be at least 3 characters long"),
            Self::TooLong => write!(f, "method name is longer than {MAX_METHOD_LEN} bytes"),
            Self::BadChar(c) => write!(f, "method name contains the character {c:?}"),
            Self::NoNamespace => f.write_str("method name must have the form namespace:action"),
            Self::EmptySegment => f.write_str("method name has an empty namespace or action"),
        }
    }
}

impl std::error::Error for MethodNameError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_rules() {
        let ok = ["user:create", "a_b:c1", "chat:room:send"];
        for n in ok {
            assert_eq!(ParseMode::Strict.check_method(n), Ok(()), "{n}");
        }
        let bad = [
            ("", MethodNameError::Empty),
            ("1ab:c", MethodNameError::FirstNotLetter),
            ("a:", MethodNameError::TooShort),
            ("user.get", MethodNameError::BadChar('.')),
            ("user-x:y", MethodNameError::BadChar('-')),
            ("ping", MethodNameError::NoNamespace),
            ("user::x", MethodNameError::EmptySegment),
            ("user:", MethodNameError::EmptySegment),
            ("us er:x", MethodNameError::BadChar(' ')),
        ];
        for (n, e) in bad {
            assert_eq!(ParseMode::Strict.check_method(n), Err(e), "{n}");
        }
        assert_eq!(
            ParseMode::Strict.check_method(&"a:".repeat(200)),
            Err(MethodNameError::TooLong)
        );
    }

    #[test]
    fn permissive_rules() {
        for n in ["user.get", "ping", "user-profile.get", "user:create"] {
            assert_eq!(ParseMode::Permissive.check_method(n), Ok(()), "{n}");
        }
        assert!(ParseMode::Permissive.check_method("user..get").is_err());
        assert!(ParseMode::Permissive.check_method("_x.y").is_err());
        assert!(ParseMode::Permissive.check_method("a/b").is_err());
    }

    #[test]
    fn reserved() {
        for n in [
            "system:ping",
            "internal:x",
            "stream:open",
            "helios:subscribe",
            "helios.x",
        ] {
            assert!(is_reserved(n), "{n}");
        }
        assert!(!is_reserved("systems:x"));
        assert!(!is_reserved("starling:getToken"));
    }
}
