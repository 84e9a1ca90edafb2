//! How haloyd lives under a service manager and across binary upgrades: listening sockets
//! taken from systemd socket activation or a predecessor (`listeners`), readiness, status,
//! watchdog and stopping notifications (`notify`), and the hand-over to a new binary that
//! inherits the sockets (`handover`). Nothing here knows about the proxy or containerd.

pub mod handover;
pub mod listeners;
pub mod notify;

pub use handover::{Handover, HandoverError, Inherited};
pub use listeners::{ListenerError, Listeners, Origin};
pub use notify::Notifier;
