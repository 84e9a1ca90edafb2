//! Unit tests of `runtime::image::upload`: digests are checked before they name anything.

use super::*;

#[test]
fn only_sha256_digests_in_lowercase_hex_are_accepted() {
    let good = format!("sha256:{}", "a1".repeat(32));
    assert!(check_digest(&good).is_ok());
    for bad in [
        "sha256:abc".to_string(),
        format!("sha256:{}", "A1".repeat(32)),
        format!("sha512:{}", "a1".repeat(32)),
        format!("sha256:{}/../x", "a1".repeat(31)),
        String::new(),
    ] {
        let err = check_digest(&bad).unwrap_err().to_string();
        assert!(err.contains("sha256:"), "{err}");
    }
}

#[test]
fn refs_and_leases_are_named_after_the_digest() {
    let digest = format!("sha256:{}", "0f".repeat(32));
    assert_eq!(ingest_ref(&digest), format!("haloy-upload-{digest}"));
    assert_eq!(
        lease_id(&digest),
        format!("haloy-upload-{}", "0f".repeat(32))
    );
}
