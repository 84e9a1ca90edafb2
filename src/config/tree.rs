//! A positioned document tree shared by every config format (YAML, JSON, TOML): each node and
//! each map key remembers its 1-based line and column so validation can point at the exact spot.

use std::fmt;

/// 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// The file formats a config may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Toml,
}

impl Format {
    /// Picks the format from a file extension (`yaml`, `yml`, `json`, `toml`).
    pub fn from_extension(ext: &str) -> Option<Format> {
        match ext {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

/// One value of the document. `text` keeps a scalar's source spelling so that e.g. `tag: 1.10`
/// stays "1.10" when a string is expected.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
    pub text: Option<String>,
}

impl Node {
    pub fn new(pos: Pos, value: Value) -> Node {
        Node {
            pos,
            value,
            text: None,
        }
    }

    /// A short name of the value's type for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// The scalar as text (strings, numbers and booleans), `None` for null, lists and maps.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(self.text.clone().unwrap_or_else(|| i.to_string())),
            Value::Float(f) => Some(self.text.clone().unwrap_or_else(|| f.to_string())),
            Value::Bool(b) => Some(self.text.clone().unwrap_or_else(|| b.to_string())),
            _ => None,
        }
    }
}

/// A syntax error with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses `text` in `format` into a positioned tree. An empty document yields `Null`.
pub fn parse(format: Format, text: &str) -> Result<Node, SyntaxError> {
    match format {
        Format::Yaml => yaml::parse(text),
        Format::Json => json::parse(text),
        Format::Toml => toml_tree::parse(text),
    }
}

/// Maps byte offsets to line/column.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    pub(crate) fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Pos { line, col }
    }
}

mod yaml {
    use super::{Entry, Node, Pos, SyntaxError, Value};
    use std::collections::HashMap;
    use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
    use yaml_rust2::scanner::{Marker, TScalarStyle};

    enum Frame {
        Seq {
            pos: Pos,
            anchor: usize,
            items: Vec<Node>,
        },
        Map {
            pos: Option<Pos>,
            mark: Pos,
            anchor: usize,
            entries: Vec<Entry>,
            key: Option<(String, Pos)>,
        },
    }

    #[derive(Default)]
    struct Builder {
        stack: Vec<Frame>,
        anchors: HashMap<usize, Node>,
        root: Option<Node>,
    }

    fn pos_of(mark: &Marker) -> Pos {
        // yaml-rust2 lines are 1-based, columns 0-based.
        Pos {
            line: mark.line(),
            col: mark.col() + 1,
        }
    }

    impl Builder {
        fn finish(&mut self, node: Node, anchor: usize) {
            if anchor > 0 {
                self.anchors.insert(anchor, node.clone());
            }
            match self.stack.last_mut() {
                None => {
                    if self.root.is_none() {
                        self.root = Some(node);
                    }
                }
                Some(Frame::Seq { items, .. }) => items.push(node),
                Some(Frame::Map {
                    entries, key, pos, ..
                }) => match key.take() {
                    None => {
                        let text = node
                            .scalar_text()
                            .unwrap_or_else(|| format!("<{} used as a key>", node.type_name()));
                        if pos.is_none() {
                            *pos = Some(node.pos);
                        }
                        *key = Some((text, node.pos));
                    }
                    Some((k, key_pos)) => entries.push(Entry {
                        key: k,
                        key_pos,
                        value: node,
                    }),
                },
            }
        }
    }

    impl MarkedEventReceiver for Builder {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            let pos = pos_of(&mark);
            match ev {
                Event::Scalar(text, style, anchor, tag) => {
                    let forced_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                    let value = if style == TScalarStyle::Plain && !forced_str {
                        resolve_plain(&text)
                    } else {
                        Value::Str(text.clone())
                    };
                    let node = Node {
                        pos,
                        value,
                        text: Some(text),
                    };
                    self.finish(node, anchor);
                }
                Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                }),
                Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                    pos: None,
                    mark: pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                }),
                Event::SequenceEnd | Event::MappingEnd => {
                    if let Some(frame) = self.stack.pop() {
                        let (node, anchor) = match frame {
                            Frame::Seq { pos, anchor, items } => {
                                (Node::new(pos, Value::Seq(items)), anchor)
                            }
                            Frame::Map {
                                pos,
                                mark,
                                anchor,
                                entries,
                                ..
                            } => (
                                Node::new(
                                    pos.unwrap_or(mark),
                                    Value::Map(expand_merge_keys(entries)),
                                ),
                                anchor,
                            ),
                        };
                        self.finish(node, anchor);
                    }
                }
                Event::Alias(id) => {
                    let mut node = self
                        .anchors
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| Node::new(pos, Value::Null));
                    node.pos = pos;
                    self.finish(node, 0);
                }
                _ => {}
            }
        }
    }

    /// Applies YAML merge keys (`<<: *base` or `<<: [*a, *b]`): merged entries never override
    /// keys written in the mapping itself, and earlier sources win over later ones.
    fn expand_merge_keys(entries: Vec<Entry>) -> Vec<Entry> {
        if !entries.iter().any(|e| e.key == "<<") {
            return entries;
        }
        let (merges, mut own): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| e.key == "<<");
        for merge in merges {
            let sources = match merge.value.value {
                Value::Seq(items) => items,
                other => vec![Node::new(merge.value.pos, other)],
            };
            for source in sources {
                match source.value {
                    Value::Map(inherited) => {
                        for e in inherited {
                            if !own.iter().any(|o| o.key == e.key) {
                                own.push(e);
                            }
                        }
                    }
                    other => own.push(Entry {
                        key: "<<".into(),
                        key_pos: merge.key_pos,
                        value: Node::new(source.pos, other),
                    }),
                }
            }
        }
        own
    }

    /// YAML 1.2 core schema resolution of plain scalars.
    fn resolve_plain(text: &str) -> Value {
        match text {
            "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
            "true" | "True" | "TRUE" => return Value::Bool(true),
            "false" | "False" | "FALSE" => return Value::Bool(false),
            _ => {}
        }
        if let Some(i) = parse_int(text) {
            return Value::Int(i);
        }
        if looks_like_float(text) {
            if let Ok(f) = text.parse::<f64>() {
                return Value::Float(f);
            }
        }
        match text {
            ".inf" | ".Inf" | ".INF" | "+.inf" => Value::Float(f64::INFINITY),
            "-.inf" | "-.Inf" | "-.INF" => Value::Float(f64::NEG_INFINITY),
            ".nan" | ".NaN" | ".NAN" => Value::Float(f64::NAN),
            _ => Value::Str(text.to_string()),
        }
    }

    fn parse_int(text: &str) -> Option<i64> {
        if let Some(hex) = text.strip_prefix("0x") {
            return i64::from_str_radix(hex, 16).ok();
        }
        if let Some(oct) = text.strip_prefix("0o") {
            return i64::from_str_radix(oct, 8).ok();
        }
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse().ok();
        }
        None
    }

    fn looks_like_float(text: &str) -> bool {
        let body = text.strip_prefix(['-', '+']).unwrap_or(text);
        body.bytes().any(|b| b.is_ascii_digit())
            && body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            && body
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
    }

    pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
        let mut builder = Builder::default();
        Parser::new_from_str(text)
            .load(&mut builder, false)
            .map_err(|e| SyntaxError {
                pos: pos_of(e.marker()),
                message: e.info().to_string(),
            })?;
        Ok(builder
            .root
            .unwrap_or_else(|| Node::new(Pos { line: 1, col: 1 }, Value::Null)))
    }
}

mod json {
    //! A small JSON parser that keeps positions (serde_json does not expose them).
    use super::{Entry, LineIndex, Node, Pos, SyntaxError, Value};

    struct P<'a> {
        s: &'a [u8],
        i: usize,
        lines: LineIndex<'a>,
    }

    pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
        let mut p = P {
            s: text.as_bytes(),
            i: 0,
            lines: LineIndex::new(text),
        };
        p.ws();
        if p.i >= p.s.len() {
            return Ok(Node::new(Pos { line: 1, col: 1 }, Value::Null));
        }
        let node = p.value(0)?;
        p.ws();
        if p.i < p.s.len() {
            return Err(p.err("unexpected characters after the JSON value"));
        }
        Ok(node)
    }

    impl P<'_> {
        fn pos(&self) -> Pos {
            self.lines.pos(self.i)
        }
        fn err(&self, msg: &str) -> SyntaxError {
            SyntaxError {
                pos: self.pos(),
                message: msg.to_string(),
            }
        }
        fn ws(&mut self) {
            while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            }
        }
        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }
        fn expect(&mut self, b: u8) -> Result<(), SyntaxError> {
            self.ws();
            if self.peek() == Some(b) {
                self.i += 1;
                Ok(())
            } else {
                Err(self.err(&format!("expected `{}`", b as char)))
            }
        }

        fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
            if depth > 128 {
                return Err(self.err("nesting too deep"));
            }
            self.ws();
            let pos = self.pos();
            match self.peek() {
                Some(b'{') => self.object(pos, depth),
                Some(b'[') => self.array(pos, depth),
                Some(b'"') => Ok(Node::new(pos, Value::Str(self.string()?))),
                Some(b't') => self.word("true", Value::Bool(true), pos),
                Some(b'f') => self.word("false", Value::Bool(false), pos),
                Some(b'n') => self.word("null", Value::Null, pos),
                Some(b'-' | b'0'..=b'9') => self.number(pos),
                Some(_) => Err(self.err("expected a JSON value")),
                None => Err(self.err("unexpected end of file")),
            }
        }

        fn word(&mut self, w: &str, v: Value, pos: Pos) -> Result<Node, SyntaxError> {
            if self.s[self.i..].starts_with(w.as_bytes()) {
                self.i += w.len();
                Ok(Node::new(pos, v))
            } else {
                Err(self.err("expected a JSON value"))
            }
        }

        fn number(&mut self, pos: Pos) -> Result<Node, SyntaxError> {
            let start = self.i;
            while self.i < self.s.len()
                && matches!(
                    self.s[self.i],
                    b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                )
            {
                self.i += 1;
            }
            let text = String::from_utf8_lossy(&self.s[start..self.i]).to_string();
            let value = if let Ok(i) = text.parse::<i64>() {
                Value::Int(i)
            } else if let Ok(f) = text.parse::<f64>() {
                Value::Float(f)
            } else {
                return Err(SyntaxError {
                    pos,
                    message: format!("invalid number `{text}`"),
                });
            };
            Ok(Node {
                pos,
                value,
                text: Some(text),
            })
        }

        fn string(&mut self) -> Result<String, SyntaxError> {
            self.i += 1; // opening quote
            let mut out = String::new();
            loop {
                let start = self.i;
                while self.i < self.s.len() && !matches!(self.s[self.i], b'"' | b'\\') {
                    if self.s[self.i] < 0x20 {
                        return Err(self.err("control character in string"));
                    }
                    self.i += 1;
                }
                out.push_str(&String::from_utf8_lossy(&self.s[start..self.i]));
                match self.peek() {
                    Some(b'"') => {
                        self.i += 1;
                        return Ok(out);
                    }
                    Some(b'\\') => {
                        self.i += 1;
                        self.escape(&mut out)?;
                    }
                    _ => return Err(self.err("unterminated string")),
                }
            }
        }

        fn escape(&mut self, out: &mut String) -> Result<(), SyntaxError> {
            let c = self.peek().ok_or_else(|| self.err("unterminated string"))?;
            self.i += 1;
            match c {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let hi = self.hex4()?;
                    let code =
                        if (0xD800..0xDC00).contains(&hi) && self.s[self.i..].starts_with(b"\\u") {
                            self.i += 2;
                            let lo = self.hex4()?;
                            0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF)
                        } else {
                            hi
                        };
                    out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                }
                _ => return Err(self.err("invalid escape in string")),
            }
            Ok(())
        }

        fn hex4(&mut self) -> Result<u32, SyntaxError> {
            let digits = self
                .s
                .get(self.i..self.i + 4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| u32::from_str_radix(d, 16).ok())
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            self.i += 4;
            Ok(digits)
        }

        fn object(&mut self, pos: Pos, depth: usize) -> Result<Node, SyntaxError> {
            self.i += 1;
            let mut entries = Vec::new();
            self.ws();
            if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(Node::new(pos, Value::Map(entries)));
            }
            loop {
                self.ws();
                let key_pos = self.pos();
                if self.peek() != Some(b'"') {
                    return Err(self.err("expected a string key"));
                }
                let key = self.string()?;
                self.expect(b':')?;
                let value = self.value(depth + 1)?;
                entries.push(Entry {
                    key,
                    key_pos,
                    value,
                });
                self.ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        return Ok(Node::new(pos, Value::Map(entries)));
                    }
                    _ => return Err(self.err("expected `,` or `}`")),
                }
            }
        }

        fn array(&mut self, pos: Pos, depth: usize) -> Result<Node, SyntaxError> {
            self.i += 1;
            let mut items = Vec::new();
            self.ws();
            if self.peek() == Some(b']') {
                self.i += 1;
                return Ok(Node::new(pos, Value::Seq(items)));
            }
            loop {
                items.push(self.value(depth + 1)?);
                self.ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b']') => {
                        self.i += 1;
                        return Ok(Node::new(pos, Value::Seq(items)));
                    }
                    _ => return Err(self.err("expected `,` or `]`")),
                }
            }
        }
    }
}

mod toml_tree {
    use super::{Entry, LineIndex, Node, Pos, SyntaxError, Value};
    use toml::de::{DeTable, DeValue};

    pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
        let lines = LineIndex::new(text);
        let table = DeTable::parse(text).map_err(|e| SyntaxError {
            pos: e
                .span()
                .map_or(Pos { line: 1, col: 1 }, |s| lines.pos(s.start)),
            message: e.message().trim().to_string(),
        })?;
        let pos = Pos { line: 1, col: 1 };
        Ok(Node::new(pos, table_value(table.get_ref(), &lines)))
    }

    fn table_value(table: &DeTable<'_>, lines: &LineIndex<'_>) -> Value {
        let mut entries: Vec<Entry> = table
            .iter()
            .map(|(k, v)| Entry {
                key: k.get_ref().to_string(),
                key_pos: lines.pos(k.span().start),
                value: convert(v.get_ref(), lines.pos(v.span().start), lines),
            })
            .collect();
        // toml keeps keys sorted; restore file order so lists of targets read naturally.
        entries.sort_by_key(|e| e.key_pos);
        Value::Map(entries)
    }

    fn convert(value: &DeValue<'_>, pos: Pos, lines: &LineIndex<'_>) -> Node {
        let (value, text) = match value {
            DeValue::String(s) => (Value::Str(s.to_string()), None),
            DeValue::Integer(i) => {
                let raw = i.as_str().replace('_', "");
                let parsed = i64::from_str_radix(&raw, i.radix()).ok();
                (
                    parsed.map_or(Value::Str(raw.clone()), Value::Int),
                    Some(i.as_str().to_string()),
                )
            }
            DeValue::Float(f) => {
                let raw = f.as_str().replace('_', "");
                let parsed = raw.parse::<f64>().unwrap_or(f64::NAN);
                (Value::Float(parsed), Some(f.as_str().to_string()))
            }
            DeValue::Boolean(b) => (Value::Bool(*b), None),
            DeValue::Datetime(d) => (Value::Str(d.to_string()), None),
            DeValue::Array(items) => (
                Value::Seq(
                    items
                        .iter()
                        .map(|v| convert(v.get_ref(), lines.pos(v.span().start), lines))
                        .collect(),
                ),
                None,
            ),
            DeValue::Table(t) => (table_value(t, lines), None),
        };
        Node { pos, value, text }
    }
}

#[cfg(test)]
#[path = "tests/tree.rs"]
mod tests;
