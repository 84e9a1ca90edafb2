//! Parsers for the small value syntaxes inside configs: byte sizes (`512Mi`, `1G`), durations
//! (`5s`, `500ms`), RFC 1123 host names, `volumes:` entries and `repo:tag` image references.
//! Each returns a message a user can act on.

use super::resolved::VolumeSpec;
use std::time::Duration;

/// `512Mi`, `1G`, `64KiB`, `10MB`, `1048576` → bytes. Binary (Ki/Mi/Gi/Ti, also KiB...) and
/// decimal (K/M/G/T, also KB...) units.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let number: f64 = num.parse().map_err(|_| {
        format!("`{text}` is not a size; write e.g. `512Mi`, `1G` or a number of bytes")
    })?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000_u64.pow(2),
        "g" | "gb" => 1000_u64.pow(3),
        "t" | "tb" => 1000_u64.pow(4),
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`; use Ki, Mi, Gi, K, M or G"
            ))
        }
    };
    let bytes = number * multiplier as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{text}` is not a usable size"));
    }
    Ok(bytes as u64)
}

/// `5s`, `500ms`, `2m`, `1h 30m` → Duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. `5s`, `500ms` or `2m`"))
}

/// Validates an RFC 1123 host name and returns it spelled as the proxy and TLS match it
/// (`proxy::normalize_host`: lower case, no trailing dot).
pub fn normalize_hostname(text: &str) -> Result<String, String> {
    // One trailing dot is the fully-qualified spelling of the same name.
    let host = text.trim().trim_end_matches('.');
    if host.is_empty() {
        return Err("host name must not be empty".into());
    }
    if host.len() > 253 {
        return Err(format!("`{text}` is longer than 253 characters"));
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(format!("`{text}` is not a valid host name (empty label)"));
        }
        if label.len() > 63 {
            return Err(format!(
                "`{text}` is not a valid host name (label `{label}` is longer than 63 characters)"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!(
                "`{text}` is not a valid host name (character `{bad}` is not allowed; use letters, digits, `-` and `.`)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "`{text}` is not a valid host name (label `{label}` starts or ends with `-`)"
            ));
        }
    }
    Ok(crate::proxy::normalize_host(host).into_owned())
}

/// A `domains:` host as Haloy validates it: a valid host name with at least two labels and a
/// top-level label of two or more letters (`xn--` punycode allowed); `localhost` as is. Returns
/// it lowercased.
pub fn normalize_domain(text: &str) -> Result<String, String> {
    let host = normalize_hostname(text)?;
    if host == "localhost" {
        return Ok(host);
    }
    let tld = match host.rsplit_once('.') {
        Some((_, tld)) => tld,
        None => {
            return Err(format!(
            "`{text}` is not a domain (it needs a dot and a top-level domain, e.g. `{host}.com`)"
        ))
        }
    };
    let letters = tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic());
    if !(letters || tld.starts_with("xn--")) {
        return Err(format!(
            "`{text}` has an invalid top-level domain `{tld}` (two or more letters, e.g. `example.com`)"
        ));
    }
    Ok(host)
}

/// Parses `src:/container/path[:ro|rw]`. An absolute `src` is a bind mount, a bare name a named
/// volume; relative paths are rejected because haloyd runs elsewhere than the CLI.
pub fn parse_volume(text: &str) -> Result<VolumeSpec, String> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return Err(format!(
            "`{text}` is not a volume; expected `/host/path:/container/path[:ro]` or `name:/container/path[:ro]`"
        ));
    }
    let source = parts[0].trim();
    let container = parts[1].trim();
    let read_only = match parts.get(2).map(|o| o.trim()) {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => {
            return Err(format!(
                "unknown volume option `{other}` in `{text}`; use `ro` or `rw`"
            ))
        }
    };
    if source.is_empty() {
        return Err(format!("volume source is empty in `{text}`"));
    }
    if !container.starts_with('/') {
        return Err(format!(
            "container path `{container}` in `{text}` must be absolute"
        ));
    }
    let container = container.to_string();
    if source.starts_with('/') {
        return Ok(VolumeSpec::Bind {
            host: source.to_string(),
            container,
            read_only,
        });
    }
    if source.contains('/') || source.starts_with('.') || source.starts_with('~') {
        return Err(format!(
            "host path `{source}` in `{text}` is relative; bind mounts need an absolute path (or use a bare name for a named volume)"
        ));
    }
    let valid_name = source
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && source
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid_name {
        return Err(format!(
            "volume name `{source}` in `{text}` may only contain letters, digits, `_`, `.` and `-`"
        ));
    }
    Ok(VolumeSpec::Named {
        name: source.to_string(),
        container,
        read_only,
    })
}

/// An image reference split into its parts: `registry:5000/org/app:v1@sha256:…` →
/// (`registry:5000/org/app`, Some(`v1`), Some(`sha256:…`)).
pub type ImageParts = (String, Option<String>, Option<String>);

/// Splits an image reference into repository, tag and digest. A digest pins the image (Haloy
/// pulls `repo@sha256:…` as written); it must be `sha256:` and 64 hex digits.
pub fn split_image_ref(text: &str) -> Result<ImageParts, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("image must not be empty".into());
    }
    if t.chars().any(char::is_whitespace) {
        return Err(format!("image `{t}` must not contain whitespace"));
    }
    let (t, digest) = match t.split_once('@') {
        Some((rest, digest)) => (rest, Some(check_digest(t, digest)?)),
        None => (t, None),
    };
    let last_slash = t.rfind('/').map_or(0, |i| i + 1);
    match t[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            let tag = &t[at + 1..];
            if tag.is_empty() {
                return Err(format!("image `{t}` has an empty tag"));
            }
            Ok((t[..at].to_string(), Some(tag.to_string()), digest))
        }
        None => Ok((t.to_string(), None, digest)),
    }
}

/// `sha256:<64 hex digits>`, lowercased.
pub fn check_digest(image: &str, digest: &str) -> Result<String, String> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(digest.to_ascii_lowercase())
        }
        _ => Err(format!(
            "image `{image}` has an invalid digest `{digest}`; write `repository@sha256:<64 hex digits>` or `repository:tag`"
        )),
    }
}

/// The registry host of a repository (`ghcr.io/x/y` → `ghcr.io`), `docker.io` by default.
pub fn registry_of(repository: &str) -> String {
    match repository.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".to_string(),
    }
}

/// A `server:` value: `http(s)://host[:port][/path]`, `host` or `host:port` (host = IP address
/// or RFC 1123 name).
pub fn check_server(text: &str) -> Result<(), String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .map(|r| r.split('/').next().unwrap_or_default());
    if text.contains("://") && rest.is_none() {
        return Err(format!("`{text}` must use http:// or https://"));
    }
    let authority = rest.unwrap_or(text);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => return Err(format!("`{text}` has an unclosed `[`")),
        }
    } else if authority.matches(':').count() > 1 {
        (authority, None)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if let Some(p) = port {
        if !p.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(format!("`{text}` has an invalid port `{p}`"));
        }
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    normalize_hostname(host)
        .map(|_| ())
        .map_err(|e| format!("`{text}` is not a host, host:port or URL: {e}"))
}

/// App names haloyd keeps for itself: its API route on `api.domain` is the app `haloyd-api`
/// in the route table, and an app of that name would take that route over (or be refused
/// at publish time after its replicas started). The whole `haloyd` prefix is kept for later.
pub const RESERVED_APP_PREFIX: &str = "haloyd";

/// Valid app name: starts with a letter or digit, then letters, digits, `_` and `-`; not
/// starting with [`RESERVED_APP_PREFIX`] (any case).
pub fn check_app_name(name: &str) -> Result<(), String> {
    let reserved = name
        .get(..RESERVED_APP_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_APP_PREFIX));
    if reserved {
        return Err(format!(
            "`{name}` is reserved for haloyd itself (names starting with `{RESERVED_APP_PREFIX}`); pick another app name"
        ));
    }
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid app name; use letters, digits, `-` and `_` (starting with a letter or digit, at most 63 characters)"
        ))
    }
}

/// Valid environment variable name, the rule of the CLI and the API alike: printable ASCII
/// without `=` (as Kubernetes since 1.30; dotted names like `spring.datasource.url` are in
/// use), not empty. `=` would split into another variable in the container's `KEY=VALUE`
/// list; control characters and spaces are never meant.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b'=');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid environment variable name; use printable ASCII without `=` (e.g. `DATABASE_URL`)",
            name.escape_debug()
        ))
    }
}

#[cfg(test)]
#[path = "tests/values.rs"]
mod tests;
