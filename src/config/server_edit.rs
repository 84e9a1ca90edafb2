//! `haloyd config get/set`, after Haloy's (haloydev/haloy internal/haloydcli/config.go): `get
//! api-token` (from `api.token_file`) and `get/set api-domain` (`api.domain`). `set` edits the
//! YAML file in place (comments and layout kept), re-reads the result as a server config
//! before anything is written, and replaces the file atomically with its old mode.

use super::server::ServerConfig;
use super::tree::{self, Format, Node, Value};
use super::ConfigError;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Keys `get` knows, with what they are (for `--help` and messages).
pub const GET_KEYS: &[(&str, &str)] = &[
    ("api-token", "the API token (read from `api.token_file`)"),
    (
        "api-domain",
        "the domain the proxy serves the API on (`api.domain`)",
    ),
];

/// Keys `set` knows.
pub const SET_KEYS: &[(&str, &str)] = &[(
    "api-domain",
    "the domain the proxy serves the API on (`api.domain`)",
)];

#[derive(Debug, thiserror::Error)]
pub enum ServerEditError {
    #[error("unknown config key `{key}`; known keys: {known}")]
    UnknownKey { key: String, known: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the API token from {path} (server config `api.token_file`): {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{value}` is not a valid api-domain: {reason}")]
    InvalidDomain { value: String, reason: String },
    #[error("cannot edit {path}: {reason}")]
    Edit { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn unknown(key: &str, keys: &[(&str, &str)]) -> ServerEditError {
    ServerEditError::UnknownKey {
        key: key.to_string(),
        known: keys.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "),
    }
}

/// The value of `key` in the server config at `path` (empty when unset).
pub fn get(path: &Path, key: &str) -> Result<String, ServerEditError> {
    let config = ServerConfig::load(path)?;
    match key {
        "api-token" => std::fs::read_to_string(&config.api.token_file)
            .map(|t| t.trim().to_string())
            .map_err(|source| ServerEditError::Token {
                path: config.api.token_file.clone(),
                source,
            }),
        "api-domain" => Ok(config.api.domain.unwrap_or_default()),
        other => Err(unknown(other, GET_KEYS)),
    }
}

/// Sets `key` in the server config file at `path`; returns the value as stored.
pub fn set(path: &Path, key: &str, value: &str) -> Result<String, ServerEditError> {
    if key != "api-domain" {
        return Err(unknown(key, SET_KEYS));
    }
    // Haloy lowercases the domain; it must be a host name the proxy can serve.
    let domain = super::values::normalize_domain(&value.to_lowercase()).map_err(|reason| {
        ServerEditError::InvalidDomain {
            value: value.to_string(),
            reason,
        }
    })?;
    let edit_error = |reason: String| ServerEditError::Edit {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| {
        ServerEditError::Config(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })
    })?;
    let edited = set_api_domain_text(&text, &domain).map_err(edit_error)?;
    let check = ServerConfig::parse(&edited, &path.display().to_string())?;
    if check.api.domain.as_deref() != Some(domain.as_str()) {
        return Err(edit_error(
            "the edited file does not read back with the new api.domain".into(),
        ));
    }
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    crate::files::write_atomic(path, edited.as_bytes(), mode).map_err(|source| {
        ServerEditError::Write {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(domain)
}

/// `text` (a YAML server config) with `api.domain` set to `domain`: the value replaced where it
/// is, else the key added to the `api` map (block or flow style), else an `api:` block appended.
pub fn set_api_domain_text(text: &str, domain: &str) -> Result<String, String> {
    let root = tree::parse(Format::Yaml, text).map_err(|e| format!("{}: {}", e.pos, e.message))?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let api = match &root.value {
        Value::Map(entries) => entries.iter().find(|e| e.key == "api"),
        Value::Null => None,
        _ => return Err("the file is not a YAML map".into()),
    };
    let Some(api) = api else {
        lines.push(format!("api:\n  domain: {domain}"));
        return Ok(lines.join("\n") + "\n");
    };
    match &api.value.value {
        Value::Map(entries) => {
            if let Some(existing) = entries.iter().find(|e| e.key == "domain") {
                replace_scalar(&mut lines, &existing.value, domain)?;
            } else if let Some(brace) = flow_brace(&lines, api.key_pos) {
                insert_at(&mut lines, brace, 1, &format!("domain: {domain}, "))?;
            } else if let Some(first) = entries.first() {
                let indent = " ".repeat(first.key_pos.col.saturating_sub(1));
                lines.insert(first.key_pos.line - 1, format!("{indent}domain: {domain}"));
            }
        }
        Value::Null => {
            // `api:` with nothing under it.
            lines.insert(api.key_pos.line, format!("  domain: {domain}"));
        }
        _ => return Err("`api` is not a map".into()),
    }
    Ok(lines.join("\n") + "\n")
}

/// Where the `{` of a flow map written after the key at `key_pos` (`api: {…}`) is.
fn flow_brace(lines: &[String], key_pos: tree::Pos) -> Option<tree::Pos> {
    let line = lines.get(key_pos.line.checked_sub(1)?)?;
    let after_key: String = line.chars().skip(key_pos.col - 1 + "api".len()).collect();
    let rest = after_key.trim_start().strip_prefix(':')?.trim_start();
    if !rest.starts_with('{') {
        return None;
    }
    let col = line.chars().count() - rest.chars().count() + 1;
    Some(tree::Pos {
        line: key_pos.line,
        col,
    })
}

/// Inserts `text` `offset` characters after `pos` on its line.
fn insert_at(
    lines: &mut [String],
    pos: tree::Pos,
    offset: usize,
    text: &str,
) -> Result<(), String> {
    let line = lines
        .get_mut(pos.line.wrapping_sub(1))
        .ok_or("position outside the file")?;
    let mut chars: Vec<char> = line.chars().collect();
    let at = (pos.col - 1 + offset).min(chars.len());
    chars.splice(at..at, text.chars());
    *line = chars.into_iter().collect();
    Ok(())
}

/// Replaces the scalar written at `node.pos` (plain or quoted) with `value`.
fn replace_scalar(lines: &mut [String], node: &Node, value: &str) -> Result<(), String> {
    let line = lines
        .get_mut(node.pos.line.wrapping_sub(1))
        .ok_or("position outside the file")?;
    let chars: Vec<char> = line.chars().collect();
    let start = node.pos.col - 1;
    let end = match chars.get(start) {
        Some(q @ ('"' | '\'')) => chars[start + 1..]
            .iter()
            .position(|c| c == q)
            .map(|i| start + i + 2)
            .ok_or("unterminated quoted api.domain")?,
        Some(_) => {
            let mut end = start;
            while end < chars.len()
                && !matches!(chars[end], ',' | '}' | ']')
                && !(chars[end] == '#' && end > 0 && chars[end - 1] == ' ')
            {
                end += 1;
            }
            while end > start && chars[end - 1] == ' ' {
                end -= 1;
            }
            end
        }
        None => return Err("api.domain has no value on its line".into()),
    };
    let mut out: String = chars[..start].iter().collect();
    out.push_str(value);
    out.extend(&chars[end..]);
    *line = out;
    Ok(())
}

#[cfg(test)]
#[path = "tests/server_edit.rs"]
mod tests;
