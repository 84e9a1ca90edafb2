//! haloyd's HTTP API (bearer token, JSON, SSE progress and logs) and the matching client the CLI
//! uses.

pub mod client;
pub mod exec;
pub mod images;
pub mod server;
pub mod stream;
pub mod tokens;
pub mod types;
