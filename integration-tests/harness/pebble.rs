//! A private Pebble ACME CA for tests: `pebble-challtestsrv` as mock DNS (every name resolves
//! to 127.0.0.1 unless a test overrides it) and `pebble` with a listener certificate generated
//! here (rcgen), both on free 127.0.0.1 ports with their files in a temp dir. The processes
//! are killed by PID when the guard drops, also on panic.
//!
//! Self-contained (but for host.rs beside it) so a test can include it with
//! `#[path = "harness/pebble.rs"] mod pebble;`.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tempfile::TempDir;

#[path = "host.rs"]
mod host;
pub use host::{free_port, require_binary};

pub struct Pebble {
    dir: TempDir,
    children: Vec<Child>,
    /// `https://127.0.0.1:PORT/dir`.
    pub directory_url: String,
    /// `127.0.0.1:PORT` of Pebble's management interface (roots, intermediates).
    pub management_addr: String,
    /// `127.0.0.1:PORT` of challtestsrv's management API (mock DNS records).
    pub dns_management_addr: String,
    /// PEM of the CA that signed Pebble's own listener certificate (the extra CA bundle).
    pub listener_ca_pem: PathBuf,
}

impl Pebble {
    /// Starts challtestsrv and Pebble; Pebble validates HTTP-01 on `http01_port`.
    pub fn start(http01_port: u16) -> Pebble {
        let pebble_bin = require_binary("pebble", "pebble");
        let challtestsrv_bin = require_binary("pebble-challtestsrv", "pebble");
        let dir = tempfile::tempdir().expect("temp dir for pebble");
        let mut children = Vec::new();

        let dns_addr = format!("127.0.0.1:{}", free_port());
        let dns_management_addr = format!("127.0.0.1:{}", free_port());
        let challtestsrv = Command::new(challtestsrv_bin)
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &dns_addr, "-management", &dns_management_addr])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdout(log_file(dir.path(), "challtestsrv.log"))
            .stderr(log_file(dir.path(), "challtestsrv.err"))
            .spawn()
            .expect("spawn pebble-challtestsrv");
        children.push(challtestsrv);

        let listener_ca_pem = dir.path().join("listener-ca.pem");
        let (cert_path, key_path) = write_listener_certificate(dir.path(), &listener_ca_pem);
        let listen_addr = format!("127.0.0.1:{}", free_port());
        let management_addr = format!("127.0.0.1:{}", free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen_addr,
                "managementListenAddress": management_addr,
                "certificate": cert_path,
                "privateKey": key_path,
                "httpPort": http01_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.path().join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).expect("write pebble config");
        let pebble = Command::new(pebble_bin)
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns_addr])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Pebble's defaults stay on: 5% of nonces rejected (the client must retry) and
            // authorizations reused half of the time (already-valid authzs must be skipped).
            .stdout(log_file(dir.path(), "pebble.log"))
            .stderr(log_file(dir.path(), "pebble.err"))
            .spawn()
            .expect("spawn pebble");
        children.push(pebble);

        let guard = Pebble {
            dir,
            children,
            directory_url: format!("https://{listen_addr}/dir"),
            management_addr,
            dns_management_addr,
            listener_ca_pem,
        };
        let ports = [
            &dns_addr,
            &guard.dns_management_addr,
            &listen_addr,
            &guard.management_addr,
        ];
        for addr in ports {
            guard.wait_for_port(addr);
        }
        guard
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        [
            "pebble.log",
            "pebble.err",
            "challtestsrv.log",
            "challtestsrv.err",
        ]
        .map(|name| format!("--- {name}\n{}", read(name)))
        .join("\n")
    }

    fn wait_for_port(&self, addr: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nothing listening on {addr}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pebble's issuing root (`/roots/0` on the management port), for clients that verify
    /// certificates Pebble issued.
    pub async fn issuing_root(&self) -> CertificateDer<'static> {
        let pem = self.management_get("/roots/0").await;
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("root PEM from pebble")
    }

    async fn management_get(&self, path: &str) -> String {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_file(&self.listener_ca_pem).expect("listener CA");
        roots.add(ca).expect("add listener CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(&self.management_addr)
            .await
            .expect("connect to pebble management");
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("server name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS to pebble management");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .expect("HTTP/1.1 handshake with pebble management");
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header("host", &self.management_addr)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("GET from pebble");
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8(body.to_vec()).expect("utf-8 body")
    }

    /// Makes the mock DNS answer `host` with `ip` (e.g. an address nothing listens on).
    pub fn set_dns_a(&self, host: &str, ip: &str) {
        let body = serde_json::json!({ "host": host, "addresses": [ip] }).to_string();
        http_post(&self.dns_management_addr, "/add-a", &body);
    }

    /// Back to the default answer (127.0.0.1) for `host`.
    pub fn clear_dns_a(&self, host: &str) {
        let body = serde_json::json!({ "host": host }).to_string();
        http_post(&self.dns_management_addr, "/clear-a", &body);
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A CA and a leaf for 127.0.0.1/localhost signed by it, for Pebble's HTTPS listener.
fn write_listener_certificate(dir: &Path, ca_pem_path: &Path) -> (PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "haloy test pebble listener CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");
    std::fs::write(ca_pem_path, issuer.as_ref().pem()).expect("write CA");

    let leaf_key = rcgen::KeyPair::generate().expect("listener key");
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("listener params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("listener cert");
    let cert_path = dir.join("listener.pem");
    let key_path = dir.join("listener.key");
    std::fs::write(&cert_path, leaf.pem()).expect("write listener cert");
    std::fs::write(&key_path, leaf_key.serialize_pem()).expect("write listener key");
    (cert_path, key_path)
}

fn http_post(addr: &str, path: &str, body: &str) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).expect("connect to challtestsrv management");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "POST {path}: {response}"
    );
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(name)).expect("create log file"))
}
