//! Hints for YAML syntax errors, as Haloy gives them (haloydev/haloy
//! internal/configloader/yaml_errors.go `detectMissingColon`): a `key value` line near the
//! error is named with the `key: value` it was probably meant to be.

/// Haloy checks the error line and the one before (parsers report a missing colon on either);
/// this parser may notice it one line later still, so the line before that is checked too.
const LINES_BACK: usize = 2;

/// `line N appears to be missing a `:` after `KEY`; did you mean `KEY: VALUE`?` for the first
/// line at or before `error_line` (1-based) that looks like `key value`.
pub fn missing_colon(text: &str, error_line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    (0..=LINES_BACK)
        .filter_map(|back| error_line.checked_sub(back))
        .filter(|n| (1..=lines.len()).contains(n))
        .find_map(|n| key_value_without_colon(lines[n - 1]).map(|(k, v)| (n, k, v)))
        .map(|(n, key, value)| {
            format!(
                "line {n} appears to be missing a `:` after `{key}`; did you mean `{key}: {value}`?"
            )
        })
}

/// `Some((key, value))` for `key value` (no colon, not a comment or list item, key a plain
/// YAML key: `[A-Za-z_][A-Za-z0-9_-]*`).
fn key_value_without_colon(line: &str) -> Option<(&str, &str)> {
    let trimmed = line.trim();
    if trimmed.is_empty()
        || trimmed.starts_with('#')
        || trimmed.starts_with('-')
        || trimmed.contains(':')
    {
        return None;
    }
    let (key, value) = trimmed.split_once(' ')?;
    let mut chars = key.chars();
    let plain_key = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (plain_key && !value.is_empty()).then_some((key, value))
}

#[cfg(test)]
#[path = "tests/yaml_hint.rs"]
mod tests;
