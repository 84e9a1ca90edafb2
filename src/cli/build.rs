//! Building on deploy with what the deploying machine has: `docker` (build/buildx), `podman` or
//! `buildah`, detected in that order (`HALOY_BUILDER` picks one). The same tool then exports
//! the image for an upload to haloyd (`docker save`, `podman save`, `buildah push
//! oci-archive:`) or pushes it to its registry. Build output goes straight to the terminal.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::config::ResolvedImage;

/// Chooses the builder instead of detecting one: `docker`, `podman` or `buildah`.
pub const BUILDER_ENV: &str = "HALOY_BUILDER";
/// Haloy builds for the most common server platform unless the config says otherwise.
const DEFAULT_PLATFORM: &str = "linux/amd64";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("building `{image}` needs docker (with a running daemon), podman or buildah on this machine; none was found in PATH. Install one, or push the image to a registry and set image.repository")]
    NoBuilder { image: String },
    #[error("{BUILDER_ENV}={0} is not a builder haloy knows (docker, podman, buildah)")]
    UnknownBuilder(String),
    #[error("build context `{context}` of `{image}` is not a directory (resolved to {} relative to the config directory)", resolved.display())]
    Context {
        image: String,
        context: String,
        resolved: PathBuf,
    },
    #[error("dockerfile `{dockerfile}` of `{image}` not found (resolved to {} relative to the build context)", resolved.display())]
    Dockerfile {
        image: String,
        dockerfile: String,
        resolved: PathBuf,
    },
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}); its output is above")]
    Failed { command: String, status: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builder {
    Docker,
    Podman,
    Buildah,
}

impl Builder {
    pub fn program(self) -> &'static str {
        match self {
            Builder::Docker => "docker",
            Builder::Podman => "podman",
            Builder::Buildah => "buildah",
        }
    }

    fn parse(name: &str) -> Option<Builder> {
        match name {
            "docker" => Some(Builder::Docker),
            "podman" => Some(Builder::Podman),
            "buildah" => Some(Builder::Buildah),
            _ => None,
        }
    }

    /// `HALOY_BUILDER`, else the first of docker (only with a daemon answering), podman and
    /// buildah found in PATH.
    pub async fn detect(image: &str) -> Result<Builder, BuildError> {
        if let Ok(name) = std::env::var(BUILDER_ENV) {
            if !name.is_empty() {
                return Builder::parse(&name).ok_or(BuildError::UnknownBuilder(name));
            }
        }
        for builder in [Builder::Docker, Builder::Podman, Builder::Buildah] {
            if find_in_path(builder.program()).is_none() {
                continue;
            }
            // A docker CLI without a daemon cannot build: fall through to the others.
            if builder == Builder::Docker && !docker_daemon_answers().await {
                continue;
            }
            return Ok(builder);
        }
        Err(BuildError::NoBuilder {
            image: image.to_string(),
        })
    }

    /// Builds `reference` as the image's `build_config` says; context and dockerfile are
    /// resolved as Haloy (and Compose) do: context from the config's folder, dockerfile from
    /// the context.
    pub async fn build(
        self,
        image: &ResolvedImage,
        reference: &str,
        config_dir: &Path,
    ) -> Result<(), BuildError> {
        let build = image.build_config.as_ref();
        let context_value = build
            .and_then(|b| b.context.clone())
            .unwrap_or_else(|| ".".into());
        let context = config_dir.join(&context_value);
        if !context.is_dir() {
            return Err(BuildError::Context {
                image: reference.to_string(),
                context: context_value,
                resolved: context,
            });
        }
        let dockerfile_value = build
            .and_then(|b| b.dockerfile.clone())
            .unwrap_or_else(|| "Dockerfile".into());
        let dockerfile = context.join(&dockerfile_value);
        if !dockerfile.is_file() {
            return Err(BuildError::Dockerfile {
                image: reference.to_string(),
                dockerfile: dockerfile_value,
                resolved: dockerfile,
            });
        }
        let platform = build
            .and_then(|b| b.platform.clone())
            .unwrap_or_else(|| DEFAULT_PLATFORM.into());
        let mut args: Vec<String> = vec![
            "build".into(),
            "-f".into(),
            dockerfile.display().to_string(),
            "--platform".into(),
            platform,
        ];
        for arg in build.map(|b| b.args.as_slice()).unwrap_or_default() {
            args.push("--build-arg".into());
            args.push(format!("{}={}", arg.name, arg.value));
        }
        args.extend(["-t".into(), reference.to_string()]);
        args.push(context.display().to_string());
        // Build args may carry secrets: the command shown names only the tool and the image.
        run(
            self.program(),
            &args,
            &format!("{} build {reference}", self.program()),
        )
        .await
    }

    /// Writes the image from the builder's store to `archive` (a tar haloy can upload).
    pub async fn export(self, reference: &str, archive: &Path) -> Result<(), BuildError> {
        let path = archive.display().to_string();
        let args: Vec<String> = match self {
            Builder::Docker => vec!["save".into(), "-o".into(), path, reference.into()],
            Builder::Podman => vec![
                "save".into(),
                "--format".into(),
                "oci-archive".into(),
                "-o".into(),
                path,
                reference.into(),
            ],
            Builder::Buildah => vec![
                "push".into(),
                "--quiet".into(),
                reference.into(),
                format!("oci-archive:{path}"),
            ],
        };
        let shown = format!("{} {}", self.program(), args.join(" "));
        run(self.program(), &args, &shown).await
    }

    /// Pushes the image to its registry (Haloy's `push: registry`), logging in with the
    /// config's `image.registry` credentials when given.
    pub async fn push(self, image: &ResolvedImage, reference: &str) -> Result<(), BuildError> {
        let plain_http = registry_is_loopback(&image.repository);
        let mut args: Vec<String> = vec!["push".into()];
        let mut shown_args = args.clone();
        if self != Builder::Docker {
            if plain_http {
                args.push("--tls-verify=false".into());
                shown_args.push("--tls-verify=false".into());
            }
            if let Some(auth) = &image.registry {
                args.push("--creds".into());
                args.push(format!("{}:{}", auth.username, auth.password.expose()));
                shown_args.push("--creds".into());
                shown_args.push(format!("{}:***", auth.username));
            }
        } else if let Some(auth) = &image.registry {
            docker_login(&auth.server, &auth.username, auth.password.expose()).await?;
        }
        args.push(reference.to_string());
        shown_args.push(reference.to_string());
        if self == Builder::Buildah {
            args.push(format!("docker://{reference}"));
            shown_args.push(format!("docker://{reference}"));
        }
        let shown = format!("{} {}", self.program(), shown_args.join(" "));
        run(self.program(), &args, &shown).await
    }
}

/// The registry part of a repository is a loopback host (a test or local registry on HTTP).
fn registry_is_loopback(repository: &str) -> bool {
    let Some((host, _)) = repository.split_once('/') else {
        return false;
    };
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[allow(clippy::disallowed_methods)] // Building on deploy runs the machine's own build tool.
fn command(program: &str) -> tokio::process::Command {
    tokio::process::Command::new(program)
}

async fn docker_daemon_answers() -> bool {
    let status = command("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(20), status).await,
        Ok(Ok(s)) if s.success()
    )
}

async fn docker_login(server: &str, username: &str, password: &str) -> Result<(), BuildError> {
    use tokio::io::AsyncWriteExt;
    let spawn_error = |source| BuildError::Spawn {
        program: "docker".into(),
        source,
    };
    let mut child = command("docker")
        .args(["login", server, "-u", username, "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(password.as_bytes())
            .await
            .map_err(spawn_error)?;
    }
    let status = child.wait().await.map_err(spawn_error)?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Failed {
            command: format!("docker login {server} -u {username}"),
            status: status.to_string(),
        })
    }
}

/// Runs the tool with its output on the terminal (stdout to stderr, so `haloy`'s own stdout
/// keeps only its progress lines).
async fn run(program: &str, args: &[String], shown: &str) -> Result<(), BuildError> {
    eprintln!("$ {shown}");
    let stderr = std::io::stderr();
    let stdout_to_stderr: Stdio = match stderr.as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::inherit(),
    };
    let status = command(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout_to_stderr)
        .stderr(Stdio::inherit())
        .status()
        .await
        .map_err(|source| BuildError::Spawn {
            program: program.to_string(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Failed {
            command: shown.to_string(),
            status: status.to_string(),
        })
    }
}

#[cfg(test)]
#[path = "tests/build.rs"]
mod tests;
