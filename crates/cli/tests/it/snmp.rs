//! A real net-snmp `snmpd` (its own configuration: a loopback UDP port, `master agentx` on a
//! socket in a temporary folder) serves CISCO-RTTMON-MIB from the agent's AgentX subagent, and
//! `snmpwalk` / `snmpbulkwalk` / `snmpget` (the `snmp` package) read it: each value equals the
//! agent's own API for the same run, a timed-out run has no completion time, the walk is in
//! strict OID order, a restart of the master is survived, and a reaction whose action is `trap`
//! reaches `snmptrapd` through the master.
//!
//! OIDs are numeric (CISCO-RTTMON-MIB is not shipped with the project). Skipped, with the reason
//! printed, when `snmpd` or `snmpwalk` is missing, the trap part when `snmptrapd` is
//! (`scripts/test.sh` installs them with apt).

use crate::common::{AgentToml, InProcess, Killed, Op, Responder, api, free_udp, on_path, wait_some};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const RTTMON: &str = "1.3.6.1.4.1.9.9.42";
/// rttMonCtrlAdminEntry, rttMonEchoAdminEntry, rttMonCtrlOperEntry, rttMonLatestRttOperEntry,
/// rttMonLatestJitterOperEntry.
const ADMIN: &str = "1.3.6.1.4.1.9.9.42.1.2.1.1";
const ECHO: &str = "1.3.6.1.4.1.9.9.42.1.2.2.1";
const OPER: &str = "1.3.6.1.4.1.9.9.42.1.2.9.1";
const LATEST: &str = "1.3.6.1.4.1.9.9.42.1.2.10.1";
const JITTER: &str = "1.3.6.1.4.1.9.9.42.1.5.2.1";
/// rttMonReactEntry.
const REACT: &str = "1.3.6.1.4.1.9.9.42.1.2.19.1";
/// rttMonJitterStatsEntry.
const STATS: &str = "1.3.6.1.4.1.9.9.42.1.3.5.1";

/// `name`, on PATH or in /usr/sbin (where Debian puts snmpd).
fn tool(name: &str) -> Option<PathBuf> {
    on_path(name).or_else(|| Some(Path::new("/usr/sbin").join(name)).filter(|p| p.is_file()))
}

/// A net-snmp master agent of our own, killed on drop.
struct Snmpd {
    _process: Killed,
    port: u16,
}

impl Snmpd {
    /// Starts snmpd on 127.0.0.1:`port` with its AgentX socket at `socket`; `None` (and the
    /// reason printed) when net-snmp is not installed.
    fn start(dir: &Path, port: u16, socket: &Path, trap_port: u16) -> Option<Snmpd> {
        let (Some(snmpd), Some(_)) = (tool("snmpd"), tool("snmpwalk")) else {
            eprintln!("skipped: no `snmpd` / `snmpwalk` (apt-get install snmpd snmp)");
            return None;
        };
        let conf = dir.join("snmpd.conf");
        std::fs::write(
            &conf,
            format!(
                "agentAddress udp:127.0.0.1:{port}\nmaster agentx\nagentXSocket {}\nrocommunity public 127.0.0.1\n\
                 trap2sink 127.0.0.1:{trap_port} public\n",
                socket.display()
            ),
        )
        .unwrap();
        let state = dir.join("snmp-state");
        std::fs::create_dir_all(&state).unwrap();
        let process = Killed(
            Command::new(snmpd)
                .args(["-f", "-C", "-c"])
                .arg(&conf)
                .arg("-Lf")
                .arg(dir.join("snmpd.log"))
                .env("SNMP_PERSISTENT_DIR", &state)
                .env("MIBS", "")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let s = Snmpd { _process: process, port };
        wait_some("snmpd's AgentX socket", Duration::from_secs(20), || socket.exists().then_some(()));
        Some(s)
    }
}

/// net-snmp's trap receiver on 127.0.0.1:`port`, logging every notification (numeric OIDs) to
/// a file; killed on drop.
struct Snmptrapd {
    _process: Killed,
    log: PathBuf,
}

impl Snmptrapd {
    fn start(dir: &Path, port: u16) -> Option<Snmptrapd> {
        let Some(trapd) = tool("snmptrapd") else {
            eprintln!("the trap part is skipped: no `snmptrapd` (apt-get install snmptrapd)");
            return None;
        };
        let conf = dir.join("snmptrapd.conf");
        std::fs::write(&conf, "disableAuthorization yes\n").unwrap();
        let log = dir.join("traps.log");
        let process = Killed(
            Command::new(trapd)
                .args(["-f", "-On", "-C", "-c"])
                .arg(&conf)
                .arg("-Lf")
                .arg(&log)
                .arg(format!("udp:127.0.0.1:{port}"))
                .env("SNMP_PERSISTENT_DIR", dir.join("snmp-state"))
                .env("MIBS", "")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        // bound before anything can send it a notification: a trap to a closed port is lost
        crate::common::wait_udp(port);
        Some(Snmptrapd { _process: process, log })
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `snmpwalk`, `snmpbulkwalk` or `snmpget` against `port`: each `OID = TYPE: value` line as
/// (numeric OID, `TYPE: value`).
fn snmp(cmd: &str, port: u16, args: &[&str]) -> Vec<(String, String)> {
    let out = Command::new(tool(cmd).unwrap())
        .args(["-m", "", "-v2c", "-c", "public", "-On", "-Ot", "-r", "1", "-t", "3"])
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(o, v)| (o.trim_start_matches('.').to_string(), v.trim().to_string()))
        .collect()
}

fn walk(port: u16) -> Vec<(String, String)> {
    snmp("snmpwalk", port, &[RTTMON])
}

fn get1(port: u16, oid: &str) -> String {
    snmp("snmpget", port, &[oid]).pop().map(|(_, v)| v).unwrap_or_default()
}

/// The value in whole units of the run's precision (ms, or µs for udp-jitter with `us`).
fn units(us: &Value, unit: f64) -> u64 {
    (us.as_f64().unwrap() / unit).round() as u64
}

fn oid_key(o: &str) -> Vec<u32> {
    o.split('.').map(|p| p.parse().unwrap()).collect()
}

#[test]
fn snmpwalk_reads_the_rttmon_tables_with_the_apis_values_and_survives_a_master_restart() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agentx");
    let (port, trap_port) = (free_udp(), free_udp());
    let Some(master) = Snmpd::start(dir.path(), port, &socket, trap_port) else { return };
    let trapd = Snmptrapd::start(dir.path(), trap_port);
    let (v1, hole) = (free_udp(), free_udp());
    // one run each in the test's time (frequency 60 s): the walk and the API see the same run
    let agent = InProcess::start(
        &AgentToml::new()
            .http(0)
            .store(&dir.path().join("runs.db"))
            .workers(4)
            .responder(Responder::loopback(v1))
            .snmp(&format!("unix:{}", socket.display()))
            .operation(
                Op::new("udp-jitter", "127.0.0.1")
                    .id(1)
                    .key("control_port", v1)
                    .key("timeout", "1s")
                    .key("frequency", "60s")
                    .key("tag", "jitter to the lab"),
            )
            .operation(
                Op::new("udp-echo", "127.0.0.1")
                    .id(2)
                    .key("control_port", v1)
                    .key("timeout", "1s")
                    .key("frequency", "60s"),
            )
            .operation(Op::new("icmp-echo", "127.0.0.1").id(3).key("timeout", "1s").key("frequency", "60s"))
            .operation(
                Op::new("udp-echo", "127.0.0.1")
                    .id(4)
                    .key("port", hole)
                    .key("control", "none")
                    .key("timeout", "200ms")
                    .key("frequency", "60s")
                    .key("tag", "dead port")
                    .reaction(crate::common::Reaction::immediate("timeout", "trap")),
            ),
    );
    let http = agent.http();
    let latest: Vec<Value> = (1..=4)
        .map(|id| {
            wait_some(&format!("a stored run of operation {id}"), Duration::from_secs(60), || {
                crate::common::get(http, &format!("/api/v1/operations/{id}/latest"))
                    .filter(|(c, _)| *c == 200)
                    .map(|(_, b)| serde_json::from_str::<Value>(&b).unwrap())
            })
        })
        .collect();
    // the subagent registered, and its view holds every run
    let rows = wait_some("the four latest-RTT senses in a walk", Duration::from_secs(30), || {
        let w = walk(master.port);
        (w.iter().filter(|(o, _)| o.starts_with(&format!("{LATEST}.2."))).count() == 4).then_some(w)
    });
    let at = |oid: String| {
        rows.iter().find(|(o, _)| *o == oid).map(|(_, v)| v.clone()).unwrap_or_else(|| format!("absent: {oid}"))
    };

    // strict OID order, and GetBulk walks the same instances
    let keys: Vec<Vec<u32>> = rows.iter().map(|(o, _)| oid_key(o)).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{rows:#?}");
    let bulk = snmp("snmpbulkwalk", master.port, &[RTTMON]);
    assert_eq!(bulk.iter().map(|(o, _)| o).collect::<Vec<_>>(), rows.iter().map(|(o, _)| o).collect::<Vec<_>>());

    // configuration: types echo(1), udpEcho(5), jitter(9); the target's 4 octets; the tag
    assert_eq!(at(format!("{ADMIN}.4.1")), "INTEGER: 9");
    assert_eq!(at(format!("{ADMIN}.4.2")), "INTEGER: 5");
    assert_eq!(at(format!("{ADMIN}.4.3")), "INTEGER: 1");
    assert_eq!(at(format!("{ADMIN}.6.1")), "INTEGER: 60");
    assert_eq!(at(format!("{ADMIN}.7.4")), "INTEGER: 200");
    assert_eq!(at(format!("{ADMIN}.12.1")), "STRING: \"jitter to the lab\"");
    assert_eq!(at(format!("{ECHO}.2.1")), "Hex-STRING: 7F 00 00 01");
    assert_eq!(at(format!("{ECHO}.5.4")), format!("INTEGER: {hole}"));
    assert_eq!(at(format!("{OPER}.8.1")), "INTEGER: 1"); // NumRtts
    assert_eq!(at(format!("{OPER}.10.1")), "INTEGER: 6"); // active

    // each latest run as the API states it
    let sense = |code: &str| match code {
        "ok" => 1,
        "over_threshold" => 3,
        "timeout" => 4,
        "no_connection" => 6,
        _ => 16,
    };
    for (i, doc) in latest.iter().enumerate() {
        let id = i + 1;
        let code = doc["return_code"].as_str().unwrap();
        assert_eq!(at(format!("{LATEST}.2.{id}")), format!("INTEGER: {}", sense(code)), "op {id}: {doc}");
        let unit = if id == 1 && doc["precision"] == "us" { 1.0 } else { 1000.0 };
        match doc["rtt_us"]["avg"].as_f64() {
            Some(_) => assert_eq!(
                at(format!("{LATEST}.1.{id}")),
                format!("Gauge32: {}", units(&doc["rtt_us"]["avg"], unit)),
                "op {id}"
            ),
            None => assert_eq!(at(format!("{LATEST}.1.{id}")), format!("absent: {LATEST}.1.{id}"), "op {id}"),
        }
    }
    // the timed-out run: Sense timeout(4), TimeoutOccurred true, and no CompletionTime at all
    assert_eq!(latest[3]["return_code"], "timeout");
    assert_eq!(get1(master.port, &format!("{LATEST}.1.4")), "No Such Instance currently exists at this OID");
    assert_eq!(at(format!("{OPER}.6.4")), "INTEGER: 1");
    // its reaction row: timeout(7), immediate(2), trapOnly(2), occurred
    assert_eq!(at(format!("{REACT}.2.4.1")), "INTEGER: 7");
    assert_eq!(at(format!("{REACT}.3.4.1")), "INTEGER: 2");
    assert_eq!(at(format!("{REACT}.4.4.1")), "INTEGER: 2");
    assert_eq!(at(format!("{REACT}.10.4.1")), "INTEGER: 1");

    // the jitter row, column by column from the same document
    let j = &latest[0];
    assert_eq!(j["return_code"], "ok", "{j}");
    let unit = if j["precision"] == "us" { 1.0 } else { 1000.0 };
    let gauge = |col: u32, v: u64| assert_eq!(at(format!("{JITTER}.{col}.1")), format!("Gauge32: {v}"), "column {col}");
    gauge(1, j["rtt_us"]["count"].as_u64().unwrap());
    gauge(2, units(&j["rtt_us"]["sum"], unit));
    gauge(4, units(&j["rtt_us"]["min"], unit));
    gauge(5, units(&j["rtt_us"]["max"], unit));
    gauge(8, j["jitter_us"]["sd"]["pos_count"].as_u64().unwrap());
    gauge(13, j["jitter_us"]["sd"]["neg_count"].as_u64().unwrap());
    gauge(18, j["jitter_us"]["ds"]["pos_count"].as_u64().unwrap());
    gauge(26, j["loss"]["sd"].as_u64().unwrap());
    gauge(27, j["loss"]["ds"].as_u64().unwrap());
    gauge(29, j["loss"]["mia"].as_u64().unwrap());
    gauge(46, units(&j["jitter_us"]["avg"], unit));
    gauge(59, j["over_threshold"].as_u64().unwrap());
    assert_eq!(at(format!("{JITTER}.31.1")), "INTEGER: 1");
    // no codec: no MOS, no ICPIF; clocks not checked: no NTPState, no one-way columns
    for col in [42, 43, 51, 33] {
        assert_eq!(at(format!("{JITTER}.{col}.1")), format!("absent: {JITTER}.{col}.1"));
    }
    // the hour's jitter statistics, as /api/v1/operations/1/aggregated has them: one row, indexed
    // (1, the hour's start as a TimeStamp: 0 unless the hour began after snmpd started)
    let hours = api(http, "/api/v1/operations/1/aggregated");
    assert_eq!(hours.as_array().unwrap().len(), 1, "{hours}");
    let h = &hours[0]["jitter"];
    let starts: Vec<&str> = rows.iter().filter_map(|(o, _)| o.strip_prefix(&format!("{STATS}.4.1."))).collect();
    assert_eq!(starts.len(), 1, "{rows:#?}");
    let stats = |col: u32| at(format!("{STATS}.{col}.1.{}", starts[0]));
    assert_eq!(stats(4), format!("Counter32: {}", h["rtt_us"]["count"]), "{hours}");
    assert_eq!(stats(34), format!("Counter32: {}", h["loss_sd"]));
    assert_eq!(stats(8), format!("Gauge32: {}", units(&h["rtt_us"]["min"], unit)));
    // only udp-jitter has a jitter row
    assert!(!rows.iter().any(|(o, _)| o.starts_with(JITTER) && !o.ends_with(".1")), "{rows:#?}");

    // the master restarts on the same socket: the subagent registers again by itself
    drop(master);
    let _ = std::fs::remove_file(&socket);
    let master = Snmpd::start(dir.path(), port, &socket, trap_port).unwrap();
    let again = wait_some("the tables after the master's restart", Duration::from_secs(60), || {
        Some(get1(master.port, &format!("{ADMIN}.4.1"))).filter(|v| v == "INTEGER: 9")
    });
    assert_eq!(again, "INTEGER: 9");
    let after = walk(master.port);
    // the same runs: every instance but the life and time stamps reads the same
    assert_eq!(after.len(), rows.len(), "{after:#?}");
    let ops = api(http, "/api/v1/operations");
    assert_eq!(ops.as_array().unwrap().len(), 4);

    // operation 4's timeout reaction (action trap) reached snmptrapd through the master as
    // rttMonNotificationV2 with the reaction's instance: rttMonReactVar timeout(7), occurred
    if let Some(trapd) = trapd {
        let text = wait_some("the reaction's trap at snmptrapd", Duration::from_secs(30), || {
            Some(trapd.text()).filter(|t| t.contains("1.3.6.1.4.1.9.9.42.2.0.8"))
        });
        for line in [
            ".1.3.6.1.6.3.1.1.4.1.0 = OID: .1.3.6.1.4.1.9.9.42.2.0.8",
            ".1.3.6.1.4.1.9.9.42.1.2.1.1.12.4 = STRING: \"dead port\"",
            ".1.3.6.1.4.1.9.9.42.1.2.19.1.2.4.1 = INTEGER: 7",
            ".1.3.6.1.4.1.9.9.42.1.2.19.1.10.4.1 = INTEGER: 1",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }
}

/// rttMonScheduleAdminEntry, rttMonStatsCaptureEntry, rttMonStatsCollectEntry,
/// rttMonHistoryCollectionEntry, rttMonLatestHTTPOperEntry, rttMonLatestIcmpJitterOperEntry.
const SCHEDULE: &str = "1.3.6.1.4.1.9.9.42.1.2.5.1";
const CAPTURE: &str = "1.3.6.1.4.1.9.9.42.1.3.1.1";
const COLLECT: &str = "1.3.6.1.4.1.9.9.42.1.3.2.1";
const HISTORY: &str = "1.3.6.1.4.1.9.9.42.1.4.1.1";
const HTTP: &str = "1.3.6.1.4.1.9.9.42.1.5.1.1";
const ICMP_JITTER: &str = "1.3.6.1.4.1.9.9.42.1.5.4.1";

/// `RttResponseSense` of a return code as the run document names it.
fn sense_of(code: &str) -> u32 {
    match code {
        "ok" => 1,
        "over_threshold" => 3,
        "timeout" => 4,
        "no_connection" => 6,
        "dns_server_timeout" => 11,
        "tcp_connect_timeout" => 12,
        "http_transaction_timeout" => 13,
        "dns_query_error" => 14,
        "http_error" => 15,
        other => panic!("no sense for {other}"),
    }
}

/// A value in µs as whole ms, rounded, as the tables state it.
fn ms(us: &Value) -> u64 {
    units(us, 1000.0)
}

#[test]
fn snmpwalk_reads_schedule_hourly_history_http_dns_and_icmp_jitter_rows_with_the_apis_values() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agentx");
    let (port, trap_port) = (free_udp(), free_udp());
    let Some(master) = Snmpd::start(dir.path(), port, &socket, trap_port) else { return };
    let web = crate::http_op::server(None);
    // each part that needs what the machine may lack says why it is skipped
    let dns = crate::dns::dnsmasq("127.0.0.1");
    let root = crate::common::is_root();
    if !root {
        eprintln!("the icmp-jitter part is skipped: icmp-jitter needs a raw socket (root or CAP_NET_RAW)");
    }
    // one run each in the test's time (frequency 60 s): the walk and the API see the same run
    let mut cfg = AgentToml::new()
        .http(0)
        .store(&dir.path().join("runs.db"))
        .snmp(&format!("unix:{}", socket.display()))
        .operation(
            Op::new("icmp-echo", "127.0.0.1")
                .id(11)
                .key("timeout", "1s")
                .key("frequency", "60s")
                .key("life", "2h")
                .key("ageout", "10m"),
        )
        .operation(
            Op::new("http", &format!("http://{}/ok", web.addr)).id(12).key("timeout", "5s").key("frequency", "60s"),
        );
    if let Some((_, dns_port)) = &dns {
        cfg = cfg.operation(
            Op::new("dns", "host.test.example")
                .id(13)
                .key("name_server", "127.0.0.1")
                .key("port", *dns_port)
                .key("timeout", "1s")
                .key("frequency", "60s"),
        );
    }
    if root {
        cfg = cfg.operation(Op::new("icmp-jitter", "127.0.0.1").id(14).key("timeout", "1s").key("frequency", "60s"));
    }
    let agent = InProcess::start(&cfg);
    let http = agent.http();
    let ids: Vec<u32> = [11, 12].into_iter().chain(dns.as_ref().map(|_| 13)).chain(root.then_some(14)).collect();
    let latest: std::collections::BTreeMap<u32, Value> = ids
        .iter()
        .map(|&id| {
            let doc = wait_some(&format!("a stored run of operation {id}"), Duration::from_secs(60), || {
                crate::common::get(http, &format!("/api/v1/operations/{id}/latest"))
                    .filter(|(c, _)| *c == 200)
                    .map(|(_, b)| serde_json::from_str::<Value>(&b).unwrap())
            });
            (id, doc)
        })
        .collect();
    let rows = wait_some("every operation's latest-RTT sense in a walk", Duration::from_secs(30), || {
        let w = walk(master.port);
        (w.iter().filter(|(o, _)| o.starts_with(&format!("{LATEST}.2."))).count() == ids.len()).then_some(w)
    });
    let at = |oid: String| {
        rows.iter().find(|(o, _)| *o == oid).map(|(_, v)| v.clone()).unwrap_or_else(|| format!("absent: {oid}"))
    };
    let keys: Vec<Vec<u32>> = rows.iter().map(|(o, _)| oid_key(o)).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{rows:#?}");
    let bulk = snmp("snmpbulkwalk", master.port, &[RTTMON]);
    assert_eq!(bulk.iter().map(|(o, _)| o).collect::<Vec<_>>(), rows.iter().map(|(o, _)| o).collect::<Vec<_>>());

    // the schedule as configured: life 2 h, ageout 10 min (both columns), not recurring, start
    // now(2), started at a TimeStamp no later than its run's; http's life is forever
    for (col, want) in [(1, 7200), (3, 600), (4, 2), (5, 600), (6, 2)] {
        assert_eq!(at(format!("{SCHEDULE}.{col}.11")), format!("INTEGER: {want}"), "schedule column {col}");
    }
    assert_eq!(at(format!("{SCHEDULE}.1.12")), "INTEGER: 2147483647");
    assert_eq!(at(format!("{SCHEDULE}.7.11")), format!("absent: {SCHEDULE}.7.11"));
    // `-Ot`: TimeTicks as a bare number of hundredths
    let ticks = |v: String| -> u64 { v.parse().unwrap_or_else(|_| panic!("not ticks: {v}")) };
    let started = ticks(at(format!("{SCHEDULE}.2.11")));
    assert!((1..=ticks(at(format!("{LATEST}.5.11")))).contains(&started), "{rows:#?}");

    // the hour of operation 11 as /api/v1/operations/11/aggregated has it, at path, hop and
    // distribution bucket 1
    let hours = api(http, "/api/v1/operations/11/aggregated");
    assert_eq!(hours.as_array().unwrap().len(), 1, "{hours}");
    let h = &hours[0];
    let starts: Vec<&str> = rows.iter().filter_map(|(o, _)| o.strip_prefix(&format!("{CAPTURE}.5.11."))).collect();
    assert_eq!(starts.len(), 1, "{rows:#?}");
    let start = starts[0].strip_suffix(".1.1.1").unwrap_or_else(|| panic!("index {}", starts[0]));
    let capture = |col: u32| at(format!("{CAPTURE}.{col}.11.{start}.1.1.1"));
    let c = &h["completion_us"];
    assert_eq!(capture(5), format!("INTEGER: {}", c["count"]), "{hours}");
    assert_eq!(capture(6), format!("INTEGER: {}", h["return_codes"]["over_threshold"].as_u64().unwrap_or(0)));
    assert_eq!(capture(7), format!("Gauge32: {}", ms(&c["sum"])));
    assert_eq!(capture(10), format!("Gauge32: {}", ms(&c["max"])));
    assert_eq!(capture(11), format!("Gauge32: {}", ms(&c["min"])));
    let collect = |col: u32| at(format!("{COLLECT}.{col}.11.{start}.1.1"));
    assert_eq!(collect(2), format!("INTEGER: {}", h["return_codes"]["timeout"].as_u64().unwrap_or(0)));
    assert_eq!(collect(8), "Hex-STRING: 7F 00 00 01");
    assert_eq!(collect(3), format!("absent: {COLLECT}.3.11.{start}.1.1"), "busies are not kept per hour");

    // its history as /api/v1/operations/11/history has it: one run, bucket 1 of life 1
    let history = api(http, "/api/v1/operations/11/history");
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    let run = &history[0]["report"];
    assert_eq!(
        at(format!("{HISTORY}.7.11.1.1.1")),
        format!("INTEGER: {}", sense_of(run["return_code"].as_str().unwrap()))
    );
    assert_eq!(at(format!("{HISTORY}.6.11.1.1.1")), format!("Gauge32: {}", ms(&run["rtt_us"]["avg"])), "{run}");
    assert_eq!(at(format!("{HISTORY}.5.11.1.1.1")), "Hex-STRING: 7F 00 00 01");
    assert_eq!(rows.iter().filter(|(o, _)| o.starts_with(&format!("{HISTORY}.7.11."))).count(), 1);

    // http: type http(7), httpAppl(25), the URL; each phase of its latest run, in ms; no DNS
    // time (the URL holds an address); no history (the MIB keeps none for http)
    let doc = &latest[&12];
    let d = &doc["http"];
    assert_eq!(doc["return_code"], "ok", "{doc}");
    assert_eq!(at(format!("{ADMIN}.4.12")), "INTEGER: 7");
    assert_eq!(at(format!("{ECHO}.1.12")), "INTEGER: 25");
    assert_eq!(at(format!("{ECHO}.15.12")), format!("STRING: \"http://{}/ok\"", web.addr));
    assert_eq!(at(format!("{LATEST}.1.12")), format!("Gauge32: {}", ms(&doc["rtt_us"]["avg"])));
    assert_eq!(at(format!("{HTTP}.1.12")), format!("Gauge32: {}", ms(&d["total_us"])), "{doc}");
    assert_eq!(at(format!("{HTTP}.2.12")), format!("absent: {HTTP}.2.12"));
    assert_eq!(at(format!("{HTTP}.3.12")), format!("Gauge32: {}", ms(&d["connect_us"])));
    let transaction = d["first_byte_us"].as_f64().unwrap() + d["transfer_us"].as_f64().unwrap();
    assert_eq!(at(format!("{HTTP}.4.12")), format!("Gauge32: {}", ms(&transaction.into())));
    assert_eq!(at(format!("{HTTP}.5.12")), "Gauge32: 5");
    assert_eq!(at(format!("{HTTP}.6.12")), "INTEGER: 1");
    assert!(!rows.iter().any(|(o, _)| o.starts_with(&format!("{HISTORY}.7.12."))), "{rows:#?}");

    // dns: type dns(8), dnsAppl(26), the name and the server asked; its latest RTT and sense
    if dns.is_some() {
        let doc = &latest[&13];
        assert_eq!(at(format!("{ADMIN}.4.13")), "INTEGER: 8");
        assert_eq!(at(format!("{ECHO}.1.13")), "INTEGER: 26");
        assert_eq!(at(format!("{ECHO}.11.13")), "STRING: \"host.test.example\"");
        assert_eq!(at(format!("{ECHO}.12.13")), "Hex-STRING: 7F 00 00 01");
        let code = doc["return_code"].as_str().unwrap();
        assert_eq!(at(format!("{LATEST}.2.13")), format!("INTEGER: {}", sense_of(code)), "{doc}");
        assert_eq!(at(format!("{LATEST}.1.13")), format!("Gauge32: {}", ms(&doc["rtt_us"]["avg"])), "{doc}");
    }

    // icmp-jitter: its latest run in CISCO-RTTMON-ICMP-MIB's table, ms
    if root {
        let doc = &latest[&14];
        let gauge = |col: u32, v: u64| {
            assert_eq!(at(format!("{ICMP_JITTER}.{col}.14")), format!("Gauge32: {v}"), "column {col}: {doc}")
        };
        gauge(1, doc["rtt_us"]["count"].as_u64().unwrap());
        gauge(2, ms(&doc["rtt_us"]["sum"]));
        gauge(4, ms(&doc["rtt_us"]["min"]));
        gauge(5, ms(&doc["rtt_us"]["max"]));
        let loss = &doc["loss"];
        gauge(26, ["sd", "ds", "mia"].iter().map(|k| loss[k].as_u64().unwrap()).sum());
        gauge(27, loss["out_of_sequence"].as_u64().unwrap());
        gauge(32, loss["late"].as_u64().unwrap());
        gauge(8, doc["jitter_us"]["sd"]["pos_count"].as_u64().unwrap());
        match doc["jitter_us"]["avg"].as_f64() {
            Some(_) => gauge(44, ms(&doc["jitter_us"]["avg"])),
            None => assert_eq!(at(format!("{ICMP_JITTER}.44.14")), format!("absent: {ICMP_JITTER}.44.14")),
        }
        let code = doc["return_code"].as_str().unwrap();
        assert_eq!(at(format!("{ICMP_JITTER}.31.14")), format!("INTEGER: {}", sense_of(code)));
        assert_eq!(at(format!("{ADMIN}.4.14")), "INTEGER: 16");
    }
}

/// The subtree walked while the agent measures: 24 operations every second, each run stored
/// (and the view rebuilt) as walks go on, three walkers at once. Every walk ends without an
/// error, in strict OID order, with all 24 operations' configuration rows: a rebuild between two
/// GetNext requests never loses, repeats or reorders an instance.
#[test]
fn walks_under_load_stay_ordered_and_whole() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agentx");
    let port = free_udp();
    let Some(master) = Snmpd::start(dir.path(), port, &socket, free_udp()) else { return };
    let v1 = free_udp();
    let mut cfg = AgentToml::new()
        .http(0)
        .store(&dir.path().join("runs.db"))
        .workers(8)
        .responder(Responder::loopback(v1))
        .snmp(&format!("unix:{}", socket.display()));
    for id in 1..=24 {
        cfg = cfg.operation(
            Op::new("udp-echo", "127.0.0.1")
                .id(id)
                .key("control_port", v1)
                .key("timeout", "500ms")
                .key("frequency", "1s"),
        );
    }
    let agent = InProcess::start(&cfg);
    let http = agent.http();
    wait_some("a walk with all 24 operations", Duration::from_secs(30), || {
        let w = walk(master.port);
        (w.iter().filter(|(o, _)| o.starts_with(&format!("{ADMIN}.4."))).count() == 24).then_some(())
    });
    let stored = || -> u64 {
        (1..=24)
            .map(|id| {
                api(http, &format!("/api/v1/operations/{id}/history?limit=1000")).as_array().unwrap().len() as u64
            })
            .sum()
    };
    // rounds of three concurrent walkers until a whole second of runs (24) was stored meanwhile
    let runs_before = stored();
    let mut walks: Vec<Vec<(String, String)>> = Vec::new();
    for _ in 0..20 {
        let walkers: Vec<_> = (0..3)
            .map(|i| {
                std::thread::spawn(move || {
                    (0..2)
                        .map(|_| snmp(if i == 0 { "snmpwalk" } else { "snmpbulkwalk" }, port, &[RTTMON]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        walks.extend(walkers.into_iter().flat_map(|w| w.join().unwrap()));
        if stored() >= runs_before + 24 {
            break;
        }
    }
    assert!(stored() >= runs_before + 24, "no second of runs was stored during {} walks", walks.len());
    for w in &walks {
        let keys: Vec<Vec<u32>> = w.iter().map(|(o, _)| oid_key(o)).collect();
        assert!(keys.windows(2).all(|k| k[0] < k[1]), "a walk out of order: {w:#?}");
        let types: Vec<&(String, String)> = w.iter().filter(|(o, _)| o.starts_with(&format!("{ADMIN}.4."))).collect();
        assert_eq!(types.len(), 24, "{w:#?}");
        assert!(types.iter().all(|(_, v)| v == "INTEGER: 5"), "{types:?}");
        // the walk reached the end of the subtree: its last instance is past the admin table
        assert!(w.last().is_some_and(|(o, _)| oid_key(o) > oid_key(&format!("{ADMIN}.99"))), "{w:#?}");
    }
}
