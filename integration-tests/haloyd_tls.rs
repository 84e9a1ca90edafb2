//! HTTPS end to end through the real `haloyd` (issue 6): ACME pointed at a real Pebble, an app
//! deployed with the real `haloy` CLI gets a certificate for its domain and alias, HTTPS serves
//! it by SNI with h2 by ALPN, `haloy status --json` reports the expiry, port 80 redirects (alias
//! to the canonical host), the API answers on `https://api.domain` with the bearer token only,
//! certificate/key files on disk are mode 0600, and a restarted haloyd serves the stored
//! certificate at once.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;
// pebble.rs brings its own copy of harness/host.rs so tls.rs can use it without the harness.
#[allow(clippy::duplicate_mod)]
#[path = "harness/pebble.rs"]
mod pebble;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use haloy::api::types::AppStatus;
use harness::haloyd::{Haloyd, HaloydOptions};
use harness::{Containerd, Registry};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pebble::Pebble;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const API_DOMAIN: &str = "api.haloy.test";
/// How long issuance may take after the deploy (Pebble validates over loopback).
const ISSUANCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Field order is drop order: haloyd first (so it does not react to the teardown), then the
/// CA, the registry and containerd last.
struct Rig {
    haloyd: Haloyd,
    pebble: Pebble,
    pebble_root: CertificateDer<'static>,
    registry: Registry,
    _containerd: Containerd,
}

impl Rig {
    async fn start() -> Rig {
        let containerd = Containerd::start().await;
        let registry = Registry::start().await;
        registry.push_fixtures().await;
        // Pebble validates HTTP-01 on the port haloyd's proxy will listen on.
        let http_port = harness::free_port();
        let pebble = tokio::task::spawn_blocking(move || Pebble::start(http_port))
            .await
            .unwrap();
        let pebble_root = pebble.issuing_root().await;
        let acme = format!(
            "{{enabled: true, directory_url: \"{}\", ca_bundle: {}, email: ops@app.test}}",
            pebble.directory_url,
            pebble.listener_ca_pem.display()
        );
        let options = HaloydOptions {
            insecure_registries: vec![registry.addr().to_string()],
            http_port: Some(http_port),
            acme: Some(acme),
            api_domain: Some(API_DOMAIN.to_string()),
            ..HaloydOptions::default()
        };
        let haloyd = Haloyd::start(&containerd, options).await;
        Rig {
            haloyd,
            pebble,
            pebble_root,
            registry,
            _containerd: containerd,
        }
    }

    fn web_config(&self) -> PathBuf {
        let body = format!(
            "name: web\nimage: {}\nreplicas: 1\nport: 8080\nhealth_check_path: /health\n\
             domains:\n  - domain: app.test\n    aliases: [www.app.test]\n",
            self.registry.fixture_ref("web", "v1")
        );
        self.haloyd.write_app_config("web", &body)
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- haloyd log (tail)\n{}\n--- pebble\n{}",
            self.haloyd.log_tail(40),
            self.pebble.log()
        )
    }

    fn https_addr(&self) -> String {
        self.haloyd.https_addr()
    }

    fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.pebble_root.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    async fn tls(&self, sni: &str, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.https_addr()).await?;
        let name = ServerName::try_from(sni.to_string()).unwrap();
        tokio_rustls::TlsConnector::from(self.client(alpn))
            .connect(name, tcp)
            .await
    }

    /// Polls until a TLS handshake with SNI `domain` verifies against Pebble's root.
    async fn wait_for_certificate(&self, domain: &str) -> TlsStream<TcpStream> {
        let deadline = Instant::now() + ISSUANCE_TIMEOUT;
        loop {
            match self.tls(domain, &[b"http/1.1"]).await {
                Ok(stream) => return stream,
                Err(e) if Instant::now() > deadline => panic!(
                    "no certificate for {domain} within {ISSUANCE_TIMEOUT:?} (last: {e})\n{}",
                    self.diagnostics()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

struct Reply {
    status: u16,
    location: Option<String>,
    body: String,
}

/// One HTTP/1.1 request over `stream` (plain TCP or TLS).
async fn http1_request<S>(stream: S, host: &str, path: &str, token: Option<&str>) -> Reply
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", host);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    reply(response).await
}

async fn reply(response: hyper::Response<hyper::body::Incoming>) -> Reply {
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        location,
        body: String::from_utf8_lossy(&body).to_string(),
    }
}

/// Every regular file below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_domain_and_api_domain_get_pebble_certificates_and_https_works() {
    let mut rig = Rig::start().await;
    let config = rig.web_config();
    let run = rig.haloyd.cli(&config, &["deploy"]);
    assert!(
        run.output.status.success(),
        "haloy deploy failed:\n{}\n{}",
        run.both(),
        rig.diagnostics()
    );

    // 1. A certificate for app.test (verified against Pebble's root), serving the web page.
    let stream = rig.wait_for_certificate("app.test").await;
    let page = http1_request(stream, "app.test", "/", None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("haloy fixture web"), "{}", page.body);

    // HTTP/2 by ALPN, proxied to the HTTP/1.1 replica.
    let stream = rig.tls("app.test", &[b"h2", b"http/1.1"]).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, h2) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(h2);
    let request = Request::get("https://app.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let page = reply(response).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("haloy fixture web"), "{}", page.body);

    // The alias is a SAN of the same certificate.
    rig.tls("www.app.test", &[]).await.unwrap_or_else(|e| {
        panic!(
            "www.app.test not covered by the certificate: {e}\n{}",
            rig.diagnostics()
        )
    });

    // `haloy status --json` shows the certificate with its expiry.
    let run = rig.haloyd.cli(&config, &["status", "--json"]);
    run.assert_ok();
    let statuses: Vec<AppStatus> = serde_json::from_str(&run.stdout())
        .unwrap_or_else(|e| panic!("status --json: {e}\n{}", run.stdout()));
    let web = statuses.iter().find(|s| s.name == "web").unwrap();
    let cert = web
        .certificates
        .iter()
        .find(|c| c.domain == "app.test")
        .unwrap_or_else(|| panic!("no certificate for app.test in {web:?}"));
    assert!(
        cert.expires.is_some() && cert.last_error.is_none(),
        "{cert:?}"
    );

    // 2. Plain HTTP now redirects to HTTPS; the alias to the canonical host.
    let https_port = rig
        .haloyd
        .https_addr()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let tcp = TcpStream::connect(rig.haloyd.http_addr()).await.unwrap();
    let redirect = http1_request(tcp, "app.test", "/x?y=1", None).await;
    assert_eq!(redirect.status, 301);
    assert_eq!(
        redirect.location.as_deref(),
        Some(format!("https://app.test:{https_port}/x?y=1").as_str())
    );
    let tcp = TcpStream::connect(rig.haloyd.http_addr()).await.unwrap();
    let redirect = http1_request(tcp, "www.app.test", "/a", None).await;
    assert_eq!(redirect.status, 301);
    assert_eq!(
        redirect.location.as_deref(),
        Some(format!("https://app.test:{https_port}/a").as_str())
    );

    // 3. The API through the proxy at https://api.haloy.test, with the token only.
    let stream = rig.wait_for_certificate(API_DOMAIN).await;
    let apps = http1_request(stream, API_DOMAIN, "/v1/apps", Some(rig.haloyd.token())).await;
    assert_eq!(apps.status, 200, "{}\n{}", apps.body, rig.diagnostics());
    let listed: Vec<AppStatus> = serde_json::from_str(&apps.body)
        .unwrap_or_else(|e| panic!("GET /v1/apps is not JSON app status: {e}\n{}", apps.body));
    assert!(listed.iter().any(|s| s.name == "web"), "{}", apps.body);
    let stream = rig.tls(API_DOMAIN, &[]).await.unwrap();
    let denied = http1_request(stream, API_DOMAIN, "/v1/apps", None).await;
    assert_eq!(denied.status, 401, "{}", denied.body);

    // 4. Certificates and keys on disk are private.
    let certs = rig.haloyd.dir().join("state").join("certs");
    let files = files_under(&certs);
    for domain in ["app.test", API_DOMAIN] {
        for name in ["cert.pem", "key.pem"] {
            let path = certs.join(domain).join(name);
            assert!(
                files.contains(&path),
                "{} missing: {files:?}",
                path.display()
            );
        }
    }
    for file in &files {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    }

    // 5. After a restart the stored certificate serves at once (no new order needed first).
    let before = leaf(&rig.tls("app.test", &[]).await.unwrap());
    rig.haloyd.kill();
    rig.haloyd.start_again().await;
    let stream = rig
        .tls("app.test", &[b"http/1.1"])
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no certificate for app.test right after restart: {e}\n{}",
                rig.diagnostics()
            )
        });
    assert_eq!(
        leaf(&stream),
        before,
        "a restart must reuse the stored certificate"
    );
    let page = http1_request(stream, "app.test", "/", None).await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, rig.diagnostics());
}

fn leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}
