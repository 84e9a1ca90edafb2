//! Unit tests of `config::decode`.

use super::*;
use crate::config::tree::parse;

#[test]
fn unknown_key_suggests_closest() {
    let doc = parse(Format::Yaml, "helth_check_path: /x\nzzz: 1\n").unwrap();
    let mut d = Decoder::new("f.yaml", Format::Yaml);
    d.map(&doc, "", &["health_check_path", "name"]);
    assert_eq!(
            d.problems[0].to_string(),
            "f.yaml:1:1: helth_check_path: unknown key `helth_check_path`; did you mean `health_check_path`?"
        );
    assert_eq!(
        d.problems[1].to_string(),
        "f.yaml:2:1: zzz: unknown key `zzz`"
    );
}

#[test]
fn json_accepts_camel_case() {
    let doc = parse(Format::Json, "{\"healthCheckPath\": \"/x\"}").unwrap();
    let mut d = Decoder::new("f.json", Format::Json);
    let entries = d.map(&doc, "", &["health_check_path"]);
    assert_eq!(entries[0].0, "health_check_path");
    assert!(d.problems.is_empty());
}

#[test]
fn int_range_and_type() {
    let doc = parse(Format::Yaml, "[0, \"80\", abc]").unwrap();
    let Value::Seq(items) = &doc.value else {
        panic!()
    };
    let mut d = Decoder::new("f", Format::Yaml);
    assert_eq!(d.int_in(&items[0], "a", 1, 10), None);
    assert_eq!(d.int_in(&items[1], "b", 1, 100), Some(80));
    assert_eq!(d.int_in(&items[2], "c", 1, 10), None);
    assert!(d.problems[0].message.contains("between 1 and 10"));
    assert_eq!(d.problems[1].message, "expected an integer, found a string");
}
