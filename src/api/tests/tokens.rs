use super::*;

fn file_with(token: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("api-token");
    std::fs::write(&path, format!("{token}\n")).expect("write token");
    (dir, path)
}

/// A rotation must be seen even when it lands in the same mtime tick as the first load.
fn touch_later(path: &Path) {
    let later = SystemTime::now() + Duration::from_secs(5);
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    file.set_modified(later).expect("set mtime");
}

#[test]
fn the_old_token_works_until_the_new_one_is_used() {
    let (_dir, path) = file_with("old-token");
    let tokens = Tokens::from_file(&path).expect("load");
    assert!(tokens.check("old-token"));
    rotate(&path, "new-token", Duration::from_secs(3600)).expect("rotate");
    touch_later(&path);
    assert!(
        tokens.check("old-token"),
        "still valid during the grace period"
    );
    assert!(tokens.check("new-token"));
    assert!(
        !tokens.check("old-token"),
        "the new token's first use ends the grace"
    );
    assert!(!previous_path(&path).exists());
    assert!(!tokens.check("wrong"));
}

#[test]
fn the_old_token_expires_at_its_deadline() {
    let (_dir, path) = file_with("old-token");
    let tokens = Tokens::from_file(&path).expect("load");
    std::fs::write(previous_path(&path), "older-token\n1\n").expect("expired previous");
    touch_later(&path);
    assert!(!tokens.check("older-token"));
    assert!(tokens.check("old-token"));
}

#[test]
fn no_grace_means_the_old_token_stops_at_once() {
    let (_dir, path) = file_with("old-token");
    let tokens = Tokens::from_file(&path).expect("load");
    rotate(&path, "new-token", Duration::ZERO).expect("rotate");
    touch_later(&path);
    assert!(!tokens.check("old-token"));
    assert!(tokens.check("new-token"));
}

#[test]
fn a_token_from_the_environment_is_fixed_and_empty_is_never_accepted() {
    let tokens = Tokens::fixed("env-token".into());
    assert!(tokens.check("env-token"));
    assert!(!Tokens::fixed(String::new()).check(""));
}

#[test]
fn files_are_private_and_errors_name_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = file_with("old-token");
    rotate(&path, "new-token", Duration::from_secs(60)).expect("rotate");
    for p in [path.clone(), previous_path(&path)] {
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    let missing = path.with_file_name("nope");
    let err = Tokens::from_file(&missing).expect_err("missing file");
    assert!(err.to_string().contains("nope"), "{err}");
}
