//! Everything that talks to containerd over gRPC: connection (namespace metadata, reconnect),
//! client-side image pull/import into the content store and overlayfs snapshots, containers with OCI
//! runtime specs, tasks, stop/kill, the exit-event subscription, per-task logs. The `Runtime` trait
//! is the seam the deploy logic uses.
