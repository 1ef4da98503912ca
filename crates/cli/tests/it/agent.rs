//! `ipsla agent` end to end: scheduled runs, the SQLite history, /metrics and the JSON API (the
//! agent in-process), and, with the binary, config errors, reload on SIGHUP and that a SIGKILL
//! loses no completed run.

use crate::common::{
    AgentToml, Alert, InProcess, Op, PATIENCE, Reaction, Responder, Track, agent_process, api, free_tcp, free_udp, get,
    ipsla, n, request, signal, wait_for, wait_some,
};
use serde_json::Value;
use std::path::Path;

/// Operation 1 (udp-echo) reacts to any RTT by starting the pending operation 3; operation 2 is a
/// five-probe udp-jitter; tracks on 1 and 2 and their "and" list.
fn config(dir: &Path, http: u16, v1: u16) -> AgentToml {
    let (echo, jitter) = (free_udp(), free_udp());
    let udp_echo = |id| {
        Op::new("udp-echo", "127.0.0.1")
            .id(id)
            .key("port", echo)
            .key("control_port", v1)
            .key("timeout", "500ms")
            .key("frequency", "1s")
    };
    AgentToml::new()
        .http(http)
        .store(&dir.join("runs.db"))
        .workers(4)
        .responder(Responder::loopback(v1))
        .operation(
            udp_echo(1).key("trigger", vec![3]).reaction(
                Reaction::immediate("rtt", "alert-and-trigger")
                    // ms: any real RTT violates
                    .key("threshold", vec![0.000001, 0.0000005]),
            ),
        )
        .operation(
            Op::new("udp-jitter", "127.0.0.1")
                .id(2)
                .key("port", jitter)
                .key("control_port", v1)
                .key("packets", 5)
                .key("interval", "10ms")
                .key("precision", "us")
                .key("timeout", "300ms")
                .key("frequency", "1s")
                .key("tag", "five probes"),
        )
        .operation(udp_echo(3).key("start", "pending").key("tag", "started by operation 1's reaction"))
        .track(Track::of(1, 1).key("mode", "reachability"))
        .track(Track::of(2, 2))
        .track(Track::list(5, "and", &[1, 2]))
}

fn operations(http: u16) -> Value {
    api(http, "/api/v1/operations")
}

/// Waits until every operation has run `runs` times and stored `stored` runs in all.
fn wait_runs(http: u16, runs: u64, stored: u64) -> Value {
    wait_some(&format!("{runs} runs of each operation, {stored} stored"), PATIENCE, || {
        let ops = operations(http);
        let each = ops.as_array()?.iter().all(|o| n(&o["runs"]) >= runs);
        let total: u64 = ops.as_array()?.iter().map(|o| n(&o["stored"])).sum();
        (each && total >= stored).then_some(ops)
    })
}

#[test]
fn runs_are_scheduled_stored_and_exported() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    // the per-probe histograms are asked for: this test reads them
    let agent = InProcess::start(&config(dir.path(), 0, free_udp()).agent_key("metrics_histograms", true));
    let http = agent.http();
    // operation 1 twice (stored), the others (3 once triggered) at least once; the track list
    // and operation 2's runs are then settled
    let ops = wait_some("two stored runs of operation 1 and a run of each other", PATIENCE, || {
        let ops = operations(http);
        let a = ops.as_array()?;
        (a.iter().all(|o| n(&o["runs"]) >= 1) && n(&a[0]["runs"]) >= 2 && n(&a[0]["stored"]) >= 2).then_some(ops)
    });
    for o in ops.as_array().unwrap() {
        assert!(o["runs"].as_u64().unwrap() >= 1, "runs every second: {o}");
        assert_eq!(o["state"], "active", "{o}");
    }
    assert!(ops[0]["runs"].as_u64().unwrap() >= 2 && ops[0]["stored"].as_u64().unwrap() >= 2);
    // operation 1's reaction fired once (on the transition only) and triggered the pending 3
    let ev = api(http, "/api/v1/events");
    let fired: Vec<&Value> =
        ev.as_array().unwrap().iter().filter(|e| e["kind"] == "reaction" && e["op"] == 1).collect();
    assert_eq!(fired.len(), 1, "{ev}");
    assert_eq!(fired[0]["text"], "%RTT-3-IPSLATHRESHOLD: IP SLAs(1): Threshold exceeded for rtt");
    // tracks: both operations succeed, so both tracks and their "and" list came up, once each
    let tracks = api(http, "/api/v1/tracks");
    for t in tracks.as_array().unwrap() {
        assert_eq!((t["up"].as_bool(), t["changes"].as_u64()), (Some(true), Some(1)), "{t}");
    }
    assert!(
        ev.as_array().unwrap().iter().any(|e| e["text"] == "%TRACK-6-STATE: 5 list boolean and Down -> Up"),
        "{ev}"
    );
    let latest = api(http, "/api/v1/operations/2/latest");
    assert_eq!(latest["return_code"], "ok");
    assert_eq!(latest["received"], 5);
    assert_eq!(latest["timestamps"]["rx"], "kernel");
    let (_, metrics) = get(http, "/metrics").unwrap();
    assert!(metrics.contains("\nipsla_operation_success{op=\"2\"} 1\n"), "{metrics}");
    assert!(
        metrics.contains(r#"ipsla_operation_info{op="2",type="udp-jitter",target="127.0.0.1:"#)
            && metrics.contains(r#"",tag="five probes"} 1"#),
        "{metrics}"
    );
    let runs_line =
        metrics.lines().find(|l| l.starts_with(r#"ipsla_operations_total{op="1""#)).expect("ipsla_operations_total");
    let runs: f64 = runs_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(runs >= 2.0, "{runs_line}");
    assert!(metrics.contains(r#"ipsla_reaction_active{op="1",element="rtt"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"ipsla_track_state{track="5"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"ipsla_rtt_seconds_bucket{le="0.00005","#), "RTT histogram with 50 µs buckets");
    assert_eq!(get(http, "/api/v1/operations/9/latest").unwrap().0, 404);
    assert!(n(&api(http, "/api/v1/responder")["stats"]["control_v1"]) >= 4);
    // `id` is the operation's, `run` the run's number: two runs of operation 1 differ in `run`
    let hist = api(http, "/api/v1/operations/1/history?limit=2");
    let pairs: Vec<(u64, u64)> =
        hist.as_array().unwrap().iter().map(|r| (n(&r["report"]["id"]), n(&r["report"]["run"]))).collect();
    assert_eq!(pairs.len(), 2, "{hist}");
    assert_eq!((pairs[0].0, pairs[1].0), (1, 1), "{hist}");
    assert!(pairs[0].1 != pairs[1].1 && pairs[0].1 >= 1 && pairs[1].1 >= 1, "{hist}");
    assert_eq!((latest["id"].as_u64(), latest["operation"].as_str()), (Some(2), Some("udp-jitter")));
}

/// SIGTERM while a 500 × 20 ms udp-jitter run is in flight: the agent cancels it instead of
/// waiting for its 10 s train and timeout, exits 0, and stores nothing for the cancelled run
/// (docs/agent.md); the responder answered fewer than the 500 probes.
#[test]
fn sigterm_cancels_the_run_in_flight() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let r = ipsla_net::responder::spawn_responder(ipsla_net::responder::ResponderOptions {
        listen: vec!["127.0.0.1".parse().unwrap()],
        v1_port: 0,
        v2_port: 0,
        ..Default::default()
    })
    .unwrap();
    let http = free_tcp();
    let cfg = AgentToml::new()
        .http(http)
        .store(&dir.path().join("runs.db"))
        .operation(
            Op::new("udp-jitter", "127.0.0.1")
                .id(1)
                .key("port", free_udp())
                .key("control_port", r.control_v1_addrs()[0].port())
                .key("packets", 500)
                .key("interval", "20ms")
                .key("frequency", "60s"),
        )
        .write(&dir.path().join("agent.toml"));
    let mut agent = agent_process(&cfg, http);
    wait_for("the run to be under way", PATIENCE, || r.status().unwrap().stats.probes_answered >= 10);
    signal(&agent.0, "-TERM");
    let status = crate::common::wait_exit(&mut agent.0);
    assert!(status.success(), "{status}");
    let answered = r.status().unwrap().stats.probes_answered;
    assert!(answered < 500, "the run went on to its end: {answered} probes answered");
    let conn = rusqlite::Connection::open(dir.path().join("runs.db")).unwrap();
    let stored: i64 = conn.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, 0, "a cancelled run is not stored");
}

/// A first SIGTERM stops the agent gracefully, which includes giving the alert sinks up to 5 s to
/// deliver; a second one during that wait exits at once (status 1, said in the log). The webhook
/// here accepts and never answers, so the graceful stop has to wait.
#[test]
fn a_second_signal_exits_at_once() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (http, v1, echo) = (free_tcp(), free_udp(), free_udp());
    let cfg = AgentToml::new()
        .http(http)
        .store(&dir.path().join("runs.db"))
        .responder(Responder::loopback(v1))
        .operation(
            Op::new("udp-echo", "127.0.0.1")
                .id(1)
                .key("port", echo)
                .key("control_port", v1)
                .key("timeout", "500ms")
                .key("frequency", "1s")
                // any real RTT violates: the first run raises an alert
                .reaction(Reaction::immediate("rtt", "alert").key("threshold", vec![0.000001, 0.0000005])),
        )
        .alert(Alert::webhook(&format!("http://{}/hook", hook.local_addr().unwrap())).key("timeout", "10m"))
        .write(&dir.path().join("agent.toml"));
    let mut agent = crate::common::Killed(
        ipsla().args(["agent", "--config"]).arg(&cfg).stderr(std::process::Stdio::piped()).spawn().unwrap(),
    );
    let lines = crate::common::lines(agent.0.stderr.take().unwrap());
    // the alert is being delivered: the webhook's connection is open and will not be answered
    let (_held, _) = hook.accept().unwrap();
    signal(&agent.0, "-TERM");
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("shutting down")) {
        log.push(lines.recv_timeout(PATIENCE).expect("the agent says it is shutting down"));
    }
    signal(&agent.0, "-TERM");
    let status = crate::common::wait_exit(&mut agent.0);
    log.extend(lines.iter());
    let log = log.join("\n");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("second signal: exiting without waiting for the agent to stop"), "{log}");
}

/// A udp-echo target black-holed (nothing listens on its port) beside one that answers: the
/// failed runs are no number anywhere: the stored run served by /api, `ipsla show` reading it
/// back, and /metrics, whose exposition a real parser accepts.
#[test]
fn a_black_holed_target_is_no_number_anywhere() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let (v1, echo, hole) = (free_udp(), free_udp(), free_udp());
    let cfg = with_echo_ops(
        AgentToml::new().http(0).store(&dir.path().join("runs.db")).responder(Responder::loopback(v1)),
        &[(1, "500ms")],
        echo,
        v1,
    )
    .operation(
        Op::new("udp-echo", "127.0.0.1")
            .id(2)
            .key("port", hole)
            .key("control", "none")
            .key("timeout", "200ms")
            .key("frequency", "1s")
            .reaction(Reaction::immediate("rtt", "alert")),
    );
    let agent = InProcess::start(&cfg);
    let http = agent.http();
    wait_for("a stored run of each operation", PATIENCE, || {
        operations(http).as_array().is_some_and(|a| a.iter().all(|o| n(&o["stored"]) >= 1))
    });

    let latest = api(http, "/api/v1/operations/2/latest");
    assert_eq!((&latest["return_code"], &latest["received"]), (&Value::from("timeout"), &Value::from(0)));
    for k in ["min", "avg", "max", "p50", "p90", "p99"] {
        assert_eq!(latest["rtt_us"][k], Value::Null, "rtt_us.{k}: {latest}");
    }
    assert_eq!(latest["jitter_us"]["avg"], Value::Null, "{latest}");
    let history = api(http, "/api/v1/operations/2/history?limit=1");
    assert_eq!(history[0]["report"]["rtt_us"]["avg"], Value::Null, "{history}");
    let show =
        ipsla().args(["show", "statistics", "2", "--agent", &format!("http://127.0.0.1:{http}")]).output().unwrap();
    let text = String::from_utf8(show.stdout).unwrap();
    assert!(text.contains("\n        Latest RTT: none (timeout)\n"), "{text}");
    assert!(text.contains("\n        RTT percentiles: no samples\n"), "{text}");

    let (_, m) = get(http, "/metrics").unwrap();
    let has = |line: &str| m.lines().any(|l| l == line);
    assert!(has(r#"ipsla_operation_return_code{op="2",code="timeout"} 1"#), "{m}");
    assert!(m.lines().any(|l| l.starts_with(r#"ipsla_rtt_latest_seconds{op="1"} "#)), "{m}");
    assert!(!m.contains(r#"ipsla_rtt_latest_seconds{op="2"}"#), "no latest RTT for a run without a reply: {m}");
    assert!(!m.contains("ipsla_jitter_average_seconds"), "udp-echo measures no jitter: {m}");
    assert!(
        has(&format!(r#"ipsla_operation_info{{op="2",type="udp-echo",target="127.0.0.1:{hole}",tag=""}} 1"#)),
        "{m}"
    );
    // the reaction never fired, and is there at 0
    assert!(has(r#"ipsla_reaction_active{op="2",element="rtt"} 0"#), "{m}");
    assert!(has(&format!(r#"ipsla_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION"))), "{m}");
    // the agent's responder: operation 1's control messages, every rejection reason at 0
    let v1_msgs = m.lines().find_map(|l| l.strip_prefix(r#"ipsla_responder_control_messages_total{version="v1"} "#));
    assert!(v1_msgs.is_some_and(|v| v.parse::<u64>().unwrap() >= 1), "{m}");
    assert!(has(r#"ipsla_responder_control_rejected_total{reason="not_allowed"} 0"#), "{m}");
    assert!(m.lines().any(|l| l.starts_with("ipsla_responder_probes_answered_total ")), "{m}");
    assert!(has(r#"ipsla_packets_duplicate_total{op="2"} 0"#) && has(r#"ipsla_packets_late_total{op="2"} 0"#), "{m}");
    // the same series, in the same order, on the next scrape
    let order = |m: &str| -> Vec<String> {
        m.lines().filter(|l| !l.starts_with('#')).map(|l| l.rsplit_once(' ').unwrap().0.to_string()).collect()
    };
    let again = get(http, "/metrics").unwrap().1;
    let (a, b) = (order(&m), order(&again));
    let common: Vec<&String> = a.iter().filter(|x| b.contains(x)).collect();
    assert_eq!(common, b.iter().filter(|x| a.contains(x)).collect::<Vec<_>>());
    crate::prometheus::promtool_check(&again);

    // the API's times are RFC 3339; no route configured is an empty list, not a missing page
    let st = api(http, "/api/v1/responder");
    let seen = st["stats"]["recent_sources"][0][1].as_str().unwrap_or_else(|| panic!("{st}"));
    assert!(humantime::parse_rfc3339(seen).is_ok(), "{seen}");
    assert_eq!(api(http, "/api/v1/routes")["routes"], serde_json::json!([]));
}

#[test]
fn sigkill_loses_no_completed_run() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let (http, v1) = (free_tcp(), free_udp());
    let cfg = config(dir.path(), http, v1).write(&dir.path().join("agent.toml"));
    let mut agent = agent_process(&cfg, http);
    let ops = wait_runs(http, 1, 4);
    let published: u64 = ops.as_array().unwrap().iter().map(|o| n(&o["stored"])).sum();
    assert!(published >= 4, "{published}");
    signal(&agent.0, "-KILL");
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
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "[[operation]]\ntype = \"udp-jitter\"\ntarget = \"127.0.0.1\"\ninterval = \"fast\"\n").unwrap();
    let out = ipsla().args(["agent", "--check", "--config"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8(out.stderr).unwrap();
    assert!(e.contains("operation[0].interval") && e.contains("\"fast\" is not a duration"), "{e}");
    std::fs::write(&p, "[[operation]]\nid = 3\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\n[[operation]]\nid = 3\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\n").unwrap();
    let out = ipsla().args(["agent", "--check", "--config"]).arg(&p).output().unwrap();
    assert!(String::from_utf8(out.stderr).unwrap().contains("operation[1].id: 3 is already used by operation[0]"));
    // the embedded default is valid
    let out = ipsla().args(["agent", "--check"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("4 operations, responder on"));
}

/// udp-echo operations `ids_timeouts` against the agent's responder.
fn with_echo_ops(mut cfg: AgentToml, ids_timeouts: &[(u32, &str)], echo: u16, v1: u16) -> AgentToml {
    for (id, t) in ids_timeouts {
        cfg = cfg.operation(
            Op::new("udp-echo", "127.0.0.1")
                .id(*id)
                .key("port", echo)
                .key("control_port", v1)
                .key("timeout", *t)
                .key("frequency", "1s"),
        );
    }
    cfg
}

#[test]
fn reload_keeps_unchanged_operations_and_refuses_a_bad_file() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let (http, v1, echo) = (free_tcp(), free_udp(), free_udp());
    let head = AgentToml::new().http(http).store(&dir.path().join("runs.db")).responder(Responder::loopback(v1));
    let cfg = dir.path().join("agent.toml");
    with_echo_ops(head.clone(), &[(1, "200ms"), (2, "200ms"), (3, "200ms")], echo, v1).write(&cfg);
    let agent = agent_process(&cfg, http);
    wait_runs(http, 2, 0);
    let runs = |ops: &Value, id: u64| {
        ops.as_array().unwrap().iter().find(|o| o["id"] == id).map(|o| o["runs"].as_u64().unwrap())
    };
    let before = runs(&operations(http), 1).unwrap();
    assert!(before >= 2, "{before}");

    // 1 unchanged, 2 redefined, 3 removed, 4 added; SIGHUP
    with_echo_ops(head.clone(), &[(1, "200ms"), (2, "300ms"), (4, "200ms")], echo, v1).write(&cfg);
    signal(&agent.0, "-HUP");
    let ops = wait_some("the reload", PATIENCE, || {
        let ops = operations(http);
        let ids: Vec<u64> = ops.as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect();
        (ids == [1, 2, 4]).then_some(ops)
    });
    assert!(runs(&ops, 1).unwrap() >= before, "operation 1 kept its schedule and counters: {ops}");
    assert!(runs(&ops, 2).unwrap() <= 1, "operation 2 was redefined, so restarted: {ops}");
    let (_, metrics) = get(http, "/metrics").unwrap();
    assert!(!metrics.contains(r#"op="3""#), "a removed operation exports nothing: {metrics}");

    // a broken file is refused and nothing changes
    head.clone().operation(Op::new("udp-echo", "127.0.0.1").key("frequency", "often")).write(&cfg);
    let (code, body) = request(http, "POST", "/-/reload").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("configuration unchanged") && body.contains("operation[0].frequency"), "{body}");
    let ids: Vec<u64> = operations(http).as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 4]);
    // and a good one through the endpoint reports what it did
    let without_responder = AgentToml::new().http(http).store(&dir.path().join("runs.db")).workers(2);
    with_echo_ops(without_responder, &[(1, "200ms")], echo, v1).write(&cfg);
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
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let (twamp, stamp, dead) = (free_tcp(), free_udp(), free_tcp());
    let op = |kind: &str, id: u32, port: u16, packets: u32, timeout: &str| {
        Op::new(kind, "127.0.0.1")
            .id(id)
            .key("port", port)
            .key("packets", packets)
            .key("interval", "10ms")
            .key("timeout", timeout)
            .key("frequency", "1s")
    };
    let cfg = AgentToml::new()
        .http(0)
        .store(&dir.path().join("runs.db"))
        .responder(
            Responder::loopback_without_ip_sla()
                .key("twamp", vec![format!("127.0.0.1:{twamp}")])
                .key("stamp", vec![format!("127.0.0.1:{stamp}")])
                .key("stamp_stateful", true),
        )
        .operation(op("twamp", 1, twamp, 10, "500ms").reaction(Reaction::immediate("connectionLoss", "alert")))
        .operation(op("stamp", 2, stamp, 10, "500ms"))
        .operation(op("twamp", 3, dead, 5, "300ms").reaction(Reaction::immediate("connectionLoss", "alert")))
        .track(Track::of(1, 1).key("mode", "state"))
        .track(Track::of(3, 3).key("mode", "state"));
    let agent = InProcess::start(&cfg);
    let http = agent.http();
    wait_for("a run of each operation", PATIENCE, || {
        (1..=3).all(|id| get(http, &format!("/api/v1/operations/{id}/latest")).is_some_and(|(c, _)| c == 200))
    });
    wait_for("two stored runs of operations 1 and 2", PATIENCE, || {
        let ops = operations(http);
        (0..2).all(|i| n(&ops[i]["stored"]) >= 2)
    });
    let latest = |id: u32| api(http, &format!("/api/v1/operations/{id}/latest"));
    for id in [1, 2] {
        let l = latest(id);
        assert_eq!(l["return_code"], "ok", "operation {id}: {l}");
        assert_eq!((l["sent"].as_u64(), l["received"].as_u64()), (Some(10), Some(10)), "{l}");
        assert_eq!(l["jitter_us"]["sd"]["count"], 9, "one-way jitter from the reflector's stamps: {l}");
    }
    assert_eq!(latest(1)["operation"], "twamp");
    assert_eq!(latest(3)["return_code"], "no_connection", "{}", latest(3));
    let tracks = api(http, "/api/v1/tracks");
    let up = |id: u64| tracks.as_array().unwrap().iter().find(|t| t["id"] == id).map(|t| t["up"].clone());
    assert_eq!((up(1), up(3)), (Some(true.into()), Some(false.into())), "{tracks}");
    let ev = api(http, "/api/v1/events");
    let fired: Vec<u64> =
        ev.as_array().unwrap().iter().filter(|e| e["kind"] == "reaction").map(|e| e["op"].as_u64().unwrap()).collect();
    assert_eq!(fired, [3], "only the unreachable server's connectionLoss fired: {ev}");
    let r = api(http, "/api/v1/responder");
    assert!(r["twamp_stats"]["server"]["sessions_accepted"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["stamp_stats"]["replied"].as_u64().unwrap() >= 20, "{r}");
}

#[test]
fn a_failed_run_is_stored_with_its_reason() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let dead = free_udp();
    let cfg = AgentToml::new().http(0).store(&dir.path().join("runs.db")).operation(
        Op::new("udp-jitter", "127.0.0.1")
            .id(1)
            .key("control_port", dead)
            .key("timeout", "300ms")
            .key("frequency", "1s"),
    );
    let agent = InProcess::start(&cfg);
    let http = agent.http();
    let latest = wait_some("a stored run", PATIENCE, || {
        get(http, "/api/v1/operations/1/latest").filter(|(c, _)| *c == 200).map(|(_, b)| b)
    });
    let latest: Value = serde_json::from_str(&latest).unwrap();
    assert_eq!(latest["return_code"], "no_connection");
    assert_eq!(
        latest["reason"],
        format!("connection refused (ICMP port unreachable) from 127.0.0.1:{dead}: no responder listens there")
            .as_str()
    );
    // `ipsla show statistics` renders the stored document with it
    let out =
        ipsla().args(["show", "statistics", "1", "--agent"]).arg(format!("http://127.0.0.1:{http}")).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Latest operation failure reason: connection refused (ICMP port unreachable)"), "{text}");
}

/// Start-up and configuration errors name the subject: the address and the key or flag it came
/// from, and how to write the value.
#[test]
fn start_errors_name_the_address_and_the_key_or_flag() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = taken.local_addr().unwrap();
    let p = dir.path().join("agent.toml");
    let store = dir.path().join("runs.db");
    std::fs::write(&p, format!("[agent]\nhttp = \"{http}\"\nstore = \"{}\"\n", store.display())).unwrap();
    let out = ipsla().args(["agent", "--config"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "ipsla: starting the agent: cannot serve HTTP on {http} (agent.http in {}): Address already in use (os error 98)\n",
            p.display()
        )
    );
    let out = ipsla().args(["agent", "--config"]).arg(&p).args(["--http", &http.to_string()]).output().unwrap();
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "ipsla: starting the agent: cannot serve HTTP on {http} (--http): Address already in use (os error 98)\n"
        )
    );
    // IOS's `frequency 10` is seconds; a bare number for another duration says how to write it
    std::fs::write(&p, "[[operation]]\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\nfrequency = 10\n").unwrap();
    let out = ipsla().args(["agent", "--check", "--config"]).arg(&p).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&p, "[[operation]]\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\ntimeout = 5000\n").unwrap();
    let out = ipsla().args(["agent", "--check", "--config"]).arg(&p).output().unwrap();
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "ipsla: in {}: operation[0].timeout = 5000: write a duration with its unit, e.g. \"5000ms\"\n",
            p.display()
        )
    );
    let out = ipsla().args(["probe", "udp-jitter", "127.0.0.1", "--interval", "5"]).output().unwrap();
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "ipsla: --interval 5: write a duration with its unit, e.g. \"5ms\"\n"
    );
}

/// The agent's log levels follow IOS severities: `%TRACK-6-STATE` (6, informational) at INFO.
#[test]
fn a_track_change_is_logged_at_info() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let (v1, http) = (free_udp(), free_tcp());
    let cfg = AgentToml::new()
        .http(http)
        .store(&dir.path().join("runs.db"))
        .responder(Responder::loopback(v1))
        .operation(
            Op::new("udp-echo", "127.0.0.1")
                .id(1)
                .key("port", free_udp())
                .key("control_port", v1)
                .key("timeout", "500ms")
                .key("frequency", "1s"),
        )
        .track(Track::of(1, 1).key("mode", "reachability"));
    let p = dir.path().join("agent.toml");
    std::fs::write(&p, cfg.render()).unwrap();
    let mut agent = crate::common::Killed(
        ipsla()
            .args(["agent", "--config"])
            .arg(&p)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let rx = crate::common::lines(agent.0.stderr.take().unwrap());
    let line = std::iter::from_fn(|| Some(rx.recv_timeout(PATIENCE).expect("a %TRACK-6-STATE line")))
        .find(|l| l.contains("%TRACK-6-STATE"))
        .unwrap();
    assert!(
        line.contains(" INFO ipsla::track: %TRACK-6-STATE: 1 ip sla 1 reachability Down -> Up track=1 up=true"),
        "{line}"
    );
}

#[test]
fn a_run_that_ends_after_its_operation_was_removed_exports_nothing() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let (v1, http, echo) = (free_udp(), free_tcp(), free_udp());
    let head = AgentToml::new().http(http).store(&dir.path().join("runs.db")).responder(Responder::loopback(v1));
    // operation 3's probe goes to a socket this test holds: its run lasts until the test answers
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(PATIENCE)).unwrap();
    let held = Op::new("udp-echo", "127.0.0.1")
        .id(3)
        .key("port", sink.local_addr().unwrap().port())
        .key("control", "none")
        .key("timeout", "60s")
        .key("frequency", "120s");
    let p = dir.path().join("agent.toml");
    with_echo_ops(head.clone().operation(held), &[(1, "500ms")], echo, v1).write(&p);
    let _agent = agent_process(&p, http);
    let mut buf = [0u8; 2048];
    let (len, from) = sink.recv_from(&mut buf).unwrap();
    // the run is going: the reload removes its operation
    with_echo_ops(head, &[(1, "500ms")], echo, v1).write(&p);
    let (code, body) = request(http, "POST", "/-/reload").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["removed"], serde_json::json!([3]), "{body}");
    assert!(!get(http, "/metrics").unwrap().1.contains(r#"op="3""#));
    // answered, the run ends: it is stored (a completed run is never lost) and exports nothing
    sink.send_to(&buf[..len], from).unwrap();
    let db = rusqlite::Connection::open(dir.path().join("runs.db")).unwrap();
    wait_for("operation 3's run stored", PATIENCE, || {
        db.query_row("SELECT count(*) FROM runs WHERE op = 3", [], |r| r.get::<_, i64>(0)).is_ok_and(|n| n == 1)
    });
    let (_, metrics) = get(http, "/metrics").unwrap();
    assert!(!metrics.contains(r#"op="3""#), "a removed operation exports nothing: {metrics}");
}
