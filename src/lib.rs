//! haloy: deploy web apps onto plain Linux servers with containerd, CNI and a built-in
//! reverse proxy — no Docker. See ARCHITECTURE.md for the module map and invariants.

// Unsafe code lives only in `sys` (which allows it), each block with its SAFETY reason.
#![deny(unsafe_code)]

pub mod access_log;
pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod daemon_log;
pub mod deploy;
pub mod dns;
pub mod export;
pub mod files;
pub mod health;
pub mod metrics;
pub mod network;
pub mod proxy;
pub mod runtime;
pub mod service;
pub mod state;
pub mod sys;
pub mod timefmt;
pub mod tls;
pub mod verify;
