//! Unit tests of `config::env`.

use super::*;
use crate::config::tree::Format;

fn pending(name: &str, value: &str) -> PendingEnv {
    PendingEnv {
        name: name.into(),
        value: Some(value.into()),
        interpolate: true,
        pos: Pos { line: 1, col: 1 },
        path: format!("env.{name}"),
    }
}

#[test]
fn references_to_entries_only_as_haloy() {
    let mut dec = Decoder::new("f", Format::Yaml);
    let out = interpolate(
        &[
            pending("URL", "postgres://${HOST}:${PORT}/x"),
            pending("PORT", "5432"),
            pending("LIT", "$${PORT} $5 ${} ${1A} ${PORT"),
        ],
        &mut dec,
    );
    assert!(dec.problems.is_empty(), "{:?}", dec.problems);
    assert_eq!(out[0].1.as_deref(), Some("postgres://${HOST}:5432/x"));
    assert_eq!(out[2].1.as_deref(), Some("$5432 $5 ${} ${1A} ${PORT"));
}

#[test]
fn cycles_are_reported() {
    let mut dec = Decoder::new("f", Format::Yaml);
    let out = interpolate(
        &[
            pending("A", "${B}"),
            pending("B", "${A}"),
            pending("C", "ok"),
        ],
        &mut dec,
    );
    assert_eq!(dec.problems.len(), 1);
    assert!(
        dec.problems[0].message.contains("A -> B -> A"),
        "{:?}",
        dec.problems
    );
    assert_eq!(out[2].1.as_deref(), Some("ok"));
}

#[test]
fn dotenv_syntax() {
    let mut dec = Decoder::new("f", Format::Yaml);
    let vars = parse_dotenv(
        "# c\nexport A=1\nB=\"two words\"\nC='x#y'\nD=v # comment\nbad line\n",
        ".env",
        &mut dec,
    );
    assert_eq!(vars["A"], "1");
    assert_eq!(vars["B"], "two words");
    assert_eq!(vars["C"], "x#y");
    assert_eq!(vars["D"], "v");
    assert_eq!(dec.problems.len(), 1);
    assert_eq!(dec.problems[0].pos.line, 6);
}
