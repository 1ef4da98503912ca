//! `[[remote_write]]` into real receivers: a Prometheus started with
//! `--web.enable-remote-write-receiver` and a VictoriaMetrics (`/api/v1/write`). The receiver is
//! down while the first runs happen, comes up, and the agent is restarted (same store) in the
//! middle: every stored run is then in the receiver exactly once, at the run's start (ms), with
//! the store's value; a run without a reply sends no RTT. A fake receiver checks the headers, that
//! a 503 is retried with the same body and that a 400 is counted and not retried.
//!
//! Skipped, with the reason printed, when `prometheus` or `victoria-metrics` is not on PATH
//! (`scripts/test.sh` installs both with apt).

use crate::common::{
    AgentToml, InProcess, Op, PATIENCE, Prometheus, RemoteWrite, Responder, VictoriaMetrics, free_tcp, free_udp, get,
    wait_for, wait_some,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// Every stored run of `op`: (start in ms, its document).
fn stored(db: &Path, op: u32) -> Vec<(i64, serde_json::Value)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut st = c.prepare("SELECT start_ns, report FROM runs WHERE op = ?1 ORDER BY start_ns").unwrap();
    st.query_map([op], |r| Ok((r.get::<_, i64>(0)? / 1_000_000, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|r| {
            let (ms, doc) = r.unwrap();
            (ms, serde_json::from_str(&doc).unwrap())
        })
        .collect()
}

/// The value `/metrics` shows for `line_prefix` (`name{labels}`), if any.
fn metric(http: u16, line_prefix: &str) -> Option<f64> {
    let (_, body) = get(http, "/metrics")?;
    body.lines().find_map(|l| l.strip_prefix(line_prefix)?.strip_prefix(' ')?.parse().ok())
}

/// One receiver under test: the raw samples (ms, value) of a series, in time order.
trait Receiver {
    fn samples(&self, name: &str, op: u32) -> Vec<(i64, f64)>;

    /// `v` as the receiver stores it.
    fn kept(&self, v: f64) -> f64 {
        v
    }
}

impl Receiver for Prometheus {
    fn samples(&self, name: &str, op: u32) -> Vec<(i64, f64)> {
        // a range selector returns the raw samples; a day covers the test
        let r = self.try_query(&format!("{name}{{op=\"{op}\",site=\"lab\"}}[1d]")).unwrap();
        assert!(r.len() <= 1, "one series: {r:?}");
        r.first()
            .map(|s| {
                s["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| {
                        let ms = (v[0].as_f64().unwrap() * 1000.0).round() as i64;
                        (ms, v[1].as_str().unwrap().parse().unwrap())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Receiver for VictoriaMetrics {
    fn samples(&self, name: &str, op: u32) -> Vec<(i64, f64)> {
        let series = self.export(&format!("{name}{{op=\"{op}\",site=\"lab\"}}"));
        assert!(series.len() <= 1, "one series: {series:?}");
        let mut v = series.into_iter().next().map(|s| s.1).unwrap_or_default();
        v.sort_by_key(|s| s.0);
        v
    }

    /// VictoriaMetrics keeps 12 significant decimal digits of a float (its storage is decimal),
    /// so 0.00013240799999999998 comes back as 0.000132408.
    fn kept(&self, v: f64) -> f64 {
        format!("{v:.11e}").parse().unwrap()
    }
}

/// The agent's configuration: operation 7 answered on loopback, operation 8 to a port where
/// nothing listens (no reply, so no RTT), both every second, pushing to `url` in batches of 3.
fn config(dir: &Path, v1: u16, with_ops: bool, url: &str) -> AgentToml {
    let mut cfg = AgentToml::new()
        .http(0)
        .store(&dir.join("runs.db"))
        .workers(2)
        .responder(Responder::loopback(v1))
        .remote_write(
            RemoteWrite::to(url)
                .key("batch", 3)
                .key("max_backoff", "500ms")
                .key("timeout", "5s")
                .key("labels", BTreeMap::from([("site", "lab")])),
        );
    if with_ops {
        cfg = cfg
            .operation(
                Op::new("udp-echo", "127.0.0.1")
                    .id(7)
                    .key("port", free_udp())
                    .key("control_port", v1)
                    .key("timeout", "500ms")
                    .key("frequency", "1s"),
            )
            .operation(
                Op::new("udp-echo", "127.0.0.1")
                    .id(8)
                    .key("port", free_udp())
                    .key("control", "none")
                    .key("timeout", "200ms")
                    .key("frequency", "1s"),
            );
    }
    cfg
}

/// The scenario on one receiver, started by `start` on the port the agent was given.
fn outage_and_restart<R: Receiver>(url_path: &str, start: impl FnOnce(&Path, u16) -> Option<R>) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let (v1, port) = (free_udp(), free_tcp());
    let url = format!("http://127.0.0.1:{port}{url_path}");
    let sent = format!("ipsla_remote_write_samples_sent_total{{url=\"{url}\"}}");

    // the receiver is down while the first runs are stored
    let agent = InProcess::start(&config(dir.path(), v1, true, &url));
    wait_for("3 runs of operation 7 stored", PATIENCE, || stored(&db, 7).len() >= 3);
    assert_eq!(metric(agent.http(), &sent), Some(0.0), "nothing is accepted while the receiver is down");
    let lag = metric(agent.http(), &format!("ipsla_remote_write_queue_lag_seconds{{url=\"{url}\"}}"));
    assert!(lag.is_some_and(|l| l > 0.0), "the oldest unshipped run is older than now: {lag:?}");

    let Some(receiver) = start(dir.path(), port) else { return };
    wait_for("the runs stored during the outage in the receiver", Duration::from_secs(60), || {
        receiver.samples("ipsla_operation_success", 7).len() >= 3
    });
    // a restart with the same store; without operations, so that the store stops growing and
    // the second agent ships what the first had not
    drop(agent);
    let agent = InProcess::start(&config(dir.path(), v1, false, &url));
    for op in [7, 8] {
        let n = stored(&db, op).len();
        wait_for(&format!("all {n} runs of operation {op} in the receiver"), Duration::from_secs(60), || {
            receiver.samples("ipsla_operation_success", op).len() >= n
        });
    }

    let runs = stored(&db, 7);
    let ok: Vec<(i64, f64)> = runs.iter().map(|(ms, d)| (*ms, f64::from(u8::from(d["return_code"] == "ok")))).collect();
    assert!(ok.iter().all(|s| s.1 == 1.0), "loopback echo succeeds: {ok:?}");
    assert_eq!(receiver.samples("ipsla_operation_success", 7), ok, "each run once, at its start");
    let rtt: Vec<(i64, f64)> =
        runs.iter().map(|(ms, d)| (*ms, receiver.kept(d["rtt_us"]["avg"].as_f64().unwrap() / 1e6))).collect();
    assert_eq!(receiver.samples("ipsla_rtt_latest_seconds", 7), rtt, "the store's RTT of each run");
    let loss: Vec<(i64, f64)> =
        runs.iter().map(|(ms, d)| (*ms, receiver.kept(d["loss"]["ratio"].as_f64().unwrap()))).collect();
    assert_eq!(receiver.samples("ipsla_loss_ratio", 7), loss);
    // no reply: success 0 at every run, and no RTT sample at all (not a 0)
    let failed = stored(&db, 8);
    assert!(failed.iter().all(|(_, d)| d["rtt_us"]["avg"].is_null()), "{failed:?}");
    let zeros: Vec<(i64, f64)> = failed.iter().map(|(ms, _)| (*ms, 0.0)).collect();
    assert_eq!(receiver.samples("ipsla_operation_success", 8), zeros);
    assert_eq!(receiver.samples("ipsla_rtt_latest_seconds", 8), []);
    // caught up: nothing dropped, nothing pending
    let lag = format!("ipsla_remote_write_queue_lag_seconds{{url=\"{url}\"}}");
    wait_some("the queue lag back to 0", PATIENCE, || metric(agent.http(), &lag).filter(|l| *l == 0.0));
    assert_eq!(metric(agent.http(), &format!("ipsla_remote_write_samples_dropped_total{{url=\"{url}\"}}")), Some(0.0));
}

#[test]
fn prometheus_receives_every_run_once_across_an_outage_and_a_restart() {
    let _machine = crate::common::shared();
    outage_and_restart("/api/v1/write", Prometheus::receiver);
}

#[test]
fn victoria_metrics_receives_every_run_once_across_an_outage_and_a_restart() {
    let _machine = crate::common::shared();
    outage_and_restart("/api/v1/write", VictoriaMetrics::start);
}

/// One request the fake receiver got: its header lines (lower-case names) and body.
struct Got {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Answers the first request 503, the next three 400 with a reason, then closes its listener.
fn fake_receiver(listener: std::net::TcpListener) -> Vec<Got> {
    let mut got = Vec::new();
    for (i, conn) in listener.incoming().enumerate().take(4) {
        let mut s = conn.unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "the request ended before its headers");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let headers: BTreeMap<String, String> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers["content-length"].parse().unwrap();
        while buf.len() < head_end + len {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        let (status, reason) =
            if i == 0 { ("503 Service Unavailable", "busy") } else { ("400 Bad Request", "out of bounds") };
        write!(s, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}", reason.len())
            .unwrap();
        got.push(Got { headers, body: buf[head_end..head_end + len].to_vec() });
    }
    got
}

#[test]
fn a_503_is_retried_and_a_400_is_counted_and_not_retried() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let v1 = free_udp();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/receive", listener.local_addr().unwrap());
    let receiver = std::thread::spawn(move || fake_receiver(listener));
    let agent = InProcess::start(
        &AgentToml::new()
            .http(0)
            .store(&dir.path().join("runs.db"))
            .responder(Responder::loopback(v1))
            .operation(
                Op::new("udp-echo", "127.0.0.1")
                    .id(3)
                    .key("port", free_udp())
                    .key("control_port", v1)
                    .key("timeout", "500ms")
                    .key("frequency", "1s"),
            )
            .remote_write(RemoteWrite::to(&url).key("batch", 1).key("max_backoff", "200ms").key("bearer_token", "t0k")),
    );
    let got = receiver.join().unwrap();
    let h = &got[0].headers;
    assert_eq!(
        ["content-type", "content-encoding", "x-prometheus-remote-write-version", "authorization"]
            .map(|k| h[k].as_str()),
        ["application/x-protobuf", "snappy", "0.1.0", "Bearer t0k"]
    );
    let decode = |g: &Got| ipsla_agent::remote_write::proto::decode(&g.body).expect("snappy-compressed protobuf");
    let times = |g: &Got| -> Vec<i64> {
        decode(g).timeseries.iter().flat_map(|t| t.samples.iter().map(|s| s.timestamp)).collect()
    };
    // the 503 is retried with the same batch; after each 400 the next run's batch comes
    assert_eq!(got[0].body, got[1].body, "the batch refused with 503 is sent again");
    let firsts: Vec<i64> = got[1..].iter().map(|g| times(g)[0]).collect();
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "a batch refused with 400 is not sent again: {firsts:?}");
    // three batches refused with 400: their samples, and no other, are counted as failed
    let refused: usize = got[1..].iter().map(|g| times(g).len()).sum();
    let failed = format!("ipsla_remote_write_samples_failed_total{{url=\"{url}\"}}");
    wait_some("the refused samples counted", PATIENCE, || {
        metric(agent.http(), &failed).filter(|n| *n >= refused as f64)
    });
    assert_eq!(metric(agent.http(), &failed), Some(refused as f64));
    assert_eq!(metric(agent.http(), &format!("ipsla_remote_write_samples_sent_total{{url=\"{url}\"}}")), Some(0.0));
}
