//! Benchmark (issue 15): queries per second of haloyd's DNS server answering an app name
//! (`db.haloy.internal`, from a directory like the deployer's), beside dnsmasq answering the
//! same name from its own table in the same run, both on loopback UDP with the same client
//! load. Prints both rates and their ratio. Not a test: nothing is asserted.
//!
//! `cargo run --release --example dns-bench -- [--queries N] [--clients C]`
//! Measured on the 2-core dev machine under load (release without fat LTO, 40 000 queries,
//! 8 clients): haloyd 109 884/s, dnsmasq 107 291/s, ratio 1.02.
//! (needs /usr/sbin/dnsmasq: Debian package dnsmasq-base, see integration-tests/setup-debian.sh).

// Benchmarks start real peers (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use haloy::config::server::IpCidr;
use haloy::dns::{bind, Directory, DnsServer, DnsSettings};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const NAME: &str = "db.haloy.internal";
const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// One app with three ready replicas, as the deployer would report it.
struct Fixed;

impl Directory for Fixed {
    fn network_of(&self, _ip: IpAddr) -> Option<String> {
        None
    }
    fn addresses(&self, app: &str, _network: &str) -> Option<Vec<IpAddr>> {
        (app == "db").then(|| {
            (5..8)
                .map(|i| IpAddr::from([10, 89, 0, i]))
                .collect::<Vec<_>>()
        })
    }
}

/// dnsmasq on a loopback port answering NAME with the same three addresses; killed by its
/// pid on drop.
struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_dnsmasq(port: u16) -> anyhow::Result<Dnsmasq> {
    if !std::path::Path::new(DNSMASQ).is_file() {
        bail!("{DNSMASQ} missing: install the Debian package dnsmasq-base");
    }
    let mut cmd = Command::new(DNSMASQ);
    cmd.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        "--user=root",
        "--pid-file",
        "--log-facility=-",
    ])
    .arg(format!("--port={port}"));
    for i in 5..8 {
        cmd.arg(format!("--host-record={NAME},10.89.0.{i}"));
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start dnsmasq")?;
    Ok(Dnsmasq(child))
}

fn query(id: u16) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_ascii(NAME).expect("valid name"),
            RecordType::A,
        ));
    m.to_vec().expect("encodable query")
}

/// `clients` tasks, each sending `per_client` queries one after another; queries per second.
async fn load(server: SocketAddr, clients: usize, per_client: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        tasks.spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(server).await?;
            let mut buf = [0u8; 1500];
            for i in 0..per_client {
                let q = query(((c * per_client + i) % 65_536) as u16);
                socket.send(&q).await?;
                let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within 2 s"))??;
                let answer = Message::from_vec(&buf[..n])?;
                if answer.answers().len() != 3 {
                    bail!("expected 3 addresses, got {}", answer.answers().len());
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok((clients * per_client) as f64 / started.elapsed().as_secs_f64())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut queries = 20_000usize;
    let mut clients = 8usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().context("a value after each flag")?;
        match arg.as_str() {
            "--queries" => queries = value.parse()?,
            "--clients" => clients = value.parse()?,
            other => {
                bail!("unknown argument `{other}`; usage: dns-bench [--queries N] [--clients C]")
            }
        }
    }
    let per_client = queries.div_ceil(clients);

    let settings = DnsSettings {
        listen: vec!["127.0.0.1:0".parse()?],
        upstream: Vec::new(),
        clients: vec!["127.0.0.0/8"
            .parse::<IpCidr>()
            .map_err(|e| anyhow::anyhow!("{e}"))?],
    };
    let sockets = bind(&settings)?;
    let (haloy_addr, _) = sockets.local_addrs()?[0];
    let stop = CancellationToken::new();
    tokio::spawn(DnsServer::new(Arc::new(Fixed), &settings).serve(sockets, stop.clone()));

    let port = free_udp_port()?;
    let _dnsmasq = start_dnsmasq(port)?;
    let dnsmasq_addr = SocketAddr::from(([127, 0, 0, 1], port));
    // dnsmasq needs a moment to bind: wait until it answers once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while load(dnsmasq_addr, 1, 1).await.is_err() {
        if Instant::now() > deadline {
            bail!("dnsmasq did not answer on {dnsmasq_addr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Warm both, then alternate rounds so neither gets the quieter moment of the machine.
    load(haloy_addr, clients, 200).await?;
    load(dnsmasq_addr, clients, 200).await?;
    let mut haloy_rates = Vec::new();
    let mut peer_rates = Vec::new();
    for _ in 0..3 {
        haloy_rates.push(load(haloy_addr, clients, per_client).await?);
        peer_rates.push(load(dnsmasq_addr, clients, per_client).await?);
    }
    stop.cancel();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let haloy = median(&mut haloy_rates);
    let peer = median(&mut peer_rates);
    println!(
        "queries: {} per round, {clients} clients, 3 rounds (median)",
        per_client * clients
    );
    println!("haloyd dns : {haloy:>10.0} queries/s");
    println!("dnsmasq    : {peer:>10.0} queries/s");
    println!("ratio haloyd/dnsmasq: {:.2}", haloy / peer);
    Ok(())
}
