//! The measurement mesh across a lab (issue 17): four sites, each an `ipsla agent` process in its
//! own network namespace, every pair of sites joined by one of the lab's impairment links (six
//! links; a site's address is on its loopback and routed over the link to each other site), one
//! mesh file with a udp-jitter test. The link between a and b loses a quarter of what a sends to b
//! and nothing the other way. Every agent remote-writes into one real Prometheus in a fifth
//! namespace, the hub, joined to the sites by a plain LAN (a kernel bridge) that also carries the
//! agents' HTTP APIs, so that only the measured traffic crosses the impairment links.
//!
//! PromQL then returns exactly the 12 source → destination pairs; a → b has lost probes on the
//! way out only (sd), b → a on the way back only (ds, its replies cross the lossy direction), and
//! the ten others nothing at all. The grid of d, which measures none of that, shows all 12 cells
//! from the four agents, the two lossy ones amber.
//!
//! Needs root (the lab) and `prometheus`; skipped, with the reason printed, without either.

use crate::common::{Prometheus, alone, get, ipsla};
use ipsla_agent::mesh::operation_id;
use ipsla_lab::{ChildGuard, Host, Impairment, Lab, LinkConfig, Loss};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const SITES: [&str; 4] = ["a", "b", "c", "d"];
/// The agents' HTTP port, on every address of their namespace.
const HTTP: u16 = 9167;
/// Prometheus's port in the hub.
const PROM: u16 = 9090;
/// Probes per run of the test (20 ms apart; a run waits 3 s for a lost one's reply, long enough
/// that a loaded machine's pauses lose nothing on the clean links).
const PACKETS: u32 = 20;

/// Site `i`'s address: on its loopback, routed over the lab link to each other site.
fn site_addr(i: usize) -> String {
    format!("10.78.0.{}", i + 1)
}

/// The mesh file: the four sites, their agents on the LAN (`lan[i + 1]`), one udp-jitter test.
fn mesh_file(path: &Path, lan: &[std::net::Ipv4Addr]) {
    let mut top = toml::Table::new();
    let mut responder = toml::Table::new();
    responder.insert("v1_port".into(), 1967.into());
    responder.insert("v2".into(), false.into());
    top.insert("responder".into(), responder.into());
    let sites = SITES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut t = toml::Table::new();
            t.insert("name".into(), (*name).into());
            t.insert("address".into(), site_addr(i).into());
            t.insert("http".into(), format!("http://{}:{HTTP}", lan[i + 1]).into());
            toml::Value::Table(t)
        })
        .collect();
    top.insert("site".into(), toml::Value::Array(sites));
    let mut test = toml::Table::new();
    for (k, v) in
        [("name", "voice"), ("type", "udp-jitter"), ("interval", "20ms"), ("timeout", "3s"), ("frequency", "4s")]
    {
        test.insert(k.into(), v.into());
    }
    test.insert("packets".into(), i64::from(PACKETS).into());
    top.insert("test".into(), toml::Value::Array(vec![test.into()]));
    std::fs::write(path, toml::to_string(&top).unwrap()).unwrap();
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The whole lab, its processes killed and its namespaces removed when dropped (fields drop in
/// order: the processes before the lab).
struct MeshLab {
    _agents: Vec<ChildGuard>,
    prometheus: Prometheus,
    sites: Vec<Host>,
    hub: Host,
    logs: Vec<std::path::PathBuf>,
    _lab: Lab,
}

impl MeshLab {
    fn start(dir: &Path) -> Option<MeshLab> {
        if !ipsla_lab::available() {
            eprintln!("skipped: the lab needs root, /dev/net/tun and iproute2");
            return None;
        }
        let mut lab = Lab::new("mesh").unwrap();
        let sites: Vec<Host> = SITES.iter().map(|n| lab.host(n).unwrap()).collect();
        let hub = lab.host("hub").unwrap();
        // a link per pair; only a → b loses (a is the link's A side)
        for (i, site) in sites.iter().enumerate() {
            ip(&["-n", site.name(), "addr", "add", &format!("{}/32", site_addr(i)), "dev", "lo"]);
        }
        for i in 0..SITES.len() {
            for j in i + 1..SITES.len() {
                let mut cfg = LinkConfig { seed: (i * 4 + j) as u64, ..LinkConfig::default() };
                if (i, j) == (0, 1) {
                    cfg.a_to_b = Impairment { loss: Loss::Bernoulli(0.25), ..Impairment::default() };
                }
                let link = lab.link(&sites[i], &sites[j], cfg).unwrap();
                let (to_j, to_i) = (format!("{}/32", site_addr(j)), format!("{}/32", site_addr(i)));
                ip(&["-n", sites[i].name(), "route", "add", &to_j, "via", &link.b_addr().to_string()]);
                ip(&["-n", sites[j].name(), "route", "add", &to_i, "via", &link.a_addr().to_string()]);
            }
        }
        let lan = lab.lan(&hub, &sites.iter().collect::<Vec<_>>()).unwrap();
        // Prometheus in the hub, spawned from a thread in its namespace
        let prometheus = hub.run(|| Prometheus::receiver_on(dir, "0.0.0.0", PROM)).unwrap()?;
        let mesh = dir.join("mesh.toml");
        mesh_file(&mesh, &lan);
        let mut agents = Vec::new();
        let mut logs = Vec::new();
        for (i, site) in SITES.iter().enumerate() {
            let cfg = crate::common::AgentToml::new()
                .agent_key("http", format!("0.0.0.0:{HTTP}"))
                .store(&dir.join(format!("{site}.db")))
                .workers(2)
                .mesh(&mesh, site)
                .remote_write(
                    crate::common::RemoteWrite::to(&format!("http://{}:{PROM}/api/v1/write", lan[0]))
                        .key("max_backoff", "1s"),
                )
                .write(&dir.join(format!("{site}.toml")));
            let log = dir.join(format!("{site}.log"));
            let mut cmd = sites[i].command(ipsla().get_program());
            cmd.args(["agent", "--config"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            agents.push(sites[i].spawn(&mut cmd).unwrap());
            logs.push(log);
        }
        Some(MeshLab { _agents: agents, prometheus, sites, hub, logs, _lab: lab })
    }

    /// `GET path` on site `i`'s agent, from inside its namespace.
    fn get(&self, i: usize, path: &str) -> Option<(u16, String)> {
        self.sites[i].run(|| get(HTTP, path)).unwrap()
    }

    /// An instant query, from inside the hub.
    fn query(&self, q: &str) -> Vec<Value> {
        self.hub.run(|| self.prometheus.try_query(q)).unwrap().unwrap_or_default()
    }

    /// Polls `f` until it gives Ok; on `limit`, fails naming `what`, with the last Err and every
    /// log.
    fn wait<T>(&self, what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
        let start = Instant::now();
        loop {
            let last = match f() {
                Ok(v) => return v,
                Err(e) => e,
            };
            if start.elapsed() > limit {
                let logs: String = SITES
                    .iter()
                    .zip(&self.logs)
                    .map(|(s, l)| format!("--- agent {s}:\n{}\n", std::fs::read_to_string(l).unwrap_or_default()))
                    .collect();
                panic!(
                    "timed out after {limit:?} waiting for {what}; last: {last}\n{logs}--- prometheus:\n{}",
                    self.prometheus.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `{src, dst[, direction]} -> value` of a query's result.
fn by_labels(result: &[Value], with_direction: bool) -> BTreeMap<(String, String, String), f64> {
    result
        .iter()
        .map(|s| {
            let m = &s["metric"];
            let l = |k: &str| m[k].as_str().unwrap_or("").to_string();
            let dir = if with_direction { l("direction") } else { String::new() };
            ((l("src"), l("dst"), dir), crate::common::prom::value(s))
        })
        .collect()
}

#[test]
fn four_sites_in_namespaces_write_every_pair_to_one_prometheus_with_the_loss_in_its_direction() {
    let _machine = alone();
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = MeshLab::start(dir.path()) else { return };
    for (i, site) in SITES.iter().enumerate() {
        lab.wait(&format!("site {site}'s agent"), Duration::from_secs(30), || {
            lab.get(i, "/-/healthy").filter(|(c, _)| *c == 200).ok_or("no answer".to_string())
        });
    }
    let pairs: BTreeSet<(String, String)> = SITES
        .iter()
        .flat_map(|s| SITES.iter().filter(move |d| *d != s).map(move |d| (s.to_string(), d.to_string())))
        .collect();
    assert_eq!(pairs.len(), 12);

    // three runs of every pair in Prometheus, from the four agents
    let runs = lab.wait("three runs of each of the 12 pairs in Prometheus", Duration::from_secs(120), || {
        let r = by_labels(&lab.query("sum by (src, dst) (count_over_time(ipsla_operation_success[10m]))"), false);
        if r.len() == 12 && r.values().all(|n| *n >= 3.0) { Ok(r) } else { Err(format!("{r:?}")) }
    });
    // exactly the 12 pairs, each with its own labels
    let got: BTreeSet<(String, String)> = runs.keys().map(|(s, d, _)| (s.clone(), d.clone())).collect();
    assert_eq!(got, pairs);
    let series = lab.query("group by (src, dst, op) (ipsla_operation_success)");
    assert_eq!(series.len(), 12, "one operation per pair: {series:?}");
    for s in &series {
        let op = s["metric"]["op"].as_str().unwrap();
        assert_eq!(op, operation_id("voice", s["metric"]["dst"].as_str().unwrap()).to_string(), "{s}");
    }

    // the loss, per pair and direction, over every run shipped so far
    let lost = by_labels(&lab.query("sum by (src, dst, direction) (sum_over_time(ipsla_loss_packets[10m]))"), true);
    assert_eq!(lost.len(), 36, "sd, ds and unknown of each pair: {lost:?}");
    let of = |s: &str, d: &str, dir: &str| lost[&(s.to_string(), d.to_string(), dir.to_string())];
    assert!(of("a", "b", "sd") > 0.0 && of("a", "b", "ds") == 0.0, "a → b loses on the way out: {lost:?}");
    assert!(of("b", "a", "ds") > 0.0 && of("b", "a", "sd") == 0.0, "b → a loses on the way back: {lost:?}");
    for ((s, d, dir), n) in &lost {
        if ![("a", "b"), ("b", "a")].contains(&(s.as_str(), d.as_str())) {
            assert_eq!(*n, 0.0, "{s} → {d} {dir}: {lost:?}");
        }
    }
    let ratio = by_labels(&lab.query("max by (src, dst) (max_over_time(ipsla_loss_ratio[10m]))"), false);
    assert_eq!(ratio.values().filter(|r| **r == 0.0).count(), 10, "{ratio:?}");

    // d's grid: every row, from the four agents; the two lossy pairs amber, the others green
    let lan = |i: usize| format!("http://10.79.0.{}:{HTTP}", i + 2);
    let cells: Vec<String> = SITES
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            SITES.iter().filter(move |d| *d != s).map(move |d| {
                let class = if [("a", "b"), ("b", "a")].contains(&(*s, *d)) { "over" } else { "ok" };
                let base = if *s == "d" { String::new() } else { lan(i) };
                format!(
                    r#"<td class="{class}" title="{s} → {d}: OK"><a href="{base}/operations/{}">"#,
                    operation_id("voice", d)
                )
            })
        })
        .collect();
    let page = lab.wait("d's grid with the 12 cells, a ↔ b amber", Duration::from_secs(60), || {
        let (_, page) = lab.get(3, "/mesh?part=main").ok_or("no answer".to_string())?;
        match cells.iter().find(|c| !page.contains(*c)) {
            None => Ok(page),
            Some(c) => Err(format!("no {c} in {page}")),
        }
    });
    assert_eq!(page.matches("<td class=").count(), 12 + 4, "12 cells and the 4 of a site to itself: {page}");
    assert_eq!(page.matches(r#"<td class="unknown""#).count(), 0, "{page}");
    eprintln!("runs per pair in Prometheus: {runs:?}\nprobes lost: {lost:?}");
}
