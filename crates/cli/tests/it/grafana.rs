//! What `dist/` gives an operator to watch agents with: the Prometheus rules
//! (`dist/prometheus/ipsla-rules.yml`, unit-tested by `ipsla-rules.test.yml`) and the Grafana
//! dashboard (`dist/grafana/ipsla-dashboard.json`). The rules pass `promtool`; a real Prometheus
//! scraping an in-process agent loads them healthy, and every expression of every dashboard panel
//! and template variable parses and returns series from that agent, both with every variable on
//! "All" and with one operation selected.
//!
//! The Prometheus tests are skipped, with the reason printed, when `prometheus` / `promtool` are
//! not on PATH (`scripts/test.sh` installs the `prometheus` package).

use crate::common::prom::JOB;
use crate::common::{
    AgentToml, Alert, InProcess, Op, PATIENCE, Prometheus, Reaction, Responder, Track, free_udp, on_path, wait_some,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn dist(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist").join(path)
}

fn dashboard() -> Value {
    let path = dist("grafana/ipsla-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// (panel title, expression) of every query of every panel.
fn exprs(d: &Value) -> Vec<(String, String)> {
    panels(d)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().into()))
        })
        .collect()
}

/// The template variables that query Prometheus: (name, `label_values(SELECTOR, LABEL)`, allValue).
fn variables(d: &Value) -> Vec<(String, String, String)> {
    d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let s = |x: &Value| x.as_str().unwrap().to_string();
            (s(&v["name"]), s(&v["query"]["query"]), s(&v["allValue"]))
        })
        .collect()
}

/// A value selected in a multi-value variable, as Grafana writes it into a `=~` matcher: regex
/// metacharacters escaped, the backslash doubled for the PromQL string.
fn regex_escape(v: &str) -> String {
    v.chars().map(|c| if r"\^$.|?*+()[]{}".contains(c) { format!(r"\\{c}") } else { c.to_string() }).collect()
}

/// `expr` with Grafana's variables replaced: the template variables by `values` (name → text),
/// the interval variables by fixed windows.
fn substitute(expr: &str, values: &[(String, String)]) -> String {
    let mut e = expr.to_string();
    // longest names first: $__rate_interval before $__range
    for (name, v) in [("$__rate_interval", "1m"), ("$__interval", "15s"), ("$__range", "5m")] {
        e = e.replace(name, v);
    }
    for (name, v) in values {
        e = e.replace(&format!("${{{name}}}"), v).replace(&format!("${name}"), v);
    }
    assert!(!e.contains('$'), "a variable this test does not know in {expr}");
    e
}

/// `label_values(SELECTOR, LABEL)` as an instant query with the same answer.
fn label_values_query(q: &str) -> String {
    let inner = q.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')).unwrap_or_else(|| panic!("{q}"));
    let (selector, label) = inner.rsplit_once(',').unwrap();
    format!("count by ({}) ({})", label.trim(), selector.trim())
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    let _machine = crate::common::shared();
    let Some(promtool) = on_path("promtool") else {
        eprintln!("skipped: no `promtool` on PATH (apt-get install prometheus)");
        return;
    };
    let rules = dist("prometheus/ipsla-rules.yml");
    let tests = dist("prometheus/ipsla-rules.test.yml");
    for (args, said) in [
        (["check", "rules"], format!("Checking {}\n  SUCCESS: 12 rules found\n\n", rules.display())),
        (["test", "rules"], format!("Unit Testing:  {}\n  SUCCESS\n\n", tests.display())),
    ] {
        let file = if args[0] == "check" { &rules } else { &tests };
        let out = Command::new(&promtool).args(args).arg(file).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {args:?} {}:\n{stdout}{stderr}", file.display());
        assert_eq!(stdout, said, "{stderr}");
    }
}

/// What holds without a Prometheus: the data source is a variable, every query uses it, the
/// variables are those the docs name, and no query turns a missing value into a number.
#[test]
fn dashboard_queries_its_datasource_variable_and_invents_no_value() {
    let _machine = crate::common::shared();
    let d = dashboard();
    assert_eq!(d["schemaVersion"], 39);
    let names: Vec<&str> =
        d["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["datasource", "job", "instance", "op", "target", "tag"]);
    let ds = &d["templating"]["list"][0];
    assert_eq!((&ds["type"], &ds["query"]), (&Value::from("datasource"), &Value::from("prometheus")));
    for (name, q, _) in variables(&d) {
        assert!(q.starts_with("label_values(ipsla_"), "variable {name}: {q}");
    }
    let mut queries = 0;
    for p in panels(&d).into_iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {title}");
        for t in p["targets"].as_array().unwrap() {
            queries += 1;
            let e = t["expr"].as_str().unwrap();
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {title}: {e}");
            // `or vector(0)` and friends would draw an outage as a measured 0
            assert!(!e.contains("vector(") && !e.contains(" or "), "panel {title}: {e}");
        }
    }
    assert_eq!(queries, exprs(&d).len());
    assert!(queries >= 25, "{queries}");
}

#[test]
fn dashboard_and_rules_against_a_real_prometheus() {
    let _machine = crate::common::shared();
    if on_path("prometheus").is_none() {
        eprintln!("skipped: no `prometheus` on PATH (apt-get install prometheus)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (v1, jitter, echo, silent) = (free_udp(), free_udp(), free_udp(), free_udp());
    let agent = InProcess::start(
        &AgentToml::new()
            .http(0)
            .store(&dir.path().join("runs.db"))
            .workers(3)
            // the per-probe panels (RTT percentiles and heatmap, one-way delay, IPDV) read the
            // histograms, which are off by default
            .agent_key("metrics_histograms", true)
            .responder(Responder::loopback(v1))
            // a voice path: MOS and ICPIF, jitter and loss by direction, one-way delay
            .operation(
                Op::new("udp-jitter", "127.0.0.1")
                    .id(1)
                    .key("port", jitter)
                    .key("control_port", v1)
                    .key("codec", "g711alaw")
                    .key("packets", 10)
                    .key("interval", "20ms")
                    .key("precision", "us")
                    .key("clock_sync", "assume")
                    .key("timeout", "300ms")
                    .key("frequency", "1s")
                    .key("tag", "voice (branch)")
                    .reaction(Reaction::immediate("connectionLoss", "alert")),
            )
            // no tag: the tag variable's "All" must still match it
            .operation(
                Op::new("udp-echo", "127.0.0.1")
                    .id(2)
                    .key("port", echo)
                    .key("control_port", v1)
                    .key("timeout", "200ms")
                    .key("frequency", "1s"),
            )
            // nobody answers: no RTT, failing, 100 % loss
            .operation(
                Op::new("udp-echo", "127.0.0.1")
                    .id(3)
                    .key("port", silent)
                    .key("control", "none")
                    .key("timeout", "200ms")
                    .key("frequency", "1s")
                    .key("tag", "nobody answers"),
            )
            .track(Track::of(1, 1))
            .alert(Alert::exec(&["true"]).key("name", "log")),
    );
    let http = agent.http();
    let rules = dist("prometheus/ipsla-rules.yml");
    let Some(prom) = Prometheus::start(dir.path(), http, &[&rules]) else {
        return;
    };
    let instance = format!("127.0.0.1:{http}");
    let minute = Duration::from_secs(120);

    // the rules load, and each has been evaluated without an error
    let groups = wait_some("the rule groups evaluated", minute, || {
        let g = prom.api("/api/v1/rules")?["data"]["groups"].as_array()?.clone();
        let rules = g.iter().flat_map(|g| g["rules"].as_array().unwrap().clone()).collect::<Vec<_>>();
        (!rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown")).then_some(g)
    });
    let names: BTreeSet<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["ipsla.alerts", "ipsla.records"]), "{}", prom.log());
    let rules: Vec<&Value> = groups.iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert_eq!(rules.len(), 12);
    for r in &rules {
        assert_eq!((&r["health"], &r["lastError"]), (&Value::from("ok"), &Value::Null), "{r}");
    }

    // the silent operation's alerts are pending (their `for` is minutes), naming what it is
    let silent_target = format!("127.0.0.1:{silent}");
    let pending = wait_some("operation 3's alerts pending", minute, || {
        let alerts = prom.api("/api/v1/alerts")?["data"]["alerts"].as_array()?.clone();
        let mine: Vec<Value> = alerts.into_iter().filter(|a| a["labels"]["op"] == "3").collect();
        (mine.len() == 2).then_some(mine)
    });
    let by_name =
        |n: &str| pending.iter().find(|a| a["labels"]["alertname"] == n).unwrap_or_else(|| panic!("{n}: {pending:?}"));
    let failing = by_name("IpslaOperationFailing");
    assert_eq!(failing["state"], "pending");
    assert_eq!(
        (&failing["labels"]["type"], &failing["labels"]["target"], &failing["labels"]["tag"]),
        (&Value::from("udp-echo"), &Value::from(silent_target.clone()), &Value::from("nobody answers"))
    );
    assert_eq!(failing["annotations"]["summary"], format!("IP SLA 3 (udp-echo to {silent_target}) failing: timeout"));
    let loss = by_name("IpslaPacketLoss");
    assert_eq!(loss["annotations"]["summary"], format!("IP SLA 3 (udp-echo to {silent_target}): 100% of probes lost"));

    let d = dashboard();
    let all: Vec<(String, String)> = variables(&d).into_iter().map(|(n, _, all)| (n, all)).collect();

    // the variables: every operation, the untagged one's tag "" included
    let var_values = |name: &str| -> BTreeSet<String> {
        let (_, q, _) = variables(&d).into_iter().find(|(n, ..)| n == name).unwrap();
        let q = substitute(&label_values_query(&q), &all);
        let r = wait_some(&format!("variable {name}: {q}"), PATIENCE, || prom.query(&q));
        r.iter().map(|s| s["metric"][name].as_str().unwrap_or("").to_string()).collect()
    };
    assert_eq!(var_values("job"), BTreeSet::from([JOB.to_string()]));
    assert_eq!(var_values("instance"), BTreeSet::from([instance.clone()]));
    assert_eq!(var_values("op"), BTreeSet::from(["1", "2", "3"].map(String::from)));
    assert_eq!(var_values("tag"), BTreeSet::from(["", "nobody answers", "voice (branch)"].map(String::from)));
    assert_eq!(var_values("target").len(), 3);

    // every panel query, every variable on All: it parses and finds series
    let results = run_all(&prom, &d, &all);
    // missing is missing: the overview's RTT and MOS columns have no row for what was not measured
    let ops_of = |title: &str, needle: &str| -> BTreeSet<String> {
        let (.., r) = results.iter().find(|(t, e, _)| t == title && e.starts_with(needle)).unwrap();
        r.iter().map(|s| s["metric"]["op"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ops_of("Operations", "ipsla_rtt_latest_seconds"), BTreeSet::from(["1".into(), "2".into()]));
    assert_eq!(ops_of("Operations", "ipsla_mos"), BTreeSet::from(["1".into()]));
    assert_eq!(ops_of("Operations", "group by"), BTreeSet::from(["1", "2", "3"].map(String::from)));

    // one operation selected, as Grafana writes the values: only its series
    let one = [
        ("job", JOB.to_string()),
        ("instance", regex_escape(&instance)),
        ("op", "1".to_string()),
        ("target", regex_escape(&format!("127.0.0.1:{jitter}"))),
        ("tag", regex_escape("voice (branch)")),
    ]
    .map(|(n, v)| (n.to_string(), v));
    for (title, expr, r) in run_all(&prom, &d, &one) {
        for s in &r {
            let op = &s["metric"]["op"];
            assert!(op.is_null() || op == "1", "panel {title}: {expr}: {s}");
        }
    }
}

/// Runs every panel query of `d` with the variables `values`: each must parse and, within
/// [`PATIENCE`], return at least one series. Fails naming every panel that did not.
fn run_all(prom: &Prometheus, d: &Value, values: &[(String, String)]) -> Vec<(String, String, Vec<Value>)> {
    let mut failed = Vec::new();
    let mut results = Vec::new();
    for (title, expr) in exprs(d) {
        let q = substitute(&expr, values);
        let start = Instant::now();
        let last = loop {
            match prom.try_query(&q) {
                Ok(r) if !r.is_empty() => break Ok(r),
                Err(e) if e != "no answer" => break Err(e),
                other if start.elapsed() > PATIENCE => break other.map(|_| Vec::new()),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        match last {
            Ok(r) if !r.is_empty() => results.push((title, expr, r)),
            Ok(_) => failed.push(format!("panel {title:?}: no series for {q}")),
            Err(e) => failed.push(format!("panel {title:?}: {e} for {q}")),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    results
}
