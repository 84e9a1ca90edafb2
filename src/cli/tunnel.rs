//! `haloy tunnel`: listens on 127.0.0.1:LOCAL_PORT and carries each accepted TCP connection
//! over its own upgraded API connection to a port of one replica of the app (haloyd picks the
//! replica's address; the CLI only names app, replica and port). Runs until Ctrl-C.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use tokio::net::{TcpListener, TcpStream};

use super::remote::connect_one;
use super::{CliError, CommonArgs};
use crate::api::client::ApiClient;
use crate::api::stream::TUNNEL_PROTOCOL;
use crate::api::types::percent_encode;

/// The API path of one tunnel connection.
pub fn tunnel_path(app: &str, remote_port: u16, replica: Option<u32>) -> String {
    let replica = replica.map(|r| format!("&replica={r}")).unwrap_or_default();
    format!(
        "/v1/apps/{}/tunnel?port={remote_port}{replica}",
        percent_encode(app)
    )
}

pub async fn tunnel(
    common: &CommonArgs,
    local_port: Option<u16>,
    remote_port: u16,
    replica: Option<u32>,
) -> Result<ExitCode, CliError> {
    let (app, client) = connect_one(common, "tunnel")?;
    // Fails early, with the server's words, when the app is not there.
    client.app(&app.name).await?;
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, local_port.unwrap_or(remote_port)));
    let listener = TcpListener::bind(local)
        .await
        .map_err(|source| CliError::Io {
            action: "listen on",
            path: PathBuf::from(local.to_string()),
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(local);
    let which = replica
        .map(|r| format!("replica {r}"))
        .unwrap_or_else(|| "its first running replica".into());
    println!(
        "forwarding {bound} -> port {remote_port} of `{}` ({which}) through {}; Ctrl-C stops",
        app.name,
        client.url()
    );
    let path = tunnel_path(&app.name, remote_port, replica);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, peer)) => {
                    tokio::spawn(forward(client.clone(), path.clone(), conn, peer));
                }
                Err(e) => eprintln!("error: accepting on {bound}: {e}"),
            },
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// One local connection, carried to the replica until either side closes.
async fn forward(client: ApiClient, path: String, mut conn: TcpStream, peer: SocketAddr) {
    let _ = conn.set_nodelay(true);
    match client.open_stream(&path, TUNNEL_PROTOCOL, &[]).await {
        Ok(mut remote) => {
            let _ = tokio::io::copy_bidirectional(&mut conn, &mut remote).await;
        }
        Err(e) => eprintln!("error: connection from {peer}: {e}"),
    }
}
