use std::time::{Duration, UNIX_EPOCH};

use futures_util::StreamExt;

use super::*;

fn entry(app: &'static str) -> Entry<'static> {
    Entry {
        app: Some(app),
        host: Some("example.com"),
        method: "GET",
        path: "/a b",
        status: 200,
        duration: Duration::from_micros(1_234),
        upstream: Some("10.89.0.5:8080".parse().unwrap()),
        bytes: Some(512),
    }
}

#[test]
fn hand_formatted_fields_match_the_formatter() {
    for n in [0, 7, 42, 999] {
        let mut line = String::new();
        push_three_digits(&mut line, n);
        assert_eq!(line, format!("{n:03}"));
    }
    for addr in [
        "10.89.0.5:8080",
        "0.0.0.0:0",
        "255.255.255.255:65535",
        "[::1]:80",
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut line = String::new();
        push_addr(&mut line, addr);
        assert_eq!(line, addr.to_string());
    }
    let mut line = String::new();
    push_value(&mut line, Some("/ok/é\"q\u{7f}"));
    assert_eq!(line, "/ok/é_q_");
}

#[test]
fn a_line_has_every_field_and_no_spaces_inside_values() {
    let mut line = String::new();
    let (mut second, mut stamp) = (u64::MAX, String::new());
    let now = UNIX_EPOCH + Duration::from_millis(1_767_323_045_678);
    format_line(
        &mut line,
        &mut second,
        &mut stamp,
        now,
        &entry("web"),
        LogFormat::Text,
    );
    assert_eq!(
        line,
        "2026-01-02T03:04:05.678Z app=web host=example.com method=GET path=/a_b status=200 duration_ms=1.234 upstream=10.89.0.5:8080 bytes=512\n"
    );
    line.clear();
    let unknown = Entry {
        app: None,
        host: None,
        upstream: None,
        bytes: None,
        ..entry("web")
    };
    format_line(
        &mut line,
        &mut second,
        &mut stamp,
        now,
        &unknown,
        LogFormat::Text,
    );
    assert!(
        line.contains(" app=- host=- ") && line.ends_with(" upstream=- bytes=-\n"),
        "{line}"
    );
}

#[test]
fn the_file_sink_gets_every_line_and_rotates_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/access.log");
    let log = AccessLog::start(
        AccessLogTarget::File {
            path: path.clone(),
            max_size: 300,
            max_files: 2,
        },
        LogFormat::Text,
    )
    .unwrap();
    assert!(log.enabled());
    for _ in 0..3 {
        log.record(&entry("web"));
        // Each batch written on its own, so rotation sees them one by one.
        std::thread::sleep(FLUSH_INTERVAL * 2);
    }
    log.close();
    let current = std::fs::read_to_string(&path).unwrap();
    let older = std::fs::read_to_string(numbered(&path, 1)).unwrap();
    let lines = current.lines().count() + older.lines().count();
    assert!(lines >= 2, "current:\n{current}\nolder:\n{older}");
    assert!(
        current.lines().all(|l| l.contains(" app=web ")),
        "{current}"
    );
    assert!(
        !numbered(&path, 3).exists(),
        "more files kept than max_files"
    );
}

fn numbered(path: &std::path::Path, n: u32) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}.{n}", path.display()))
}

#[test]
fn off_is_disabled_until_someone_follows() {
    let log = AccessLog::start(AccessLogTarget::Off, LogFormat::Text).unwrap();
    assert!(!log.enabled());
    let follower = log.follow(None);
    assert!(log.enabled());
    drop(follower);
    assert!(!log.enabled());
    log.close();
}

#[tokio::test]
async fn a_follower_gets_its_apps_lines_only() {
    let log = AccessLog::start(AccessLogTarget::Off, LogFormat::Text).unwrap();
    let mut follower = Box::pin(log.follow(Some("api".into())));
    log.record(&entry("web"));
    log.record(&entry("api"));
    let line = tokio::time::timeout(Duration::from_secs(10), follower.next())
        .await
        .expect("a line within the flush interval")
        .expect("stream open");
    assert!(line.contains(" app=api "), "{line}");
    log.close();
}

fn json_line(entry: &Entry<'_>) -> serde_json::Value {
    let mut line = String::new();
    let (mut second, mut stamp) = (u64::MAX, String::new());
    let now = UNIX_EPOCH + Duration::from_millis(1_767_323_045_678);
    format_line(
        &mut line,
        &mut second,
        &mut stamp,
        now,
        entry,
        LogFormat::Json,
    );
    assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
    assert!(line.ends_with('\n'), "{line:?}");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn a_json_line_is_one_object_with_the_same_fields() {
    let value = json_line(&entry("web"));
    assert_eq!(
        value,
        serde_json::json!({
            "time": "2026-01-02T03:04:05.678Z",
            "app": "web",
            "host": "example.com",
            "method": "GET",
            "path": "/a b",
            "status": 200,
            "duration_ms": 1.234,
            "upstream": "10.89.0.5:8080",
            "bytes": 512,
        })
    );
    let unknown = json_line(&Entry {
        app: None,
        host: Some(""),
        upstream: None,
        bytes: None,
        ..entry("web")
    });
    for key in ["app", "host", "upstream", "bytes"] {
        assert!(unknown[key].is_null(), "{key} not null: {unknown}");
    }
}

#[test]
fn json_strings_survive_quotes_backslashes_control_characters_and_utf8() {
    let path = "/q\"uote\\back\nline\u{1}tab\t/é/\u{2028}";
    let value = json_line(&Entry {
        path,
        host: Some("ex\"ample"),
        ..entry("web")
    });
    assert_eq!(value["path"], path);
    assert_eq!(value["host"], "ex\"ample");
}

#[tokio::test]
async fn a_json_follower_gets_its_apps_lines_only() {
    let log = AccessLog::start(AccessLogTarget::Off, LogFormat::Json).unwrap();
    let mut follower = Box::pin(log.follow(Some("api".into())));
    // `api2` starts like `api`: the filter must match the whole value.
    log.record(&entry("api2"));
    log.record(&entry("web"));
    log.record(&entry("api"));
    let line = tokio::time::timeout(Duration::from_secs(10), follower.next())
        .await
        .expect("a line within the flush interval")
        .expect("stream open");
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["app"], "api", "{line}");
    log.close();
}
