//! A bearer-token server for `docker-registry`'s token auth (the Docker Hub / GHCR flow): the
//! registry answers 401 with a `Bearer realm=...` challenge, the client fetches a JWT here with
//! basic credentials, and the registry verifies it against our self-signed certificate (x5c).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

pub const SERVICE: &str = "haloy-test-registry";
pub const ISSUER: &str = "haloy-test-issuer";

/// Requests the token server has seen: `(user, scopes)`.
#[derive(Default)]
pub struct TokenLog {
    pub requests: Mutex<Vec<(String, Vec<String>)>>,
    pub refused: AtomicUsize,
}

pub struct TokenServer {
    pub addr: SocketAddr,
    pub log: Arc<TokenLog>,
    task: tokio::task::JoinHandle<()>,
}

struct Issuer {
    user: String,
    password: String,
    signer: Box<dyn rustls::sign::Signer>,
    cert_der: Vec<u8>,
    log: Arc<TokenLog>,
}

impl TokenServer {
    /// Starts the server on 127.0.0.1 and writes the certificate the registry must trust to
    /// `cert_bundle`.
    pub async fn start(user: &str, password: &str, cert_bundle: &Path) -> TokenServer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["haloy-token-issuer".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(cert_bundle, cert.pem()).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = rustls::crypto::ring::sign::any_ecdsa_type(&der)
            .unwrap()
            .choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        let log = Arc::new(TokenLog::default());
        let issuer = Arc::new(Issuer {
            user: user.to_string(),
            password: password.to_string(),
            signer,
            cert_der: cert.der().to_vec(),
            log: log.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let issuer = issuer.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let issuer = issuer.clone();
                        async move { Ok::<_, std::convert::Infallible>(issuer.answer(req)) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        TokenServer { addr, log, task }
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Issuer {
    fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let scopes = query_values(req.uri().query().unwrap_or(""), "scope");
        let Some(user) = self.authenticated_user(&req) else {
            self.log.refused.fetch_add(1, Ordering::SeqCst);
            return respond(
                StatusCode::UNAUTHORIZED,
                r#"{"details":"bad credentials"}"#.to_string(),
            );
        };
        self.log
            .requests
            .lock()
            .unwrap()
            .push((user.clone(), scopes.clone()));
        let token = self.token(&user, &scopes);
        let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300});
        respond(StatusCode::OK, body.to_string())
    }

    fn authenticated_user(&self, req: &Request<hyper::body::Incoming>) -> Option<String> {
        let header = req
            .headers()
            .get(hyper::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let encoded = header.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        (user == self.user && password == self.password).then(|| user.to_string())
    }

    /// An ES256 JWT granting every requested action on every requested repository.
    fn token(&self, user: &str, scopes: &[String]) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let std_b64 = base64::engine::general_purpose::STANDARD;
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [std_b64.encode(&self.cert_der)]});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": user, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{now}-{}", rand::random::<u64>()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let der_signature = self.signer.sign(signing_input.as_bytes()).unwrap();
        format!(
            "{signing_input}.{}",
            b64.encode(ecdsa_der_to_raw(&der_signature))
        )
    }
}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// ECDSA signatures come DER-encoded (SEQUENCE of two INTEGERs); JWS wants r||s, 32 bytes each.
fn ecdsa_der_to_raw(der: &[u8]) -> Vec<u8> {
    fn integer(input: &[u8]) -> (&[u8], &[u8]) {
        assert_eq!(input[0], 0x02, "DER INTEGER");
        let len = input[1] as usize;
        (&input[2..2 + len], &input[2 + len..])
    }
    assert_eq!(der[0], 0x30, "DER SEQUENCE");
    let body = &der[2..];
    let (r, rest) = integer(body);
    let (s, _) = integer(rest);
    let mut raw = vec![0u8; 64];
    let fit = |n: &[u8], out: &mut [u8]| {
        let n = &n[n.len().saturating_sub(32)..];
        out[32 - n.len()..].copy_from_slice(n);
    };
    fit(r, &mut raw[..32]);
    fit(s, &mut raw[32..]);
    raw
}
