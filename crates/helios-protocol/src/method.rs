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
        // One pass over the bytes (this runs for every request), one table
        // lookup per byte: every allowed character is ASCII, so a byte that
        // is not names the offending character's start.
        let permissive = self == Self::Permissive;
        let (allowed, separators) = if permissive {
            (WORD | COLON | DOT | DASH, COLON | DOT)
        } else {
            (WORD | COLON, COLON)
        };
        let (mut namespaced, mut empty_segment, mut after_separator) = (false, false, false);
        for (i, &b) in name.as_bytes().iter().enumerate() {
            let class = BYTE_CLASS[usize::from(b)];
            if class & allowed == 0 {
                let c = name[i..]
                    .chars()
                    .next()
                    .unwrap_or(char::REPLACEMENT_CHARACTER);
                return Err(MethodNameError::BadChar(c));
            }
            let separator = class & separators != 0;
            namespaced |= class & COLON != 0;
            empty_segment |= separator && after_separator;
            after_separator = separator;
        }
        if !permissive && !namespaced {
            return Err(MethodNameError::NoNamespace);
        }
        if empty_segment || after_separator {
            return Err(MethodNameError::EmptySegment);
        }
        Ok(())
    }
}

/// What a byte of a method name is: a word character (ASCII letter, digit,
/// `_`), or one of the separators and the dash. Zero: never allowed.
const BYTE_CLASS: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphanumeric() || c == b'_' {
            WORD
        } else if c == b':' {
            COLON
        } else if c == b'.' {
            DOT
        } else if c == b'-' {
            DASH
        } else {
            0
        };
        b += 1;
    }
    table
};
const WORD: u8 = 1;
const COLON: u8 = 2;
const DOT: u8 = 4;
const DASH: u8 = 8;

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

    /// The rules as first written, one per step: the one-pass check must
    /// give the same verdict on every name.
    fn rule_by_rule(mode: ParseMode, name: &str) -> Result<(), MethodNameError> {
        match name.chars().next() {
            None => return Err(MethodNameError::Empty),
            Some(c) if !c.is_ascii_alphabetic() => return Err(MethodNameError::FirstNotLetter),
            Some(_) => {}
        }
        if name.len() < 3 {
            return Err(MethodNameError::TooShort);
        }
        let allowed = |c: char| match mode {
            ParseMode::Strict => c.is_ascii_alphanumeric() || c == '_' || c == ':',
            ParseMode::Permissive => {
                c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '-')
            }
        };
        if let Some(c) = name.chars().find(|c| !allowed(*c)) {
            return Err(MethodNameError::BadChar(c));
        }
        let separators: &[char] = match mode {
            ParseMode::Strict => &[':'],
            ParseMode::Permissive => &[':', '.'],
        };
        if mode == ParseMode::Strict && !name.contains(':') {
            return Err(MethodNameError::NoNamespace);
        }
        if name.split(separators).any(str::is_empty) {
            return Err(MethodNameError::EmptySegment);
        }
        Ok(())
    }

    #[test]
    fn one_pass_agrees_with_the_rules_on_every_short_name() {
        let alphabet = ['a', 'Z', '0', '_', ':', '.', '-', ' ', 'é', '語'];
        let mut names = vec![String::new()];
        let mut checked = 0;
        for _ in 0..5 {
            names = names
                .iter()
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            for name in &names {
                for mode in [ParseMode::Strict, ParseMode::Permissive] {
                    assert_eq!(
                        mode.check_method(name),
                        rule_by_rule(mode, name),
                        "{mode:?} {name:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 2 * (10 + 100 + 1_000 + 10_000 + 100_000));
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
