//! The HTTP API's documents as a running agent sends them: each one reads back into the type of
//! `ipsla_agent::api` that `ipsla show` uses, and serializes to the same JSON; the fields are the
//! ones docs/agent.md (and docs/json-schema.md for a run) list.

use ipsla_agent::api::{
    HourAggregate, OpSummary, ReloadSummary, Report, StoreStatus, StoredEvent, StoredRun, TrackSummary,
};
use ipsla_agent::daemon::{Agent, AgentFile};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// `METHOD path` over HTTP/1.0: (status, body).
fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> String {
    let (status, body) = request(addr, "GET", path);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The document read into `T` and written back is the JSON the agent sent.
fn round_trip<T: DeserializeOwned + Serialize>(what: &str, body: &str) -> T {
    let sent: Value = serde_json::from_str(body).unwrap();
    let read: T = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}\n{body}"));
    assert_eq!(serde_json::to_value(&read).unwrap(), sent, "{what}");
    read
}

/// The fields named (in backquotes) in the first column of the first table after `marker`.
fn doc_fields(doc: &str, marker: &str) -> BTreeSet<String> {
    let path = format!("{}/../../docs/{doc}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find(marker).unwrap_or_else(|| panic!("{doc}: no \"{marker}\""));
    let rows = text[at..].lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')).skip(2);
    let mut fields = BTreeSet::new();
    for row in rows {
        let first = row.split('|').nth(1).unwrap_or_default();
        fields.extend(first.split('`').skip(1).step_by(2).map(String::from));
    }
    assert!(!fields.is_empty(), "{doc}: no table after \"{marker}\"");
    fields
}

fn keys(v: &impl Serialize) -> BTreeSet<String> {
    match serde_json::to_value(v).unwrap() {
        Value::Object(m) => m.keys().cloned().collect(),
        other => panic!("not an object: {other}"),
    }
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(15), "not {what} within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_document_reads_back_into_its_api_type() {
    let dir = tempfile::tempdir().unwrap();
    // one port that echoes (runs OK) and one that swallows (runs time out: a reaction event)
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let text = format!(
        r#"
[agent]
http = "127.0.0.1:0"
store = "{store}"
workers = 2

[[operation]]
id = 7
type = "udp-echo"
target = "127.0.0.1"
port = {silent}
control = "none"
timeout = "100ms"
frequency = "1s"

[[operation.reaction]]
element = "timeout"
threshold_type = "immediate"
action = "alert"

[[operation]]
id = 8
tag = "echo"
type = "udp-echo"
target = "127.0.0.1"
port = {echo_port}
control = "none"
timeout = "500ms"
frequency = "1s"
life = "1h"

[[track]]
id = 1
operation = 7
mode = "state"

[[track]]
id = 2
operation = 8
mode = "reachability"
delay_down = "5s"

[[track]]
id = 3
list = "or"
members = [1, 2]
"#,
        store = dir.path().join("runs.db").display(),
        silent = silent.local_addr().unwrap().port(),
    );
    let cfg = AgentFile::parse(&text).unwrap().validate().unwrap();
    let agent = Agent::start(cfg.clone()).unwrap();
    let reload_cfg = cfg.clone();
    agent.set_loader(Box::new(move || Ok(reload_cfg.clone())));
    let addr = agent.http_addr();
    let ran = |id: u32| request(addr, "GET", &format!("/api/v1/operations/{id}/latest")).0 == 200;
    wait_for("both operations ran", || ran(7) && ran(8));
    // tracks start down: track 2 comes up (an event), track 1 stays down with its operation's code
    wait_for("track 2 up and track 1 with a return code", || {
        let t = serde_json::from_str::<Vec<TrackSummary>>(&get(addr, "/api/v1/tracks")).unwrap();
        t[0].latest_return_code.is_some() && t[1].up && get(addr, "/api/v1/events").contains(r#""kind":"track""#)
    });

    let ops: Vec<OpSummary> = round_trip("/api/v1/operations", &get(addr, "/api/v1/operations"));
    assert_eq!(ops.iter().map(|o| (o.id, o.r#type.as_str())).collect::<Vec<_>>(), [(7, "udp-echo"), (8, "udp-echo")]);
    assert_eq!(keys(&ops[1]), doc_fields("agent.md", "### `GET /api/v1/operations`"));

    let body = get(addr, "/api/v1/tracks");
    let tracks: Vec<TrackSummary> = round_trip("/api/v1/tracks", &body);
    // the wire form is the run document's: the snake_case name
    assert!(body.contains(r#""latest_return_code":"timeout""#), "{body}");
    assert_eq!(tracks[0].latest_return_code, Some(ipsla_core::ops::ReturnCode::Timeout));
    assert_eq!(tracks[2].members, [1, 2]);
    assert_eq!(keys(&tracks[0]), doc_fields("agent.md", "### `GET /api/v1/tracks`"));

    let latest: Report = round_trip("latest", &get(addr, "/api/v1/operations/8/latest"));
    assert_eq!(latest.return_code, ipsla_core::ops::ReturnCode::Ok);
    let mut documented = doc_fields("json-schema.md", "| Field | Type | Meaning |");
    assert!(documented.remove("samples") && documented.remove("lost"), "only with --samples");
    // a kind's own part of the report: only its runs have it
    assert!(documented.remove("http"), "operation http only");
    assert!(documented.remove("mesh"), "only for a mesh operation's run");
    assert_eq!(keys(&latest), documented);

    let history: Vec<StoredRun> = round_trip("history", &get(addr, "/api/v1/operations/7/history?limit=2"));
    assert!(!history.is_empty() && history.len() <= 2, "{history:?}");
    assert_eq!(history[0].return_code, "timeout");
    assert_eq!(history[0].start, history[0].report["start"], "the run's start, RFC 3339");
    assert_eq!(keys(&history[0]), doc_fields("agent.md", "### `GET /api/v1/operations/{id}/history"));

    let events: Vec<StoredEvent> = round_trip("events", &get(addr, "/api/v1/events"));
    assert!(events.iter().any(|e| e.kind == "reaction" && e.op == Some(7) && e.element == "timeout"), "{events:?}");
    // a track event names its track as `track`, not as an operation
    let track = events.iter().find(|e| e.text.starts_with("%TRACK-6-STATE: 2 ")).unwrap();
    assert_eq!((&*track.kind, track.op, track.track, track.occurred), ("track", None, Some(2), false), "{events:?}");
    let raw: Value = serde_json::from_str(&get(addr, "/api/v1/events")).unwrap();
    let t = raw.as_array().unwrap().iter().find(|e| e["kind"] == "track" && e["track"] == 2).unwrap();
    assert_eq!(t["op"], Value::Null, "{t}");
    // RFC 3339 beside the ns, the same instant
    let at = humantime::parse_rfc3339(t["time"].as_str().unwrap()).unwrap();
    let ns = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    assert_eq!(ns / 1_000_000, t["time_ns"].as_i64().unwrap() / 1_000_000, "{t}");
    assert_eq!(keys(&events[0]), doc_fields("agent.md", "### `GET /api/v1/events"));

    let hours: Vec<HourAggregate> = round_trip("aggregated", &get(addr, "/api/v1/operations/8/aggregated"));
    assert!(hours[0].ok > 0, "{hours:?}");
    assert_eq!(keys(&hours[0]), doc_fields("agent.md", "One hour of one operation"));

    let store: StoreStatus = round_trip("store", &get(addr, "/api/v1/store"));
    assert!(store.writable && store.write_errors == 0, "{store:?}");
    assert_eq!(keys(&store), doc_fields("agent.md", "### `GET /api/v1/store`"));

    let (status, body) = request(addr, "POST", "/-/reload");
    assert_eq!(status, 200, "{body}");
    let sum: ReloadSummary = round_trip("reload", &body);
    assert_eq!((sum.kept.as_slice(), sum.needs_restart.len()), ([7, 8].as_slice(), 0));
    assert_eq!(keys(&sum), doc_fields("agent.md", "### `POST /-/reload`"));

    // no [[route]]: the same document, with no route in it
    let none: ipsla_agent::api::RouteStatus = round_trip("no routes", &get(addr, "/api/v1/routes"));
    assert_eq!((none.routes.len(), none.installed.len(), none.errors.len()), (0, 0, 0), "{none:?}");
    assert!(get(addr, "/api/v1/routes").contains(r#""routes":[]"#));
    let routes = ipsla_agent::api::RouteStatus {
        protocol: 167,
        routes: vec![ipsla_agent::api::RouteState {
            route: "192.0.2.0/24 via 10.0.0.1".into(),
            track: Some(1),
            wanted: true,
        }],
        ..Default::default()
    };
    round_trip::<ipsla_agent::api::RouteStatus>("routes", &serde_json::to_string(&routes).unwrap());
    assert_eq!(keys(&routes), doc_fields("agent.md", "### `GET /api/v1/routes`"));
    agent.stop();
}
