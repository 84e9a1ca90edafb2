//! HTTPS and ACME against a real Pebble CA: issuance for a domain with an alias, the served
//! chain by SNI, ALPN h2, unknown SNI and old TLS versions refused, a forced renewal swapping
//! the certificate under an open keep-alive connection, and a CA error retried with backoff
//! and reported in the status.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/pebble.rs"]
mod pebble;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use haloy::proxy::tls_hooks::TlsHooks;
use haloy::proxy::{AppRoute, Backend, DomainRoute, Proxy, ProxyConfig, Routes};
use haloy::tls::{
    AcmeSettings, CertificateManager, CertificateStatus, DomainSet, TlsSettings, UnknownSni,
};
use pebble::Pebble;

/// What listens on Pebble's HTTP-01 port and on the HTTPS port.
enum Frontend {
    /// A bare challenge responder and an HTTPS echo server (no routing).
    TestServers,
    /// haloy's real reverse proxy (`serve_http` + `serve_https`) with these routes.
    Proxy(Routes),
}

/// Pebble + a state dir + a CertificateManager + the frontend on Pebble's HTTP-01 port and
/// on an HTTPS port using the manager's `ServerConfig`. Stops everything on drop.
struct Rig {
    shutdown: CancellationToken,
    manager: Arc<CertificateManager>,
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    pebble_root: CertificateDer<'static>,
    settings: TlsSettings,
    state: TempDir,
    pebble: Pebble,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Rig {
    async fn start(configure: impl FnOnce(&mut TlsSettings)) -> Rig {
        Rig::start_with(configure, Frontend::TestServers).await
    }

    async fn start_with(configure: impl FnOnce(&mut TlsSettings), frontend: Frontend) -> Rig {
        let challenge_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http01_port = challenge_listener.local_addr().unwrap().port();
        let pebble = tokio::task::spawn_blocking(move || Pebble::start(http01_port))
            .await
            .unwrap();
        let state = tempfile::tempdir().unwrap();
        let mut settings = TlsSettings::new(state.path());
        settings.acme = AcmeSettings {
            directory_url: Some(pebble.directory_url.clone()),
            staging: false,
            email: Some("ops@app.test".into()),
            ca_bundle: Some(pebble.listener_ca_pem.clone()),
        };
        settings.order_timeout = Duration::from_secs(30);
        settings.retry_base = Duration::from_millis(300);
        settings.retry_max = Duration::from_secs(2);
        configure(&mut settings);
        let manager = CertificateManager::new(settings.clone()).unwrap();
        let shutdown = CancellationToken::new();
        let hooks: Arc<dyn TlsHooks> = manager.clone();
        let http_addr = challenge_listener.local_addr().unwrap();
        let https_addr = match frontend {
            Frontend::TestServers => {
                tokio::spawn(serve_challenges(
                    challenge_listener,
                    hooks,
                    shutdown.clone(),
                ));
                spawn_https(manager.server_config(), shutdown.clone()).await
            }
            Frontend::Proxy(routes) => {
                let https_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let https_addr = https_listener.local_addr().unwrap();
                let config = ProxyConfig {
                    https_port: https_addr.port(),
                    ..ProxyConfig::default()
                };
                let proxy = Proxy::new(config, routes, Some(hooks));
                let acceptor = tokio_rustls::TlsAcceptor::from(manager.server_config());
                let (http_proxy, stop) = (proxy.clone(), shutdown.clone());
                tokio::spawn(async move {
                    http_proxy
                        .serve_http(challenge_listener, stop.cancelled_owned())
                        .await
                });
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    proxy
                        .serve_https(https_listener, acceptor, stop.cancelled_owned())
                        .await
                });
                https_addr
            }
        };
        let pebble_root = pebble.issuing_root().await;
        Rig {
            shutdown,
            manager,
            http_addr,
            https_addr,
            pebble_root,
            settings,
            state,
            pebble,
        }
    }

    fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        client_config(&self.pebble_root, alpn)
    }

    /// Status of `domain`, asserting issuance worked (with the CA's log if not).
    fn issued(&self, statuses: &[CertificateStatus], domain: &str) -> CertificateStatus {
        let status = statuses
            .iter()
            .find(|s| s.domain == domain)
            .unwrap_or_else(|| panic!("no status for {domain}: {statuses:?}"))
            .clone();
        assert!(
            status.last_error.is_none() && status.expires.is_some(),
            "issuance for {domain} failed: {status:?}\n{}",
            self.pebble.log()
        );
        status
    }
}

/// The HTTP-01 answerer the proxy will provide on :80, reduced to the challenge path.
async fn serve_challenges(
    listener: TcpListener,
    hooks: Arc<dyn TlsHooks>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted.unwrap(),
        };
        let hooks = hooks.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let answer = request
                    .uri()
                    .path()
                    .strip_prefix("/.well-known/acme-challenge/")
                    .and_then(|token| hooks.challenge_response(token));
                async move {
                    let response = match answer {
                        Some(key_authorization) => {
                            Response::new(Full::new(Bytes::from(key_authorization)))
                        }
                        None => Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// HTTPS listener answering every request with "<version> <host>".
async fn spawn_https(config: Arc<ServerConfig>, shutdown: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted.unwrap(),
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let host = request
                        .uri()
                        .host()
                        .map(str::to_string)
                        .or_else(|| {
                            request
                                .headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .map(str::to_string)
                        })
                        .unwrap_or_default();
                    let body = format!("{:?} {host}", request.version());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn client_config(root: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
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

async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

fn leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    let mut names: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect();
    names.sort();
    names
}

async fn http1_sender(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
) -> String {
    let request = Request::get("/")
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn app_set() -> DomainSet {
    DomainSet::new("app.test", &["www.app.test"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_one_certificate_for_domain_and_alias_and_serves_it_by_sni_with_h2() {
    let rig = Rig::start(|_| {}).await;
    assert!(
        !rig.manager.has_certificate("app.test"),
        "no certificate before the order"
    );

    let statuses = rig.manager.ensure_certificates(&[app_set()]).await;
    let status = rig.issued(&statuses, "app.test");
    assert_eq!(status.aliases, vec!["www.app.test"]);
    assert!(status.expires.unwrap() > SystemTime::now() + Duration::from_secs(30 * 86_400));
    assert!(rig.manager.has_certificate("app.test") && rig.manager.has_certificate("www.app.test"));

    // Both names get the same certificate, verified against Pebble's root (chain + name).
    let mut leaves = Vec::new();
    for name in ["app.test", "www.app.test"] {
        let stream = tls_connect(rig.https_addr, name, rig.client(&[b"h2", b"http/1.1"]))
            .await
            .unwrap_or_else(|e| panic!("TLS to {name}: {e}"));
        let connection = stream.get_ref().1;
        assert_eq!(connection.alpn_protocol(), Some(&b"h2"[..]), "{name}: ALPN");
        assert!(
            connection.peer_certificates().unwrap().len() >= 2,
            "leaf + intermediate"
        );
        leaves.push(leaf(&stream));
        let (mut sender, h2) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(h2);
        let request = Request::get(format!("https://{name}/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("HTTP/2.0 {name}").as_bytes());
    }
    assert_eq!(
        leaves[0], leaves[1],
        "one certificate for the domain and its alias"
    );
    assert_eq!(dns_names(&leaves[0]), vec!["app.test", "www.app.test"]);

    // An http/1.1-only client still gets HTTP/1.1.
    let stream = tls_connect(rig.https_addr, "app.test", rig.client(&[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    // Unknown SNI and no SNI at all (IP address): handshake refused, no other app's cert.
    let unknown = tls_connect(rig.https_addr, "other.test", rig.client(&[])).await;
    assert!(unknown.is_err(), "unknown SNI must be refused");
    let no_sni = tls_connect(rig.https_addr, "127.0.0.1", rig.client(&[])).await;
    assert!(no_sni.is_err(), "handshake without SNI must be refused");

    // On disk: 0600 files, account created once.
    let certs = rig.state.path().join("certs");
    for file in ["cert.pem", "key.pem", "meta.json"] {
        assert_eq!(mode(&certs.join("app.test").join(file)), 0o600, "{file}");
    }
    let accounts: Vec<_> = std::fs::read_dir(&certs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("acme-account-")
        })
        .collect();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(mode(&accounts[0]), 0o600);
    let account_before = std::fs::read(&accounts[0]).unwrap();
    let cert_before = std::fs::read(certs.join("app.test/cert.pem")).unwrap();

    // A restarted manager serves the stored certificate at once and orders nothing new.
    let restarted = CertificateManager::new(rig.settings.clone()).unwrap();
    assert!(restarted.has_certificate("www.app.test"));
    let statuses = restarted.ensure_certificates(&[app_set()]).await;
    rig.issued(&statuses, "app.test");
    assert_eq!(
        std::fs::read(certs.join("app.test/cert.pem")).unwrap(),
        cert_before
    );
    assert_eq!(std::fs::read(&accounts[0]).unwrap(), account_before);

    drop(restarted);

    // Adding an alias re-orders with the new SAN set, reusing the same account. (The rig's
    // manager, because the test's challenge responder answers from it.)
    assert!(!rig.manager.has_certificate("api.app.test"));
    let grown = DomainSet::new("app.test", &["www.app.test", "api.app.test"]);
    let statuses = rig.manager.ensure_certificates(&[grown]).await;
    let status = rig.issued(&statuses, "app.test");
    let mut covers = status.covers.clone();
    covers.sort();
    assert_eq!(covers, vec!["api.app.test", "app.test", "www.app.test"]);
    assert!(rig.manager.has_certificate("api.app.test"));
    let stream = tls_connect(rig.https_addr, "api.app.test", rig.client(&[]))
        .await
        .unwrap();
    assert_eq!(dns_names(&leaf(&stream)).len(), 3);

    assert_eq!(std::fs::read(&accounts[0]).unwrap(), account_before);

    // An app with its own acme_email gets its own (persisted, 0600) account.
    let app_account = accounts[0].clone();
    let blog = DomainSet::new("blog.test", &[]).with_acme_email(Some("blog@blog.test"));
    let grown = DomainSet::new("app.test", &["www.app.test", "api.app.test"]);
    let statuses = rig.manager.ensure_certificates(&[grown, blog]).await;
    rig.issued(&statuses, "blog.test");
    let accounts: Vec<_> = std::fs::read_dir(&certs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("acme-account-")
        })
        .collect();
    assert_eq!(accounts.len(), 2, "{accounts:?}");
    assert!(accounts.iter().all(|a| mode(a) == 0o600));
    assert_eq!(std::fs::read(&app_account).unwrap(), account_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_renewal_swaps_the_certificate_while_a_keepalive_connection_stays_open() {
    let rig = Rig::start(|_| {}).await;
    let statuses = rig.manager.ensure_certificates(&[app_set()]).await;
    rig.issued(&statuses, "app.test");

    let stream = tls_connect(rig.https_addr, "app.test", rig.client(&[b"http/1.1"]))
        .await
        .unwrap();
    let old_leaf = leaf(&stream);
    let mut open = http1_sender(stream).await;
    assert_eq!(get(&mut open, "app.test").await, "HTTP/1.1 app.test");

    let renewed = rig.manager.force_renewal("app.test").await;
    let renewed = renewed.unwrap_or_else(|e| panic!("renewal failed: {e}\n{}", rig.pebble.log()));
    assert!(renewed.last_error.is_none());

    // The open connection keeps working on its negotiated session...
    assert_eq!(get(&mut open, "app.test").await, "HTTP/1.1 app.test");
    // ...and new connections get the new certificate, for the alias too.
    for name in ["app.test", "www.app.test"] {
        let fresh = tls_connect(rig.https_addr, name, rig.client(&[b"http/1.1"]))
            .await
            .unwrap();
        assert_ne!(
            leaf(&fresh),
            old_leaf,
            "{name} still served the old certificate"
        );
        let mut sender = http1_sender(fresh).await;
        assert_eq!(get(&mut sender, name).await, format!("HTTP/1.1 {name}"));
    }
    assert_eq!(get(&mut open, "app.test").await, "HTTP/1.1 app.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_error_is_reported_retried_with_backoff_and_recovers() {
    let rig = Rig::start(|_| {}).await;
    // Pebble's validator will connect to 127.0.0.2, where nothing listens: the CA rejects.
    rig.pebble.set_dns_a("bad.test", "127.0.0.2");
    let before = SystemTime::now();
    let statuses = rig
        .manager
        .ensure_certificates(&[DomainSet::new("bad.test", &[])])
        .await;
    let status = statuses
        .iter()
        .find(|s| s.domain == "bad.test")
        .unwrap()
        .clone();
    let error = status.last_error.clone().expect("error recorded in status");
    assert!(error.contains("bad.test"), "{error}");
    assert!(error.contains(&rig.pebble.directory_url), "{error}");
    assert!(error.contains("CA said"), "{error}");
    assert_eq!(status.failures, 1);
    assert!(status.expires.is_none());
    assert!(status.next_retry.unwrap() > before, "{status:?}");
    assert!(!rig.manager.has_certificate("bad.test"));
    assert!(tls_connect(rig.https_addr, "bad.test", rig.client(&[]))
        .await
        .is_err());
    let json = serde_json::to_value(&status).unwrap();
    assert!(json["last_error"].as_str().unwrap().contains("bad.test"));
    assert!(json["next_retry"].is_string(), "{json}");

    // The background task retries on its own once the backoff has passed.
    let task = rig.manager.spawn_renewal_task(rig.shutdown.clone());
    let retried = wait_for_status(&rig, "bad.test", |s| s.failures >= 2).await;
    assert!(retried.last_error.is_some());

    // Fix "DNS": the next retry succeeds and the error disappears from the status.
    rig.pebble.clear_dns_a("bad.test");
    let healed = wait_for_status(&rig, "bad.test", |s| s.expires.is_some()).await;
    assert!(healed.last_error.is_none() && healed.failures == 0 && healed.next_retry.is_none());
    assert!(rig.manager.has_certificate("bad.test"));
    tls_connect(rig.https_addr, "bad.test", rig.client(&[]))
        .await
        .unwrap();
    rig.shutdown.cancel();
    task.await.unwrap();
}

/// Polls the manager's status (liveness wait, not a timing assertion).
async fn wait_for_status(
    rig: &Rig,
    domain: &str,
    done: impl Fn(&CertificateStatus) -> bool,
) -> CertificateStatus {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = rig.manager.status(domain).unwrap();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting: {status:?}\n{}",
            rig.pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A raw ClientHello record offering only `version` (no supported_versions extension), so
/// the server must choose that version or refuse.
fn client_hello(version: [u8; 2], server_name: &str) -> Vec<u8> {
    fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend(kind.to_be_bytes());
        out.extend((data.len() as u16).to_be_bytes());
        out.extend(data);
    }
    let mut body = Vec::new();
    body.extend(version);
    body.extend([0x42; 32]); // random
    body.push(0); // no session id
    let suites: [u16; 5] = [0xc02b, 0xc02f, 0xc009, 0xc013, 0x002f];
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    suites.iter().for_each(|s| body.extend(s.to_be_bytes()));
    body.extend([1, 0]); // compression: null
    let mut extensions = Vec::new();
    let mut entry = vec![0u8];
    entry.extend((server_name.len() as u16).to_be_bytes());
    entry.extend(server_name.as_bytes());
    let mut sni = (entry.len() as u16).to_be_bytes().to_vec();
    sni.extend(entry);
    extension(&mut extensions, 0x0000, &sni);
    extension(&mut extensions, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // x25519, P-256
    extension(&mut extensions, 0x000b, &[1, 0]); // uncompressed points
    extension(&mut extensions, 0x000d, &[0, 4, 0x04, 0x03, 0x08, 0x04]); // ecdsa_p256_sha256, rsa_pss
    body.extend((extensions.len() as u16).to_be_bytes());
    body.extend(extensions);
    let mut handshake = vec![1u8]; // ClientHello
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// First byte the server sends back (0x16 handshake, 0x15 alert), or None on close/reset.
async fn server_reply_to(addr: SocketAddr, hello: &[u8]) -> Option<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut first = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut first)).await {
        Ok(Ok(1)) => Some(first[0]),
        Ok(_) => None,
        Err(_) => panic!("server neither answered nor closed"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_0_and_1_1_clients_are_refused_while_tls_1_2_is_accepted() {
    // Self-signed fallback: a certificate is always available, so only the version decides.
    let state = tempfile::tempdir().unwrap();
    let mut settings = TlsSettings::new(state.path());
    settings.unknown_sni = UnknownSni::SelfSigned;
    let manager = CertificateManager::new(settings).unwrap();
    let shutdown = CancellationToken::new();
    let addr = spawn_https(manager.server_config(), shutdown.clone()).await;

    for (name, version) in [("TLS 1.0", [3, 1]), ("TLS 1.1", [3, 2])] {
        let reply = server_reply_to(addr, &client_hello(version, "app.test")).await;
        assert!(
            matches!(reply, None | Some(0x15)),
            "{name}: expected an alert or close, got {reply:?}"
        );
    }
    let reply = server_reply_to(addr, &client_hello([3, 3], "app.test")).await;
    assert_eq!(reply, Some(0x16), "TLS 1.2 hello must get a ServerHello");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sni_gets_a_self_signed_default_never_an_apps_certificate() {
    let rig = Rig::start(|settings| settings.unknown_sni = UnknownSni::SelfSigned).await;
    let statuses = rig.manager.ensure_certificates(&[app_set()]).await;
    rig.issued(&statuses, "app.test");

    // A client trusting Pebble's root rejects the fallback: it is not signed by the CA...
    assert!(tls_connect(rig.https_addr, "other.test", rig.client(&[]))
        .await
        .is_err());
    // ...and what is served is the .invalid self-signed certificate, not app.test's.
    let mut tcp = TcpStream::connect(rig.https_addr).await.unwrap();
    tcp.write_all(&client_hello([3, 3], "other.test"))
        .await
        .unwrap();
    let mut reply = vec![0u8; 16 * 1024];
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while read < 2000 && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut reply[read..])).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => read += n,
            Ok(Err(e)) => panic!("{e}"),
        }
    }
    let reply = &reply[..read];
    let contains = |needle: &[u8]| reply.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(b"haloy-default.invalid"),
        "TLS 1.2 Certificate message should carry the default cert"
    );
    assert!(
        !contains(b"app.test"),
        "another app's certificate was served for an unknown name"
    );
}

/// An HTTP/1.1 backend answering "backend <path>" (what the proxy forwards to).
async fn spawn_backend(shutdown: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted.unwrap(),
            };
            tokio::spawn(async move {
                let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let body = format!("backend {}", request.uri().path());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// One plain-HTTP request: (status, Location header, body).
async fn plain_get(addr: SocketAddr, host: &str, path: &str) -> (u16, Option<String>, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        location,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_proxy_http_serves_until_a_certificate_exists_then_redirects_to_https() {
    let backend_stop = CancellationToken::new();
    let _stop_backend = backend_stop.clone().drop_guard();
    let backend_addr = spawn_backend(backend_stop).await;
    let backend = Backend::new("task-1".into(), 0, backend_addr);
    backend.set_ready(true);
    let routes = Routes::new();
    routes
        .set_app(AppRoute {
            app: "web".into(),
            domains: vec![DomainRoute {
                canonical: "app.test".into(),
                aliases: vec!["www.app.test".into()],
            }],
            backends: vec![backend],
        })
        .unwrap();
    let rig = Rig::start_with(|_| {}, Frontend::Proxy(routes)).await;
    let https_port = rig.https_addr.port();

    // No certificate yet: plain HTTP keeps serving the app (no redirect to a broken HTTPS);
    // the alias still points at the canonical host, over http.
    let (status, _, body) = plain_get(rig.http_addr, "app.test", "/before").await;
    assert_eq!((status, body.as_str()), (200, "backend /before"));
    let (status, location, _) = plain_get(rig.http_addr, "www.app.test", "/a?b=1").await;
    assert_eq!(status, 301);
    assert_eq!(location.as_deref(), Some("http://app.test/a?b=1"));

    // Pebble validates through the proxy's port-80 challenge path.
    let statuses = rig.manager.ensure_certificates(&[app_set()]).await;
    rig.issued(&statuses, "app.test");

    // Now port 80 redirects to HTTPS, aliases straight to the canonical host...
    let (status, location, _) = plain_get(rig.http_addr, "app.test", "/x?y=1").await;
    assert_eq!(status, 301);
    assert_eq!(
        location.as_deref(),
        Some(format!("https://app.test:{https_port}/x?y=1").as_str())
    );
    let (status, location, _) = plain_get(rig.http_addr, "WWW.app.test", "/a?b=1").await;
    assert_eq!(status, 301);
    assert_eq!(
        location.as_deref(),
        Some(format!("https://app.test:{https_port}/a?b=1").as_str())
    );
    // ...except the ACME challenge path, which is never redirected.
    let (status, location, _) = plain_get(
        rig.http_addr,
        "app.test",
        "/.well-known/acme-challenge/unknown-token",
    )
    .await;
    assert_eq!((status, location), (404, None));

    // HTTPS: h2 from the client, proxied to the HTTP/1.1 backend.
    let stream = tls_connect(
        rig.https_addr,
        "app.test",
        rig.client(&[b"h2", b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, h2) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(h2);
    let request = Request::get("https://app.test/over-h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "backend /over-h2".as_bytes());

    // HTTPS on the alias: its own name in the certificate, then 301 to the canonical host.
    let stream = tls_connect(rig.https_addr, "www.app.test", rig.client(&[b"http/1.1"]))
        .await
        .unwrap();
    let mut sender = http1_sender(stream).await;
    let request = Request::get("/p")
        .header("host", "www.app.test")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 301);
    assert_eq!(
        response.headers()["location"].to_str().unwrap(),
        format!("https://app.test:{https_port}/p")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_task_renews_a_certificate_inside_the_renewal_window() {
    // Pebble issues 5-year certificates; a 6-year window makes every one "about to expire".
    let rig = Rig::start(|settings| {
        settings.renew_before = Duration::from_secs(6 * 365 * 86_400);
        settings.check_interval = Duration::from_millis(300);
    })
    .await;
    let statuses = rig.manager.ensure_certificates(&[app_set()]).await;
    let first = rig.issued(&statuses, "app.test");
    let stream = tls_connect(rig.https_addr, "app.test", rig.client(&[]))
        .await
        .unwrap();
    let first_leaf = leaf(&stream);

    let task = rig.manager.spawn_renewal_task(rig.shutdown.clone());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stream = tls_connect(rig.https_addr, "www.app.test", rig.client(&[]))
            .await
            .unwrap();
        if leaf(&stream) != first_leaf {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never renewed\n{}",
            rig.pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renewed = rig.manager.status("app.test").unwrap();
    assert!(renewed.expires >= first.expires && renewed.last_error.is_none());
    rig.shutdown.cancel();
    task.await.unwrap();
}
