//! `ipsla agent` end to end: scheduled runs, the SQLite history, /metrics and the JSON API, config
//! errors, and that a SIGKILL loses no completed run.

mod common;

use common::{Killed, free_tcp, free_udp, get, request};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn config(dir: &std::path::Path, http: u16, v1: u16) -> std::path::PathBuf {
    let p = dir.join("agent.toml");
    std::fs::write(
        &p,
        format!(
            r#"
[agent]
http = "127.0.0.1:{http}"
store = "{store}"
workers = 4

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
trigger = [3]

[[operation.reaction]]
element = "rtt"
threshold_type = "immediate"
threshold = [0.000001, 0.0000005]   # ms: any real RTT violates
action = "alert-and-trigger"

[[operation]]
id = 2
type = "udp-jitter"
target = "127.0.0.1"
port = {jitter}
control_port = {v1}
packets = 5
interval = "10ms"
precision = "us"
timeout = "300ms"
frequency = "1s"
tag = "five probes"

[[operation]]
id = 3
type = "udp-echo"
target = "127.0.0.1"
port = {echo}
control_port = {v1}
timeout = "200ms"
frequency = "1s"
start = "pending"
tag = "started by operation 1's reaction"

[[track]]
id = 1
operation = 1
mode = "reachability"

[[track]]
id = 2
operation = 2

[[track]]
id = 5
list = "and"
members = [1, 2]
"#,
            store = dir.join("runs.db").display(),
            echo = free_udp(),
            jitter = free_udp(),
        ),
    )
    .unwrap();
    p
}

fn start(cfg: &std::path::Path, http: u16) -> Killed {
    let c = Command::new(env!("CARGO_BIN_EXE_ipsla"))
        .args(["agent", "--config"])
        .arg(cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let k = Killed(c);
    let t = Instant::now();
    while get(http, "/-/healthy").is_none_or(|(c, _)| c != 200) {
        assert!(t.elapsed() < Duration::from_secs(10), "agent did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    k
}

fn operations(http: u16) -> serde_json::Value {
    serde_json::from_str(&get(http, "/api/v1/operations").unwrap().1).unwrap()
}

#[test]
fn runs_are_scheduled_stored_and_exported() {
    let dir = tempfile::tempdir().unwrap();
    let (http, v1) = (free_tcp(), free_udp());
    let cfg = config(dir.path(), http, v1);
    let _agent = start(&cfg, http);
    std::thread::sleep(Duration::from_millis(2600));
    let ops = operations(http);
    for o in ops.as_array().unwrap() {
        assert!(o["runs"].as_u64().unwrap() >= 1, "runs every second: {o}");
        assert_eq!(o["state"], "active", "{o}");
    }
    assert!(ops[0]["runs"].as_u64().unwrap() >= 2 && ops[0]["stored"].as_u64().unwrap() >= 2);
    // operation 1's reaction fired once (on the transition only) and triggered the pending 3
    let (_, ev) = get(http, "/api/v1/events").unwrap();
    let ev: serde_json::Value = serde_json::from_str(&ev).unwrap();
    let fired: Vec<&serde_json::Value> =
        ev.as_array().unwrap().iter().filter(|e| e["kind"] == "reaction" && e["op"] == 1).collect();
    assert_eq!(fired.len(), 1, "{ev}");
    assert_eq!(fired[0]["text"], "%RTT-3-IPSLATHRESHOLD: IP SLAs(1): Threshold exceeded for rtt");
    // tracks: both operations succeed, so both tracks and their "and" list came up, once each
    let tracks: serde_json::Value = serde_json::from_str(&get(http, "/api/v1/tracks").unwrap().1).unwrap();
    for t in tracks.as_array().unwrap() {
        assert_eq!((t["up"].as_bool(), t["changes"].as_u64()), (Some(true), Some(1)), "{t}");
    }
    assert!(
        ev.as_array().unwrap().iter().any(|e| e["text"] == "%TRACK-6-STATE: 5 list boolean and Down -> Up"),
        "{ev}"
    );
    let (code, latest) = get(http, "/api/v1/operations/2/latest").unwrap();
    assert_eq!(code, 200);
    let latest: serde_json::Value = serde_json::from_str(&latest).unwrap();
    assert_eq!(latest["return_code"], "ok");
    assert_eq!(latest["received"], 5);
    assert_eq!(latest["timestamps"]["rx"], "kernel");
    let (_, metrics) = get(http, "/metrics").unwrap();
    assert!(metrics.contains(r#"ipsla_operation_success{op="2",type="udp-jitter",target="#), "{metrics}");
    let runs_line =
        metrics.lines().find(|l| l.starts_with(r#"ipsla_operations_total{op="1""#)).expect("ipsla_operations_total");
    let runs: f64 = runs_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(runs >= 2.0, "{runs_line}");
    assert!(metrics.contains(r#"ipsla_reaction_active{op="1",element="rtt"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"ipsla_track_state{track="5"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"ipsla_rtt_seconds_bucket{le="0.00005","#), "RTT histogram with 50 µs buckets");
    assert_eq!(get(http, "/api/v1/operations/9/latest").unwrap().0, 404);
    let (code, r) = get(http, "/api/v1/responder").unwrap();
    assert_eq!(code, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&r).unwrap()["stats"]["control_v1"].as_u64().unwrap() >= 4);
    let (code, h) = get(http, "/api/v1/operations/1/history?limit=2").unwrap();
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&h).unwrap().as_array().unwrap().len(), 2);
}

#[test]
fn sigkill_loses_no_completed_run() {
    let dir = tempfile::tempdir().unwrap();
    let (http, v1) = (free_tcp(), free_udp());
    let cfg = config(dir.path(), http, v1);
    let mut agent = start(&cfg, http);
    std::thread::sleep(Duration::from_millis(2300));
    let published: u64 = operations(http).as_array().unwrap().iter().map(|o| o["stored"].as_u64().unwrap()).sum();
    assert!(published >= 4, "{published}");
    Command::new("kill").args(["-KILL", &agent.0.id().to_string()]).status().unwrap();
    let _ = agent.0.wait();
    // every run the agent had published is in the file, read by another SQLite
    let conn = rusqlite::Connection::open(dir.path().join("runs.db")).unwrap();
    let stored: i64 = conn.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0)).unwrap();
    assert!(stored as u64 >= published, "{stored} stored < {published} published");
    let bad: i64 = conn.query_row("SELECT COUNT(*) FROM runs WHERE json_valid(report) = 0", [], |r| r.get(0)).unwrap();
    assert_eq!(bad, 0, "no half-written run");
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "[[operation]]\ntype = \"udp-jitter\"\ntarget = \"127.0.0.1\"\ninterval = \"fast\"\n").unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_ipsla")).args(["agent", "--check", "--config"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8(out.stderr).unwrap();
    assert!(e.contains("operation[0].interval") && e.contains("\"fast\" is not a duration"), "{e}");
    std::fs::write(&p, "[[operation]]\nid = 3\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\n[[operation]]\nid = 3\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\n").unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_ipsla")).args(["agent", "--check", "--config"]).arg(&p).output().unwrap();
    assert!(String::from_utf8(out.stderr).unwrap().contains("operation[1].id: 3 is already used by operation[0]"));
    // the embedded default is valid
    let out = Command::new(env!("CARGO_BIN_EXE_ipsla")).args(["agent", "--check"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("4 operations, responder on"));
}

fn echo_ops(ids_timeouts: &[(u32, &str)], echo: u16, v1: u16) -> String {
    ids_timeouts
        .iter()
        .map(|(id, t)| {
            format!("[[operation]]\nid = {id}\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\nport = {echo}\ncontrol_port = {v1}\ntimeout = \"{t}\"\nfrequency = \"1s\"\n")
        })
        .collect()
}

#[test]
fn reload_keeps_unchanged_operations_and_refuses_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let (http, v1, echo) = (free_tcp(), free_udp(), free_udp());
    let head = format!(
        "[agent]\nhttp = \"127.0.0.1:{http}\"\nstore = \"{}\"\n[responder]\nlisten = [\"127.0.0.1\"]\nv1_port = {v1}\nv2 = false\n",
        dir.path().join("runs.db").display()
    );
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, head.clone() + &echo_ops(&[(1, "200ms"), (2, "200ms"), (3, "200ms")], echo, v1)).unwrap();
    let agent = start(&cfg, http);
    std::thread::sleep(Duration::from_millis(2300));
    let runs = |ops: &serde_json::Value, id: u64| {
        ops.as_array().unwrap().iter().find(|o| o["id"] == id).map(|o| o["runs"].as_u64().unwrap())
    };
    let before = runs(&operations(http), 1).unwrap();
    assert!(before >= 2, "{before}");

    // 1 unchanged, 2 redefined, 3 removed, 4 added; SIGHUP
    std::fs::write(&cfg, head.clone() + &echo_ops(&[(1, "200ms"), (2, "300ms"), (4, "200ms")], echo, v1)).unwrap();
    Command::new("kill").args(["-HUP", &agent.0.id().to_string()]).status().unwrap();
    let t = Instant::now();
    let ops = loop {
        let ops = operations(http);
        let ids: Vec<u64> = ops.as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect();
        if ids == [1, 2, 4] {
            break ops;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "not reloaded: {ops}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(runs(&ops, 1).unwrap() >= before, "operation 1 kept its schedule and counters: {ops}");
    assert!(runs(&ops, 2).unwrap() <= 1, "operation 2 was redefined, so restarted: {ops}");
    let (_, metrics) = get(http, "/metrics").unwrap();
    assert!(!metrics.contains(r#"op="3""#), "a removed operation exports nothing: {metrics}");

    // a broken file is refused and nothing changes
    std::fs::write(&cfg, head + "[[operation]]\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\nfrequency = \"often\"\n")
        .unwrap();
    let (code, body) = request(http, "POST", "/-/reload").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("configuration unchanged") && body.contains("operation[0].frequency"), "{body}");
    let ids: Vec<u64> = operations(http).as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 4]);
    // and a good one through the endpoint reports what it did
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nhttp = \"127.0.0.1:{http}\"\nstore = \"{}\"\nworkers = 2\n",
            dir.path().join("runs.db").display()
        ) + &echo_ops(&[(1, "200ms")], echo, v1),
    )
    .unwrap();
    let (code, body) = request(http, "POST", "/-/reload").unwrap();
    assert_eq!(code, 200, "{body}");
    let sum: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sum["kept"], serde_json::json!([1]));
    assert_eq!(sum["removed"], serde_json::json!([2, 4]));
    assert_eq!(sum["needs_restart"], serde_json::json!(["agent.workers", "responder"]), "{sum}");
}

/// The agent's own responder serves TWAMP and STAMP beside IP SLA, and the agent schedules twamp
/// and stamp operations with reactions and tracks like any other: one against a server that
/// refuses nothing, one against a closed port (connectionLoss reaction, its track goes down).
#[test]
fn twamp_and_stamp_served_and_scheduled() {
    let dir = tempfile::tempdir().unwrap();
    let (http, twamp, stamp, dead) = (free_tcp(), free_tcp(), free_udp(), free_tcp());
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
v1 = false
v2 = false
twamp = ["127.0.0.1:{twamp}"]
stamp = ["127.0.0.1:{stamp}"]
stamp_stateful = true

[[operation]]
id = 1
type = "twamp"
target = "127.0.0.1"
port = {twamp}
packets = 10
interval = "10ms"
timeout = "500ms"
frequency = "1s"

[[operation.reaction]]
element = "connectionLoss"
threshold_type = "immediate"
action = "alert"

[[operation]]
id = 2
type = "stamp"
target = "127.0.0.1"
port = {stamp}
packets = 10
interval = "10ms"
timeout = "500ms"
frequency = "1s"

[[operation]]
id = 3
type = "twamp"
target = "127.0.0.1"
port = {dead}
packets = 5
interval = "10ms"
timeout = "300ms"
frequency = "1s"

[[operation.reaction]]
element = "connectionLoss"
threshold_type = "immediate"
action = "alert"

[[track]]
id = 1
operation = 1
mode = "state"

[[track]]
id = 3
operation = 3
mode = "state"
"#,
            store = dir.path().join("runs.db").display(),
        ),
    )
    .unwrap();
    let _agent = start(&cfg, http);
    std::thread::sleep(Duration::from_millis(2600));
    let latest = |id: u32| -> serde_json::Value {
        serde_json::from_str(&get(http, &format!("/api/v1/operations/{id}/latest")).unwrap().1).unwrap()
    };
    for id in [1, 2] {
        let l = latest(id);
        assert_eq!(l["return_code"], "ok", "operation {id}: {l}");
        assert_eq!((l["sent"].as_u64(), l["received"].as_u64()), (Some(10), Some(10)), "{l}");
        assert_eq!(l["jitter_us"]["sd"]["count"], 9, "one-way jitter from the reflector's stamps: {l}");
    }
    assert_eq!(latest(1)["operation"], "twamp");
    assert_eq!(latest(3)["return_code"], "no_connection", "{}", latest(3));
    let tracks: serde_json::Value = serde_json::from_str(&get(http, "/api/v1/tracks").unwrap().1).unwrap();
    let up = |id: u64| tracks.as_array().unwrap().iter().find(|t| t["id"] == id).map(|t| t["up"].clone());
    assert_eq!((up(1), up(3)), (Some(true.into()), Some(false.into())), "{tracks}");
    let (_, ev) = get(http, "/api/v1/events").unwrap();
    let ev: serde_json::Value = serde_json::from_str(&ev).unwrap();
    let fired: Vec<u64> =
        ev.as_array().unwrap().iter().filter(|e| e["kind"] == "reaction").map(|e| e["op"].as_u64().unwrap()).collect();
    assert_eq!(fired, [3], "only the unreachable server's connectionLoss fired: {ev}");
    let (_, r) = get(http, "/api/v1/responder").unwrap();
    let r: serde_json::Value = serde_json::from_str(&r).unwrap();
    assert!(r["twamp_stats"]["server"]["sessions_accepted"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["stamp_stats"]["replied"].as_u64().unwrap() >= 20, "{r}");
}
