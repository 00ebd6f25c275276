//! The part of HCL (version 1, what `consul config write` reads) that config entry files use,
//! parsed into JSON: `key = value` items separated by newlines or commas, `key { ... }`
//! blocks (and `key "label" { ... }` for nested keys), strings with the usual escapes,
//! numbers, `true`/`false`, lists, and `#`, `//` and `/* */` comments. A key given twice as a
//! block becomes a list of its blocks (`Paths { ... } Paths { ... }`); otherwise the last value
//! wins. Errors read like HCL's: `At 2:10: literal not terminated`.

use serde_json::{Map, Number, Value};

/// Parses an HCL document into a JSON object.
pub(crate) fn parse(text: &str) -> Result<Value, String> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    let object = parser.items(None)?;
    Ok(Value::Object(object))
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    /// Items up to `close` (`}`), or to the end of the input for the document itself.
    fn items(&mut self, close: Option<char>) -> Result<Map<String, Value>, String> {
        let mut object = Map::new();
        loop {
            self.skip_space_and_comments(true);
            match self.peek() {
                None if close.is_none() => return Ok(object),
                None => return Err(self.error("object expected closing RBRACE got: EOF")),
                Some(c) if Some(c) == close => {
                    self.pos += 1;
                    return Ok(object);
                }
                Some(',') => {
                    self.pos += 1;
                    continue;
                }
                Some(_) => {}
            }
            // Each key with its text as written, for HCL's complaint.
            let mut keys = vec![self.key_token()?];
            loop {
                self.skip_space_and_comments(true);
                match self.peek() {
                    Some('=') | Some(':') => {
                        if keys.len() > 1 {
                            return Err(self.error("nested object expected: LBRACE got: ASSIGN"));
                        }
                        self.pos += 1;
                        let value = self.value()?;
                        insert(&mut object, keys.remove(0).0, value);
                        break;
                    }
                    Some('{') => {
                        self.pos += 1;
                        let mut value = Value::Object(self.items(Some('}'))?);
                        while keys.len() > 1 {
                            let (label, _) = keys.pop().expect("more than one key");
                            let mut wrapper = Map::new();
                            wrapper.insert(label, value);
                            value = Value::Object(wrapper);
                        }
                        insert(&mut object, keys.remove(0).0, value);
                        break;
                    }
                    Some(c) if c == '"' || is_ident_start(c) => keys.push(self.key_token()?),
                    _ => {
                        let written: Vec<&str> =
                            keys.iter().map(|(_, text)| text.as_str()).collect();
                        return Err(self.error(&format!(
                            "key '{}' expected start of object ('{{') or assignment ('=')",
                            written.join(" ")
                        )));
                    }
                }
            }
        }
    }

    /// A key and its text as written (quotes included).
    fn key_token(&mut self) -> Result<(String, String), String> {
        let start = self.pos;
        let key = self.key()?;
        Ok((key, self.chars[start..self.pos].iter().collect()))
    }

    fn key(&mut self) -> Result<String, String> {
        match self.peek() {
            Some('"') => self.string(),
            Some(c) if is_ident_start(c) => {
                let start = self.pos;
                while self.peek().is_some_and(is_ident_char) {
                    self.pos += 1;
                }
                Ok(self.chars[start..self.pos].iter().collect())
            }
            Some(c) => Err(self.error(&format!("illegal char {c:?}"))),
            None => Err(self.error("expected a key, got EOF")),
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_space_and_comments(true);
        match self.peek() {
            Some('"') => Ok(Value::String(self.string()?)),
            Some('{') => {
                self.pos += 1;
                Ok(Value::Object(self.items(Some('}'))?))
            }
            Some('[') => {
                self.pos += 1;
                self.list()
            }
            Some(c) if c == '-' || c.is_ascii_digit() => self.number(),
            Some(c) if is_ident_start(c) => {
                let (line, column) = self.position();
                let word = self.key()?;
                match word.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    _ => Err(format!(
                        "At {line}:{column}: Unknown token: {line}:{column} IDENT {word}"
                    )),
                }
            }
            Some('<') => {
                Err(self.error("heredoc strings are not supported here; use a quoted string"))
            }
            Some(c) => Err(self.error(&format!("illegal char {c:?}"))),
            None => Err(self.error("expected a value, got EOF")),
        }
    }

    fn list(&mut self) -> Result<Value, String> {
        let mut items = Vec::new();
        loop {
            self.skip_space_and_comments(true);
            match self.peek() {
                Some(']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                Some(',') if !items.is_empty() => {
                    self.pos += 1;
                }
                None => return Err(self.error("list expected closing RBRACK got: EOF")),
                Some(_) => items.push(self.value()?),
            }
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let (line, column) = self.position();
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.'))
        {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        if let Ok(int) = text.parse::<i64>() {
            return Ok(Value::Number(int.into()));
        }
        text.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("At {line}:{column}: illegal number {text:?}"))
    }

    fn string(&mut self) -> Result<String, String> {
        let (line, column) = self.position();
        self.pos += 1; // the opening quote
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(format!("At {line}:{column}: literal not terminated"));
            };
            self.pos += 1;
            match c {
                '"' => return Ok(out),
                '\n' => return Err(format!("At {line}:{column}: literal not terminated")),
                '\\' => {
                    let escaped = self
                        .peek()
                        .ok_or_else(|| format!("At {line}:{column}: literal not terminated"))?;
                    self.pos += 1;
                    match escaped {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        'u' => {
                            let hex: String = self.chars.iter().skip(self.pos).take(4).collect();
                            let code = u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| self.error("invalid unicode escape"))?;
                            self.pos += 4;
                            out.push(code);
                        }
                        other => {
                            return Err(self.error(&format!("unknown escape sequence \\{other}")))
                        }
                    }
                }
                other => out.push(other),
            }
        }
    }

    /// Skips blanks and comments; newlines too when `newlines`.
    fn skip_space_and_comments(&mut self, newlines: bool) {
        loop {
            match self.peek() {
                Some('\n') if !newlines => return,
                Some(c) if c.is_whitespace() => self.pos += 1,
                Some('#') => self.skip_line(),
                Some('/') if self.peek_at(1) == Some('/') => self.skip_line(),
                Some('/') if self.peek_at(1) == Some('*') => {
                    self.pos += 2;
                    while self.peek().is_some()
                        && !(self.peek() == Some('*') && self.peek_at(1) == Some('/'))
                    {
                        self.pos += 1;
                    }
                    self.pos = (self.pos + 2).min(self.chars.len());
                }
                _ => return,
            }
        }
    }

    fn skip_line(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    /// The 1-based line and column of the current position.
    fn position(&self) -> (usize, usize) {
        let before = &self.chars[..self.pos.min(self.chars.len())];
        let line = before.iter().filter(|c| **c == '\n').count() + 1;
        let column = before.iter().rev().take_while(|c| **c != '\n').count() + 1;
        (line, column)
    }

    fn error(&self, message: &str) -> String {
        let (line, column) = self.position();
        format!("At {line}:{column}: {message}")
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// A repeated block key collects its blocks in a list; anything else replaces.
fn insert(object: &mut Map<String, Value>, key: String, value: Value) {
    match (object.get_mut(&key), value) {
        (Some(Value::Array(list)), value @ Value::Object(_))
            if list.iter().all(Value::is_object) =>
        {
            list.push(value)
        }
        (Some(existing @ Value::Object(_)), value @ Value::Object(_)) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        (_, value) => {
            object.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_what_consul_docs_write() {
        let doc = r#"
# service-defaults for the demo
Kind = "service-defaults"
Name = "static-server"
Protocol = "http"   // L7 intentions need this
MeshGateway {
  Mode = "local"
}
Expose {
  Checks = true
  Paths = [
    { Path = "/metrics", LocalPathPort = 8080, ListenerPort = 21500 },
  ]
}
/* a block
   comment */
Meta { "owner" = "team-a", env = "dev" }
"#;
        assert_eq!(
            parse(doc).unwrap(),
            json!({
                "Kind": "service-defaults", "Name": "static-server", "Protocol": "http",
                "MeshGateway": {"Mode": "local"},
                "Expose": {"Checks": true, "Paths": [{"Path": "/metrics", "LocalPathPort": 8080, "ListenerPort": 21500}]},
                "Meta": {"owner": "team-a", "env": "dev"},
            })
        );
    }

    #[test]
    fn repeated_blocks_labels_and_numbers() {
        let doc = "Kind = \"proxy-defaults\"\nConfig { protocol = \"http\"\n ratio = -1.5 }\n\
                   Paths { Path = \"/a\" }\nPaths { Path = \"/b\" }\nouter \"inner\" { x = 1 }";
        assert_eq!(
            parse(doc).unwrap(),
            json!({
                "Kind": "proxy-defaults",
                "Config": {"protocol": "http", "ratio": -1.5},
                "Paths": [{"Path": "/a"}, {"Path": "/b"}],
                "outer": {"inner": {"x": 1}},
            })
        );
    }

    #[test]
    fn errors_name_the_place() {
        assert_eq!(
            parse("Kind = \"service-defaults\"\nName = \"x\n").unwrap_err(),
            "At 2:8: literal not terminated"
        );
        assert_eq!(
            parse("Kind = \"service-defaults\"\nName \"x\"\n").unwrap_err(),
            "At 3:1: key 'Name \"x\"' expected start of object ('{') or assignment ('=')"
        );
        assert_eq!(
            parse("Kind = service-defaults").unwrap_err(),
            "At 1:8: Unknown token: 1:8 IDENT service-defaults"
        );
        assert!(parse("Config { a = 1")
            .unwrap_err()
            .contains("expected closing RBRACE"));
    }
}
