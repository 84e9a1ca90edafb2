//! Unit tests of haloyd's wiring (`crate::daemon`).

use super::publicly_issuable;

#[test]
fn special_use_names_are_not_sent_to_public_cas() {
    for name in [
        "demo.localhost",
        "localhost",
        "app.test",
        "x.example",
        "10.0.0.1",
        "nas.home.arpa",
        "intranet",
    ] {
        assert!(!publicly_issuable(name), "{name}");
    }
    for name in ["api.example.com", "my-app.com", "Critical-App.com."] {
        assert!(publicly_issuable(name), "{name}");
    }
}
