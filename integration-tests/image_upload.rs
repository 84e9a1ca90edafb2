//! Deploy without a registry and build on deploy (issue 15), against a private containerd and
//! haloyd with no registry running: images made with umoci (an OCI layout directory) are
//! uploaded by `haloy deploy --image-from` (also as a `docker save` tar made by skopeo), a
//! second version sends only its new blobs, a corrupted layer is refused with nothing
//! half-imported, an interrupted blob upload resumes at its offset (also through a deploy),
//! uploads need the token, a Dockerfile built by buildah is deployed end to end (uploaded, or
//! pushed to a registry with `push: registry`), and `push: server` uploads an image from the
//! local store.

// Tests start real containerd, haloyd, umoci and buildah (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use containerd_client::services::v1::{
    ListContentRequest, ListImagesRequest, ListRequest, ListStatusesRequest,
};
use haloy::api::client::ApiClient;
use haloy::config::SecretString;
use harness::haloyd::{haloy_binary, CliRun, Haloyd, HaloydOptions};
use harness::{require_binary, Containerd, Registry};
use sha2::{Digest, Sha256};

/// A private containerd and haloyd; field order is drop order.
struct Rig {
    haloyd: Haloyd,
    containerd: Containerd,
    work: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        Rig::with(Containerd::start().await, HaloydOptions::default()).await
    }

    async fn with(containerd: Containerd, options: HaloydOptions) -> Rig {
        let haloyd = Haloyd::start(&containerd, options).await;
        let work = tempfile::Builder::new()
            .prefix("haloy-upload-test-")
            .tempdir()
            .expect("work dir");
        Rig {
            haloyd,
            containerd,
            work,
        }
    }

    /// haloy.yaml for `app` with image `repository:tag` and a domain `<app>.test`.
    fn app_config(&self, app: &str, image_yaml: &str) -> PathBuf {
        let body = format!(
            "name: {app}\n{image_yaml}\nreplicas: 1\nport: 8080\nhealth_check_path: /health\n\
             stop_timeout: 2\ndomains:\n  - domain: {app}.test\n"
        );
        self.haloyd.write_app_config(app, &body)
    }

    /// Runs `haloy` with extra environment (the harness's `cli` has none).
    fn haloy(&self, config: &Path, args: &[&str], env: &[(&str, String)]) -> CliRun {
        let home = self.haloyd.dir().join("client-home");
        let mut command = Command::new(haloy_binary());
        command
            .args(args)
            .arg("-c")
            .arg(config)
            .env("HALOY_API_TOKEN", self.haloyd.token())
            .env("XDG_CONFIG_HOME", &home)
            .env("HOME", &home)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let output = command.output().expect("run the haloy CLI");
        CliRun {
            args: args.iter().map(|a| a.to_string()).collect(),
            output,
        }
    }

    fn deploy_ok(&self, config: &Path, args: &[&str], env: &[(&str, String)]) -> CliRun {
        let run = self.haloy(config, args, env);
        assert!(
            run.output.status.success(),
            "haloy {} failed ({}):\n{}\n--- haloyd log (tail)\n{}",
            args.join(" "),
            run.output.status,
            run.both(),
            self.haloyd.log_tail(40)
        );
        run
    }

    fn api(&self) -> ApiClient {
        ApiClient::new(
            &format!("http://{}", self.haloyd.api_addr()),
            Some(SecretString::new(self.haloyd.token())),
        )
        .expect("api client")
    }

    async fn client(&self) -> haloy::runtime::Containerd {
        self.containerd.client(self.haloyd.namespace()).await
    }

    async fn content_digests(&self) -> Vec<String> {
        let c = self.client().await;
        let mut stream = c
            .content()
            .list(c.request(ListContentRequest::default()))
            .await
            .expect("list content")
            .into_inner();
        let mut digests = Vec::new();
        while let Some(Ok(page)) = futures_util::StreamExt::next(&mut stream).await {
            digests.extend(page.info.into_iter().map(|i| i.digest));
        }
        digests
    }

    async fn ingests(&self) -> Vec<String> {
        let c = self.client().await;
        c.content()
            .list_statuses(c.request(ListStatusesRequest::default()))
            .await
            .expect("list ingests")
            .into_inner()
            .statuses
            .into_iter()
            .map(|s| s.r#ref)
            .collect()
    }

    async fn image_names(&self) -> Vec<String> {
        let c = self.client().await;
        c.images()
            .list(c.request(ListImagesRequest::default()))
            .await
            .expect("list images")
            .into_inner()
            .images
            .into_iter()
            .map(|i| i.name)
            .collect()
    }

    async fn leases(&self) -> Vec<String> {
        let c = self.client().await;
        c.leases()
            .list(c.request(ListRequest::default()))
            .await
            .expect("list leases")
            .into_inner()
            .leases
            .into_iter()
            .map(|l| l.id)
            .collect()
    }

    /// GET `path` on haloyd's proxy with `Host: host`; the body of a 200.
    async fn page(&self, host: &str, path: &str) -> String {
        let addr = self.haloyd.http_addr();
        let mut last = String::new();
        for _ in 0..20 {
            match http_get(&addr, host, path).await {
                Ok((200, body)) => return body,
                Ok((status, body)) => last = format!("{status}: {body}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "GET {path} for {host} never answered 200 (last: {last})\n--- haloyd log\n{}",
            self.haloyd.log_tail(30)
        );
    }
}

async fn http_get(addr: &str, host: &str, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Ok((status, body))
}

/// `POST /v1/images/layers` with only `X-Layer-Digest` and `Content-Length`, as Haloy sends it.
async fn raw_post(addr: &str, token: &str, digest: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the API");
    let head = format!(
        "POST /v1/images/layers HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         X-Layer-Digest: {digest}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream.write_all(body).await.expect("send body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read answer");
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn run(program: &str, args: &[&str], dir: &Path) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Puts busybox and its applet links under `rootfs` and a page tree with `/health`.
fn busybox_rootfs(rootfs: &Path, page: &str) {
    require_binary("busybox", "busybox-static");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs/bin");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
    for applet in ["sh", "httpd", "echo", "cat", "sleep"] {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).expect("applet link");
        }
    }
    let www = rootfs.join("www");
    std::fs::create_dir_all(&www).expect("rootfs/www");
    std::fs::write(www.join("health"), "ok\n").expect("health page");
    std::fs::write(www.join("index.html"), page).expect("index page");
}

/// The start command of the test images: httpd on 8080 that ends on SIGTERM.
const START: &str = "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait";

/// An OCI layout made with umoci holding `app:v1` (busybox layer) and `app:v2` (the same
/// layer plus one with a bigger page).
fn umoci_layout(work: &Path) -> PathBuf {
    require_binary("umoci", "umoci");
    let layout = work.join("layout");
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    run(
        "umoci",
        &["init", "--layout", &layout.display().to_string()],
        work,
    );
    run("umoci", &["new", "--image", &image("v1")], work);
    run("umoci", &["unpack", "--image", &image("v1"), "b1"], work);
    busybox_rootfs(&work.join("b1/rootfs"), "version v1\n");
    run("umoci", &["repack", "--image", &image("v1"), "b1"], work);
    run(
        "umoci",
        &[
            "config",
            "--image",
            &image("v1"),
            "--config.env",
            "PATH=/bin",
            "--config.cmd",
            "/bin/sh",
            "--config.cmd",
            "-c",
            "--config.cmd",
            START,
        ],
        work,
    );
    run("umoci", &["unpack", "--image", &image("v1"), "b2"], work);
    // Incompressible bytes, so the new layer's size is clearly its own.
    let mut filler = Vec::with_capacity(256 * 1024);
    let mut seed = Sha256::digest(b"haloy v2");
    while filler.len() < 256 * 1024 {
        filler.extend_from_slice(&seed);
        seed = Sha256::digest(seed);
    }
    std::fs::write(work.join("b2/rootfs/www/filler.bin"), &filler).expect("filler");
    std::fs::write(work.join("b2/rootfs/www/index.html"), "version v2\n").expect("v2 page");
    run("umoci", &["repack", "--image", &image("v2"), "b2"], work);
    layout
}

/// Blob files of the layout by digest, with sizes.
fn layout_blobs(layout: &Path) -> Vec<(String, u64)> {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .expect("blobs dir")
        .flatten()
        .map(|e| {
            let size = e.metadata().expect("blob metadata").len();
            (format!("sha256:{}", e.file_name().to_string_lossy()), size)
        })
        .collect()
}

/// The numbers of the CLI's `upload: sent A of B blobs, C bytes sent, D bytes already …` line.
fn upload_numbers(run: &CliRun) -> (u64, u64, u64, u64) {
    let stdout = run.stdout();
    let line = stdout
        .lines()
        .find(|l| l.contains("upload: sent"))
        .unwrap_or_else(|| panic!("no upload line in:\n{}", run.both()));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    let n = numbers.len();
    assert!(n >= 4, "unexpected upload line {line}");
    (
        numbers[n - 4],
        numbers[n - 3],
        numbers[n - 2],
        numbers[n - 1],
    )
}

/// The bytes haloyd holds of a blob whose upload broke, once its offset stopped moving (haloyd
/// writes what arrived before it lets go of the ingest).
async fn settled_offset(api: &ApiClient, digest: &str) -> u64 {
    let mut last = None;
    for _ in 0..50 {
        let check = api
            .check_layers(&[digest.to_string()])
            .await
            .expect("check");
        let now = check.partial.first().map(|p| p.offset);
        if now.is_some() && now == last {
            return now.unwrap_or(0);
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("haloyd holds no settled part of {digest} (last offset {last:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn umoci_images_deploy_without_a_registry_and_v2_sends_only_new_bytes() {
    let rig = Rig::start().await;
    let layout = umoci_layout(rig.work.path());
    let from = layout.display().to_string();

    let v1 = rig.app_config("up", "image:\n  repository: up-app\n  tag: v1");
    let first = rig.deploy_ok(&v1, &["deploy", "--image-from", &from], &[]);
    let (sent1, total1, bytes1, skipped1) = upload_numbers(&first);
    println!("v1 upload: {sent1} of {total1} blobs, {bytes1} bytes sent, {skipped1} skipped");
    assert_eq!(sent1, total1, "nothing was on the server yet");
    assert_eq!(skipped1, 0);
    assert_eq!(rig.page("up.test", "/").await, "version v1\n");

    let v2 = rig.app_config("up", "image:\n  repository: up-app\n  tag: v2");
    let second = rig.deploy_ok(&v2, &["deploy", "--image-from", &from], &[]);
    let (sent2, total2, bytes2, skipped2) = upload_numbers(&second);
    println!("v2 upload: {sent2} of {total2} blobs, {bytes2} bytes sent, {skipped2} bytes already on the server");
    assert_eq!(rig.page("up.test", "/").await, "version v2\n");
    // v2 shares v1's busybox layer: only its config and its new layer travel.
    assert_eq!(total2, 3, "config + 2 layers");
    assert_eq!(
        sent2,
        2,
        "config and the new layer only:\n{}",
        second.both()
    );
    assert!(
        skipped2 >= bytes1 / 2 && skipped2 > 500_000,
        "the busybox layer ({skipped2} bytes skipped) was not sent again"
    );
    let sizes = layout_blobs(&layout);
    let new_layer = sizes
        .iter()
        .map(|(_, s)| *s)
        .filter(|s| (250_000..400_000).contains(s))
        .max()
        .expect("v2's layer of 256 KiB random bytes");
    assert!(
        bytes2 < new_layer + 4096 && bytes2 >= new_layer,
        "v2 sent {bytes2} bytes, its new layer is {new_layer}"
    );
    assert!(
        rig.ingests().await.is_empty(),
        "no ingest is left after complete uploads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_layer_is_refused_and_nothing_half_imported_stays() {
    let rig = Rig::start().await;
    let layout = umoci_layout(rig.work.path());
    // Flip bytes in the biggest blob (the busybox layer) after the layout was written: its
    // name (the digest) no longer matches its content.
    let (digest, _) = layout_blobs(&layout)
        .into_iter()
        .max_by_key(|(_, size)| *size)
        .expect("a layer blob");
    let path = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).expect("read layer");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).expect("corrupt layer");

    let config = rig.app_config("bad", "image:\n  repository: bad-app\n  tag: v1");
    let run = rig.haloy(
        &config,
        &["deploy", "--image-from", &layout.display().to_string()],
        &[],
    );
    assert!(!run.output.status.success(), "the deploy must fail");
    let text = run.both();
    println!("{text}");
    assert!(
        text.contains(&digest) && text.contains("do not match its digest"),
        "the error names the blob and says why:\n{text}"
    );
    assert!(text.contains("422"), "{text}");
    assert!(
        text.contains(&path.display().to_string()),
        "the error names the local file:\n{text}"
    );
    assert!(
        !rig.content_digests().await.contains(&digest),
        "the corrupt blob is not in the content store"
    );
    assert!(rig.ingests().await.is_empty(), "no half-written ingest");
    assert!(
        !rig.image_names()
            .await
            .iter()
            .any(|n| n.contains("bad-app")),
        "no image record"
    );
    let upload_lease = format!("haloy-upload-{}", digest.trim_start_matches("sha256:"));
    assert!(
        !rig.leases().await.contains(&upload_lease),
        "the refused blob's lease is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_blob_upload_resumes_at_its_offset() {
    let rig = Rig::start().await;
    let api = rig.api();
    let anonymous = ApiClient::new(&format!("http://{}", rig.haloyd.api_addr()), None).unwrap();
    let refused = anonymous
        .check_layers(&[format!("sha256:{}", "0".repeat(64))])
        .await
        .expect_err("uploads need the token");
    assert_eq!(refused.status(), Some(401), "{refused}");
    let mut blob = Vec::with_capacity(3 << 20);
    let mut seed = Sha256::digest(b"resume");
    while blob.len() < 3 << 20 {
        blob.extend_from_slice(&seed);
        seed = Sha256::digest(seed);
    }
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&blob)));
    let size = blob.len() as u64;
    let half = Bytes::copy_from_slice(&blob[..blob.len() / 2]);
    // The body breaks after half the bytes, as a dropped connection would.
    let broken = futures_util::stream::iter(vec![
        Ok(half),
        Err(std::io::Error::other("connection dropped")),
    ]);
    let err = api
        .upload_layer(&digest, size, 0, broken)
        .await
        .expect_err("a broken body does not complete the blob");
    println!("interrupted upload: {err}");
    // haloyd notices the broken body, keeps what arrived and releases the ingest.
    let offset = settled_offset(&api, &digest).await;
    assert!(
        offset > 0 && offset <= size / 2,
        "the server keeps the received part (offset {offset} of {size})"
    );
    let wrong = api
        .upload_layer(
            &digest,
            size,
            0,
            futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(blob.clone()))]),
        )
        .await
        .expect_err("an upload from 0 while the server holds a part is refused");
    assert_eq!(wrong.status(), Some(409), "{wrong}");
    let rest = Bytes::copy_from_slice(&blob[offset as usize..]);
    let done = api
        .upload_layer(
            &digest,
            size,
            offset,
            futures_util::stream::iter(vec![Ok::<_, std::io::Error>(rest)]),
        )
        .await
        .expect("the rest completes the blob");
    println!(
        "resumed at {offset}: {} bytes sent to complete {size}",
        done.written
    );
    assert_eq!(done.written, size - offset);

    // Haloy's CLI sends a whole blob with only X-Layer-Digest: its size is the body's length.
    let small = b"a blob sent the Haloy way".to_vec();
    let small_digest = format!("sha256:{}", hex::encode(Sha256::digest(&small)));
    let (status, answer) = raw_post(
        &rig.haloyd.api_addr(),
        rig.haloyd.token(),
        &small_digest,
        &small,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert!(rig.content_digests().await.contains(&small_digest));
    let check = api
        .check_layers(std::slice::from_ref(&digest))
        .await
        .expect("check");
    assert_eq!(check.exists, vec![digest.clone()]);
    assert!(rig.content_digests().await.contains(&digest));
    assert!(rig.ingests().await.is_empty());
}

/// Environment that keeps buildah's image store inside `work` (vfs: no mounts to undo).
fn buildah_env(work: &Path) -> Vec<(&'static str, String)> {
    let storage = work.join("containers");
    let storage_conf = work.join("storage.conf");
    std::fs::write(
        &storage_conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
            storage.display()
        ),
    )
    .expect("storage.conf");
    vec![
        ("HALOY_BUILDER", "buildah".to_string()),
        (
            "CONTAINERS_STORAGE_CONF",
            storage_conf.display().to_string(),
        ),
        ("BUILDAH_ISOLATION", "chroot".to_string()),
    ]
}

/// A build context `ctx` beside `config`: busybox rootfs with `page` and a Dockerfile whose
/// start command writes the build arg GREETING to /www/greeting.txt.
fn build_context(config: &Path, page: &str) -> PathBuf {
    let ctx = config.parent().expect("config dir").join("ctx");
    busybox_rootfs(&ctx.join("rootfs"), page);
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nARG GREETING\nCOPY rootfs/ /\nENV PATH=/bin GREETING=${{GREETING}}\n\
             CMD [\"/bin/sh\", \"-c\", \"echo $GREETING > /www/greeting.txt; {START}\"]\n"
        ),
    )
    .expect("Dockerfile");
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_built_by_buildah_deploys_end_to_end() {
    require_binary("buildah", "buildah");
    let rig = Rig::start().await;
    let env = buildah_env(rig.work.path());
    // The build arg comes from an env entry marked build_arg (Haloy's way); the explicit
    // build_config arg of the same name would win, so none is given here.
    let config = rig.app_config(
        "built",
        "image:\n  tag: v1\n  build_config:\n    context: ./ctx\n\
         env:\n  - name: GREETING\n    value: hello-from-build-arg\n    build_arg: true",
    );
    build_context(&config, "built by buildah\n");
    let run = rig.deploy_ok(&config, &["deploy"], &env);
    println!("{}", run.both());
    assert!(
        run.stderr().contains("$ buildah build built:v1"),
        "the build is shown:\n{}",
        run.both()
    );
    let (sent, total, bytes, _) = upload_numbers(&run);
    println!("built image upload: {sent} of {total} blobs, {bytes} bytes sent");
    assert_eq!(rig.page("built.test", "/").await, "built by buildah\n");
    assert_eq!(
        rig.page("built.test", "/greeting.txt").await,
        "hello-from-build-arg\n",
        "the build arg reached the image"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_registry_builds_pushes_and_haloyd_pulls() {
    require_binary("buildah", "buildah");
    let registry = Registry::start().await;
    let containerd = Containerd::start().await;
    let options = HaloydOptions {
        insecure_registries: vec![registry.addr().to_string()],
        ..HaloydOptions::default()
    };
    let rig = Rig::with(containerd, options).await;
    let env = buildah_env(rig.work.path());
    let config = rig.app_config(
        "pushed",
        &format!(
            // Haloy requires registry credentials for `push: registry`; the test registry
            // has no auth and ignores them.
            "image:\n  repository: {}/pushed-app\n  tag: v1\n  registry:\n    server: {}\n    username: ci\n    password: ci-password\n  build_config:\n    context: ./ctx\n    push: registry",
            registry.addr(),
            registry.addr()
        ),
    );
    build_context(&config, "pushed through the registry\n");
    let run = rig.deploy_ok(&config, &["deploy"], &env);
    println!("{}", run.both());
    assert!(
        run.stderr().contains(&format!(
            "$ buildah push --tls-verify=false --creds ci:*** {}/pushed-app:v1 docker://",
            registry.addr()
        )),
        "the image is pushed to its registry, the password masked:\n{}",
        run.both()
    );
    assert!(!run.stdout().contains("upload:"), "nothing is uploaded");
    assert!(
        !run.both().contains("ci-password"),
        "the password is never shown"
    );
    assert_eq!(
        rig.page("pushed.test", "/").await,
        "pushed through the registry\n"
    );
    drop(rig);
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_server_uploads_an_image_from_the_local_store() {
    require_binary("buildah", "buildah");
    let rig = Rig::start().await;
    let env = buildah_env(rig.work.path());
    let config = rig.app_config(
        "stored",
        "image:\n  repository: stored-app\n  tag: v3\n  build: false\n  build_config:\n    push: server",
    );
    let ctx = build_context(&config, "from the local store\n");
    // Built beforehand, outside haloy: the image is only in this machine's store.
    let mut build = Command::new("buildah");
    build
        .args(["build", "-t", "stored-app:v3"])
        .arg(&ctx)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let output = build.output().expect("run buildah");
    assert!(
        output.status.success(),
        "buildah build: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run = rig.deploy_ok(&config, &["deploy"], &env);
    println!("{}", run.both());
    assert!(
        !run.stderr().contains("$ buildah build"),
        "an image that is not built is not built:\n{}",
        run.both()
    );
    let (sent, total, bytes, _) = upload_numbers(&run);
    println!("store image upload: {sent} of {total} blobs, {bytes} bytes sent");
    assert_eq!(sent, total);
    assert_eq!(rig.page("stored.test", "/").await, "from the local store\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_after_an_interrupted_upload_sends_only_the_rest() {
    let rig = Rig::start().await;
    let layout = umoci_layout(rig.work.path());
    let api = rig.api();
    // v1's busybox layer: the biggest blob below v2's random one.
    let (layer, size) = layout_blobs(&layout)
        .into_iter()
        .filter(|(_, size)| *size > 500_000)
        .max_by_key(|(_, size)| *size)
        .expect("the busybox layer");
    let bytes = std::fs::read(
        layout
            .join("blobs/sha256")
            .join(layer.trim_start_matches("sha256:")),
    )
    .expect("read layer");
    // An earlier upload broke after 40% of the layer.
    let part = Bytes::copy_from_slice(&bytes[..bytes.len() * 2 / 5]);
    let broken =
        futures_util::stream::iter(vec![Ok(part), Err(std::io::Error::other("cable pulled"))]);
    api.upload_layer(&layer, size, 0, broken)
        .await
        .expect_err("the broken upload does not complete");
    let held = settled_offset(&api, &layer).await;
    assert!(held > 0, "haloyd keeps the part it received");

    let config = rig.app_config("resumed", "image:\n  repository: resumed-app\n  tag: v1");
    let run = rig.deploy_ok(
        &config,
        &["deploy", "--image-from", &layout.display().to_string()],
        &[],
    );
    let (sent, total, bytes_sent, _) = upload_numbers(&run);
    println!(
        "resumed deploy: {sent} of {total} blobs, {bytes_sent} bytes sent; layer {size} bytes, {held} held before"
    );
    let config_size = layout_blobs(&layout)
        .into_iter()
        .filter(|(_, s)| *s < 2000)
        .map(|(_, s)| s)
        .max()
        .unwrap_or(0);
    assert!(
        bytes_sent <= size - held + config_size && bytes_sent >= size - held,
        "only the rest of the layer (and the small config) is sent: {bytes_sent} bytes"
    );
    assert_eq!(rig.page("resumed.test", "/").await, "version v1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_save_archive_deploys_without_a_registry() {
    require_binary("skopeo", "skopeo");
    let rig = Rig::start().await;
    let layout = umoci_layout(rig.work.path());
    let archive = rig.work.path().join("docker-save.tar");
    // The `docker save` format, written by skopeo from the umoci layout.
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker-archive:{}:archived-app:v1", archive.display()),
        ],
        rig.work.path(),
    );
    let config = rig.app_config("archived", "image:\n  repository: archived-app\n  tag: v1");
    let run = rig.deploy_ok(
        &config,
        &["deploy", "--image-from", &archive.display().to_string()],
        &[],
    );
    let (sent, total, bytes, _) = upload_numbers(&run);
    println!("docker archive upload: {sent} of {total} blobs, {bytes} bytes sent");
    assert_eq!(sent, total);
    assert_eq!(rig.page("archived.test", "/").await, "version v1\n");
}
