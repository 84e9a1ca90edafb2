//! Readiness (health check with backoff + min_ready_seconds + re-check) and the continuous
//! rise/fall monitor that flips a backend's readiness in the proxy.
