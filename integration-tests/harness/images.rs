//! OCI test images built in-process from /bin/busybox (busybox-static): a shared base layer
//! (busybox + applet symlinks + /etc files) and a small per-fixture layer with its start script,
//! plus writers for an OCI image archive (oci-layout tar) and a `docker save` tar.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::require_binary;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Applets linked to /bin/busybox in the base layer.
const APPLETS: &[&str] = &[
    "sh", "ash", "httpd", "sleep", "echo", "cat", "ls", "mkdir", "rm", "cp", "mv", "ps", "kill",
    "hostname", "env", "nc", "printf", "test", "[", "true", "false", "date", "wget", "grep", "sed",
    "seq", "head", "tail", "wc", "id", "touch", "ip", "ifconfig", "uname", "pwd", "chmod",
    "unshare", "mount", "nslookup",
];

/// The test fixtures: name and the start script run as `sh /app/start.sh`.
pub struct Fixture {
    pub name: &'static str,
    pub script: &'static str,
    /// Extra `KEY=VALUE` env of the image config.
    pub env: &'static [&'static str],
}

/// Writes the web pages (version, replica id, hostname) into /www; used by several fixtures.
const WEB_PAGES: &str = r#"
mkdir -p /www
host=$(hostname)
cat > /www/index.html <<EOT
<html><body>
<h1>haloy fixture $FIXTURE_NAME</h1>
<p>version: $FIXTURE_VERSION</p>
<p>replica: ${HALOY_REPLICA_ID:-unset}</p>
<p>hostname: $host</p>
</body></html>
EOT
echo "version=$FIXTURE_VERSION replica=${HALOY_REPLICA_ID:-unset} hostname=$host" > /www/version.txt
mkdir -p /www/cgi-bin
cat > /www/cgi-bin/slow <<EOT
#!/bin/sh
sleep 0.2
# The whole answer, status line included, in one write: httpd adds no status line of its own
# to output that starts with "HTTP" and passes it on in one write, so a replica killed
# mid-answer leaves no half head or page (a close-delimited page would pass as complete).
page=\$(cat /www/index.html)
printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/html\\r\\n\\r\\n%s\\n' "\$page"
EOT
chmod +x /www/cgi-bin/slow
# Service discovery from inside a replica: /cgi-bin/lookup?NAME runs nslookup NAME against the
# replica's resolver, /cgi-bin/fetch?HOST:PORT/PATH fetches that URL by name with nc (the
# static busybox's wget crashes in glibc's service lookup; nc resolves with getaddrinfo).
cat > /www/cgi-bin/lookup <<'EOT'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
nslookup "$QUERY_STRING" 2>&1
EOT
cat > /www/cgi-bin/fetch <<'EOT'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
hostport=${QUERY_STRING%%/*}
path=/${QUERY_STRING#*/}
host=${hostport%:*}
printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$host" | nc -w 5 "$host" "${hostport##*:}" 2>&1 || echo "fetch failed: $?"
EOT
chmod +x /www/cgi-bin/lookup /www/cgi-bin/fetch
"#;

pub const FIXTURES: &[Fixture] = &[
    Fixture {
        name: "web",
        // PID 1 has no default SIGTERM action: trap it so a stop ends the task at once.
        script: r#"
echo ok > /www/health
trap 'echo "web: SIGTERM, exiting"; exit 0' TERM
echo "web $FIXTURE_VERSION listening on ${PORT:-8080}"
httpd -f -p ${PORT:-8080} -h /www &
wait
"#,
        env: &[],
    },
    Fixture {
        name: "crash-after",
        script: r#"
echo ok > /www/health
trap 'exit 0' TERM
httpd -f -p ${PORT:-8080} -h /www &
echo "crash-after: exiting with status 3 in ${CRASH_AFTER}s"
sleep ${CRASH_AFTER}
echo "crash-after: crashing now" >&2
exit 3
"#,
        env: &["CRASH_AFTER=5"],
    },
    Fixture {
        name: "unhealthy",
        // busybox httpd cannot answer 500 for a plain path, so a persistent `nc` server answers
        // every request (any path) with 500.
        script: r#"
cat > /app/respond500 <<'EOT'
#!/bin/sh
while read -t 2 line; do
  line=$(echo "$line" | tr -d '\r')
  [ -z "$line" ] && break
done
printf 'HTTP/1.0 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nunhealthy\n'
EOT
chmod +x /app/respond500
trap 'exit 0' TERM
echo "unhealthy: answering 500 on ${PORT:-8080}"
nc -ll -p ${PORT:-8080} -e /app/respond500 &
wait
"#,
        env: &[],
    },
    Fixture {
        name: "slow-start",
        script: r#"
trap 'exit 0' TERM
httpd -f -p ${PORT:-8080} -h /www &
echo "slow-start: healthy in ${SLOW_START}s"
sleep ${SLOW_START}
echo ok > /www/health
echo "slow-start: healthy now"
wait
"#,
        env: &["SLOW_START=5"],
    },
    Fixture {
        name: "ignore-sigterm",
        script: r#"
echo ok > /www/health
trap 'echo "ignore-sigterm: got SIGTERM, ignoring it"' TERM
httpd -f -p ${PORT:-8080} -h /www &
while true; do sleep 1; done
"#,
        env: &[],
    },
    Fixture {
        name: "no-term-handler",
        // Like many apps: no SIGTERM handler, so as PID 1 it ignores SIGTERM (the kernel
        // applies no default action to a namespace's init). It also leaves orphans behind, which
        // only a reaping PID 1 collects; `sleep` as PID 1 never does.
        script: r#"
echo ok > /www/health
httpd -f -p ${PORT:-8080} -h /www &
for n in 1 2 3; do ( sleep 0.2 & ); done
echo "no-term-handler: running, 3 orphans left behind"
exec sleep 100000
"#,
        env: &[],
    },
    Fixture {
        name: "tunnel",
        // GET /health answers 200; any other request is switched (101) to a raw echo of
        // what the client sends: a tunnel the proxy must keep open through a hand-over.
        script: r#"
cat > /app/serve <<'EOT'
#!/bin/sh
read -r line
path=$(echo "$line" | cut -d' ' -f2)
while read -r h; do
  h=$(echo "$h" | tr -d '\r')
  [ -z "$h" ] && break
done
case "$path" in
  /health) printf 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n' ;;
  *) printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'; exec cat ;;
esac
EOT
chmod +x /app/serve
trap 'exit 0' TERM
echo "tunnel: 101 + echo on ${PORT:-8080}"
nc -ll -p ${PORT:-8080} -e /app/serve &
wait
"#,
        env: &[],
    },
    Fixture {
        name: "chatty",
        script: r#"
echo ok > /www/health
trap 'exit 0' TERM
httpd -f -p ${PORT:-8080} -h /www &
n=0
while true; do
  n=$((n+1)); echo "line $n stdout"
  n=$((n+1)); echo "line $n stderr" >&2
  sleep ${CHATTY_INTERVAL}
done
"#,
        env: &["CHATTY_INTERVAL=0.1"],
    },
];

/// Returns the fixture called `name`; panics for an unknown name.
pub fn fixture(name: &str) -> &'static Fixture {
    FIXTURES
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture called {name}"))
}

/// A content-addressed blob.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub data: Vec<u8>,
    pub digest: String,
}

impl Blob {
    pub fn new(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256_digest(&data),
            data,
        }
    }

    pub fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

/// A layer: the gzip blob pushed and the uncompressed tar's digest (diff_id).
#[derive(Clone, Debug)]
pub struct Layer {
    pub blob: Blob,
    pub tar: Vec<u8>,
    pub diff_id: String,
}

/// A complete single-platform OCI image.
#[derive(Clone, Debug)]
pub struct OciImage {
    pub layers: Vec<Layer>,
    pub config: Blob,
    pub manifest: Blob,
}

impl OciImage {
    /// Builds fixture `name` with `tag` as its version (shown on the web page).
    pub fn fixture(name: &str, tag: &str) -> OciImage {
        let fixture = fixture(name);
        let app_layer = fixture_layer(fixture);
        let mut env = vec![
            "PATH=/bin:/usr/bin:/sbin:/usr/sbin".to_string(),
            format!("FIXTURE_NAME={name}"),
            format!("FIXTURE_VERSION={tag}"),
        ];
        env.extend(fixture.env.iter().map(|e| e.to_string()));
        let config = json!({
            "Env": env,
            "Cmd": ["sh", "/app/start.sh"],
            "WorkingDir": "/app",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {"dev.haloy.fixture": name},
        });
        OciImage::from_layers(
            vec![base_layer().clone(), app_layer],
            config,
            std::env::consts::ARCH,
        )
    }

    /// An image from layers and the `config` part of an image config, for `arch` (Rust names).
    pub fn from_layers(layers: Vec<Layer>, config: serde_json::Value, arch: &str) -> OciImage {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let image_config = json!({
            "architecture": oci_arch(arch),
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [],
        });
        let config = Blob::new(
            CONFIG_MEDIA_TYPE,
            serde_json::to_vec(&image_config).unwrap(),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.descriptor(),
            "layers": layers.iter().map(|l| l.blob.descriptor()).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(MANIFEST_MEDIA_TYPE, serde_json::to_vec(&manifest).unwrap());
        OciImage {
            layers,
            config,
            manifest,
        }
    }

    /// Chain ID of the top layer (what the runtime commits the unpacked snapshot as).
    pub fn chain_id(&self) -> String {
        let mut chain = self.layers[0].diff_id.clone();
        for layer in &self.layers[1..] {
            chain = sha256_digest(format!("{chain} {}", layer.diff_id).as_bytes());
        }
        chain
    }

    /// Every blob: layers, config, manifest.
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut blobs: Vec<&Blob> = self.layers.iter().map(|l| &l.blob).collect();
        blobs.push(&self.config);
        blobs.push(&self.manifest);
        blobs
    }

    /// Writes an OCI image archive (oci-layout tar) with `ref_name` as the image's
    /// `org.opencontainers.image.ref.name` annotation.
    pub fn write_oci_archive(&self, path: &Path, ref_name: &str) {
        let mut tar = tar::Builder::new(Vec::new());
        append_file(
            &mut tar,
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
            0o644,
        );
        let mut manifest_descriptor = self.manifest.descriptor();
        manifest_descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": ref_name});
        let index = json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [manifest_descriptor],
        });
        append_file(
            &mut tar,
            "index.json",
            &serde_json::to_vec(&index).unwrap(),
            0o644,
        );
        for blob in self.blobs() {
            let hex = blob.digest.trim_start_matches("sha256:");
            append_file(&mut tar, &format!("blobs/sha256/{hex}"), &blob.data, 0o644);
        }
        std::fs::write(path, tar.into_inner().unwrap()).expect("write OCI archive");
    }

    /// Writes a classic `docker save` tar (manifest.json, config json, uncompressed layers).
    pub fn write_docker_archive(&self, path: &Path, repo_tag: &str) {
        let mut tar = tar::Builder::new(Vec::new());
        let config_name = format!("{}.json", self.config.digest.trim_start_matches("sha256:"));
        append_file(&mut tar, &config_name, &self.config.data, 0o644);
        let mut layer_paths = Vec::new();
        for layer in &self.layers {
            let dir = layer.diff_id.trim_start_matches("sha256:");
            let layer_path = format!("{dir}/layer.tar");
            append_file(&mut tar, &layer_path, &layer.tar, 0o644);
            layer_paths.push(layer_path);
        }
        let manifest =
            json!([{"Config": config_name, "RepoTags": [repo_tag], "Layers": layer_paths}]);
        append_file(
            &mut tar,
            "manifest.json",
            &serde_json::to_vec(&manifest).unwrap(),
            0o644,
        );
        std::fs::write(path, tar.into_inner().unwrap()).expect("write docker archive");
    }
}

/// An OCI index over `(manifest, arch)` pairs, each marked linux/<arch>.
pub fn index_of(entries: &[(&OciImage, &str)]) -> Blob {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(image, arch)| {
            let mut d = image.manifest.descriptor();
            d["platform"] = json!({"os": "linux", "architecture": oci_arch(arch)});
            d
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests});
    Blob::new(INDEX_MEDIA_TYPE, serde_json::to_vec(&index).unwrap())
}

/// Maps Rust's architecture names to OCI's.
pub fn oci_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The busybox base layer, built once per test process.
pub fn base_layer() -> &'static Layer {
    static BASE: OnceLock<Layer> = OnceLock::new();
    BASE.get_or_init(build_base_layer)
}

fn build_base_layer() -> Layer {
    let busybox_path = require_binary("busybox", "busybox-static");
    let busybox = std::fs::read(&busybox_path).expect("read busybox");
    let mut tar = tar::Builder::new(Vec::new());
    for dir in [
        "bin", "etc", "tmp", "www", "app", "proc", "sys", "dev", "root", "usr", "usr/bin",
    ] {
        append_dir(&mut tar, dir, if dir == "tmp" { 0o1777 } else { 0o755 });
    }
    append_file(&mut tar, "bin/busybox", &busybox, 0o755);
    for applet in APPLETS {
        append_symlink(&mut tar, &format!("bin/{applet}"), "busybox");
    }
    append_file(
        &mut tar,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        0o644,
    );
    append_file(
        &mut tar,
        "etc/group",
        b"root:x:0:\nnogroup:x:65534:\n",
        0o644,
    );
    layer_from_tar(tar.into_inner().unwrap())
}

fn fixture_layer(fixture: &Fixture) -> Layer {
    let script = format!(
        "#!/bin/sh\n# haloy test fixture `{}`\n{WEB_PAGES}{}",
        fixture.name, fixture.script
    );
    let mut tar = tar::Builder::new(Vec::new());
    append_dir(&mut tar, "app", 0o755);
    append_file(&mut tar, "app/start.sh", script.as_bytes(), 0o755);
    layer_from_tar(tar.into_inner().unwrap())
}

/// A layer with one file `path` holding `content` (for tests that need distinct layers).
pub fn single_file_layer(path: &str, content: &[u8]) -> Layer {
    let mut tar = tar::Builder::new(Vec::new());
    append_file(&mut tar, path, content, 0o644);
    layer_from_tar(tar.into_inner().unwrap())
}

pub fn layer_from_tar(tar: Vec<u8>) -> Layer {
    let diff_id = sha256_digest(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let blob = Blob::new(LAYER_MEDIA_TYPE, gz.finish().unwrap());
    Layer { blob, tar, diff_id }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    // A fixed mtime keeps layers byte-identical between builds (same digests every run).
    header.set_mtime(1_700_000_000);
    header
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
    let mut h = header(tar::EntryType::Directory, mode, 0);
    tar.append_data(&mut h, format!("{path}/"), std::io::empty())
        .unwrap();
}

fn append_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    tar.append_data(&mut h, path, data).unwrap();
}

fn append_symlink(tar: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut h, path, target).unwrap();
}
