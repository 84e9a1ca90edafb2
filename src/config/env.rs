//! Environment for value sources: the process environment plus the `.env`, `.env.local` and
//! `.env.<target>` files next to the config file, and `${VAR}` interpolation between `env:`
//! entries with cycle detection.
//!
//! Lookup order for `from: {env: VAR}` and for `${VAR}` that is not an `env:` entry:
//! the process environment (so CI can override), then `.env.<target>`, then `.env.local`, then
//! `.env`.

use super::decode::Decoder;
use super::tree::Pos;
use std::collections::HashMap;
use std::path::Path;

/// Named variable maps in lookup order.
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    layers: Vec<(String, HashMap<String, String>)>,
}

impl EnvSources {
    /// Process environment first, then the .env files of `dir` for `target`. Malformed .env lines
    /// are reported through `dec`.
    pub fn load(
        dir: &Path,
        target: Option<&str>,
        process: &HashMap<String, String>,
        dec: &mut Decoder,
    ) -> EnvSources {
        let mut layers = vec![("the environment".to_string(), process.clone())];
        let mut names: Vec<String> = Vec::new();
        if let Some(t) = target {
            names.push(format!(".env.{t}"));
        }
        names.push(".env.local".into());
        names.push(".env".into());
        for name in names {
            let path = dir.join(&name);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let vars = parse_dotenv(&text, &path.display().to_string(), dec);
            layers.push((name, vars));
        }
        EnvSources { layers }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.layers
            .iter()
            .find_map(|(_, vars)| vars.get(name).map(String::as_str))
    }

    /// "the environment, .env.local, .env" for messages.
    pub fn describe(&self) -> String {
        self.layers
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Parses `KEY=value` lines (`export ` prefix, `#` comments, single/double quotes).
pub fn parse_dotenv(text: &str, file: &str, dec: &mut Decoder) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            let pos = Pos {
                line: i + 1,
                col: 1,
            };
            dec.problems.push(super::decode::Problem {
                file: file.to_string(),
                pos,
                path: String::new(),
                message: format!("expected `NAME=value`, found `{line}`"),
            });
            continue;
        };
        vars.insert(key.trim().to_string(), unquote(value.trim()));
    }
    vars
}

fn unquote(v: &str) -> String {
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        return v[1..v.len() - 1]
            .replace("\\n", "\n")
            .replace("\\\"", "\"")
            .replace("\\\\", "\\");
    }
    if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
        return v[1..v.len() - 1].to_string();
    }
    // Unquoted: a ` #` starts a comment.
    match v.find(" #") {
        Some(i) => v[..i].trim_end().to_string(),
        None => v.to_string(),
    }
}

/// One `env:` entry before interpolation.
#[derive(Debug, Clone)]
pub struct PendingEnv {
    pub name: String,
    /// `Some` when the value is known; `None` when its source failed (already reported).
    pub value: Option<String>,
    /// Literal `value:` entries are interpolated; values from `from:` are taken verbatim.
    pub interpolate: bool,
    pub pos: Pos,
    pub path: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Mark {
    New,
    Active,
    Done,
}

/// Expands `${NAME}` in literal values (`$${` is a literal `${`). NAME is another entry or,
/// failing that, a variable from `sources`. Cycles and unknown names are reported.
pub fn interpolate(
    entries: &[PendingEnv],
    sources: &EnvSources,
    dec: &mut Decoder,
) -> Vec<(String, Option<String>)> {
    let index: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    let mut state = Interp {
        entries,
        sources,
        index,
        marks: vec![Mark::New; entries.len()],
        results: vec![None; entries.len()],
        stack: Vec::new(),
    };
    for i in 0..entries.len() {
        state.resolve(i, dec);
    }
    entries
        .iter()
        .zip(state.results)
        .map(|(e, v)| (e.name.clone(), v))
        .collect()
}

struct Interp<'a> {
    entries: &'a [PendingEnv],
    sources: &'a EnvSources,
    index: HashMap<&'a str, usize>,
    marks: Vec<Mark>,
    results: Vec<Option<String>>,
    stack: Vec<usize>,
}

impl Interp<'_> {
    fn resolve(&mut self, i: usize, dec: &mut Decoder) -> Option<String> {
        match self.marks[i] {
            Mark::Done => return self.results[i].clone(),
            Mark::Active => return None,
            Mark::New => {}
        }
        self.marks[i] = Mark::Active;
        self.stack.push(i);
        let entry = &self.entries[i];
        let result = match (&entry.value, entry.interpolate) {
            (Some(v), true) => self.expand(i, v, dec),
            (v, _) => v.clone(),
        };
        self.stack.pop();
        self.marks[i] = Mark::Done;
        self.results[i] = result.clone();
        result
    }

    fn expand(&mut self, i: usize, text: &str, dec: &mut Decoder) -> Option<String> {
        let mut out = String::new();
        let mut rest = text;
        let mut ok = true;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(after) = tail.strip_prefix("${") {
                let Some(end) = after.find('}') else {
                    let e = &self.entries[i];
                    dec.problem(
                        e.pos,
                        &e.path,
                        "unterminated `${` (write `$${` for a literal `${`)",
                    );
                    return None;
                };
                let name = &after[..end];
                match self.lookup(i, name, dec) {
                    Some(v) => out.push_str(&v),
                    None => ok = false,
                }
                rest = &after[end + 1..];
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        ok.then_some(out)
    }

    fn lookup(&mut self, i: usize, name: &str, dec: &mut Decoder) -> Option<String> {
        if let Some(&j) = self.index.get(name) {
            if self.marks[j] == Mark::Active {
                self.report_cycle(i, j, dec);
                return None;
            }
            return self.resolve(j, dec);
        }
        if let Some(v) = self.sources.get(name) {
            return Some(v.to_string());
        }
        let e = &self.entries[i];
        dec.problem(
            e.pos,
            &e.path,
            format!(
                "`${{{name}}}` is neither an env entry nor set in {}",
                self.sources.describe()
            ),
        );
        None
    }

    fn report_cycle(&self, i: usize, j: usize, dec: &mut Decoder) {
        let start = self.stack.iter().position(|&k| k == j).unwrap_or(0);
        let mut chain: Vec<&str> = self.stack[start..]
            .iter()
            .map(|&k| self.entries[k].name.as_str())
            .collect();
        chain.push(&self.entries[j].name);
        let e = &self.entries[i];
        dec.problem(
            e.pos,
            &e.path,
            format!("env references form a cycle: {}", chain.join(" -> ")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tree::Format;

    fn pending(name: &str, value: &str) -> PendingEnv {
        PendingEnv {
            name: name.into(),
            value: Some(value.into()),
            interpolate: true,
            pos: Pos { line: 1, col: 1 },
            path: format!("env.{name}"),
        }
    }

    #[test]
    fn references_and_escapes() {
        let mut dec = Decoder::new("f", Format::Yaml);
        let mut sources = EnvSources::default();
        sources
            .layers
            .push(("env".into(), HashMap::from([("HOST".into(), "db".into())])));
        let out = interpolate(
            &[
                pending("URL", "postgres://${HOST}:${PORT}/x"),
                pending("PORT", "5432"),
                pending("LIT", "$${NOPE} $5"),
            ],
            &sources,
            &mut dec,
        );
        assert!(dec.problems.is_empty(), "{:?}", dec.problems);
        assert_eq!(out[0].1.as_deref(), Some("postgres://db:5432/x"));
        assert_eq!(out[2].1.as_deref(), Some("${NOPE} $5"));
    }

    #[test]
    fn cycles_are_reported() {
        let mut dec = Decoder::new("f", Format::Yaml);
        let out = interpolate(
            &[
                pending("A", "${B}"),
                pending("B", "${A}"),
                pending("C", "ok"),
            ],
            &EnvSources::default(),
            &mut dec,
        );
        assert_eq!(dec.problems.len(), 1);
        assert!(
            dec.problems[0].message.contains("A -> B -> A"),
            "{:?}",
            dec.problems
        );
        assert_eq!(out[2].1.as_deref(), Some("ok"));
    }

    #[test]
    fn dotenv_syntax() {
        let mut dec = Decoder::new("f", Format::Yaml);
        let vars = parse_dotenv(
            "# c\nexport A=1\nB=\"two words\"\nC='x#y'\nD=v # comment\nbad line\n",
            ".env",
            &mut dec,
        );
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "x#y");
        assert_eq!(vars["D"], "v");
        assert_eq!(dec.problems.len(), 1);
        assert_eq!(dec.problems[0].pos.line, 6);
    }
}
