//! Deploy config (haloy.yaml/yml/json/toml, targets, env, .env files) and haloyd's server
//! config: parsing with positions, validation that reports every problem with file:line:column and
//! key path, and resolution into per-target `ResolvedApp`s.
