//! The systemd units in `dist/`: `systemd-analyze verify` accepts them (no unknown key, no bad
//! value, the command exists), the sandbox keeps the exposure score of `systemd-analyze security`
//! low, and the agent's command line is one the binary accepts.
//!
//! `verify` checks that ExecStart names an executable, so each unit is checked as a copy that
//! points at the binary under test instead of /usr/local/bin/ipsla. Skipped, with the reason
//! printed, when `systemd-analyze` is missing (apt package `systemd`).

use crate::common::{AgentToml, ipsla, on_path};
use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 2] = ["ipsla-agent.service", "ipsla-responder.service"];

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist")
}

/// The unit's text with ExecStart pointing at the binary under test, written into `dir`.
fn local_copy(dir: &Path, unit: &str) -> PathBuf {
    let text = std::fs::read_to_string(dist().join(unit)).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/ipsla "), "{unit} runs /usr/local/bin/ipsla");
    let p = dir.join(unit);
    std::fs::write(&p, text.replace("/usr/local/bin/ipsla", env!("CARGO_BIN_EXE_ipsla"))).unwrap();
    p
}

fn key<'a>(text: &'a str, k: &str) -> Vec<&'a str> {
    text.lines().filter_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('='))).collect()
}

#[test]
fn units_declare_notify_watchdog_and_least_privilege() {
    let _machine = crate::common::shared();
    let agent = std::fs::read_to_string(dist().join("ipsla-agent.service")).unwrap();
    assert_eq!(key(&agent, "Type"), ["notify"]);
    assert_eq!(key(&agent, "ExecStart"), ["/usr/local/bin/ipsla agent --config /etc/ipsla/agent.toml"]);
    assert_eq!(key(&agent, "ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(key(&agent, "WatchdogSec"), ["30s"]);
    assert_eq!(key(&agent, "StateDirectory"), ["ipsla"]);
    let caps = "CAP_NET_BIND_SERVICE CAP_NET_RAW CAP_NET_ADMIN";
    assert_eq!(key(&agent, "AmbientCapabilities"), [caps]);
    assert_eq!(key(&agent, "CapabilityBoundingSet"), [caps]);
    let responder = std::fs::read_to_string(dist().join("ipsla-responder.service")).unwrap();
    assert_eq!(key(&responder, "Type"), ["notify"]);
    assert_eq!(key(&responder, "AmbientCapabilities"), ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(key(&responder, "CapabilityBoundingSet"), ["CAP_NET_BIND_SERVICE"]);
    for text in [&agent, &responder] {
        assert_eq!(key(text, "NoNewPrivileges"), ["yes"]);
        assert_eq!(key(text, "ProtectSystem"), ["strict"]);
        assert_eq!(key(text, "SystemCallArchitectures"), ["native"]);
    }
}

#[test]
fn agent_command_line_is_accepted() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let agent = std::fs::read_to_string(dist().join("ipsla-agent.service")).unwrap();
    let exec = key(&agent, "ExecStart")[0];
    let cfg = dir.path().join("agent.toml");
    AgentToml::new().store(Path::new("/var/lib/ipsla/agent.db")).write(&cfg);
    let args: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(|a| if a == "/etc/ipsla/agent.toml" { cfg.display().to_string() } else { a.to_string() })
        .collect();
    let out = ipsla().args(&args).arg("--check").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": 0 operations, responder off"));
}

#[test]
fn systemd_analyze_accepts_the_units() {
    let _machine = crate::common::shared();
    let Some(analyze) = on_path("systemd-analyze") else {
        eprintln!("skipped: no systemd-analyze on PATH (apt-get install systemd)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for unit in UNITS {
        let copy = local_copy(dir.path(), unit);
        let out = Command::new(&analyze).args(["verify", "--man=no"]).arg(&copy).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // verify also loads the host's units and may complain about those: only ours count
        let ours: Vec<&str> = err.lines().filter(|l| l.contains(unit)).collect();
        assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify {unit}:\n{err}");

        let out = Command::new(&analyze).args(["security", "--offline=yes", "--no-pager"]).arg(&copy).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split_once("Overall exposure level for ")?.1.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}:\n{text}{}", String::from_utf8_lossy(&out.stderr)));
        // 0 = fully sandboxed, 10 = none; what is left is the network access the job needs
        assert!(score <= 2.5, "{unit}: exposure {score}\n{text}");
    }
}
