//! Per-task network namespaces and the standard CNI plugins (ADD/DEL of the conflist in cni/),
//! returning each task's IP. The `Network` trait is the seam; teardown is idempotent.
