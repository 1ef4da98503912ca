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
