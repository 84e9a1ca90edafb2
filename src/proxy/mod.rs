//! The in-process reverse proxy on :80/:443: host routing from an atomically swapped route 
//! table, round-robin over ready backends, upstream pooling, header hygiene, upgrades, limits, 

pub mod tls_hooks;
//! draining, per-backend counters. Never talks to containerd.
