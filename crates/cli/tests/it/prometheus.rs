//! A real Prometheus (the `prometheus` binary, 2.x) scrapes `ipsla agent`'s /metrics: the target
//! is up with no scrape error, the metric types and label values (quotes and a backslash in the
//! tag) survive its OpenMetrics parser, the values it stores are the agent's, and the classic
//! text format served to other scrapers passes `promtool check metrics`.
//!
//! Skipped, with the reason printed, when `prometheus` is not on PATH (`scripts/test.sh` installs
//! it with apt).

use crate::common::prom::value;
use crate::common::{AgentToml, InProcess, Op, Prometheus, Responder, free_udp, get, on_path, wait_some};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn prometheus_scrapes_the_agent() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let (v1, echo) = (free_udp(), free_udp());
    // the agent in-process: what is scraped is its /metrics, not its process
    let agent = InProcess::start(
        &AgentToml::new()
            .http(0)
            .store(&dir.path().join("runs.db"))
            .workers(2)
            // this test reads the RTT histogram, which is off by default
            .agent_key("metrics_histograms", true)
            .responder(Responder::loopback(v1))
            .operation(
                Op::new("udp-echo", "127.0.0.1")
                    .id(7)
                    .key("port", echo)
                    .key("control_port", v1)
                    .key("timeout", "200ms")
                    .key("frequency", "1s")
                    .key("tag", r#"edge "A" \ site"#),
            ),
    );
    let http = agent.http();

    let Some(prom) = Prometheus::start(dir.path(), http, &[]) else {
        return;
    };
    // a scrape after the first runs: the RTT histogram of operation 7 has observations
    let rtt = r#"ipsla_rtt_seconds_count{job="ipsla",op="7"}"#;
    let counts = wait_some("a scraped RTT histogram", Duration::from_secs(120), || {
        prom.query(rtt).filter(|r| value(&r[0]) >= 1.0)
    });
    assert_eq!(counts.len(), 1, "{counts:?}");
    // the families carry `op`; type, target and tag come from the info metric, joined on op
    let joined = prom
        .query(
            r#"ipsla_rtt_seconds_count{op="7"} * on(instance, op) group_left(type, target, tag) ipsla_operation_info"#,
        )
        .unwrap();
    assert!(joined.len() == 1 && value(&joined[0]) >= 1.0, "{joined:?}");
    let labels = &joined[0]["metric"];
    assert_eq!(labels["type"], "udp-echo");
    assert_eq!(labels["target"], format!("127.0.0.1:{echo}"));
    assert_eq!(labels["tag"], r#"edge "A" \ site"#, "label escaping survives the round trip");
    assert_eq!(labels["instance"], format!("127.0.0.1:{http}"));

    let up = prom.query(r#"up{job="ipsla"}"#).unwrap();
    assert_eq!(value(&up[0]), 1.0);
    let ok = prom.query(r#"ipsla_operation_return_code{op="7",code="ok"}"#).unwrap();
    assert_eq!(value(&ok[0]), 1.0, "loopback echo succeeds");
    // only the latest run's code has a series: the others are absent, not 0
    let timeout = prom.try_query(r#"ipsla_operation_return_code{op="7",code="timeout"}"#);
    assert_eq!(timeout, Ok(Vec::new()));
    // one probe per run, so the histogram counts exactly the runs (one query: one scrape)
    let diff = prom.query(r#"ipsla_operations_total{op="7"} - ipsla_rtt_seconds_count{op="7"}"#).unwrap();
    assert_eq!(value(&diff[0]), 0.0, "{diff:?}");
    let diff =
        prom.query(r#"ipsla_rtt_seconds_bucket{op="7",le="+Inf"} - ignoring(le) ipsla_rtt_seconds_count"#).unwrap();
    assert_eq!(value(&diff[0]), 0.0, "{diff:?}");

    // the scrape itself: healthy, no parse error, and the families typed as we declared them
    let targets = prom.api("/api/v1/targets").unwrap();
    let t = &targets["data"]["activeTargets"][0];
    assert_eq!(t["health"], "up", "{t}\n{}", prom.log());
    assert_eq!(t["lastError"], "", "{t}");
    let meta = wait_some("metric metadata", Duration::from_secs(60), || {
        prom.api("/api/v1/metadata").filter(|m| m["data"]["ipsla_rtt_seconds"].is_array())
    });
    assert_eq!(meta["data"]["ipsla_rtt_seconds"][0]["type"], "histogram");
    assert_eq!(meta["data"]["ipsla_operations"][0]["type"], "counter");
    assert_eq!(meta["data"]["ipsla_operation_success"][0]["type"], "gauge");
    let log = prom.log();
    // a scraper without OpenMetrics gets the classic text format, which promtool (same package)
    // lints: counter families named as their `_total` samples, each with help
    promtool_check(&get(http, "/metrics").unwrap().1);
    assert!(!log.lines().any(|l| l.contains("level=warn") && l.contains("scrape")), "{log}");
}

/// `promtool check metrics` (package `prometheus`, which `scripts/test.sh` installs) on a classic
/// text exposition: no error and no lint (counters named `_total`, help on every family, no
/// non-base units). Skipped, with the reason printed, when promtool is not on PATH.
pub fn promtool_check(text: &str) {
    let Some(promtool) = on_path("promtool") else {
        eprintln!("promtool check skipped: no `promtool` on PATH (apt-get install prometheus)");
        return;
    };
    let mut lint = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}
