//! Unit tests of `build_arg: true` env entries (Haloy merges them into a built image's
//! build args; explicit `build_config.args` win).

use crate::config::tree::Format;
use crate::config::{resolve_text, ResolvedApp};
use std::collections::HashMap;

fn resolve(text: &str) -> ResolvedApp {
    let dir = tempfile::tempdir().unwrap();
    let (mut apps, _) = resolve_text(
        text,
        Format::Yaml,
        "haloy.yaml",
        dir.path(),
        &HashMap::new(),
    )
    .unwrap_or_else(|e| panic!("{:?}", e.lines()));
    apps.remove(0)
}

fn build_args(app: &ResolvedApp) -> Vec<(String, String)> {
    app.image
        .build_config
        .as_ref()
        .map(|b| {
            b.args
                .iter()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn env_marked_build_arg_reaches_the_build_of_a_built_image() {
    let app = resolve(
        "name: web\nimage:\n  tag: v1\n  build_config:\n    args:\n      - name: A\n        value: explicit\n\
         env:\n  - name: A\n    value: from-env\n    build_arg: true\n  - name: B\n    value: b\n    build_arg: true\n  - name: C\n    value: c\n",
    );
    assert_eq!(
        build_args(&app),
        vec![("A".into(), "explicit".into()), ("B".into(), "b".into())]
    );
    assert_eq!(app.env.len(), 3, "build args stay runtime env too");
}

#[test]
fn env_build_args_make_a_build_config_when_there_is_none() {
    let app = resolve("name: web\nenv:\n  - name: B\n    value: b\n    build_arg: true\n");
    assert_eq!(build_args(&app), vec![("B".into(), "b".into())]);
}

#[test]
fn images_that_are_not_built_get_no_build_args() {
    let app = resolve(
        "name: web\nimage: nginx:1\nenv:\n  - name: B\n    value: b\n    build_arg: true\n",
    );
    assert!(app.image.build_config.is_none());
}
