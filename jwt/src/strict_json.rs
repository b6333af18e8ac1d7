//! Strict JSON parsing for JOSE headers, claim sets and JWK sets: one JSON object, no trailing
//! input, and no member name repeated in any object at any depth. `serde_json::Value` would keep
//! the last duplicate, letting a token mean one thing to us and another to a different parser,
//! so RFC 7515 §4 and RFC 7519 §4 rejection is done here. Nesting stays bounded by `serde_json`'s
//! recursion limit (128). What the members mean is left to the other modules.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::{ErrorKind, Result};

/// Parses `bytes` as one JSON object: [`ErrorKind::DuplicateMember`] if any object repeats a
/// member name, [`ErrorKind::InvalidJson`] for anything else that is not a JSON object.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>> {
    let duplicate = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = StrictValue {
        duplicate: &duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match parsed {
        Ok(Value::Object(members)) => Ok(members),
        Err(_) if duplicate.get() => Err(ErrorKind::DuplicateMember.into()),
        Ok(_) | Err(_) => Err(ErrorKind::InvalidJson.into()),
    }
}

/// Builds a `Value` like `serde_json`'s own visitor, but fails on a repeated member name and
/// records that it did, so that the caller can tell duplicates from syntax errors.
#[derive(Clone, Copy)]
struct StrictValue<'a> {
    duplicate: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        // Names are compared after unescaping, so `"sub"` and `"s\u0075b"` are duplicates.
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                self.duplicate.set(true);
                return Err(de::Error::custom("duplicate member name"));
            }
            let value = map.next_value_seed(self)?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(json: &str) -> ErrorKind {
        parse_object(json.as_bytes()).unwrap_err().into_kind()
    }

    #[test]
    fn object_parses_like_serde_json() {
        let json = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":"\u00e9"}"#;
        let expected: Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            Value::Object(parse_object(json.as_bytes()).unwrap()),
            expected
        );
    }

    #[test]
    fn duplicate_members_fail_at_any_depth() {
        let cases = [
            (r#"{"sub":"a","sub":"b"}"#, "top level"),
            (r#"{"sub":"a","s\u0075b":"b"}"#, "same name once unescaped"),
            (
                r#"{"a":{"b":1,"b":1}}"#,
                "nested object, even with equal values",
            ),
            (r#"{"a":[{"x":1},{"y":1,"y":2}]}"#, "object inside an array"),
            (r#"{"a":1,"b":2,"a":{"c":3}}"#, "not adjacent"),
        ];
        for (json, reason) in cases {
            assert!(matches!(kind(json), ErrorKind::DuplicateMember), "{reason}");
        }
    }

    #[test]
    fn same_name_in_sibling_objects_ok() {
        assert!(parse_object(br#"{"a":{"x":1},"b":{"x":1},"x":[{"x":2}]}"#).is_ok());
    }

    #[test]
    fn non_objects_and_malformed_json_fail() {
        let cases = [
            ("", "empty input"),
            ("[]", "an array is not a claim set"),
            (r#""a""#, "a string is not a claim set"),
            ("null", "null is not a claim set"),
            (r#"{"a":1}x"#, "trailing input"),
            (r#"{"a":1}{"b":2}"#, "two objects"),
            (r#"{"a":1,}"#, "trailing comma"),
            (r#"{'a':1}"#, "single quotes"),
            (r#"{"a":1e999}"#, "number out of range"),
            ("{\"a\":\"\u{0}\"}", "raw control character in a string"),
        ];
        for (json, reason) in cases {
            assert!(matches!(kind(json), ErrorKind::InvalidJson), "{reason}");
        }
    }

    #[test]
    fn invalid_utf8_fails() {
        let err = parse_object(b"{\"a\":\"\xff\"}").unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidJson));
    }

    #[test]
    fn nesting_beyond_recursion_limit_fails_without_overflow() {
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(kind(&deep), ErrorKind::InvalidJson));
        let fine = format!(r#"{{"a":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(parse_object(fine.as_bytes()).is_ok());
    }
}
