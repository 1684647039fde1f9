//! Decoding the session value Flask-Session stored in Redis. Pure functions; no I/O.
//!
//! The format is chosen by the first byte, because one Redis holds both after an upgrade of
//! Flask-Session: `0x80` + protocol byte = pickle (0.4 – 0.6), a msgpack map (0.7+), `{` = JSON
//! (written by other code). Pickle is read by [`crate::identity::pickle_fields`], a non-executing stack
//! machine that keeps only the top-level dict's scalar entries: class references (datetimes,
//! custom objects) are never resolved, and nesting cannot exhaust the stack.

use std::collections::HashMap;

/// Which stored fields hold the identity; configurable because apps name them differently.
#[derive(Debug, Clone)]
pub struct FieldNames {
    pub user_id: String,
    pub email: String,
    pub role: String,
}

impl Default for FieldNames {
    fn default() -> Self {
        Self { user_id: "user_id".into(), email: "email".into(), role: "role".into() }
    }
}

/// The identity-bearing fields of one stored session. No user id means an anonymous session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFields {
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub role: Option<String>,
}

/// The storage format, recognised from the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pickle,
    Msgpack,
    Json,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("session value is {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("session value is empty")]
    Empty,
    #[error("session value starts with byte {0:#04x}: not pickle, msgpack or JSON")]
    UnknownFormat(u8),
    #[error("{0:?} session value is malformed: {1}")]
    Malformed(Format, String),
    #[error("{0:?} session value is not a map")]
    NotAMap(Format),
}

/// Longest value kept from a field: identity strings are short; anything longer is junk.
const MAX_FIELD_LEN: usize = 512;
/// msgpack nesting we follow; sessions are flat dicts.
const MSGPACK_MAX_DEPTH: usize = 32;

/// Recognises the format of a stored value.
pub fn detect(bytes: &[u8]) -> Result<Format, DecodeError> {
    match bytes {
        [] => Err(DecodeError::Empty),
        // PROTO opcode followed by a protocol number (2..=5); a lone 0x80 is an empty msgpack map.
        [0x80, 2..=5, ..] => Ok(Format::Pickle),
        [0x80..=0x8f, ..] | [0xde, ..] | [0xdf, ..] => Ok(Format::Msgpack),
        [b, ..] if b.is_ascii_whitespace() || *b == b'{' => Ok(Format::Json),
        [b, ..] => Err(DecodeError::UnknownFormat(*b)),
    }
}

/// Extracts the identity fields from a stored session value.
pub fn decode(bytes: &[u8], names: &FieldNames, max_len: usize) -> Result<SessionFields, DecodeError> {
    if bytes.len() > max_len {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let format = detect(bytes)?;
    let map = match format {
        Format::Json => json_map(bytes)?,
        Format::Msgpack => msgpack_map(bytes)?,
        Format::Pickle => pickle_map(bytes)?,
    };
    let take = |name: &str| map.get(name).cloned().flatten();
    Ok(SessionFields { user_id: take(&names.user_id), email: take(&names.email), role: take(&names.role) })
}

/// A flat view of the session: each key with its value as text when it is a string or number.
type FlatMap = HashMap<String, Option<String>>;

fn scalar_text(s: String) -> Option<String> {
    (!s.is_empty() && s.len() <= MAX_FIELD_LEN).then_some(s)
}

fn json_map(bytes: &[u8]) -> Result<FlatMap, DecodeError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(Format::Json, e.to_string()))?;
    let serde_json::Value::Object(obj) = value else {
        return Err(DecodeError::NotAMap(Format::Json));
    };
    Ok(obj
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => scalar_text(s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            (k, text)
        })
        .collect())
}

fn msgpack_map(bytes: &[u8]) -> Result<FlatMap, DecodeError> {
    use rmpv::ValueRef;
    let mut rd = bytes;
    let value = rmpv::decode::read_value_ref_with_max_depth(&mut rd, MSGPACK_MAX_DEPTH).map_err(|e| DecodeError::Malformed(Format::Msgpack, e.to_string()))?;
    let ValueRef::Map(entries) = value else {
        return Err(DecodeError::NotAMap(Format::Msgpack));
    };
    Ok(entries
        .into_iter()
        .filter_map(|(k, v)| {
            let ValueRef::String(k) = k else { return None };
            let key = k.into_str()?.to_owned();
            let text = match v {
                ValueRef::String(s) => s.into_str().map(str::to_owned).and_then(scalar_text),
                ValueRef::Integer(i) => Some(i.to_string()),
                _ => None,
            };
            Some((key, text))
        })
        .collect())
}

fn pickle_map(bytes: &[u8]) -> Result<FlatMap, DecodeError> {
    use crate::identity::pickle_fields::{top_level_dict, PickleError, Scalar};
    let entries = top_level_dict(bytes).map_err(|e| match e {
        PickleError::NotADict => DecodeError::NotAMap(Format::Pickle),
        e => DecodeError::Malformed(Format::Pickle, e.to_string()),
    })?;
    Ok(entries
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Scalar::Str(s) => scalar_text(s),
                Scalar::Int(i) => Some(i.to_string()),
                Scalar::Other => None,
            };
            (key, text)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 64 * 1024;

    fn from_hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn expected() -> SessionFields {
        SessionFields { user_id: Some("u1".into()), email: Some("a@b.c".into()), role: Some("admin".into()) }
    }

    /// Bytes a real Flask-Session 0.6 app stored (pickle protocol 4) for
    /// `{'_permanent': True, 'user_id': 'u1', 'email': 'a@b.c', 'role': 'admin'}`.
    const PICKLE_P4: &str = "80049541000000000000007d94288c0a5f7065726d616e656e7494888c07757365725f6964948c027531948c05656d61696c948c056140622e63948c04726f6c65948c0561646d696e94752e";

    #[test]
    fn pickle_protocol_4_from_flask_session_06() {
        let bytes = from_hex(PICKLE_P4);
        assert_eq!(detect(&bytes), Ok(Format::Pickle));
        assert_eq!(decode(&bytes, &FieldNames::default(), LIMIT), Ok(expected()));
    }

    #[test]
    fn msgpack_map_from_flask_session_08() {
        // msgspec encodes the same dict as a fixmap of 4 entries.
        let mut buf = Vec::new();
        let v = rmpv::Value::Map(vec![
            ("_permanent".into(), true.into()),
            ("user_id".into(), "u1".into()),
            ("email".into(), "a@b.c".into()),
            ("role".into(), "admin".into()),
        ]);
        rmpv::encode::write_value(&mut buf, &v).unwrap();
        assert_eq!(buf[0], 0x84);
        assert_eq!(decode(&buf, &FieldNames::default(), LIMIT), Ok(expected()));
    }

    #[test]
    fn json_and_numeric_ids() {
        let bytes = br#"{"user_id": 42, "email": "a@b.c", "role": "admin", "other": [1]}"#;
        let got = decode(bytes, &FieldNames::default(), LIMIT).unwrap();
        assert_eq!(got.user_id.as_deref(), Some("42"));
    }

    #[test]
    fn configurable_field_names() {
        let names = FieldNames { user_id: "uid".into(), email: "mail".into(), role: "group".into() };
        let got = decode(br#"{"uid":"x","mail":"m","group":"g"}"#, &names, LIMIT).unwrap();
        assert_eq!(got, SessionFields { user_id: Some("x".into()), email: Some("m".into()), role: Some("g".into()) });
    }

    #[test]
    fn anonymous_session_has_no_user() {
        assert_eq!(detect(&[0x80]), Ok(Format::Msgpack));
        assert_eq!(decode(&[0x80], &FieldNames::default(), LIMIT), Ok(SessionFields::default()));
        assert_eq!(decode(br#"{"visits": 3}"#, &FieldNames::default(), LIMIT), Ok(SessionFields::default()));
    }

    /// Made by CPython's pickle: `{'user_id': 'u1', 'when': datetime(...), 'evil': <os.system
    /// reduce>}`. Globals are replaced by None, never resolved or called.
    const PICKLE_WITH_GLOBALS: &str = "8004956f000000000000007d94288c07757365725f6964948c027531948c047768656e948c086461746574696d65948c086461746574696d65949394430a07ea010100000000000094859452948c046576696c948c05706f736978948c0673797374656d9493948c0a6563686f2070776e65649485945294752e";

    #[test]
    fn pickle_globals_are_not_executed() {
        let got = decode(&from_hex(PICKLE_WITH_GLOBALS), &FieldNames::default(), LIMIT).unwrap();
        assert_eq!(got.user_id.as_deref(), Some("u1"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(decode(b"", &FieldNames::default(), LIMIT), Err(DecodeError::Empty));
        assert_eq!(decode(b"\x00abc", &FieldNames::default(), LIMIT), Err(DecodeError::UnknownFormat(0)));
        assert!(matches!(decode(&[0x80, 4, 0x95], &FieldNames::default(), LIMIT), Err(DecodeError::Malformed(..))));
        assert!(matches!(decode(b"[1,2]", &FieldNames::default(), LIMIT), Err(DecodeError::UnknownFormat(b'['))));
        assert!(matches!(decode(&[0u8; 10], &FieldNames::default(), 5), Err(DecodeError::TooLarge(10))));
    }

    #[test]
    fn deeply_nested_values_are_bounded() {
        // 10,000 nested msgpack arrays inside the map: refused by the depth limit.
        let mut bytes = vec![0x81, 0xa1, b'x'];
        bytes.extend(std::iter::repeat_n(0x91, 10_000));
        bytes.push(0xc0);
        assert!(matches!(decode(&bytes, &FieldNames::default(), LIMIT), Err(DecodeError::Malformed(..))));
        // Deeply nested pickle lists within the size limit decode without exhausting the stack.
        let depth = 20_000;
        let mut p = vec![0x80, 4, b'}', 0x8c, 1, b'x'];
        p.extend(std::iter::repeat_n(b']', depth));
        p.extend(std::iter::repeat_n(b'a', depth - 1));
        p.extend_from_slice(b"s.");
        let _ = decode(&p, &FieldNames::default(), LIMIT);
    }

    proptest! {
        /// No byte string makes the decoder panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, &FieldNames::default(), LIMIT);
        }

        /// Pickle-looking prefixes followed by noise never panic either.
        #[test]
        fn pickle_prefixed_noise_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = vec![0x80, 4];
            bytes.extend(tail);
            let _ = decode(&bytes, &FieldNames::default(), LIMIT);
        }

        /// Any string identity round-trips through msgpack and JSON.
        #[test]
        fn identity_roundtrips(uid in "[a-zA-Z0-9@._-]{1,64}") {
            let mut buf = Vec::new();
            rmpv::encode::write_value(&mut buf, &rmpv::Value::Map(vec![("user_id".into(), uid.as_str().into())])).unwrap();
            prop_assert_eq!(decode(&buf, &FieldNames::default(), LIMIT).unwrap().user_id, Some(uid.clone()));
            let json = serde_json::json!({"user_id": uid}).to_string();
            prop_assert_eq!(decode(json.as_bytes(), &FieldNames::default(), LIMIT).unwrap().user_id, Some(uid));
        }
    }
}
