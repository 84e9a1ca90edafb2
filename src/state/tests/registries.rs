use super::*;

#[test]
fn registry_names_are_normalized_like_haloy() {
    for (given, want) in [
        ("ghcr.io", "ghcr.io"),
        ("https://GHCR.io/", "ghcr.io"),
        ("http://127.0.0.1:5000/v1/", "127.0.0.1:5000"),
        ("index.docker.io", "docker.io"),
        ("https://registry-1.docker.io/v1", "docker.io"),
        ("  docker.io ", "docker.io"),
    ] {
        assert_eq!(normalize_registry(given), want, "{given}");
    }
}

#[test]
fn a_login_is_found_under_any_spelling_of_its_registry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let logins = RegistryLogins::new(dir.path());
    let login = RegistryLogin {
        username: "me".into(),
        password: "pw".into(),
    };
    logins.login("https://GHCR.io/", login).expect("login");
    assert_eq!(
        logins.get("ghcr.io").expect("get").map(|l| l.username),
        Some("me".to_string())
    );
    assert!(logins.all().expect("all").contains_key("ghcr.io"));
    assert!(logins.logout("ghcr.io/").expect("logout"));
    assert!(logins.get("ghcr.io").expect("get").is_none());
}
