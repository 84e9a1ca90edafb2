//! HTTPS: certificate store on disk, SNI resolver swapped atomically, ACME (instant-acme,
//! HTTP-01) issuance and renewal, the challenge responses the proxy serves on :80.
