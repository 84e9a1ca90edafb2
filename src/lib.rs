//! haloy: deploy web apps onto plain Linux servers with containerd, CNI and a built-in
//! reverse proxy — no Docker. See ARCHITECTURE.md for the module map and invariants.

pub mod api;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod files;
pub mod health;
pub mod network;
pub mod proxy;
pub mod runtime;
pub mod service;
pub mod state;
pub mod timefmt;
pub mod tls;
