//! Unit tests of `tls::settings`.

use super::*;

#[test]
fn domain_set_normalizes_and_dedupes() {
    let set = DomainSet::new("App.Test.", &["www.app.test", "WWW.app.test", "app.test"]);
    assert_eq!(set.canonical, "app.test");
    assert_eq!(set.aliases, vec!["www.app.test".to_string()]);
    assert_eq!(set.names(), vec!["app.test", "www.app.test"]);
}

#[test]
fn directory_defaults_to_production_and_staging_flag_switches() {
    let mut acme = AcmeSettings::default();
    assert_eq!(acme.directory(), LETS_ENCRYPT_PRODUCTION);
    acme.staging = true;
    assert_eq!(acme.directory(), LETS_ENCRYPT_STAGING);
    acme.directory_url = Some("https://127.0.0.1:14000/dir".into());
    assert_eq!(acme.directory(), "https://127.0.0.1:14000/dir");
}
