//! A local `docker-registry` (CNCF distribution) on a free 127.0.0.1 port, optionally behind
//! htpasswd basic auth, and pushing of the in-process test images to it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tempfile::TempDir;

use super::images::{index_of, Blob, OciImage, FIXTURES};
use super::token_server::{self, TokenServer};
use super::{free_port, require_binary, stop_child};

/// Repository prefix of the test images.
pub const FIXTURE_REPO: &str = "haloy-fixtures";

pub struct Registry {
    child: Option<Child>,
    dir: TempDir,
    addr: String,
    credentials: Option<(String, String)>,
    token_server: Option<TokenServer>,
}

/// How the registry authenticates clients.
enum AuthMode {
    Anonymous,
    /// htpasswd basic auth.
    Basic(String, String),
    /// Bearer tokens from a token server that takes these basic credentials.
    Token(String, String),
}

impl Registry {
    /// Starts an anonymous registry.
    pub async fn start() -> Registry {
        Registry::spawn(AuthMode::Anonymous).await
    }

    /// Starts a registry that requires basic auth with `user`/`password`.
    pub async fn start_with_htpasswd(user: &str, password: &str) -> Registry {
        Registry::spawn(AuthMode::Basic(user.to_string(), password.to_string())).await
    }

    /// Starts a registry that challenges for bearer tokens (Docker Hub style), issued by an
    /// in-process token server to `user`/`password`.
    pub async fn start_with_token_auth(user: &str, password: &str) -> Registry {
        Registry::spawn(AuthMode::Token(user.to_string(), password.to_string())).await
    }

    /// The token server of a registry started with `start_with_token_auth`.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token_server.as_ref()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `127.0.0.1:PORT/haloy-fixtures/<name>:<tag>`.
    pub fn fixture_ref(&self, name: &str, tag: &str) -> String {
        format!("{}/{FIXTURE_REPO}/{name}:{tag}", self.addr)
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes every fixture as `:v1`, and `web` also as `:v2`. Returns the references pushed.
    pub async fn push_fixtures(&self) -> Vec<String> {
        push_fixtures_to(&self.addr, self.auth()).await
    }

    /// Pushes `image` as `<repository>:<tag>`; returns the full reference.
    pub async fn push(&self, image: &OciImage, repository: &str, tag: &str) -> String {
        let reference = format!("{}/{repository}:{tag}", self.addr);
        push_image(&reference, image, &self.auth()).await;
        reference
    }

    /// Pushes the images and an index over them (`(image, rust arch)`) as `<repository>:<tag>`.
    pub async fn push_index(
        &self,
        entries: &[(&OciImage, &str)],
        repository: &str,
        tag: &str,
    ) -> String {
        let reference = format!("{}/{repository}:{tag}", self.addr);
        let auth = self.auth();
        for (image, _) in entries {
            push_image(
                &format!("{}/{repository}@{}", self.addr, image.manifest.digest),
                image,
                &auth,
            )
            .await;
        }
        push_manifest(&reference, &index_of(entries), &auth).await;
        reference
    }

    fn auth(&self) -> RegistryAuth {
        match &self.credentials {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    async fn spawn(mode: AuthMode) -> Registry {
        let binary = require_binary("docker-registry", "docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("haloy-reg-")
            .tempdir()
            .expect("registry temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut token_server = None;
        let (auth, credentials) = match mode {
            AuthMode::Anonymous => (String::new(), None),
            AuthMode::Basic(user, password) => {
                let htpasswd = dir.path().join("htpasswd");
                write_htpasswd(&htpasswd, &user, &password);
                let auth = format!(
                    "auth:\n  htpasswd:\n    realm: haloy-test\n    path: {}\n",
                    htpasswd.display()
                );
                (auth, Some((user, password)))
            }
            AuthMode::Token(user, password) => {
                let bundle = dir.path().join("token-ca.pem");
                let server = TokenServer::start(&user, &password, &bundle).await;
                let auth = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    server.realm(),
                    token_server::SERVICE,
                    token_server::ISSUER,
                    bundle.display()
                );
                token_server = Some(server);
                (auth, Some((user, password)))
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut registry = Registry {
            child: Some(child),
            dir,
            addr,
            credentials,
            token_server,
        };
        registry.wait_until_answering().await;
        registry
    }

    async fn wait_until_answering(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "docker-registry exited at start ({status}):\n{}",
                    self.log()
                );
            }
            if http_status(&self.addr, "/v2/").is_some() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "docker-registry on {} did not answer:\n{}",
                    self.addr,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(5));
        }
    }
}

/// Pushes all fixtures to the registry at `addr` (used by the harness and the example).
pub async fn push_fixtures_to(addr: &str, auth: RegistryAuth) -> Vec<String> {
    let mut pushed = Vec::new();
    for fixture in FIXTURES {
        let tags: &[&str] = if fixture.name == "web" {
            &["v1", "v2"]
        } else {
            &["v1"]
        };
        for tag in tags {
            let reference = format!("{addr}/{FIXTURE_REPO}/{}:{tag}", fixture.name);
            push_image(&reference, &OciImage::fixture(fixture.name, tag), &auth).await;
            pushed.push(reference);
        }
    }
    pushed
}

/// Pushes the blobs and the manifest of `image` to `reference` over plain HTTP.
pub async fn push_image(reference: &str, image: &OciImage, auth: &RegistryAuth) {
    let client = http_client();
    let parsed: Reference = reference.parse().expect("valid reference");
    client
        .auth(&parsed, auth, oci_client::RegistryOperation::Push)
        .await
        .expect("registry auth for push");
    for blob in image.layers.iter().map(|l| &l.blob).chain([&image.config]) {
        client
            .push_blob(&parsed, blob.data.clone(), &blob.digest)
            .await
            .unwrap_or_else(|e| panic!("push blob {} to {reference}: {e}", blob.digest));
    }
    push_manifest(reference, &image.manifest, auth).await;
}

async fn push_manifest(reference: &str, manifest: &Blob, auth: &RegistryAuth) {
    let client = http_client();
    let parsed: Reference = reference.parse().expect("valid reference");
    client
        .auth(&parsed, auth, oci_client::RegistryOperation::Push)
        .await
        .expect("registry auth for push");
    client
        .push_manifest_raw(
            &parsed,
            manifest.data.clone(),
            manifest.media_type.parse().unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("push manifest to {reference}: {e}"));
}

fn http_client() -> Client {
    haloy::runtime::image::install_crypto_provider();
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

/// Writes a bcrypt htpasswd file with `htpasswd -Bbn` (apache2-utils).
fn write_htpasswd(path: &Path, user: &str, password: &str) {
    let htpasswd = require_binary("htpasswd", "apache2-utils");
    let output = Command::new(htpasswd)
        .args(["-Bbn", user, password])
        .output()
        .expect("run htpasswd");
    assert!(
        output.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(path, output.stdout).expect("write htpasswd file");
}

/// The body of a plain HTTP/1.0 GET to a loopback or test-owned address, if it answered 200.
pub fn http_body(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1)? == "200").then(|| body.to_string())
}

/// The status code of a plain HTTP/1.0 GET to a loopback address, if anything answered.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    // The registry answers OCI manifests only to clients that accept them.
    let accept =
        "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1)?.parse().ok()
}
