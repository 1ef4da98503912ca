//! `ipsla-agent`: the daemon's library.
//!
//! - [`config`]: TOML configuration, validated; every error names the key and what it accepts.
//! - [`runner`]: a validated operation specification and one run of it (shared by `ipsla probe`
//!   and the agent).
//! - [`alert`]: `[[alert]]` sinks (webhook, exec hook) for reaction and track transitions.

pub mod alert;
pub mod config;
pub mod daemon;
pub mod group;
pub mod metrics;
pub mod ops;
pub mod report;
pub mod routes;
pub mod runner;
pub mod store;
pub mod tracks;
