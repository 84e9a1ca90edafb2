//! Unit tests of `config::tree`.

use super::*;

fn map_entries(node: &Node) -> &[Entry] {
    match &node.value {
        Value::Map(e) => e,
        other => panic!("not a map: {other:?}"),
    }
}

#[test]
fn yaml_positions_and_types() {
    let doc = parse(
        Format::Yaml,
        "name: app\nport: \"8080\"\nreplicas: 3\nimage:\n  tag: 1.10\n",
    )
    .unwrap();
    let e = map_entries(&doc);
    assert_eq!(e[0].key_pos, Pos { line: 1, col: 1 });
    assert_eq!(e[1].value.value, Value::Str("8080".into()));
    assert_eq!(e[2].value.value, Value::Int(3));
    assert_eq!(e[2].value.pos, Pos { line: 3, col: 11 });
    let img = map_entries(&e[3].value);
    assert_eq!(img[0].key_pos, Pos { line: 5, col: 3 });
    assert_eq!(img[0].value.scalar_text().unwrap(), "1.10");
}

#[test]
fn yaml_merge_keys() {
    let doc = parse(
        Format::Yaml,
        "base: &b\n  replicas: 2\n  port: 80\nt:\n  <<: *b\n  port: 90\n",
    )
    .unwrap();
    let t = map_entries(&map_entries(&doc)[1].value);
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].key, "port");
    assert_eq!(t[0].value.value, Value::Int(90));
    assert_eq!(t[1].key, "replicas");
}

#[test]
fn yaml_syntax_error_has_position() {
    let err = parse(Format::Yaml, "a: [1\nb: 2").unwrap_err();
    assert_eq!(err.pos.line, 2);
}

#[test]
fn json_positions() {
    let doc = parse(Format::Json, "{\n  \"name\": \"x\",\n  \"replicas\": 2\n}").unwrap();
    let e = map_entries(&doc);
    assert_eq!(e[1].key_pos, Pos { line: 3, col: 3 });
    assert_eq!(e[1].value.pos, Pos { line: 3, col: 15 });
    let err = parse(Format::Json, "{\"a\": 1,}").unwrap_err();
    assert_eq!(err.pos, Pos { line: 1, col: 9 });
}

#[test]
fn toml_positions_keep_file_order() {
    let doc = parse(
        Format::Toml,
        "name = \"x\"\nreplicas = 2\n[targets.prod]\nreplicas = 5\n",
    )
    .unwrap();
    let e = map_entries(&doc);
    assert_eq!(e[0].key, "name");
    assert_eq!(e[1].key_pos, Pos { line: 2, col: 1 });
    assert_eq!(e[1].value.pos, Pos { line: 2, col: 12 });
    let targets = map_entries(&e[2].value);
    let prod = map_entries(&targets[0].value);
    assert_eq!(prod[0].value.pos, Pos { line: 4, col: 12 });
}
