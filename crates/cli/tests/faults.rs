//! Faults around a running `ipsla agent`: its responder killed in the middle of an operation and
//! restarted, and a store that fills up (a small tmpfs, root only) while operations and alerts go
//! on. (A SIGKILL of the agent itself is in tests/agent.rs.)
mod common;

use common::{Killed, free_tcp, free_udp, get, ipsla, responder_status, wait_udp};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn json(http: u16, path: &str) -> Value {
    let (code, body) = get(http, path).unwrap_or_else(|| panic!("GET {path}: no answer"));
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn agent(cfg: &Path, http: u16) -> Killed {
    let k = Killed(ipsla().args(["agent", "--config"]).arg(cfg).stderr(Stdio::null()).spawn().unwrap());
    wait_for("the agent", Duration::from_secs(10), || get(http, "/-/healthy").is_some_and(|(c, _)| c == 200));
    k
}

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
    let dir = tempfile::tempdir().unwrap();
    let (http, v1, port) = (free_tcp(), free_udp(), free_udp());
    let status = dir.path().join("responder.sock");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nhttp = \"127.0.0.1:{http}\"\nstore = \"{}\"\n\n\
             [[operation]]\nid = 1\ntype = \"udp-jitter\"\ntarget = \"127.0.0.1\"\nport = {port}\n\
             control_port = {v1}\npackets = 50\ninterval = \"20ms\"\nprecision = \"us\"\n\
             timeout = \"300ms\"\nfrequency = \"2s\"\n",
            dir.path().join("runs.db").display()
        ),
    )
    .unwrap();
    let mut r = responder(v1, &status);
    let _agent = agent(&cfg, http);
    let latest = || json(http, "/api/v1/operations/1/latest");
    wait_for("a first complete run", Duration::from_secs(10), || {
        get(http, "/api/v1/operations/1/latest").is_some_and(|(c, _)| c == 200) && latest()["received"] == 50
    });
    // SIGKILL the responder while the next run's session has answered a few probes
    wait_for("a run in progress", Duration::from_secs(10), || {
        responder_status(&status)["sessions"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| (5..30).contains(&n(&s["probes"]))))
    });
    r.0.kill().unwrap();
    let _ = r.0.wait();
    // the responder is away for one whole cycle, then back on the same port
    std::thread::sleep(Duration::from_millis(2500));
    let _r = responder(v1, &status);
    let history = || json(http, "/api/v1/operations/1/history?limit=50");
    wait_for("a complete run after the restart", Duration::from_secs(15), || {
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
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("small"), "8m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    };
    let (http, v1, echo, far_v1, far_echo) = (free_tcp(), free_udp(), free_udp(), free_udp(), free_udp());
    let alerts = dir.path().join("alerts.log");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[agent]
http = "127.0.0.1:{http}"
store = "{store}"

[responder]
listen = ["127.0.0.1"]
v1_port = {v1}
v2 = false

[[operation]]
id = 1
type = "udp-echo"
target = "127.0.0.1"
port = {echo}
control_port = {v1}
timeout = "200ms"
frequency = "1s"

[[operation]]
id = 2
type = "udp-echo"
target = "127.0.0.1"
port = {far_echo}
control_port = {far_v1}
timeout = "200ms"
frequency = "1s"

[[operation.reaction]]
element = "connectionLoss"
threshold_type = "immediate"
action = "alert"

[[alert]]
type = "exec"
command = ["sh", "-c", "cat >> {alerts}"]
events = ["reaction"]
"#,
            store = fs.0.join("runs.db").display(),
            alerts = alerts.display(),
        ),
    )
    .unwrap();
    let far = responder(far_v1, &dir.path().join("far.sock"));
    let _agent = agent(&cfg, http);
    let ops = || json(http, "/api/v1/operations");
    let stored = || ops().as_array().unwrap().iter().map(|o| n(&o["stored"])).sum::<u64>();
    let runs = || ops().as_array().unwrap().iter().map(|o| n(&o["runs"])).sum::<u64>();
    wait_for("stored runs", Duration::from_secs(10), || stored() >= 4);
    assert_eq!(json(http, "/api/v1/store")["writable"], true);

    // the disk fills up: the store refuses, the agent says so, and measuring goes on
    fill(&fs.0.join("filler"));
    wait_for("the store to refuse a run", Duration::from_secs(10), || json(http, "/api/v1/store")["writable"] == false);
    let (runs_full, stored_full) = (runs(), stored());
    std::thread::sleep(Duration::from_millis(2200));
    assert!(runs() >= runs_full + 4, "measuring goes on: {} runs after {runs_full}", runs());
    let st = json(http, "/api/v1/store");
    assert!(n(&st["write_errors"]) >= 4, "{st}");
    assert!(st["last_error"].as_str().unwrap().contains("full"), "the error says why: {st}");
    assert_eq!(metric(http, "ipsla_store_writable"), 0.0);
    assert!(metric(http, "ipsla_store_write_errors_total") >= 4.0);
    let latest = json(http, "/api/v1/operations/1/latest");
    assert_eq!(latest["return_code"], "ok", "the latest run is served from memory: {latest}");

    // and alerting goes on: the far responder goes away, the reaction fires, the hook runs
    drop(far);
    wait_for("the connectionLoss alert", Duration::from_secs(10), || {
        std::fs::read_to_string(&alerts).is_ok_and(|a| a.contains("connectionLoss"))
    });

    // space again: the next runs are stored
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    wait_for("the store to take runs again", Duration::from_secs(10), || {
        json(http, "/api/v1/store")["writable"] == true
    });
    wait_for("runs stored again", Duration::from_secs(10), || stored() > stored_full + 2);
    assert_eq!(metric(http, "ipsla_store_writable"), 1.0);
}
