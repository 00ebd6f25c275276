//! Writes YAML that a YAML 1.1 reader (kubectl, go-yaml v2, PyYAML) and a YAML 1.2 reader
//! read back as the same document.
//!
//! A YAML 1.2 writer leaves `on`, `no`, `y`, `1_000`, `0o17` or `2001-12-14` unquoted, because
//! in 1.2 they are strings; kubectl reads YAML the 1.1 way and sees `true`, `false`, `1000`, a
//! time... and the API server then refuses the object. Here a string is written plain only when
//! it cannot be anything but a string in either version: it starts with a letter, has only
//! letters, digits and `-_./:` (no `:` at the end), and is not one of 1.1's booleans or null in
//! any case. Every other string is double-quoted with JSON's escapes, which mean the same in
//! both versions. Block style, two-space indentation, sequences at their key's indentation (as
//! kubectl writes them).

use serde_json::{Map, Value};

/// The document as YAML, ending with a newline.
pub(crate) fn to_string(doc: &Value) -> String {
    let mut out = String::new();
    match doc {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

/// Whether `s` may be written without quotes (see the module docs).
fn is_plain_safe(s: &str) -> bool {
    const ONE_ONE_WORDS: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    first.is_ascii_alphabetic()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'))
        && !s.ends_with(':')
        && !ONE_ONE_WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
}

fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    for (key, value) in map {
        pad(out, indent);
        out.push_str(&string(key));
        out.push(':');
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                write_map(out, inner, indent + 2);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_seq(out, items, indent);
            }
            scalar => {
                out.push(' ');
                out.push_str(&inline(scalar));
                out.push('\n');
            }
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The map as it would be written two columns in, with its first line's two
                // leading spaces of that column turned into the item's "- ".
                let mut nested = String::new();
                write_map(&mut nested, map, indent + 2);
                pad(out, indent);
                out.push_str("- ");
                out.push_str(&nested[indent + 2..]);
            }
            Value::Array(inner) if !inner.is_empty() => {
                pad(out, indent);
                out.push_str("-\n");
                write_seq(out, inner, indent + 2);
            }
            scalar => {
                pad(out, indent);
                out.push_str("- ");
                out.push_str(&inline(scalar));
                out.push('\n');
            }
        }
    }
}

/// A scalar, or an empty map or list, on one line.
fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

fn string(s: &str) -> String {
    if is_plain_safe(s) {
        return s.to_string();
    }
    // JSON's escapes mean the same in YAML's double quotes. On top of them: the line breaks
    // YAML readers fold inside quotes (NEL, LS, PS) and the characters go-yaml refuses in a
    // stream (DEL, the C1 controls, U+FEFF, U+FFFE, U+FFFF) are escaped too.
    let json = serde_json::to_string(s).expect("invariant: a string serializes to JSON");
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            '\u{7f}'..='\u{9f}' => out.push_str(&format!("\\x{:02X}", c as u32)),
            '\u{feff}' | '\u{fffe}' | '\u{ffff}' => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A number as both readers take it: a float always has a `.` and a signed exponent
/// (`1.0e+21`), which YAML 1.1's float pattern requires.
fn number(n: &serde_json::Number) -> String {
    let text = n.to_string();
    if !n.is_f64() {
        return text;
    }
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m.to_string(), Some(e.to_string())),
        None => (text.clone(), None),
    };
    let mantissa = if mantissa.contains('.') {
        mantissa
    } else {
        format!("{mantissa}.0")
    };
    match exponent {
        Some(e) if e.starts_with(['+', '-']) => format!("{mantissa}e{e}"),
        Some(e) => format!("{mantissa}e+{e}"),
        None => mantissa,
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Strings a YAML 1.1 reader takes for something else, or that need quotes in any YAML.
    const TRICKY: &[&str] = &[
        "on",
        "On",
        "ON",
        "off",
        "yes",
        "Yes",
        "no",
        "NO",
        "y",
        "Y",
        "n",
        "N",
        "true",
        "True",
        "false",
        "FALSE",
        "null",
        "Null",
        "~",
        "",
        "1_000",
        "0x1F",
        "0o17",
        "017",
        "0b101",
        "1e3",
        "1.5",
        "-1",
        "+1",
        ".inf",
        "-.Inf",
        ".nan",
        ".NaN",
        "2001-12-14",
        "2001-12-14t21:59:43.10-05:00",
        "12:30",
        "1:20:30",
        "123",
        "0",
        "-",
        "- x",
        "key: value",
        "a #b",
        "#x",
        "@x",
        "`x",
        "!x",
        "&a",
        "*a",
        "|",
        ">",
        "%x",
        "[x]",
        "{x}",
        "'q'",
        "\"q\"",
        "=",
        "<<",
        " lead",
        "trail ",
        "two\nlines",
        "tab\there",
        "caf\u{e9}",
        "ends:",
        "?",
        ",",
        "x,y",
    ];

    #[test]
    fn tricky_strings_are_quoted_and_read_back_as_strings() {
        for s in TRICKY {
            assert!(!is_plain_safe(s), "{s:?} must be quoted");
            let doc = json!({ *s: *s, "list": [*s] });
            let text = to_string(&doc);
            let back: Value =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{s:?}: {e}\n{text}"));
            assert_eq!(back, doc, "{s:?} as written:\n{text}");
        }
    }

    #[test]
    fn line_breaks_and_characters_go_yaml_refuses_are_escaped() {
        let text = to_string(&json!({"k": "a\u{85}b\u{2028}c\u{7f}d\u{ffff}"}));
        assert_eq!(text, "k: \"a\\Nb\\Lc\\x7Fd\\uFFFF\"\n");
    }

    #[test]
    fn floats_always_read_as_floats() {
        let doc = json!({"a": 1e21, "b": 0.5, "c": 1.0, "d": 3});
        assert_eq!(to_string(&doc), "a: 1.0e+21\nb: 0.5\nc: 1.0\nd: 3\n");
    }

    #[test]
    fn ordinary_values_stay_plain() {
        for s in [
            "nginx",
            "hashicorp/http-echo:latest",
            "consul.hashicorp.com/connect-inject",
            "v1",
            "Always",
            "a.b-c_d",
        ] {
            assert!(is_plain_safe(s), "{s}");
        }
    }

    #[test]
    fn block_layout_is_kubectls() {
        let doc = json!({
            "apiVersion": "v1",
            "metadata": {"name": "p", "labels": {}},
            "spec": {"containers": [{"name": "a", "args": ["-x", "on"], "env": []}], "nested": [[1, 2]]},
        });
        assert_eq!(
            to_string(&doc),
            "apiVersion: v1\nmetadata:\n  name: p\n  labels: {}\nspec:\n  containers:\n  - name: a\n    args:\n    - \"-x\"\n    - \"on\"\n    env: []\n  nested:\n  -\n    - 1\n    - 2\n"
        );
    }
}
