//! The little the bridge reads of a JSON-RPC line it copies verbatim: whether it is
//! JSON at all, its `id`, its `method`, and whether it answers a request. The line is
//! parsed once without building a tree (every other member is skipped), and never
//! serialised again. Also the bridge's own error replies, and finding the `id` of a
//! line too long to parse.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// JSON-RPC's code for a line that is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's code for JSON that is not a request, and for a line over the cap.
pub const INVALID_REQUEST: i64 = -32600;
/// The code of the bridge's own errors: paiosd or the server cannot answer.
pub const UNAVAILABLE: i64 = -32000;

/// What one JSON-RPC message says about itself.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Message {
    pub id: Option<Value>,
    pub method: Option<String>,
    /// It has `result` or `error`: the answer to the request with its `id`.
    pub answer: bool,
}

impl Message {
    /// The `id` of a request that expects an answer.
    pub fn request_id(&self) -> Option<&Value> {
        self.method.as_ref()?;
        self.id.as_ref().filter(|id| !id.is_null())
    }

    /// The `id` this message answers.
    pub fn answered_id(&self) -> Option<&Value> {
        if self.answer && self.method.is_none() {
            self.id.as_ref()
        } else {
            None
        }
    }
}

/// A line as JSON-RPC: one message or a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    One(Message),
    Batch(Vec<Message>),
}

impl Shape {
    pub fn messages(&self) -> &[Message] {
        match self {
            Shape::One(m) => std::slice::from_ref(m),
            Shape::Batch(ms) => ms,
        }
    }
}

/// Why a line is not passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    NotUtf8,
    NotJson(String),
    /// JSON, but neither an object nor an array of objects.
    NotMessage,
}

impl Bad {
    /// The error the client gets for it (always with `id` null: nothing could be read).
    pub fn reply(&self) -> Vec<u8> {
        match self {
            Bad::NotUtf8 => error_line(
                &Value::Null,
                PARSE_ERROR,
                "Parse error: the line is not valid UTF-8",
            ),
            Bad::NotJson(why) => {
                error_line(&Value::Null, PARSE_ERROR, &format!("Parse error: {why}"))
            }
            Bad::NotMessage => error_line(
                &Value::Null,
                INVALID_REQUEST,
                "Invalid Request: a JSON-RPC message is an object (or an array of them)",
            ),
        }
    }
}

/// Reads what the bridge needs from `line`, checking that all of it is JSON.
pub fn peek(line: &[u8]) -> Result<Shape, Bad> {
    if std::str::from_utf8(line).is_err() {
        return Err(Bad::NotUtf8);
    }
    serde_json::from_slice::<Shape>(line).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Bad::NotMessage,
        _ => Bad::NotJson(e.to_string()),
    })
}

/// A JSON-RPC error response line, newline included.
pub fn error_line(id: &Value, code: i64, message: &str) -> Vec<u8> {
    let value = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message},
    });
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// The key an `id` is tracked under (its JSON text: `1` and `"1"` differ).
pub fn id_key(id: &Value) -> String {
    id.to_string()
}

impl<'de> serde::Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Shape, D::Error> {
        struct ShapeVisitor;
        impl<'de> Visitor<'de> for ShapeVisitor {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC object or batch")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Shape, A::Error> {
                MessageVisitor.visit_map(map).map(Shape::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut out = Vec::new();
                while let Some(m) = seq.next_element_seed(MessageSeed)? {
                    out.push(m);
                }
                Ok(Shape::Batch(out))
            }
        }
        d.deserialize_any(ShapeVisitor)
    }
}

struct MessageSeed;

impl<'de> DeserializeSeed<'de> for MessageSeed {
    type Value = Message;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Message, D::Error> {
        d.deserialize_map(MessageVisitor)
    }
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Message;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
        let mut m = Message::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Id => m.id = Some(map.next_value()?),
                Key::Method => {
                    let method: Value = map.next_value()?;
                    m.method = Some(method.as_str().unwrap_or_default().to_string());
                }
                Key::Answer => {
                    map.next_value::<IgnoredAny>()?;
                    m.answer = true;
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(m)
    }
}

enum Key {
    Id,
    Method,
    Answer,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "id" => Key::Id,
                    "method" => Key::Method,
                    "result" | "error" => Key::Answer,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// The `id` of a line too long to parse, from the start kept of it (`head`) or, when
/// `id` is the last member, from its end (`tail`); `None` when neither shows it.
pub fn lenient_id(head: &[u8], tail: &[u8]) -> Option<Value> {
    id_from_head(head).or_else(|| id_from_tail(tail))
}

/// Walks the top-level members of `{...` from the start until `"id"` is found; gives
/// up where the kept bytes end.
fn id_from_head(head: &[u8]) -> Option<Value> {
    let mut at = skip_ws(head, 0);
    if head.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip_ws(head, at);
        let key_end = string_end(head, at)?;
        let is_id = &head[at..key_end] == b"\"id\"";
        at = skip_ws(head, key_end);
        if head.get(at) != Some(&b':') {
            return None;
        }
        at = skip_ws(head, at + 1);
        let value_end = value_end(head, at)?;
        if is_id {
            return scalar_id(&head[at..value_end]);
        }
        at = skip_ws(head, value_end);
        match head.get(at) {
            Some(b',') => at += 1,
            _ => return None,
        }
    }
}

/// `..., "id": VALUE }` at the very end of the line.
fn id_from_tail(tail: &[u8]) -> Option<Value> {
    let mut end = tail.len();
    while end > 0 && tail[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    if end == 0 || tail[end - 1] != b'}' {
        return None;
    }
    end -= 1;
    while end > 0 && tail[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    let value_end = end;
    let start = if end > 0 && tail[end - 1] == b'"' {
        // The opening quote: the previous `"` not escaped (ids seldom hold quotes).
        let mut i = end - 1;
        loop {
            i = i.checked_sub(1)?;
            if tail[i] == b'"' && (i == 0 || tail[i - 1] != b'\\') {
                break i;
            }
        }
    } else {
        let mut i = end;
        while i > 0 && matches!(tail[i - 1], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            i -= 1;
        }
        i
    };
    if start == value_end {
        return None;
    }
    let mut at = start;
    while at > 0 && tail[at - 1].is_ascii_whitespace() {
        at -= 1;
    }
    let rest = tail[..at].strip_suffix(b":")?;
    let trimmed = rest.trim_ascii_end();
    let before = trimmed.strip_suffix(b"\"id\"")?.trim_ascii_end();
    if !matches!(before.last(), Some(b',') | Some(b'{')) {
        return None;
    }
    scalar_id(&tail[start..value_end])
}

/// A number or string `id` (what JSON-RPC allows), else `None`.
fn scalar_id(text: &[u8]) -> Option<Value> {
    match serde_json::from_slice::<Value>(text).ok()? {
        v @ (Value::Number(_) | Value::String(_)) => Some(v),
        _ => None,
    }
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
        at += 1;
    }
    at
}

/// The index after the string starting at `at` (which must be `"`).
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    loop {
        match bytes.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The index after the JSON value starting at `at`, if it ends within `bytes`.
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = at;
            while bytes
                .get(i)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
            {
                i += 1;
            }
            // A scalar running into the end of the kept bytes may be cut short.
            (i < bytes.len()).then_some(i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(line: &str) -> Message {
        match peek(line.as_bytes()).expect("peek") {
            Shape::One(m) => m,
            Shape::Batch(_) => panic!("batch"),
        }
    }

    #[test]
    fn requests_notifications_and_answers_are_told_apart() {
        let r = one(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"id":9}}"#);
        assert_eq!(r.request_id(), Some(&json!(1)));
        assert_eq!(r.method.as_deref(), Some("initialize"));
        assert_eq!(r.answered_id(), None);
        let n = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(n.request_id(), None);
        let a = one(r#"{"jsonrpc":"2.0","result":{"id":3,"method":"x"},"id":"a"}"#);
        assert_eq!(a.answered_id(), Some(&json!("a")));
        assert_eq!(a.request_id(), None);
        let e = one(r#"{"jsonrpc":"2.0","id":4,"error":{"code":-1,"message":"m"}}"#);
        assert_eq!(e.answered_id(), Some(&json!(4)));
        let null = one(r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#);
        assert_eq!(null.request_id(), None);
    }

    #[test]
    fn batches_list_their_messages() {
        let shape = peek(br#"[{"id":1,"method":"a"},{"method":"b"}]"#).expect("peek");
        let ids: Vec<_> = shape.messages().iter().map(|m| m.request_id()).collect();
        assert_eq!(ids, vec![Some(&json!(1)), None]);
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(peek(b"\xff\xfe{}"), Err(Bad::NotUtf8));
        assert!(matches!(peek(b"hello"), Err(Bad::NotJson(_))));
        assert!(matches!(
            peek(br#"{"id":1,"method":"a""#),
            Err(Bad::NotJson(_))
        ));
        assert!(matches!(
            peek(br#"{"id":1} trailing"#),
            Err(Bad::NotJson(_))
        ));
        assert_eq!(peek(b"42"), Err(Bad::NotMessage));
        assert_eq!(peek(br#"[1,2]"#), Err(Bad::NotMessage));
        let reply: Value = serde_json::from_slice(&Bad::NotUtf8.reply()).expect("json");
        assert_eq!(reply["id"], Value::Null);
        assert_eq!(reply["error"]["code"], json!(PARSE_ERROR));
    }

    #[test]
    fn error_lines_are_one_json_line() {
        let line = error_line(&json!("x\ny"), UNAVAILABLE, "gone \"now\"");
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(v["id"], json!("x\ny"));
        assert_eq!(v["error"]["message"], json!("gone \"now\""));
    }

    #[test]
    fn an_id_is_found_at_the_start_of_a_cut_line() {
        let cases: [(&str, Option<Value>); 8] = [
            (
                r#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"#,
                Some(json!(12)),
            ),
            (r#" { "id" : "a\"b" , "method""#, Some(json!("a\"b"))),
            (
                r#"{"method":"x","params":{"id":5,"s":"}"},"id":-3,"#,
                Some(json!(-3)),
            ),
            (r#"{"method":"x","params":{"id":5,"s":"#, None),
            (r#"{"id":123"#, None),
            (r#"{"id":null,"#, None),
            (r#"[{"id":1}"#, None),
            (r#"{"a":[1,{"b":"]"}],"id":7}"#, Some(json!(7))),
        ];
        for (head, want) in cases {
            assert_eq!(lenient_id(head.as_bytes(), b""), want, "{head}");
        }
    }

    #[test]
    fn an_id_written_last_is_found_at_the_end() {
        let cases: [(&str, Option<Value>); 6] = [
            (r#"zzzz","id":42}"#, Some(json!(42))),
            (r#"zz" } , "id" : "req-1" }  "#, Some(json!("req-1"))),
            (r#"zz"},"params":{"id":3}}"#, None),
            (r#"zz","id":42"#, None),
            (r#"zz"xid":42}"#, None),
            (r#"zzzz"#, None),
        ];
        for (tail, want) in cases {
            assert_eq!(
                lenient_id(b"{\"params\":{\"s\":\"", tail.as_bytes()),
                want,
                "{tail}"
            );
        }
    }
}
