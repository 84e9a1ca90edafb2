//! Unit tests of `files`.

use std::os::unix::fs::PermissionsExt;

use super::*;

#[test]
fn replaces_contents_with_the_given_mode_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    write_atomic(&path, b"one", 0o600).unwrap();
    write_atomic(&path, b"two", 0o600).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"two");
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    write_atomic(&dir.path().join("public"), b"x", 0o644).unwrap();
    let public = fs::metadata(dir.path().join("public")).unwrap();
    assert_eq!(public.permissions().mode() & 0o777, 0o644);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "temp file left: {names:?}");
}
