//! Reads YAML the way kubectl does: kubectl turns YAML into JSON with go-yaml v2, which
//! resolves plain (unquoted) scalars by YAML 1.1's rules. A YAML 1.2 reader takes a plain
//! `0644`, `yes`, `off` or `1_000` for a string; kubectl reads `420`, `true`, `false`, `1000`, and
//! so must `inject`, or it would hand the API server a different object than the user's.
//!
//! Resolution of a plain scalar (go-yaml v2's): `~`, `null`, `Null`, `NULL` and the empty
//! scalar are null; `y`, `yes`, `on`, `true` and `n`, `no`, `off`, `false` (lower, capitalised or
//! upper case) are booleans; with every `_` removed, Go's `ParseInt(s, 0, 64)` syntax (`0x1F`,
//! `0o17`, `0b101`, a leading `0` for octal, a sign) is an integer, and `[-+]?(\.d+|d+(\.d*)?)([eE][-+]?d+)?`
//! a float (integral floats as integers, as Go's JSON writes them); anything else is a string.
//! Quoted and block scalars are strings; `!!str`, `!!int`, `!!float`, `!!bool`, `!!null` tags
//! are honoured. Anchors, aliases and `<<` merge keys work as in go-yaml.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, EventReceiver, Parser, Tag};
use yaml_rust2::scanner::TScalarStyle;

/// A YAML stream that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(String);

/// Every document of `text`, as kubectl reads it (empty documents included, as `null`).
pub(crate) fn documents(text: &str) -> Result<Vec<Value>, ReadError> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, true)
        .map_err(|e| ReadError(e.to_string()))?;
    match builder.error {
        Some(e) => Err(ReadError(e)),
        None => Ok(builder.documents),
    }
}

#[derive(Default)]
struct Builder {
    documents: Vec<Value>,
    stack: Vec<Node>,
    root: Option<Value>,
    anchors: HashMap<usize, Value>,
    error: Option<String>,
}

enum Node {
    Sequence {
        anchor: usize,
        items: Vec<Value>,
    },
    Mapping {
        anchor: usize,
        map: Map<String, Value>,
        /// The key read and waiting for its value; `None` for a `<<` merge key.
        key: Option<Option<String>>,
    },
}

impl EventReceiver for Builder {
    fn on_event(&mut self, event: Event) {
        if self.error.is_some() {
            return;
        }
        match event {
            Event::DocumentEnd => {
                let root = self.root.take().unwrap_or(Value::Null);
                self.documents.push(root);
            }
            Event::Scalar(text, style, anchor, tag) => {
                let merge = style == TScalarStyle::Plain && text == "<<" && tag.is_none();
                match resolve(&text, style, tag.as_ref()) {
                    Ok(value) => self.finish(value, anchor, merge),
                    Err(e) => self.error = Some(e),
                }
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(value) => self.finish(value.clone(), 0, false),
                None => self.error = Some(format!("an alias refers to an unknown anchor ({id})")),
            },
            Event::SequenceStart(anchor, _) => self.stack.push(Node::Sequence {
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Node::Mapping {
                anchor,
                map: Map::new(),
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Node::Sequence { anchor, items }) => {
                    self.finish(Value::Array(items), anchor, false)
                }
                Some(Node::Mapping { anchor, map, .. }) => {
                    self.finish(Value::Object(map), anchor, false)
                }
                None => self.error = Some("unbalanced YAML structure".into()),
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart => {}
        }
    }
}

impl Builder {
    /// A complete value: remembered under its anchor, then placed in its parent.
    fn finish(&mut self, value: Value, anchor: usize, merge_key: bool) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Node::Sequence { items, .. }) => items.push(value),
            Some(Node::Mapping { map, key, .. }) => match key.take() {
                None if merge_key => *key = Some(None),
                None => match key_text(&value) {
                    Some(text) => *key = Some(Some(text)),
                    None => self.error = Some(format!("a mapping key must be a scalar: {value}")),
                },
                Some(Some(k)) => {
                    map.insert(k, value);
                }
                Some(None) => {
                    // `<<: *base` or `<<: [*a, *b]`: keys not set explicitly come from the maps.
                    let sources = match value {
                        Value::Array(list) => list,
                        one => vec![one],
                    };
                    for source in sources {
                        let Value::Object(fields) = source else {
                            self.error =
                                Some("a << merge key takes a mapping or a list of mappings".into());
                            return;
                        };
                        for (k, v) in fields {
                            map.entry(k).or_insert(v);
                        }
                    }
                }
            },
        }
    }
}

/// What a mapping key becomes in JSON (kubectl writes non-string keys as their text).
fn key_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some("null".into()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn resolve(text: &str, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    match tag {
        Some(t) if t.handle == "!!" || t.handle == "tag:yaml.org,2002:" => {
            match t.suffix.as_str() {
                "int" | "float" | "bool" | "null" => resolve_plain(text),
                _ => Ok(Value::String(text.to_string())),
            }
        }
        Some(_) => Ok(Value::String(text.to_string())),
        None if style == TScalarStyle::Plain => resolve_plain(text),
        None => Ok(Value::String(text.to_string())),
    }
}

/// go-yaml v2's resolution of a plain scalar (see the module docs).
fn resolve_plain(text: &str) -> Result<Value, String> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            return Ok(Value::Bool(true))
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            return Ok(Value::Bool(false))
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            return Err(format!(
                "{text:?} is an infinity or NaN to kubectl, which JSON cannot carry (quote it for a string)"
            ))
        }
        _ => {}
    }
    let plain = text.replace('_', "");
    if let Some(n) = go_int(&plain) {
        return Ok(n);
    }
    if is_yaml_float(&plain) {
        let f: f64 = plain
            .parse()
            .map_err(|_| format!("{text:?} looks like a number but is not one"))?;
        if !f.is_finite() {
            return Err(format!(
                "{text:?} is too large for JSON, as kubectl would say"
            ));
        }
        // Go's JSON writes an integral float without a fraction: kubectl sends `1e3` as 1000.
        if f.fract() == 0.0 && f.abs() < 9.0e15 {
            return Ok(Value::from(f as i64));
        }
        return Ok(Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null));
    }
    Ok(Value::String(text.to_string()))
}

/// Go's `strconv.ParseInt(s, 0, 64)` (then `ParseUint` for large positive values).
fn go_int(s: &str) -> Option<Value> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(hex) = lower.strip_prefix("0x") {
        (16, hex)
    } else if let Some(oct) = lower.strip_prefix("0o") {
        (8, oct)
    } else if let Some(bin) = lower.strip_prefix("0b") {
        (2, bin)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(body, radix).ok()?;
    if negative {
        let limit = i64::MAX as u64 + 1;
        (magnitude <= limit).then(|| Value::from((magnitude as i128).wrapping_neg() as i64))
    } else {
        Some(Value::from(magnitude))
    }
}

/// go-yaml v2's float pattern: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Value {
        documents(text).unwrap().remove(0)
    }

    #[test]
    fn plain_scalars_resolve_as_kubectl_reads_them() {
        let doc = one(
            "mode: 0644\nhex: 0x1F\nbin: 0b101\noct: 0o17\nbig: 1_000\nneg: -12\nf: 1.5\ne: 1e3\n\
             yes: yes\nOff: Off\ny: y\nnil: ~\nempty:\nword: hello\nnine: 09\ndate: 2001-12-14\n\
             inf_word: .inf_x\nversion: 1.2.3\n",
        );
        assert_eq!(
            doc,
            json!({"mode": 420, "hex": 31, "bin": 5, "oct": 15, "big": 1000, "neg": -12,
                   "f": 1.5, "e": 1000, "true": true, "false": false, "true": true, "nil": null,
                   "empty": null, "word": "hello", "nine": 9, "date": "2001-12-14",
                   "inf_word": ".inf_x", "version": "1.2.3"})
        );
    }

    #[test]
    fn quoted_block_and_tagged_scalars_are_strings() {
        let doc = one("a: \"0644\"\nb: 'yes'\nc: |\n  on\nd: !!str 12\ne: !!int \"12\"\n");
        assert_eq!(
            doc,
            json!({"a": "0644", "b": "yes", "c": "on\n", "d": "12", "e": 12})
        );
    }

    #[test]
    fn anchors_aliases_merge_keys_and_several_documents() {
        let docs = documents(
            "base: &b {a: 1, b: 2}\nlist: [*b]\nmerged:\n  <<: *b\n  b: 3\n---\n---\nk: v\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0]["list"][0], json!({"a": 1, "b": 2}));
        assert_eq!(docs[0]["merged"], json!({"a": 1, "b": 3}));
        assert_eq!(docs[1], Value::Null);
        assert_eq!(docs[2], json!({"k": "v"}));
    }

    #[test]
    fn bad_yaml_is_an_error() {
        assert!(documents("a: [1, 2\n").is_err());
        assert!(documents("a: .inf\n").is_err());
    }
}
