//! Typed reading of the positioned tree with problem collection: every wrong type, unknown key
//! (with a "did you mean" suggestion), out-of-range value or bad enum choice becomes one
//! `Problem` with file:line:column and key path, and decoding carries on so that all problems of a
//! file are reported at once.

use super::limits::Limit;
use super::tree::{Entry, Format, Node, Pos, Value};
use std::fmt;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub file: String,
    pub pos: Pos,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.pos, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.pos, self.path, self.message
            )
        }
    }
}

/// Every problem of one load, sorted by position, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Sorts by position and drops exact duplicates (root values are checked once per target).
    pub fn normalize(&mut self) {
        self.0.sort();
        self.0.dedup();
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// `a.b` style key paths.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `a[3]` style key paths.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The closest known key, if it is close enough to be a plausible typo.
pub fn suggest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (unknown.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| {
            let dist = strsim::damerau_levenshtein(unknown, k);
            let close = dist <= limit || strsim::jaro_winkler(unknown, k) >= 0.85;
            (dist, *k, close)
        })
        .filter(|(_, _, close)| *close)
        .min_by_key(|(dist, _, _)| *dist)
        .map(|(_, k, _)| k)
}

fn camel_to_snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads values out of a tree, collecting problems.
pub struct Decoder {
    file: String,
    format: Format,
    pub problems: Vec<Problem>,
}

impl Decoder {
    pub fn new(file: impl Into<String>, format: Format) -> Decoder {
        Decoder {
            file: file.into(),
            format,
            problems: Vec::new(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn problem(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            pos,
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn wrong_type(&mut self, node: &Node, path: &str, expected: &str) {
        let msg = format!("expected {expected}, found {}", node.type_name());
        self.problem(node.pos, path, msg);
    }

    /// The entries of a map whose keys are all in `known` (null values count as unset). Unknown
    /// and repeated keys are reported. In JSON files Haloy's camelCase spelling is accepted too.
    pub fn map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&str],
    ) -> Vec<(String, &'n Entry)> {
        self.map_hinted(node, path, known, &[])
    }

    /// Like `map`, with a specific message for keys that are valid elsewhere (`misplaced`).
    pub fn map_hinted<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&str],
        misplaced: &[(&str, &str)],
    ) -> Vec<(String, &'n Entry)> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, path, "a map");
            return Vec::new();
        };
        let mut out: Vec<(String, &Entry)> = Vec::new();
        for entry in entries {
            let key = self.canonical_key(&entry.key, known);
            let key_path = join(path, &entry.key);
            if let Some((_, hint)) = misplaced.iter().find(|(k, _)| *k == key) {
                self.problem(entry.key_pos, &key_path, *hint);
                continue;
            }
            if !known.contains(&key.as_str()) {
                let mut msg = format!("unknown key `{}`", entry.key);
                if let Some(s) = suggest(&entry.key, known) {
                    msg.push_str(&format!("; did you mean `{s}`?"));
                }
                self.problem(entry.key_pos, &key_path, msg);
                continue;
            }
            if out.iter().any(|(k, _)| *k == key) {
                self.problem(entry.key_pos, &key_path, "key is given more than once");
                continue;
            }
            if entry.value.value != Value::Null {
                out.push((key, entry));
            }
        }
        out
    }

    fn canonical_key(&self, key: &str, known: &[&str]) -> String {
        if self.format == Format::Json && !known.contains(&key) {
            let snake = camel_to_snake(key);
            if known.contains(&snake.as_str()) {
                return snake;
            }
        }
        key.to_string()
    }

    /// Entries of a map with free-form keys (targets, images).
    pub fn free_map<'n>(&mut self, node: &'n Node, path: &str) -> &'n [Entry] {
        match &node.value {
            Value::Map(entries) => entries,
            _ => {
                self.wrong_type(node, path, "a map");
                &[]
            }
        }
    }

    pub fn seq<'n>(&mut self, node: &'n Node, path: &str) -> &'n [Node] {
        match &node.value {
            Value::Seq(items) => items,
            _ => {
                self.wrong_type(node, path, "a list");
                &[]
            }
        }
    }

    /// A string; numbers and booleans are accepted with their source spelling.
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        let text = node.scalar_text();
        if text.is_none() {
            self.wrong_type(node, path, "a string");
        }
        text
    }

    /// A string that must not be empty or contain whitespace.
    pub fn word(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path)?;
        if s.trim().is_empty() {
            self.problem(node.pos, path, "must not be empty");
            return None;
        }
        if s.chars().any(char::is_whitespace) {
            self.problem(node.pos, path, format!("`{s}` must not contain whitespace"));
            return None;
        }
        Some(s)
    }

    pub fn string_list(&mut self, node: &Node, path: &str) -> Vec<String> {
        let items = self.seq(node, path);
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.string(item, &index(path, i)))
            .collect()
    }

    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(node, path, "true or false");
                None
            }
        }
    }

    /// An integer in `min..=max`; a string holding digits is accepted (e.g. `port: "8080"`).
    pub fn int_in(&mut self, node: &Node, path: &str, min: i64, max: i64) -> Option<i64> {
        let value = match &node.value {
            Value::Int(i) => *i,
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => *f as i64,
            Value::Str(s) if s.trim().parse::<i64>().is_ok() => s.trim().parse::<i64>().ok()?,
            _ => {
                self.wrong_type(node, path, "an integer");
                return None;
            }
        };
        if value < min || value > max {
            let msg = if max == i64::MAX {
                format!("{value} is out of range; must be at least {min}")
            } else {
                format!("{value} is out of range; must be between {min} and {max}")
            };
            self.problem(node.pos, path, msg);
            return None;
        }
        Some(value)
    }

    pub fn float(&mut self, node: &Node, path: &str) -> Option<f64> {
        match &node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Str(s) if s.trim().parse::<f64>().is_ok() => s.trim().parse().ok(),
            _ => {
                self.wrong_type(node, path, "a number");
                None
            }
        }
    }

    /// An integer inside `limit` (the shared table in `config::limits`), as the field's type.
    pub fn int_limit<T: TryFrom<i64>>(
        &mut self,
        node: &Node,
        path: &str,
        limit: &Limit,
    ) -> Option<T> {
        let n = self.int_in(node, path, limit.min, limit.max)?;
        T::try_from(n).ok()
    }

    /// A string turned into a value by `parse`; its error becomes a problem at the value.
    pub fn parsed<T>(
        &mut self,
        node: &Node,
        path: &str,
        parse: impl FnOnce(String) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.string(node, path)?;
        self.report(node, path, parse(text))
    }

    /// Like [`Decoder::parsed`] for a single word (no blanks).
    pub fn parsed_word<T>(
        &mut self,
        node: &Node,
        path: &str,
        parse: impl FnOnce(String) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.word(node, path)?;
        self.report(node, path, parse(text))
    }

    fn report<T>(&mut self, node: &Node, path: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| self.problem(node.pos, path, message))
            .ok()
    }

    /// An enum written as one of its names: `choices` pairs each spelling with its value.
    pub fn one_of<T: Copy>(&mut self, node: &Node, path: &str, choices: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        let chosen = self.choice(node, path, &names)?;
        choices
            .iter()
            .find(|(name, _)| *name == chosen)
            .map(|(_, value)| *value)
    }

    /// One of a fixed set of words.
    pub fn choice(&mut self, node: &Node, path: &str, allowed: &[&str]) -> Option<String> {
        let s = self.string(node, path)?;
        if allowed.contains(&s.as_str()) {
            return Some(s);
        }
        let list = allowed
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut msg = format!("`{s}` is not valid; expected one of {list}");
        if let Some(hint) = suggest(&s, allowed) {
            msg.push_str(&format!("; did you mean `{hint}`?"));
        }
        self.problem(node.pos, path, msg);
        None
    }
}

#[cfg(test)]
#[path = "tests/decode.rs"]
mod tests;
