//! Unit tests of `runtime::client`.

use super::*;

#[tokio::test]
async fn missing_socket_names_the_path() {
    let err = Containerd::connect("/nonexistent/haloy-test.sock", "haloy")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/haloy-test.sock"),
        "{err}"
    );
}

#[tokio::test]
async fn socket_that_nobody_serves_is_not_answering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.sock");
    // A bound-but-dropped listener leaves the socket file behind with nobody accepting.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let err = Containerd::connect(&path, "haloy").await.unwrap_err();
    assert!(matches!(err, RuntimeError::NotAnswering { .. }), "{err}");
    assert!(err.to_string().contains("dead.sock"), "{err}");
}
