//! Unit tests of `runtime::log_driver`.

use super::*;

fn lines_of(input: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    read_lines(input, |l| out.push(l)).unwrap();
    out
}

#[test]
fn splits_lines_and_keeps_a_trailing_partial_line() {
    assert_eq!(lines_of(b"a\nb\r\n\nlast"), ["a", "b", "", "last"]);
    assert!(lines_of(b"").is_empty());
}

#[test]
fn cuts_overlong_lines() {
    let long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
    let lines = lines_of(&long);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].len(), MAX_LINE_BYTES);
    assert_eq!(lines[2].len(), 10);
}

#[test]
fn uri_round_trips_through_query_decoding() {
    let config = LogDriverConfig {
        dir: "/var/log/haloy tasks/x&y=z".into(),
        max_size: 1024,
        max_files: 3,
    };
    let uri = log_uri(Path::new("/usr/bin/haloyd"), &config).unwrap();
    assert!(uri.starts_with("binary:///usr/bin/haloyd?_HALOY_LOG_DRIVER=%7B"));
    let (_, encoded) = uri.split_once('=').unwrap();
    assert!(!encoded.contains(['&', '=', ' ', '"']));
    // What Go's url.Query() hands the driver: the percent-decoded value.
    let decoded = percent_decode(encoded);
    let args = vec!["haloyd".to_string(), DRIVER_ARG.to_string(), decoded];
    assert!(is_invocation(&args));
    assert_eq!(parse_args(&args).unwrap(), config);
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn rotation_keeps_max_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogDriverConfig {
        dir: dir.path().to_path_buf(),
        max_size: 200,
        max_files: 3,
    };
    let mut writer = RotatingWriter::open(&config, "c1").unwrap();
    for i in 0..40 {
        writer
            .write(&LogRecord {
                time: now_rfc3339(),
                stream: "stdout".into(),
                line: format!("line {i}"),
            })
            .unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["c1.log", "c1.log.1", "c1.log.2"]);
    for name in &names {
        let len = fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(len <= 200, "{name} has {len} bytes");
    }
    let current = fs::read_to_string(dir.path().join("c1.log")).unwrap();
    let last: LogRecord = serde_json::from_str(current.lines().last().unwrap()).unwrap();
    assert_eq!(last.line, "line 39");
}

#[test]
fn pump_reads_both_streams_stdout_first_when_both_are_ready() {
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (err_r, err_w) = nix::unistd::pipe().unwrap();
    let mut out_w = File::from(out_w);
    let mut err_w = File::from(err_w);
    out_w.write_all(b"one\nthree\npartial").unwrap();
    err_w.write_all(b"two\n").unwrap();
    drop((out_w, err_w));
    let mut records = Vec::new();
    pump(out_r, err_r, None, Duration::ZERO, |r| {
        records.push((r.stream, r.line))
    })
    .unwrap();
    let got: Vec<(&str, &str)> = records
        .iter()
        .map(|(s, l)| (s.as_str(), l.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("stdout", "one"),
            ("stdout", "three"),
            ("stderr", "two"),
            ("stdout", "partial")
        ]
    );
}

#[test]
fn pump_ends_a_grace_period_after_stop_even_with_writers_left() {
    use std::os::fd::AsFd;
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (err_r, _err_w) = nix::unistd::pipe().unwrap();
    let (stop_r, stop_w) = nix::unistd::pipe().unwrap();
    let mut out_w = File::from(out_w);
    out_w.write_all(b"whole\nhalf a line").unwrap();
    File::from(stop_w).write_all(b"x").unwrap();
    let started = std::time::Instant::now();
    let mut lines = Vec::new();
    pump(
        out_r,
        err_r,
        Some(stop_r.as_fd()),
        Duration::from_millis(50),
        |r| lines.push(r.line),
    )
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
    // The writers are still open: only the grace period ended the pump, and what it read
    // by then (the unfinished line too) is kept.
    assert_eq!(lines, ["whole", "half a line"]);
    drop(out_w);
}

#[test]
fn unsafe_container_ids_are_refused() {
    assert!(safe_file_name("web-1.a_b"));
    assert!(!safe_file_name("../etc"));
    assert!(!safe_file_name(""));
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn log_files_are_0600_in_a_0700_dir_also_after_rotation_and_when_they_existed() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    fs::create_dir(&dir).unwrap();
    set_mode(&dir, 0o755);
    // Files an older haloyd left world-readable.
    for name in ["c1.log", "c1.log.1"] {
        fs::write(dir.join(name), "{}\n").unwrap();
        set_mode(&dir.join(name), 0o644);
    }
    let config = LogDriverConfig {
        dir: dir.clone(),
        max_size: 200,
        max_files: 3,
    };
    let mut writer = RotatingWriter::open(&config, "c1").unwrap();
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&dir.join("c1.log")), 0o600);
    assert_eq!(mode_of(&dir.join("c1.log.1")), 0o600);
    for i in 0..20 {
        let record = LogRecord {
            time: now_rfc3339(),
            stream: "stdout".into(),
            line: format!("line {i}"),
        };
        writer.write(&record).unwrap();
    }
    for name in ["c1.log", "c1.log.1", "c1.log.2"] {
        assert_eq!(mode_of(&dir.join(name)), 0o600, "{name}");
    }
}

#[test]
fn restrict_log_dir_tightens_every_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    fs::create_dir(&dir).unwrap();
    set_mode(&dir, 0o755);
    fs::write(dir.join("old.log"), "x").unwrap();
    set_mode(&dir.join("old.log"), 0o644);
    restrict_log_dir(&dir).unwrap();
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&dir.join("old.log")), 0o600);
    let fresh = root.path().join("fresh");
    restrict_log_dir(&fresh).unwrap();
    assert_eq!(mode_of(&fresh), 0o700);
}

#[test]
fn driver_binary_is_haloy_logd_beside_haloyd_when_installed() {
    let dir = tempfile::tempdir().unwrap();
    let haloyd = dir.path().join("haloyd");
    std::fs::write(&haloyd, b"").unwrap();
    assert_eq!(driver_binary_beside(&haloyd), haloyd);
    std::fs::write(dir.path().join(DRIVER_BINARY), b"").unwrap();
    assert_eq!(
        driver_binary_beside(&haloyd),
        dir.path().join(DRIVER_BINARY)
    );
}
