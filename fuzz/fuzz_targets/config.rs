//! Configuration files: any text through the agent's TOML parser and validation (every key's
//! checks, groups, schedules, reactions, tracks, routes, alerts, the `[responder]` table), with
//! file reads and name resolution off so that validation has no side effects. Validation may
//! refuse anything; it must never panic, hang or allocate without bound.
#![no_main]
#![forbid(unsafe_code)]

use ipsla_agent::config::{self, FileConfig};
use ipsla_agent::daemon::AgentFile;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    config::set_offline(true);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = AgentFile::parse(text) {
        let _ = f.validate();
    }
    if let Ok(f) = toml::from_str::<FileConfig>(text) {
        let _ = f.responder.options();
    }
    // the value parsers on their own, as a flag would reach them
    let _ = config::parse_duration("k", text, Duration::ZERO, Duration::from_secs(86_400));
    let _ = config::parse_size("k", text, 0, u64::MAX);
    let _ = config::parse_port_range("k", text);
    let _ = ipsla_agent::group::parse_list("k", text);
});
