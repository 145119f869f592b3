//! The bytes of one publication as stored in JetStream and republished on
//! the room's live subject:
//! `offset \n epoch \n timestamp \n history-size \n history-ttl-ms \n data-json`.
//!
//! The history size and TTL travel with each publication so that a reader
//! can trim the history to the room's own rule (the stream's limits are
//! one per stream: the largest history any room may have).

use helios::Publication;

/// A decoded publication with the history rule it was published under.
pub(crate) struct Stored {
    pub(crate) publication: Publication,
    pub(crate) history_size: u64,
    pub(crate) history_ttl_ms: u64,
}

pub(crate) fn encode(
    publication: &Publication,
    history_size: u64,
    history_ttl_ms: u64,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = format!(
        "{}\n{}\n{}\n{}\n{}\n",
        publication.offset, publication.epoch, publication.timestamp, history_size, history_ttl_ms
    )
    .into_bytes();
    serde_json::to_writer(&mut out, &publication.data)?;
    Ok(out)
}

/// Parses stored or republished bytes; `None` for foreign bytes.
pub(crate) fn decode(bytes: &[u8]) -> Option<Stored> {
    let mut parts = bytes.splitn(6, |b| *b == b'\n');
    let mut text = || std::str::from_utf8(parts.next()?).ok();
    let offset = text()?.parse().ok()?;
    let epoch = text()?.to_owned();
    let timestamp = text()?.parse().ok()?;
    let history_size = text()?.parse().ok()?;
    let history_ttl_ms = text()?.parse().ok()?;
    let data = serde_json::from_slice(parts.next()?).ok()?;
    Some(Stored {
        publication: Publication {
            offset,
            epoch,
            data,
            timestamp,
        },
        history_size,
        history_ttl_ms,
    })
}

/// One subject token for a topic: `.`, `*`, `>`, `%`, whitespace, control
/// and non-ASCII bytes become `%XX`, everything else stays readable
/// (`chat:lobby` stays `chat:lobby`).
pub(crate) fn token(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len());
    for b in topic.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>' | b'%') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The topic of a token made by [`token`] (topics travel in payloads;
/// this is for tests and debugging).
#[cfg(test)]
pub(crate) fn untoken(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
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
    use super::*;

    #[test]
    fn round_trip() {
        let p = Publication {
            offset: 3,
            epoch: "e1".into(),
            data: serde_json::json!({"a": "x\ny"}),
            timestamp: 9,
        };
        let bytes = encode(&p, 100, 60_000).expect("encodes");
        let s = decode(&bytes).expect("decodes");
        assert_eq!(s.publication, p);
        assert_eq!((s.history_size, s.history_ttl_ms), (100, 60_000));
        assert!(decode(b"1\ne\n").is_none());
    }

    #[test]
    fn tokens() {
        for t in ["chat:lobby", "a.b", "x>y*z", "100%", "é"] {
            let tok = token(t);
            assert!(!tok.contains(['.', '*', '>']));
            assert_eq!(untoken(&tok).as_deref(), Some(t));
        }
        assert_eq!(token("chat:lobby"), "chat:lobby");
    }
}
