//! The agent's blackbox-style `/probe`: one run from the query string, answered with that run's
//! metrics; parameters validated as configuration keys (400 naming the parameter); a bound on
//! runs at once (429 beyond it); and a real Prometheus driving it as blackbox_exporter users do,
//! relabelling each target into `__param_target`.
//!
//! The Prometheus test is skipped, with the reason printed, when `prometheus` is not on PATH.

use crate::common::prom::value;
use crate::common::{AgentToml, InProcess, PATIENCE, Prometheus, Responder, free_tcp, free_udp, get, wait_some};
use std::net::UdpSocket;
use std::time::Duration;

/// The value of the sample line `series` (`name{labels}`) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn probe_answers_one_runs_metrics_validates_and_bounds_runs_at_once() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let agent = InProcess::start(
        &AgentToml::new().http(0).store(&dir.path().join("runs.db")).agent_key("probe_concurrency", 1),
    );
    let http = agent.http();
    // an echo service the test answers by hand: the first run is held until it does
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    echo.set_read_timeout(Some(PATIENCE)).unwrap();
    let port = echo.local_addr().unwrap().port();
    let first = std::thread::spawn(move || {
        get(http, &format!("/probe?type=udp-echo&target=127.0.0.1&port={port}&control=none&timeout=10s"))
    });
    let mut buf = [0u8; 2048];
    let (n, from) = echo.recv_from(&mut buf).unwrap();
    // the one permitted run is going: the next is refused at once
    let busy = get(http, &format!("/probe?type=udp-echo&target=127.0.0.1&port={port}&control=none"));
    assert_eq!(
        busy,
        Some((429, "1 /probe runs are going, the most at once (agent.probe_concurrency); try again later\n".into()))
    );
    echo.send_to(&buf[..n], from).unwrap();
    let (code, text) = first.join().unwrap().unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(sample(&text, "probe_success"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, &format!(r#"ipsla_operation_info{{op="1",type="udp-echo",target="127.0.0.1:{port}",tag=""}}"#)),
        Some(1.0)
    );
    assert_eq!(sample(&text, r#"ipsla_operations_total{op="1"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"ipsla_operation_return_code{op="1",code="ok"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"ipsla_rtt_seconds_count{op="1"}"#), Some(1.0));
    let rtt = sample(&text, r#"ipsla_rtt_latest_seconds{op="1"}"#).unwrap();
    let took = sample(&text, "probe_duration_seconds").unwrap();
    assert!(rtt > 0.0 && took >= rtt, "the run lasts at least its round trip: {rtt} {took}");
    assert!(!text.contains("ipsla_build_info") && !text.contains("ipsla_store_"), "only the run's families: {text}");

    // no reply (nothing listens): success 0, the return code says why, no RTT at all
    let closed = free_udp();
    let (code, text) =
        get(http, &format!("/probe?type=udp-echo&target=127.0.0.1&port={closed}&control=none&timeout=300ms")).unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(sample(&text, "probe_success"), Some(0.0), "{text}");
    // the run's code is the one series of the family, at 1: not ok, and no 0 for the others
    let codes: Vec<&str> = text.lines().filter(|l| l.starts_with("ipsla_operation_return_code{")).collect();
    assert!(codes.len() == 1 && codes[0].ends_with(" 1") && !codes[0].contains(r#"code="ok""#), "{text}");
    assert!(!text.contains("ipsla_rtt_latest_seconds"), "{text}");

    // parameters are validated as operation keys, the error naming the parameter
    for (query, error) in [
        ("type=udp-jitter&target=127.0.0.1&port=70000", "/probe: port: 70000 is out of range; allowed 0 to 65535\n"),
        ("type=udp-jitter&target=127.0.0.1&packets=x", "/probe: packets: \"x\" is not an integer\n"),
        (
            "type=udp-echo&target=127.0.0.1&codec=g711alaw",
            "/probe: codec: udp-echo does not take codec (only udp-jitter do)\n",
        ),
    ] {
        let (code, body) = get(http, &format!("/probe?{query}")).unwrap();
        assert_eq!(code, 400, "{query}: {body}");
        assert_eq!(body, error, "{query}");
    }
}

#[test]
fn prometheus_scrapes_probe_with_blackbox_relabelling() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let v1 = free_udp();
    let agent = InProcess::start(
        &AgentToml::new().http(0).store(&dir.path().join("runs.db")).responder(Responder::loopback(v1)),
    );
    let port = free_udp();
    // blackbox_exporter's documented scrape configuration, with the agent as the exporter
    let yml = format!(
        "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n\
         scrape_configs:\n  - job_name: ipsla_probe\n    metrics_path: /probe\n    params:\n\
         \x20     type: [udp-echo]\n      port: ['{port}']\n      control_port: ['{v1}']\n      timeout: [500ms]\n\
         \x20   static_configs:\n      - targets: ['127.0.0.1']\n\
         \x20   relabel_configs:\n\
         \x20     - source_labels: [__address__]\n        target_label: __param_target\n\
         \x20     - source_labels: [__param_target]\n        target_label: instance\n\
         \x20     - target_label: __address__\n        replacement: 127.0.0.1:{}\n",
        agent.http()
    );
    let Some(prom) = Prometheus::with_config(dir.path(), free_tcp(), &yml, &[]) else { return };
    let ok = wait_some("a scraped probe_success", Duration::from_secs(60), || {
        prom.query(r#"probe_success{job="ipsla_probe"}"#)
    });
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(value(&ok[0]), 1.0, "{}", prom.log());
    assert_eq!(ok[0]["metric"]["instance"], "127.0.0.1", "the target, relabelled into instance");
    let info = prom.query(r#"ipsla_operation_info{job="ipsla_probe"}"#).unwrap();
    assert_eq!(info[0]["metric"]["target"], format!("127.0.0.1:{port}"));
    assert_eq!(info[0]["metric"]["type"], "udp-echo");
    let rtt = prom.query(r#"ipsla_rtt_latest_seconds{job="ipsla_probe",instance="127.0.0.1"}"#).unwrap();
    assert!(value(&rtt[0]) > 0.0, "{rtt:?}");
    let up = prom.query(r#"up{job="ipsla_probe"}"#).unwrap();
    assert_eq!(value(&up[0]), 1.0);
}
