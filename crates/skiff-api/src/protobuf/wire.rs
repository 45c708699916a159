//! Detection of protobuf fields that prost skipped while decoding, by comparing wire forms.
//!
//! prost silently drops fields its generated types do not know, so a field added by a newer
//! Kubernetes would vanish. Re-encoding the decoded message and walking both wire forms side by
//! side finds them without a schema: known fields re-encode to the same bytes (or, for
//! submessages, to bytes that differ only further down), unknown ones are missing. One difference
//! is expected: Go writes empty keys and values of map entries, prost leaves them out, so a
//! missing field whose value is empty or zero is accepted (it carries no information).

use std::collections::BTreeMap;

/// A field's value as it appears on the wire.
#[derive(PartialEq)]
enum Payload<'a> {
    Varint(u64),
    Fixed64(&'a [u8]),
    Fixed32(&'a [u8]),
    Bytes(&'a [u8]),
}

impl Payload<'_> {
    fn is_zero(&self) -> bool {
        match self {
            Payload::Varint(v) => *v == 0,
            Payload::Fixed64(b) | Payload::Fixed32(b) => b.iter().all(|&x| x == 0),
            Payload::Bytes(b) => b.is_empty(),
        }
    }
}

/// Fields of one message by field number, each number's occurrences in order.
type Parsed<'a> = BTreeMap<u64, Vec<Payload<'a>>>;

fn varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Option<&'a [u8]> {
    let end = pos.checked_add(n)?;
    let slice = bytes.get(*pos..end)?;
    *pos = end;
    Some(slice)
}

/// Splits a message into fields; None when the bytes are not a message (or use groups, which
/// no Kubernetes type has).
fn parse(bytes: &[u8]) -> Option<Parsed<'_>> {
    let mut fields = Parsed::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let key = varint(bytes, &mut pos)?;
        let payload = match key & 7 {
            0 => Payload::Varint(varint(bytes, &mut pos)?),
            1 => Payload::Fixed64(take(bytes, &mut pos, 8)?),
            2 => {
                let len = usize::try_from(varint(bytes, &mut pos)?).ok()?;
                Payload::Bytes(take(bytes, &mut pos, len)?)
            }
            5 => Payload::Fixed32(take(bytes, &mut pos, 4)?),
            _ => return None,
        };
        fields.entry(key >> 3).or_default().push(payload);
    }
    Some(fields)
}

/// How deep submessages are compared; deeper than any Kubernetes object nests (and than prost's
/// own recursion limit, so a decoded message never gets here).
const MAX_DEPTH: usize = 100;

/// The field-number path (`1.15`) of the first field in `raw` that is absent from `reencoded`
/// and carries a non-zero value, or of the first place the two cannot be compared.
pub(super) fn first_unknown_field(raw: &[u8], reencoded: &[u8]) -> Option<String> {
    compare(raw, reencoded, "", 0)
}

fn compare(raw: &[u8], reencoded: &[u8], path: &str, depth: usize) -> Option<String> {
    let here = || {
        if path.is_empty() {
            "(message)".to_string()
        } else {
            path.to_string()
        }
    };
    if depth > MAX_DEPTH {
        return Some(here());
    }
    let (Some(raw_fields), Some(re_fields)) = (parse(raw), parse(reencoded)) else {
        return Some(here());
    };
    for (number, occurrences) in &raw_fields {
        let field_path = if path.is_empty() {
            number.to_string()
        } else {
            format!("{path}.{number}")
        };
        let known = re_fields.get(number);
        for (i, value) in occurrences.iter().enumerate() {
            match known.and_then(|k| k.get(i)) {
                None if value.is_zero() => {}
                None => return Some(field_path),
                Some(re) if re == value => {}
                // Strings and scalars re-encode identically, so differing bytes are a submessage
                // (or map entry) with a difference further down.
                Some(Payload::Bytes(re)) => {
                    let Payload::Bytes(raw) = value else {
                        return Some(field_path);
                    };
                    if let Some(unknown) = compare(raw, re, &field_path, depth + 1) {
                        return Some(unknown);
                    }
                }
                Some(_) => return Some(field_path),
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_bytes_have_no_unknown_fields() {
        let msg = [0x0a, 0x02, b'h', b'i', 0x10, 0x05];
        assert_eq!(first_unknown_field(&msg, &msg), None);
    }

    #[test]
    fn extra_top_level_field_is_found() {
        let re = [0x0a, 0x02, b'h', b'i'];
        let raw = [0x0a, 0x02, b'h', b'i', 0x78, 0x01];
        assert_eq!(first_unknown_field(&raw, &re), Some("15".into()));
    }

    #[test]
    fn extra_nested_field_is_found() {
        // Field 1 holds a submessage; the raw one has an extra field 9 inside it.
        let re = [0x0a, 0x02, 0x08, 0x01];
        let raw = [0x0a, 0x04, 0x08, 0x01, 0x48, 0x07];
        assert_eq!(first_unknown_field(&raw, &re), Some("1.9".into()));
    }

    #[test]
    fn empty_map_values_go_writes_are_accepted() {
        // A map entry {key "a", value ""}: Go writes the empty value, prost does not.
        let raw = [0x12, 0x05, 0x0a, 0x01, b'a', 0x12, 0x00];
        let re = [0x12, 0x03, 0x0a, 0x01, b'a'];
        assert_eq!(first_unknown_field(&raw, &re), None);
    }

    #[test]
    fn garbage_is_not_comparable() {
        assert!(first_unknown_field(&[0x0a, 0x09, 0x01], &[]).is_some());
        assert!(first_unknown_field(&[0x0b], &[]).is_some());
        assert!(first_unknown_field(&[0xff; 11], &[]).is_some());
    }
}
