#![forbid(unsafe_code)]
//! `ipsla-agent`: the daemon's library.
//!
//! - [`config`]: TOML configuration, validated; every error names the key and what it accepts.
//! - [`runner`]: a validated operation specification and one run of it (shared by `ipsla probe`
//!   and the agent).
//! - [`alert`]: `[[alert]]` sinks (webhook, exec hook) for reaction and track transitions.
//! - [`remote_write`]: `[[remote_write]]`, the stored runs pushed to Prometheus-compatible
//!   receivers, the store being the durable queue.
//! - [`snmp`]: CISCO-RTTMON-MIB over AgentX through the host's SNMP master agent.
//! - [`api`]: the JSON documents of the HTTP API, served by the agent and read by `ipsla show`.

pub mod alert;
pub mod api;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod group;
mod http;
pub mod mesh;
pub mod metrics;
pub mod ops;
mod probe;
pub mod remote_write;
pub mod report;
pub mod routes;
pub mod runner;
pub mod snmp;
pub mod store;
pub mod tls;
pub mod tracks;
mod web;
