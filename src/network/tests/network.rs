//! Unit tests of `network`.

use super::*;

#[test]
fn ids_with_path_characters_are_refused() {
    assert!(validate_id("web-1.abc_DEF").is_ok());
    for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(129)] {
        assert!(
            matches!(validate_id(bad), Err(NetworkError::InvalidId { .. })),
            "{bad}"
        );
    }
}

#[test]
fn plugin_error_message_names_plugin_and_details() {
    let err = NetworkError::Plugin {
        plugin: "bridge".into(),
        command: "ADD",
        id: "t1".into(),
        code: 11,
        msg: "failed to allocate".into(),
        details: "no IP addresses available".into(),
    };
    assert_eq!(
        err.to_string(),
        "CNI plugin bridge (ADD) for t1 failed with code 11: failed to allocate (no IP addresses available)"
    );
}
