//! The in-process reverse proxy on :80/:443: host routing from an atomically swapped route
//! table, round-robin over ready backends, upstream pooling, header hygiene, upgrades, limits,
//! draining, per-backend counters. Never talks to containerd.

pub mod tls_hooks;
