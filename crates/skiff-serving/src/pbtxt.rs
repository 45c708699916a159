//! Protobuf text format, the syntax of Triton's `config.pbtxt`, parsed into a generic tree.
//!
//! There is no schema here: [`crate::repository`] maps the fields skiff uses and checks names
//! against Triton's `ModelConfig`. The whole syntax is accepted (comments, `:` before a message
//! optional, `{}` or `<>` around messages, `[a, b]` lists, repeated fields, adjacent string
//! literals, `,`/`;` between fields) so that any file Triton reads parses; errors give line and
//! column. Nesting is bounded so hostile input cannot exhaust the stack.

use std::fmt;

/// Deeper nesting than any model configuration needs.
const MAX_DEPTH: usize = 32;

/// A message: its fields in file order; a repeated field appears once per value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub fields: Vec<(String, Value)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A quoted string, unescaped.
    Str(String),
    /// A number, an enum name or a boolean, as written.
    Word(String),
    Message(Message),
}

impl Value {
    pub fn describe(&self) -> String {
        match self {
            Value::Str(s) => format!("{s:?}"),
            Value::Word(w) => w.clone(),
            Value::Message(_) => "a message".to_string(),
        }
    }
}

impl Message {
    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The value of a non-repeated field; an error if it is given twice.
    pub fn one(&self, name: &str) -> Result<Option<&Value>, String> {
        let mut it = self
            .fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v);
        let first = it.next();
        if it.next().is_some() {
            return Err(format!("field {name:?} is given more than once"));
        }
        Ok(first)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "line {} column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole text-format message.
pub fn parse(text: &str) -> Result<Message, ParseError> {
    let mut p = Parser {
        src: text.as_bytes(),
        pos: 0,
    };
    let msg = p.message(None, 0)?;
    p.skip_space();
    if p.pos < p.src.len() {
        return Err(p.error("unexpected text after the last field"));
    }
    Ok(msg)
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'+')
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> ParseError {
        let before = &self.src[..self.pos.min(self.src.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        ParseError {
            line,
            column: self.pos - line_start + 1,
            message: message.into(),
        }
    }

    fn skip_space(&mut self) {
        while let Some(&b) = self.src.get(self.pos) {
            if b == b'#' {
                while self.src.get(self.pos).is_some_and(|&b| b != b'\n') {
                    self.pos += 1;
                }
            } else if b.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.src.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn word(&mut self) -> Option<String> {
        self.skip_space();
        let start = self.pos;
        while self.src.get(self.pos).is_some_and(|&b| is_word_byte(b)) {
            self.pos += 1;
        }
        (self.pos > start).then(|| String::from_utf8_lossy(&self.src[start..self.pos]).into_owned())
    }

    /// Fields until `close` (or the end of the text for the top level).
    fn message(&mut self, close: Option<u8>, depth: usize) -> Result<Message, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error(format!("messages nested deeper than {MAX_DEPTH}")));
        }
        let mut msg = Message::default();
        loop {
            match (self.peek(), close) {
                (None, None) => return Ok(msg),
                (None, Some(c)) => {
                    return Err(self.error(format!("missing {:?}", c as char)));
                }
                (Some(b), Some(c)) if b == c => {
                    self.pos += 1;
                    return Ok(msg);
                }
                _ => {}
            }
            let name = match self.word() {
                Some(w) if w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') => w,
                _ => return Err(self.error("expected a field name")),
            };
            let colon = self.eat(b':');
            match self.peek() {
                Some(b'{') | Some(b'<') => {
                    let v = self.message_value(depth)?;
                    msg.fields.push((name, v));
                }
                Some(b'[') => {
                    self.pos += 1;
                    if !self.eat(b']') {
                        loop {
                            let v = self.list_element(depth)?;
                            msg.fields.push((name.clone(), v));
                            if self.eat(b']') {
                                break;
                            }
                            if !self.eat(b',') {
                                return Err(self.error("expected ',' or ']' in a list"));
                            }
                        }
                    }
                }
                _ if colon => {
                    let v = self.scalar()?;
                    msg.fields.push((name, v));
                }
                _ => return Err(self.error(format!("expected ':' or '{{' after {name:?}"))),
            }
            // Fields may be separated by ',' or ';'.
            if !self.eat(b',') {
                self.eat(b';');
            }
        }
    }

    fn message_value(&mut self, depth: usize) -> Result<Value, ParseError> {
        let close = if self.eat(b'{') {
            b'}'
        } else if self.eat(b'<') {
            b'>'
        } else {
            return Err(self.error("expected '{'"));
        };
        Ok(Value::Message(self.message(Some(close), depth + 1)?))
    }

    fn list_element(&mut self, depth: usize) -> Result<Value, ParseError> {
        match self.peek() {
            Some(b'{') | Some(b'<') => self.message_value(depth),
            _ => self.scalar(),
        }
    }

    fn scalar(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            Some(b'"') | Some(b'\'') => {
                // Adjacent literals concatenate, as in C.
                let mut s = self.string()?;
                while matches!(self.peek(), Some(b'"') | Some(b'\'')) {
                    s.push_str(&self.string()?);
                }
                Ok(Value::Str(s))
            }
            _ => self
                .word()
                .map(Value::Word)
                .ok_or_else(|| self.error("expected a value")),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let quote = self.src[self.pos];
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.src.get(self.pos) else {
                return Err(self.error("unterminated string"));
            };
            self.pos += 1;
            match b {
                b'\n' => return Err(self.error("newline in a string")),
                b'\\' => {
                    let Some(&e) = self.src.get(self.pos) else {
                        return Err(self.error("unterminated string"));
                    };
                    self.pos += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'a' => out.push(0x07),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'v' => out.push(0x0b),
                        b'\\' | b'\'' | b'"' | b'?' => out.push(e),
                        b'x' => {
                            let digits = self.take_while(2, |b| b.is_ascii_hexdigit());
                            let v = u8::from_str_radix(&digits, 16)
                                .map_err(|_| self.error("bad \\x escape"))?;
                            out.push(v);
                        }
                        b'0'..=b'7' => {
                            self.pos -= 1;
                            let digits = self.take_while(3, |b| (b'0'..=b'7').contains(&b));
                            let v = u32::from_str_radix(&digits, 8)
                                .ok()
                                .and_then(|v| u8::try_from(v).ok())
                                .ok_or_else(|| self.error("bad octal escape"))?;
                            out.push(v);
                        }
                        _ => {
                            return Err(self.error(format!("unknown escape \\{}", e as char)));
                        }
                    }
                }
                _ if b == quote => break,
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("string is not UTF-8"))
    }

    fn take_while(&mut self, max: usize, f: impl Fn(u8) -> bool) -> String {
        let start = self.pos;
        while self.pos - start < max && self.src.get(self.pos).is_some_and(|&b| f(b)) {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.src[start..self.pos]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_triton_config() {
        let text = r#"
            # A typical Triton model configuration.
            name: "iris"
            platform: "onnxruntime_onnx"
            max_batch_size: 8
            input [
              { name: "X" data_type: TYPE_FP32 dims: [ 4 ] },
              { name: "Y", data_type: TYPE_INT64, dims: [-1, 2] }
            ]
            dynamic_batching { max_queue_delay_microseconds: 500 preferred_batch_size: [4, 8] }
            instance_group [ { count: 2 kind: KIND_CPU } ];
            version_policy: < specific { versions: 3 } >
            parameters { key: "a" value: { string_value: 'x' "y\n\x41\101" } }
        "#;
        let m = parse(text).unwrap();
        assert_eq!(m.one("name").unwrap(), Some(&Value::Str("iris".into())));
        assert_eq!(
            m.one("max_batch_size").unwrap(),
            Some(&Value::Word("8".into()))
        );
        let inputs: Vec<_> = m.all("input").collect();
        assert_eq!(inputs.len(), 2);
        let Value::Message(y) = inputs[1] else {
            panic!("{inputs:?}")
        };
        let dims: Vec<_> = y.all("dims").map(Value::describe).collect();
        assert_eq!(dims, ["-1", "2"]);
        let Some(Value::Message(db)) = m.one("dynamic_batching").unwrap() else {
            panic!()
        };
        assert_eq!(db.all("preferred_batch_size").count(), 2);
        let Some(Value::Message(p)) = m.one("parameters").unwrap() else {
            panic!()
        };
        let Some(Value::Message(v)) = p.one("value").unwrap() else {
            panic!()
        };
        assert_eq!(
            v.one("string_value").unwrap(),
            Some(&Value::Str("xy\nAA".into()))
        );
        assert!(parse("").unwrap().fields.is_empty());
        assert!(parse("a: 1 a: 2").unwrap().one("a").is_err());
    }

    #[test]
    fn errors_name_line_and_column() {
        for (text, want) in [
            ("name: \"x", "line 1 column 9: unterminated string"),
            ("a {\n b: 1\n", "line 3 column 1: missing '}'"),
            (
                "a: 1\nb 2",
                "line 2 column 3: expected ':' or '{' after \"b\"",
            ),
            ("a: [1 2]", "expected ',' or ']'"),
            ("a: }", "expected a value"),
            ("a: 1 }", "line 1 column 6: expected a field name"),
            ("a: \"\\q\"", "unknown escape \\q"),
            ("9a: 1", "expected a field name"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let deep = "a {".repeat(100) + &"}".repeat(100);
        assert!(
            parse(&deep)
                .unwrap_err()
                .to_string()
                .contains("nested deeper")
        );
    }

    #[test]
    fn random_text_never_panics() {
        use rand::{Rng, SeedableRng};
        let seed = r#"name: "m" max_batch_size: 4 input [{ name: "x" dims: [1, 2] }] dynamic_batching { } v: 'a\x41\101' # c"#;
        let alphabet = b"{}<>[]:,;#\"'\\ \n-.0123456789abcxyz_";
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let mut text = seed.as_bytes().to_vec();
            for _ in 0..rng.random_range(1..6) {
                let i = rng.random_range(0..=text.len());
                match rng.random_range(0..3) {
                    0 if i < text.len() => {
                        text.remove(i);
                    }
                    1 if i < text.len() => text[i] = alphabet[rng.random_range(0..alphabet.len())],
                    _ => text.insert(i, alphabet[rng.random_range(0..alphabet.len())]),
                }
            }
            let _ = parse(&String::from_utf8_lossy(&text));
        }
    }
}
