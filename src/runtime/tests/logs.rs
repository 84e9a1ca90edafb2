//! Unit tests of `runtime::logs`.

use super::super::log_driver::{LogDriverConfig, RotatingWriter};
use super::*;
use crate::timefmt::now_rfc3339;
use futures_util::StreamExt;

fn record(i: usize, stream: &str) -> LogRecord {
    LogRecord {
        time: now_rfc3339(),
        stream: stream.into(),
        line: format!("line {i}"),
    }
}

fn writer(dir: &Path, max_size: u64, max_files: u32) -> RotatingWriter {
    let config = LogDriverConfig {
        dir: dir.to_path_buf(),
        max_size,
        max_files,
    };
    RotatingWriter::open(&config, "c1").unwrap()
}

async fn collect(stream: LogStream) -> Vec<String> {
    stream.map(|l| l.unwrap().line).collect().await
}

#[tokio::test]
async fn tail_spans_rotated_files_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), 300, 4);
    for i in 0..20 {
        w.write(&record(i, if i % 2 == 0 { "stdout" } else { "stderr" }))
            .unwrap();
    }
    assert!(log_files(dir.path(), "c1").len() > 2);
    let all = collect(read_logs(dir.path(), "c1", None, false)).await;
    let kept_from: usize = all[0].trim_start_matches("line ").parse().unwrap();
    let expected: Vec<String> = (kept_from..20).map(|i| format!("line {i}")).collect();
    assert_eq!(all, expected);
    let last3 = collect(read_logs(dir.path(), "c1", Some(3), false)).await;
    assert_eq!(last3, ["line 17", "line 18", "line 19"]);
    let mut stream = read_logs(dir.path(), "c1", Some(1), false);
    let line = stream.next().await.unwrap().unwrap();
    assert_eq!(line.stream, LogStreamKind::Stderr);
    assert!(line.time > SystemTime::UNIX_EPOCH);
}

#[tokio::test]
async fn follow_sees_new_lines_across_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), 400, 50);
    w.write(&record(0, "stdout")).unwrap();
    let mut stream = read_logs(dir.path(), "c1", Some(10), true);
    assert_eq!(stream.next().await.unwrap().unwrap().line, "line 0");
    for i in 1..30 {
        w.write(&record(i, "stdout")).unwrap();
    }
    for i in 1..30 {
        let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("follow produced no line")
            .unwrap()
            .unwrap();
        assert_eq!(next.line, format!("line {i}"));
    }
}

#[tokio::test]
async fn follow_ends_when_the_logs_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), 1 << 20, 3);
    w.write(&record(0, "stdout")).unwrap();
    let mut stream = read_logs(dir.path(), "c1", None, true);
    assert_eq!(stream.next().await.unwrap().unwrap().line, "line 0");
    remove_log_files(dir.path(), "c1").unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    assert!(matches!(end, Ok(None)), "follow did not end");
}

#[tokio::test]
async fn no_files_means_empty_stream() {
    let dir = tempfile::tempdir().unwrap();
    assert!(collect(read_logs(dir.path(), "none", Some(5), false))
        .await
        .is_empty());
}
