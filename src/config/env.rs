//! Environment for value sources: the process environment plus the `.env`, `.env.local` and
//! `.env.<target>` files next to the config file, and `${VAR}` interpolation between `env:`
//! entries (only those, as in Haloy) with cycle detection.
//!
//! Lookup order for `from: {env: VAR}`:
//! the process environment (so CI can override), then `.env.<target>`, then `.env.local`, then
//! `.env`.

use super::decode::Decoder;
use super::secrets::{SecretError, SecretResolver};
use super::tree::Pos;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Named variable maps in lookup order.
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    layers: Vec<(String, HashMap<String, String>)>,
    /// `secret_providers` of the config, for `from: {secret: …}`; shared by all targets so
    /// each source is fetched once.
    secrets: Option<Arc<SecretResolver>>,
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
        EnvSources {
            layers,
            secrets: None,
        }
    }

    /// These sources with the config's secret providers.
    pub fn with_secrets(mut self, secrets: Option<Arc<SecretResolver>>) -> EnvSources {
        self.secrets = secrets;
        self
    }

    /// The value of a `from: {secret: PROVIDER:SOURCE:KEY}` reference.
    pub fn secret(&self, reference: &str) -> Result<String, SecretError> {
        match &self.secrets {
            Some(resolver) => resolver.resolve(reference),
            None => Err(SecretError::NoProviders {
                reference: reference.to_string(),
            }),
        }
    }

    /// Every secret value resolved so far (to hide them wherever a config is printed).
    pub fn revealed_secrets(&self) -> Vec<String> {
        self.secrets
            .as_ref()
            .map(|r| r.revealed())
            .unwrap_or_default()
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

/// Expands `${NAME}` in literal values as Haloy does: NAME (`[A-Za-z_][A-Za-z0-9_]*`) must be
/// another `env:` entry (the last one of that name); anything else (unknown names, shell
/// variables, an unterminated `${`, `${}`) stays as written. There is no escape: `$${A}` is `$`
/// followed by `${A}`. Cycles are reported.
pub fn interpolate(entries: &[PendingEnv], dec: &mut Decoder) -> Vec<(String, Option<String>)> {
    let index: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    let mut state = Interp {
        entries,
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

/// The NAME of a `${NAME}` at the start of `after_brace` (the text after `${`) and its length
/// including the closing `}`; `None` when it is not a reference Haloy would expand.
fn reference_name(after_brace: &str) -> Option<(&str, usize)> {
    let end = after_brace.find('}')?;
    let name = &after_brace[..end];
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    (first_ok && rest_ok).then_some((name, end + 1))
}

struct Interp<'a> {
    entries: &'a [PendingEnv],
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
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let entry = reference_name(after)
                .and_then(|(name, len)| self.index.get(name).map(|&j| (j, len)));
            match entry {
                Some((j, len)) => {
                    match self.lookup(i, j, dec) {
                        Some(v) => out.push_str(&v),
                        None => ok = false,
                    }
                    rest = &after[len..];
                }
                None => {
                    out.push_str("${");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        ok.then_some(out)
    }

    fn lookup(&mut self, i: usize, j: usize, dec: &mut Decoder) -> Option<String> {
        if self.marks[j] == Mark::Active {
            self.report_cycle(i, j, dec);
            return None;
        }
        self.resolve(j, dec)
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
#[path = "tests/env.rs"]
mod tests;
