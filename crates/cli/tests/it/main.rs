//! The integration tests of `ipsla`, in one test binary: the real binary (or the agent started in
//! this process, where a process is not the point) on loopback, and network-namespace labs (root).
//! One module per concern; every helper and the typed agent-config builder are in `common`.
//!
//! Run one module with `cargo test -p ipsla --test it probe::` (docs/testing.md).

mod common;

mod agent;
mod attacks;
mod binary;
mod blackbox;
mod dns;
mod failover;
mod faults;
mod flood;
mod grafana;
mod http_op;
mod ipv6;
mod lab_truth;
mod mesh;
mod mesh_lab;
mod notify;
mod packaging;
mod path;
mod privilege;
mod probe;

mod prometheus;
mod remote_write;
mod show;
mod snmp;
mod stamp;
mod twamp;
mod twamp_client;
mod twamp_server;
mod units;
mod web;
mod workers;
