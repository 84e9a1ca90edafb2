//! Unit tests of `config::yaml_hint`, from haloydev/haloy
//! internal/configloader/yaml_errors_test.go `TestDetectMissingColon`.

use super::*;

#[test]
fn missing_colon_on_line_1() {
    let hint = missing_colon("server artemis.haloy.dev\napi_token:\n", 2).unwrap();
    assert!(hint.contains("line 1"), "{hint}");
    assert!(hint.contains("`server: artemis.haloy.dev`"), "{hint}");
}

#[test]
fn missing_colon_on_the_error_line() {
    let text = "name: course-platform\nserver artemis.haloy.dev\napi_token:\n";
    let hint = missing_colon(text, 2).unwrap();
    assert!(hint.contains("line 2"), "{hint}");
}

#[test]
fn missing_colon_with_simple_value() {
    let hint = missing_colon("name myapp\nport: 8080\n", 2).unwrap();
    assert!(hint.contains("`name: myapp`"), "{hint}");
}

#[test]
fn no_hint_for_valid_lines_comments_or_list_items() {
    assert_eq!(
        missing_colon("server: artemis.haloy.dev\napi_token:\n", 2),
        None
    );
    assert_eq!(
        missing_colon("database: postgres://localhost:5432/db\nname: myapp\n", 2),
        None
    );
    assert_eq!(missing_colon("# a comment here\n- item one\n", 2), None);
}
