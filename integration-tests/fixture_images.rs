//! `cargo run --features fixture-tool --bin haloy-fixture-images -- --registry 127.0.0.1:5000
//! [--user U --password P]`:
//! builds the haloy test images from /bin/busybox and pushes them (`haloy-fixtures/<name>:v1`,
//! and `web:v2`) to a running registry, for the README demo.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use anyhow::{bail, Context};
use oci_client::secrets::RegistryAuth;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut registry = None;
    let mut user = None;
    let mut password = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--registry" => registry = args.next(),
            "--user" => user = args.next(),
            "--password" => password = args.next(),
            other => bail!("unknown argument `{other}`; usage: haloy-fixture-images --registry HOST:PORT [--user U --password P]"),
        }
    }
    let registry = registry.context("--registry HOST:PORT is required")?;
    let auth = match (user, password) {
        (Some(u), Some(p)) => RegistryAuth::Basic(u, p),
        (None, None) => RegistryAuth::Anonymous,
        _ => bail!("--user and --password go together"),
    };
    for reference in harness::registry::push_fixtures_to(&registry, auth).await {
        println!("pushed {reference}");
    }
    Ok(())
}
