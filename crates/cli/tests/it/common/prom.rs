//! A real Prometheus (the `prometheus` binary, package `prometheus`, which `scripts/test.sh`
//! installs) scraping one agent on loopback every second, optionally with rule files, and its HTTP
//! API: instant queries, targets, rules, alerts.

use super::{Killed, PATIENCE, free_tcp, get, on_path, urlencode, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The job name the agent is scraped under (the one `dist/prometheus/ipsla-rules.yml` expects).
pub const JOB: &str = "ipsla";

/// A `prometheus` process, killed on drop, with its TSDB and log in a test's directory.
pub struct Prometheus {
    /// The port of its web UI and HTTP API on 127.0.0.1.
    pub web: u16,
    log: PathBuf,
    _process: Killed,
}

impl Prometheus {
    /// Prometheus scraping `127.0.0.1:agent_http` (job [`JOB`]) and evaluating `rules` every
    /// second, its files under `dir`; None (the reason printed) when `prometheus` is not on PATH.
    pub fn start(dir: &Path, agent_http: u16, rules: &[&Path]) -> Option<Prometheus> {
        let rule_files = match rules {
            [] => String::new(),
            _ => {
                "rule_files:\n".to_string()
                    + &rules.iter().map(|r| format!("  - '{}'\n", r.display())).collect::<String>()
            }
        };
        let yml = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n{rule_files}\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['127.0.0.1:{agent_http}']\n"
        );
        Self::with_config(dir, free_tcp(), &yml, &[])
    }

    /// Prometheus as a remote-write receiver only (`POST /api/v1/write`), listening on `web`
    /// (chosen by the caller, so that an agent can be pointed at it before it starts).
    pub fn receiver(dir: &Path, web: u16) -> Option<Prometheus> {
        Self::receiver_on(dir, "127.0.0.1", web)
    }

    /// [`Prometheus::receiver`] listening on `host` (`0.0.0.0` in a lab's namespace, where every
    /// address is the lab's own), still answering [`Prometheus::api`] on 127.0.0.1.
    pub fn receiver_on(dir: &Path, host: &str, web: u16) -> Option<Prometheus> {
        // the flag since 2.33; older versions had --enable-feature=remote-write-receiver
        let flags = ["--web.enable-remote-write-receiver"];
        Self::with_config_on(dir, host, web, "global:\n  scrape_interval: 1s\n", &flags)
    }

    /// Prometheus with the configuration `yml` and extra flags, its web UI and API on `web`.
    pub fn with_config(dir: &Path, web: u16, yml: &str, flags: &[&str]) -> Option<Prometheus> {
        Self::with_config_on(dir, "127.0.0.1", web, yml, flags)
    }

    fn with_config_on(dir: &Path, host: &str, web: u16, yml: &str, flags: &[&str]) -> Option<Prometheus> {
        let Some(prometheus) = on_path("prometheus") else {
            eprintln!("skipped: no `prometheus` on PATH (apt-get install prometheus)");
            return None;
        };
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, yml).unwrap();
        let log = dir.join("prometheus.log");
        let mut process = Killed(
            Command::new(prometheus)
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
                .arg(format!("--web.listen-address={host}:{web}"))
                .args(flags)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        // a config it refuses ends the process: say why rather than time out on its API later
        wait_for("prometheus to be ready", PATIENCE, || {
            if let Some(status) = process.0.try_wait().unwrap() {
                panic!("prometheus exited ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            get(web, "/-/ready").is_some_and(|(c, _)| c == 200)
        });
        Some(Prometheus { web, log, _process: process })
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on its API: the JSON body when it answered 200.
    pub fn api(&self, path: &str) -> Option<Value> {
        let (code, body) = get(self.web, path)?;
        (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    }

    /// An instant query: Ok(the result vector, possibly empty), or Err(Prometheus's error, e.g.
    /// a parse error) when it refused the expression. Err("no answer") before it listens.
    pub fn try_query(&self, q: &str) -> Result<Vec<Value>, String> {
        let (code, body) =
            get(self.web, &format!("/api/v1/query?query={}", urlencode(q))).ok_or_else(|| "no answer".to_string())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("HTTP {code}: {e}: {body}"))?;
        match v["data"]["result"].as_array() {
            Some(r) if code == 200 => Ok(r.clone()),
            _ => Err(format!("HTTP {code}: {} {}", v["errorType"], v["error"])),
        }
    }

    /// The instant-query result vector of `q`, once it is not empty.
    pub fn query(&self, q: &str) -> Option<Vec<Value>> {
        self.try_query(q).ok().filter(|r| !r.is_empty())
    }
}

/// The value of one sample of an instant-query result.
pub fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

/// A real VictoriaMetrics single-node server (`victoria-metrics`, Debian package
/// `victoria-metrics`), killed on drop, its data in a test's directory. It keeps every sample it
/// is sent (no deduplication configured), so a batch sent twice shows as two samples.
pub struct VictoriaMetrics {
    /// Its HTTP port on 127.0.0.1 (`/api/v1/write`, `/api/v1/export`).
    pub port: u16,
    _process: Killed,
}

impl VictoriaMetrics {
    /// Listening on `port`; None (the reason printed) when `victoria-metrics` is not on PATH.
    pub fn start(dir: &Path, port: u16) -> Option<VictoriaMetrics> {
        let Some(vm) = on_path("victoria-metrics") else {
            eprintln!("skipped: no `victoria-metrics` on PATH (apt-get install victoria-metrics)");
            return None;
        };
        let log = dir.join("victoria-metrics.log");
        let mut process = Killed(
            Command::new(vm)
                .arg(format!("-storageDataPath={}", dir.join("vm").display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg("-retentionPeriod=100y")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        wait_for("victoria-metrics to be ready", PATIENCE, || {
            if let Some(status) = process.0.try_wait().unwrap() {
                panic!("victoria-metrics exited ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            get(port, "/health").is_some_and(|(c, _)| c == 200)
        });
        Some(VictoriaMetrics { port, _process: process })
    }

    /// Every raw sample of the series matching `selector` (`/api/v1/export`, after a flush of
    /// what it has taken in): one (labels, [(ms, value)]) per series, duplicates kept.
    pub fn export(&self, selector: &str) -> Vec<(Value, Vec<(i64, f64)>)> {
        let _ = get(self.port, "/internal/force_flush");
        let (code, body) = get(self.port, &format!("/api/v1/export?match[]={}", urlencode(selector))).unwrap();
        assert_eq!(code, 200, "{body}");
        body.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let ts = v["timestamps"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap());
                let vals = v["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap());
                (v["metric"].clone(), ts.zip(vals).collect())
            })
            .collect()
    }
}
