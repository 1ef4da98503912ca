//! Faults around a running `ipsla agent`: its responder killed in the middle of an operation and
//! restarted, and a store that fills up (a small tmpfs, root only) while operations and alerts go
//! on. (A SIGKILL of the agent itself is in agent.rs.)

use crate::common::{
    AgentToml, Alert, Killed, Op, PATIENCE, Reaction, Responder, agent_process, api as json, free_tcp, free_udp, get,
    ipsla, n, responder_status, wait_for, wait_udp,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;

fn responder(v1: u16, status: &Path) -> Killed {
    let k = Killed(
        ipsla()
            .args(["responder", "--listen", "127.0.0.1", "--v1-port", &v1.to_string(), "--no-v2", "--status-socket"])
            .arg(status)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_udp(v1);
    k
}

#[test]
fn responder_killed_mid_operation_then_back() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let (http, v1, port) = (free_tcp(), free_udp(), free_udp());
    let status = dir.path().join("responder.sock");
    let cfg = dir.path().join("agent.toml");
    AgentToml::new()
        .http(http)
        .store(&dir.path().join("runs.db"))
        .operation(
            Op::new("udp-jitter", "127.0.0.1")
                .id(1)
                .key("port", port)
                .key("control_port", v1)
                .key("packets", 50)
                .key("interval", "20ms")
                .key("precision", "us")
                .key("timeout", "600ms")
                .key("frequency", "2s"),
        )
        .write(&cfg);
    let mut r = responder(v1, &status);
    let _agent = agent_process(&cfg, http);
    let latest = || json(http, "/api/v1/operations/1/latest");
    wait_for("a first complete run", PATIENCE, || {
        get(http, "/api/v1/operations/1/latest").is_some_and(|(c, _)| c == 200) && latest()["received"] == 50
    });
    // SIGKILL the responder while the next run's session has answered a few probes
    wait_for("a run in progress", PATIENCE, || {
        responder_status(&status)["sessions"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| (5..30).contains(&n(&s["probes"]))))
    });
    r.0.kill().unwrap();
    let _ = r.0.wait();
    // the responder is away for at least one whole cycle (a run that found no responder), then
    // back on the same port
    let history = || json(http, "/api/v1/operations/1/history?limit=50");
    wait_for("a run without a responder", PATIENCE, || {
        history().as_array().unwrap().iter().any(|x| x["return_code"] == "no_connection")
    });
    let _r = responder(v1, &status);
    wait_for("a complete run after the restart", PATIENCE, || {
        let h = history();
        let runs = h.as_array().unwrap();
        runs.iter().any(|x| x["return_code"] == "no_connection")
            && runs.first().is_some_and(|x| x["return_code"] == "ok" && x["report"]["received"] == 50)
    });
    // oldest first: complete runs, the interrupted one (loss, still OK: IOS reports packet loss,
    // not a failure, while some replies came), the cycle with no responder (control failed: No
    // connection, nothing sent), then complete runs again
    let mut runs: Vec<Value> = history().as_array().unwrap().iter().map(|x| x["report"].clone()).collect();
    runs.reverse();
    let summary: Vec<(String, u64, u64)> = runs
        .iter()
        .map(|x| (x["return_code"].as_str().unwrap().to_string(), n(&x["sent"]), n(&x["received"])))
        .collect();
    let cut =
        summary.iter().position(|(_, _, rx)| *rx < 50).unwrap_or_else(|| panic!("no interrupted run: {summary:?}"));
    assert!(summary[..cut].iter().all(|(c, s, rx)| c == "ok" && *s == 50 && *rx == 50), "{summary:?}");
    let (code, sent, received) = &summary[cut];
    assert_eq!(code, "ok", "{summary:?}");
    assert!(*sent == 50 && (5..50).contains(received), "the interrupted run: {summary:?}");
    let down = &summary[cut + 1..];
    let back = down.iter().position(|(c, _, _)| c == "ok").expect("a run after the restart");
    assert!(back >= 1, "at least one cycle without a responder: {summary:?}");
    assert!(down[..back].iter().all(|(c, s, _)| c == "no_connection" && *s == 0), "{summary:?}");
    assert!(down[back..].iter().all(|(c, s, rx)| c == "ok" && *s == 50 && *rx == 50), "{summary:?}");
    let interrupted = &runs[cut];
    let loss = &interrupted["loss"];
    assert_eq!(n(&loss["sd"]) + n(&loss["ds"]) + n(&loss["mia"]), 50 - received, "{interrupted}");
}

/// A tmpfs of `size` mounted on `dir` for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

fn metric(http: u16, name: &str) -> f64 {
    let (_, text) = get(http, "/metrics").unwrap();
    let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in /metrics"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn full_store_measuring_and_alerting_go_on() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("small"), "8m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    };
    let (http, v1, echo, far_v1, far_echo) = (free_tcp(), free_udp(), free_udp(), free_udp(), free_udp());
    let alerts = dir.path().join("alerts.log");
    let cfg = dir.path().join("agent.toml");
    let echo_op = |id: u32, port: u16, control: u16| {
        Op::new("udp-echo", "127.0.0.1")
            .id(id)
            .key("port", port)
            .key("control_port", control)
            .key("timeout", "200ms")
            .key("frequency", "1s")
    };
    AgentToml::new()
        .http(http)
        .store(&fs.0.join("runs.db"))
        .responder(Responder::loopback(v1))
        .operation(echo_op(1, echo, v1))
        .operation(echo_op(2, far_echo, far_v1).reaction(Reaction::immediate("connectionLoss", "alert")))
        .alert(Alert::exec(&["sh", "-c", &format!("cat >> {}", alerts.display())]).key("events", vec!["reaction"]))
        .write(&cfg);
    let far = responder(far_v1, &dir.path().join("far.sock"));
    let _agent = agent_process(&cfg, http);
    let ops = || json(http, "/api/v1/operations");
    let stored = || ops().as_array().unwrap().iter().map(|o| n(&o["stored"])).sum::<u64>();
    let runs = || ops().as_array().unwrap().iter().map(|o| n(&o["runs"])).sum::<u64>();
    wait_for("stored runs", PATIENCE, || stored() >= 4);
    assert_eq!(json(http, "/api/v1/store")["writable"], true);

    // the disk fills up: the store refuses, the agent says so, and measuring goes on
    fill(&fs.0.join("filler"));
    wait_for("the store to refuse a run", PATIENCE, || json(http, "/api/v1/store")["writable"] == false);
    let (runs_full, stored_full) = (runs(), stored());
    wait_for("four more runs", PATIENCE, || runs() >= runs_full + 4);
    wait_for("four refused writes", PATIENCE, || n(&json(http, "/api/v1/store")["write_errors"]) >= 4);
    let st = json(http, "/api/v1/store");
    assert!(st["last_error"].as_str().unwrap().contains("full"), "the error says why: {st}");
    assert_eq!(metric(http, "ipsla_store_writable"), 0.0);
    assert!(metric(http, "ipsla_store_write_errors_total") >= 4.0);
    let latest = json(http, "/api/v1/operations/1/latest");
    assert_eq!(latest["return_code"], "ok", "the latest run is served from memory: {latest}");

    // and alerting goes on: the far responder goes away, the reaction fires, the hook runs
    drop(far);
    wait_for("the connectionLoss alert", PATIENCE, || {
        std::fs::read_to_string(&alerts).is_ok_and(|a| a.contains("connectionLoss"))
    });

    // space again: the next runs are stored
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    wait_for("the store to take runs again", PATIENCE, || json(http, "/api/v1/store")["writable"] == true);
    wait_for("runs stored again", PATIENCE, || stored() > stored_full + 2);
    assert_eq!(metric(http, "ipsla_store_writable"), 1.0);
}
