//! The bytes of one publication as stored in the history list and sent on
//! the room's channel: `offset \n epoch \n timestamp \n data-json`.
//!
//! The Lua script assembles them (it alone knows the offset), so the format
//! is plain text that Lua can concatenate. The epoch is hex and the data is
//! compact JSON, so neither holds a raw newline before the data part.

use helios::Publication;

/// Parses a stored or published publication; `None` for foreign bytes.
pub(crate) fn decode(bytes: &[u8]) -> Option<Publication> {
    let mut parts = bytes.splitn(4, |b| *b == b'\n');
    let offset = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let epoch = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let timestamp = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let data = serde_json::from_slice(parts.next()?).ok()?;
    Some(Publication {
        offset,
        epoch,
        data,
        timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_what_the_script_writes() {
        let p = decode(b"12\nab12\n1700000000000\n{\"a\":\"x\\ny\"}").expect("decodes");
        assert_eq!(p.offset, 12);
        assert_eq!(p.epoch, "ab12");
        assert_eq!(p.timestamp, 1_700_000_000_000);
        assert_eq!(p.data, serde_json::json!({"a": "x\ny"}));
    }

    #[test]
    fn refuses_foreign_bytes() {
        assert!(decode(b"").is_none());
        assert!(decode(b"x\ne\n1\n1").is_none());
        assert!(decode(b"1\ne\n1\n{").is_none());
        assert!(decode(b"1\ne").is_none());
    }
}
