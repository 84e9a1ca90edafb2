//! Unit tests of `config::secrets`: parsing as haloydev/haloy's provider tests
//! (internal/configloader/provider_sops_test.go, resolve_secrets_test.go) and the real
//! invocation against stand-in `op`/`sops` scripts that check their arguments.

use super::*;
use std::os::unix::fs::PermissionsExt;

/// A stand-in executable: a shell script that prints `stdout` only when called with exactly
/// `args` (else exits 2 naming what it got), counting its runs in `<path>.runs`.
fn stand_in(dir: &Path, name: &str, args: &str, stdout: &str) -> PathBuf {
    let path = dir.join(name);
    let script = format!(
        "#!/bin/sh\necho run >> \"$0.runs\"\nif [ \"$*\" != '{args}' ]; then echo \"unexpected args: $*\" >&2; exit 2; fi\ncat <<'EOT'\n{stdout}\nEOT\n"
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn runs(program: &Path) -> usize {
    std::fs::read_to_string(format!("{}.runs", program.display()))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn onepassword_is_asked_once_per_source_with_haloys_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let op = stand_in(
        dir.path(),
        "op",
        "item get api-keys --vault Prod --format json --account my.1password.com",
        r#"{"id":"x","fields":[{"label":"username","value":"admin"},{"label":"password","value":"s3cr3t"},{"label":"notes"}]}"#,
    );
    let providers = SecretProviders {
        onepassword: BTreeMap::from([(
            "keys".to_string(),
            OnePasswordSource {
                account: Some("my.1password.com".into()),
                vault: "Prod".into(),
                item: "api-keys".into(),
            },
        )]),
        sops: BTreeMap::new(),
    };
    let programs = Programs {
        op: op.clone(),
        sops: PathBuf::from("/nonexistent/sops"),
    };
    let resolver = SecretResolver::new(providers, dir.path(), programs);
    assert_eq!(
        resolver.resolve("onepassword:keys:password").unwrap(),
        "s3cr3t"
    );
    assert_eq!(
        resolver.resolve("onepassword:keys:username").unwrap(),
        "admin"
    );
    assert_eq!(runs(&op), 1);
    let missing = resolver.resolve("onepassword:keys:token").unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("available keys: notes, password, username"),
        "{missing}"
    );
    assert_eq!(resolver.revealed(), ["s3cr3t", "admin"]);
}

#[test]
fn sops_decrypts_relative_to_the_config_folder_and_flattens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.enc.yaml");
    let sops = stand_in(
        dir.path(),
        "sops",
        &format!("decrypt --output-type yaml {}", file.display()),
        "db:\n  password: pw1\n  port: 5432\nlist: [a, b]\nflag: true\n",
    );
    let providers = SecretProviders {
        onepassword: BTreeMap::new(),
        sops: BTreeMap::from([(
            "app".to_string(),
            SopsSource {
                file: "secrets.enc.yaml".into(),
                format: None,
            },
        )]),
    };
    let programs = Programs {
        op: PathBuf::from("/nonexistent/op"),
        sops,
    };
    let resolver = SecretResolver::new(providers, dir.path(), programs);
    assert_eq!(resolver.resolve("sops:app:db.password").unwrap(), "pw1");
    assert_eq!(resolver.resolve("sops:app:db.port").unwrap(), "5432");
    assert_eq!(resolver.resolve("sops:app:list.1").unwrap(), "b");
    assert_eq!(resolver.resolve("sops:app:flag").unwrap(), "true");
}

#[test]
fn a_failing_or_missing_program_is_reported_with_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let providers = SecretProviders {
        onepassword: BTreeMap::from([(
            "keys".to_string(),
            OnePasswordSource {
                account: None,
                vault: "V".into(),
                item: "I".into(),
            },
        )]),
        sops: BTreeMap::new(),
    };
    let programs = Programs {
        op: dir.path().join("no-such-op"),
        sops: PathBuf::from("sops"),
    };
    let resolver = SecretResolver::new(providers, dir.path(), programs);
    let err = resolver
        .resolve("onepassword:keys:x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source `keys`") && err.contains("command not found"),
        "{err}"
    );
    let err = resolver.resolve("sops:nope:x").unwrap_err();
    assert!(matches!(err, SecretError::UnknownSource { .. }), "{err}");
    let err = resolver.resolve("onepassword-only").unwrap_err();
    assert!(matches!(err, SecretError::BadReference { .. }), "{err}");
}

#[test]
fn sops_plaintext_formats_parse_as_haloy() {
    let json = parse_sops_plaintext("json", r#"{"a":{"b":1.5,"c":null},"n":7}"#).unwrap();
    assert_eq!(json["a.b"], "1.5");
    assert_eq!(json["a.c"], "");
    assert_eq!(json["n"], "7");
    let env = parse_sops_plaintext("dotenv", "A=1\nexport B=\"two\"\n").unwrap();
    assert_eq!((env["A"].as_str(), env["B"].as_str()), ("1", "two"));
    assert!(parse_sops_plaintext("yaml", "just-a-string").is_err());
    assert!(parse_sops_plaintext("json", r#"{"a.b":1}"#)
        .unwrap_err()
        .contains("contains `.`"));
}

#[test]
fn sops_format_comes_from_the_extension_unless_given() {
    let source = |file: &str, format: Option<&str>| SopsSource {
        file: file.into(),
        format: format.map(str::to_string),
    };
    assert_eq!(sops_format(&source("s.yml", None)), Ok("yaml"));
    assert_eq!(sops_format(&source("s.env", None)), Ok("dotenv"));
    assert_eq!(sops_format(&source("s.bin", Some("JSON"))), Ok("json"));
    assert!(sops_format(&source("s.bin", None)).is_err());
    assert!(sops_format(&source("s.yaml", Some("binary"))).is_err());
}
