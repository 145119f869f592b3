//! Glob patterns over `:`/`.`-separated names, for middleware, events and rooms.
//!
//! `*` matches exactly one segment, `**` matches any number of segments
//! (including none). Segments are separated by `:` or `.`, so `user:*`
//! matches `user:create` and `api.**` matches `api.users.list`.

use crate::error::RegisterError;

/// A compiled glob pattern.
///
/// ```
/// use helios::Pattern;
/// let p = Pattern::new("chat:*").unwrap();
/// assert_eq!(p.captures("chat:lobby"), Some(vec!["lobby".to_string()]));
/// assert!(p.captures("chat:a:b").is_none());
/// assert!(Pattern::new("**").unwrap().matches("anything:at.all"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Many,
}

fn split(name: &str) -> impl Iterator<Item = &str> {
    name.split([':', '.'])
}

impl Pattern {
    /// Compiles a pattern.
    ///
    /// # Errors
    /// [`RegisterError::InvalidPattern`] for an empty pattern, an empty
    /// segment, or a `*` inside a segment (`ab*`).
    pub fn new(source: &str) -> Result<Self, RegisterError> {
        let invalid = |reason| RegisterError::InvalidPattern {
            pattern: source.to_owned(),
            reason,
        };
        if source.is_empty() {
            return Err(invalid("pattern is empty"));
        }
        let segments = split(source)
            .map(|s| match s {
                "" => Err(invalid("empty segment")),
                "*" => Ok(Segment::One),
                "**" => Ok(Segment::Many),
                s if s.contains('*') => Err(invalid("`*` must be a whole segment")),
                s => Ok(Segment::Literal(s.to_owned())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            source: source.to_owned(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern has no wildcard.
    pub fn is_exact(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let parts: Vec<&str> = split(name).collect();
        match_from(&self.segments, &parts, &mut None)
    }

    /// The text matched by each wildcard, in order (`**` captures its
    /// segments joined by `:`), or `None` when `name` does not match.
    pub fn captures(&self, name: &str) -> Option<Vec<String>> {
        let parts: Vec<&str> = split(name).collect();
        let mut caps = Some(Vec::new());
        match_from(&self.segments, &parts, &mut caps).then(|| caps.unwrap_or_default())
    }
}

fn match_from(pat: &[Segment], parts: &[&str], caps: &mut Option<Vec<String>>) -> bool {
    match (pat.first(), parts.first()) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(Segment::Many), _) => {
            // Try the longest span first so captures are greedy.
            for take in (0..=parts.len()).rev() {
                let mark = caps.as_ref().map(Vec::len);
                if let Some(c) = caps.as_mut() {
                    c.push(parts[..take].join(":"));
                }
                if match_from(&pat[1..], &parts[take..], caps) {
                    return true;
                }
                if let (Some(c), Some(m)) = (caps.as_mut(), mark) {
                    c.truncate(m);
                }
            }
            false
        }
        (Some(_), None) => false,
        (Some(Segment::One), Some(p)) => {
            if let Some(c) = caps.as_mut() {
                c.push((*p).to_owned());
            }
            match_from(&pat[1..], &parts[1..], caps)
        }
        (Some(Segment::Literal(l)), Some(p)) => l == p && match_from(&pat[1..], &parts[1..], caps),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let p = |s: &str| Pattern::new(s).expect("pattern");
        assert!(p("user:*").matches("user:create"));
        assert!(!p("user:*").matches("user"));
        assert!(!p("user:*").matches("admin:create"));
        assert!(p("api:**").matches("api:users.list"));
        assert!(p("api:**").matches("api"));
        assert!(p("**").matches("x"));
        assert!(p("a:**:z").matches("a:b:c:z"));
        assert!(!p("a:**:z").matches("a:b:c"));
        assert_eq!(
            p("doc:*:rev:*").captures("doc:7:rev:3"),
            Some(vec!["7".into(), "3".into()])
        );
        assert_eq!(p("a:**").captures("a:b:c"), Some(vec!["b:c".into()]));
        assert!(p("chat:lobby").is_exact());
    }

    #[test]
    fn invalid_patterns() {
        assert!(Pattern::new("").is_err());
        assert!(Pattern::new("a::b").is_err());
        assert!(Pattern::new("a:b*").is_err());
    }
}
