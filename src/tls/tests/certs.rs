//! Unit tests of `tls::certs`.

use super::*;

fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

#[test]
fn loads_pair_and_reads_sans_and_expiry() {
    let (cert, key) = self_signed(&["a.test", "www.a.test"]);
    let loaded = load_pair("a.test", Path::new("x"), cert.as_bytes(), key.as_bytes()).unwrap();
    assert_eq!(loaded.names, vec!["a.test", "www.a.test"]);
    assert!(loaded.not_after > SystemTime::now());
}

#[test]
fn mismatched_key_is_rejected_with_domain_in_message() {
    let (cert, _) = self_signed(&["a.test"]);
    let (_, other_key) = self_signed(&["b.test"]);
    let err = load_pair(
        "a.test",
        Path::new("/x/cert.pem"),
        cert.as_bytes(),
        other_key.as_bytes(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("a.test") && err.contains("/x/cert.pem"),
        "{err}"
    );
}

#[test]
fn csr_is_generated_for_all_names() {
    let (key_pem, csr) = key_and_csr(&["a.test".into(), "www.a.test".into()]).unwrap();
    assert!(key_pem.contains("PRIVATE KEY"));
    assert!(!csr.is_empty());
}
