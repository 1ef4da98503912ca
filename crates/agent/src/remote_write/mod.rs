//! Prometheus remote write 1.0 (`[[remote_write]]`): every stored run's values, at the run's own
//! start time, pushed to Prometheus, VictoriaMetrics, Mimir, Thanos... as protobuf in a raw snappy
//! block.
//!
//! The queue is the store ([`queue`]): one cursor per endpoint, advanced only after the receiver
//! answered 2xx, so a receiver outage or an agent restart loses nothing and a run is sent again
//! only when its request's answer was lost (the same samples at the same timestamps, which
//! Prometheus keeps once). A 5xx, a 429 or a connection error is retried with exponential backoff, for as long as
//! it takes; another 4xx means the receiver will never take the batch: it is counted as failed,
//! logged once with the receiver's reason, and skipped. Runs the store deletes (retention, size
//! limit) before they were shipped are counted as dropped.
//!
//! What is sent per run has the names and labels of `/metrics`' latest-value families
//! ([`crate::metrics`]), so a query works on either; a value the run does not have is not sent.
//!
//! ```toml
//! [[remote_write]]
//! url = "http://127.0.0.1:9090/api/v1/write"
//! labels = { site = "paris" }
//! ```

pub mod proto;
pub(crate) mod queue;

use crate::alert::{Reply, WebhookDef, parse_url, post};
use crate::config::{ConfigError, Result, check_range, parse_duration};
use crate::metrics::{Metrics, RemoteWriteMetrics};
use crate::store::Store;
use crate::tls::Tls;
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use proto::{Label, Sample, TimeSeries, WriteRequest};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often an endpoint that is caught up looks for new runs.
const POLL: Duration = Duration::from_secs(1);
/// The first retry's wait; it doubles up to the endpoint's `max_backoff`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// At the agent's stop, how long a request in flight may still take: its answer moves the cursor,
/// so the next start does not send the batch again.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// One latest-value family of `/metrics` as a stored document gives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Value {
    /// The metric name, as `/metrics` exposes it.
    pub(crate) name: &'static str,
    /// The `direction` label, for the families that have one.
    pub(crate) direction: Option<&'static str>,
    /// Where the document holds it (docs/json-schema.md).
    pub(crate) path: &'static [&'static str],
    /// Divisor to the metric's unit (µs to seconds: 1e6; a division, so 10 µs is exactly the
    /// double nearest 1e-5, as the exposition of the same run writes it).
    pub(crate) per_unit: f64,
    /// Only for the kinds that send a train of probes (`Kind::jitter`): every document has the
    /// path, only theirs measure it.
    pub(crate) jitter_only: bool,
}

impl Value {
    /// `$.a.b`, for SQLite's `json_extract`.
    pub(crate) fn json_path(&self) -> String {
        format!("$.{}", self.path.join("."))
    }
}

/// The values a run may have besides `ipsla_operation_success` (which every run has).
pub(crate) const VALUES: &[Value] = &[
    Value {
        name: "ipsla_rtt_latest_seconds",
        direction: None,
        path: &["rtt_us", "avg"],
        per_unit: 1e6,
        jitter_only: false,
    },
    Value { name: "ipsla_loss_ratio", direction: None, path: &["loss", "ratio"], per_unit: 1.0, jitter_only: false },
    Value {
        name: "ipsla_jitter_average_seconds",
        direction: Some("sd"),
        path: &["jitter_us", "sd", "avg"],
        per_unit: 1e6,
        jitter_only: false,
    },
    Value {
        name: "ipsla_jitter_average_seconds",
        direction: Some("ds"),
        path: &["jitter_us", "ds", "avg"],
        per_unit: 1e6,
        jitter_only: false,
    },
    // the run's lost probes by direction (a train of probes only): which way a pair loses,
    // which a ratio cannot say; `unknown` is the document's `mia`
    Value {
        name: "ipsla_loss_packets",
        direction: Some("sd"),
        path: &["loss", "sd"],
        per_unit: 1.0,
        jitter_only: true,
    },
    Value {
        name: "ipsla_loss_packets",
        direction: Some("ds"),
        path: &["loss", "ds"],
        per_unit: 1.0,
        jitter_only: true,
    },
    Value {
        name: "ipsla_loss_packets",
        direction: Some("unknown"),
        path: &["loss", "mia"],
        per_unit: 1.0,
        jitter_only: true,
    },
    Value { name: "ipsla_mos", direction: None, path: &["voice", "mos"], per_unit: 1.0, jitter_only: false },
    Value { name: "ipsla_icpif", direction: None, path: &["voice", "icpif"], per_unit: 1.0, jitter_only: false },
];

/// The name of the family every run has: 1 when the run returned OK.
pub(crate) const SUCCESS: &str = "ipsla_operation_success";

/// One `[[remote_write]]` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteFile {
    /// `http[s]://HOST[:PORT]/PATH` of the receiver.
    pub url: Option<String>,
    /// HTTP basic authentication.
    pub basic_auth: Option<BasicAuth>,
    /// `Authorization: Bearer ...`.
    pub bearer_token: Option<String>,
    /// PEM file of the CA certificates to trust for an https URL instead of the platform's.
    pub ca_file: Option<String>,
    /// Extra labels on every series (`site = "paris"`).
    pub labels: Option<BTreeMap<String, String>>,
    /// Runs per request (default 500).
    pub batch: Option<usize>,
    /// Per request (default 30s).
    pub timeout: Option<String>,
    /// The longest wait between two retries (default 30s).
    pub max_backoff: Option<String>,
    /// Extra request headers (`X-Scope-OrgID` for a multi-tenant Mimir).
    pub headers: Option<BTreeMap<String, String>>,
}

/// `basic_auth = { username = "...", password = "..." }`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A validated endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteWriteDef {
    /// The URL as written: the cursor's key and the `url` label of the metrics.
    pub url: String,
    /// Where and how to POST (the alert webhooks' client, with the remote-write headers).
    http: WebhookDef,
    /// Extra labels, sorted by name.
    pub labels: Vec<(String, String)>,
    /// Runs per request.
    pub batch: usize,
    /// The longest wait between two retries.
    pub max_backoff: Duration,
}

/// Label names Prometheus accepts, less the reserved `__` prefix and the ones the series have.
fn check_label(key: &str, name: &str) -> Result<()> {
    let ok =
        name.chars().enumerate().all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !ok {
        return Err(ConfigError(format!(
            "{key}: \"{name}\" is not a label name; use letters, digits and _, not starting with a digit"
        )));
    }
    if name.starts_with("__") {
        return Err(ConfigError(format!("{key}: \"{name}\": names starting with __ are reserved to Prometheus")));
    }
    // src and dst: a mesh operation's series carry them (docs/mesh.md)
    if ["op", "direction", "src", "dst"].contains(&name) {
        return Err(ConfigError(format!("{key}: \"{name}\" is a label of the series themselves; choose another name")));
    }
    Ok(())
}

impl RemoteWriteFile {
    /// Validates one `[[remote_write]]`; `key` is its name in errors (`remote_write[0]`).
    pub fn validate(&self, key: &str) -> Result<RemoteWriteDef> {
        let k = |f: &str| format!("{key}.{f}");
        let url = self.url.as_deref().ok_or_else(|| {
            ConfigError(format!("{}: required, e.g. \"http://127.0.0.1:9090/api/v1/write\"", k("url")))
        })?;
        let u = parse_url(&k("url"), url)?;
        if !u.https && self.ca_file.is_some() {
            return Err(ConfigError(format!("{}: only for https:// URLs ({} is {url})", k("ca_file"), k("url"))));
        }
        let tls = u.https.then(|| Tls::new(&k("ca_file"), &u.host, self.ca_file.as_deref())).transpose()?;
        let header = |name: &str, v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| ConfigError(format!("{}: must be visible ASCII (no control characters)", k(name))))
        };
        let mut headers = vec![
            (CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf")),
            (CONTENT_ENCODING, HeaderValue::from_static("snappy")),
            (HeaderName::from_static("x-prometheus-remote-write-version"), HeaderValue::from_static("0.1.0")),
        ];
        let auth = match (&self.basic_auth, &self.bearer_token) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(format!(
                    "{}: set either it or {}, not both",
                    k("bearer_token"),
                    k("basic_auth")
                )));
            }
            (Some(b), None) => {
                if b.username.contains(':') {
                    return Err(ConfigError(format!("{}: a user name cannot contain ':'", k("basic_auth.username"))));
                }
                header("basic_auth.password", &b.password)?;
                let token = {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", b.username, b.password))
                };
                Some(header("basic_auth", &format!("Basic {token}"))?)
            }
            (None, Some(t)) if t.is_empty() => {
                return Err(ConfigError(format!("{}: empty; remove it or set the token", k("bearer_token"))));
            }
            (None, Some(t)) => Some(header("bearer_token", &format!("Bearer {t}"))?),
            (None, None) => None,
        };
        if let Some(mut a) = auth {
            a.set_sensitive(true);
            headers.push((AUTHORIZATION, a));
        }
        for (n, v) in self.headers.iter().flatten() {
            let hk = k(&format!("headers.{n}"));
            let name = HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| ConfigError(format!("{hk}: \"{n}\" is not a valid header name")))?;
            if headers.iter().any(|(h, _)| *h == name)
                || name == hyper::header::CONTENT_LENGTH
                || name == hyper::header::TRANSFER_ENCODING
            {
                return Err(ConfigError(format!(
                    "{hk}: set by the agent (the remote-write protocol or its auth keys)"
                )));
            }
            let mut value = HeaderValue::from_str(v)
                .map_err(|_| ConfigError(format!("{hk}: the value must be visible ASCII (no control characters)")))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        let mut labels = Vec::new();
        for (name, value) in self.labels.iter().flatten() {
            check_label(&k(&format!("labels.{name}")), name)?;
            labels.push((name.clone(), value.clone()));
        }
        let timeout = match &self.timeout {
            Some(s) => parse_duration(&k("timeout"), s, Duration::from_millis(100), Duration::from_secs(600))?,
            None => Duration::from_secs(30),
        };
        let max_backoff = match &self.max_backoff {
            Some(s) => parse_duration(&k("max_backoff"), s, MIN_BACKOFF, Duration::from_secs(3600))?,
            None => Duration::from_secs(30),
        };
        Ok(RemoteWriteDef {
            url: url.to_string(),
            http: WebhookDef {
                url: url.to_string(),
                host: u.host,
                port: u.port,
                authority: u.authority,
                path: u.path,
                timeout,
                retries: 0,
                backoff: MIN_BACKOFF,
                headers,
                tls,
            },
            labels,
            batch: check_range(&k("batch"), self.batch.unwrap_or(500), 1, 100_000)?,
            max_backoff,
        })
    }
}

/// Validates every `[[remote_write]]`; one cursor per URL, so URLs are unique.
pub fn validate(files: &[RemoteWriteFile]) -> Result<Vec<RemoteWriteDef>> {
    let mut defs: Vec<RemoteWriteDef> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let d = f.validate(&format!("remote_write[{i}]"))?;
        if let Some(j) = defs.iter().position(|x| x.url == d.url) {
            return Err(ConfigError(format!(
                "remote_write[{i}].url: \"{}\" is already the url of remote_write[{j}]",
                d.url
            )));
        }
        defs.push(d);
    }
    Ok(defs)
}

/// The samples of one stored run: (labels sorted by name, value). `ipsla_operation_success`
/// always; each of [`VALUES`] only when the document has it (a missing value is not a number).
/// A mesh operation's samples carry its `src` and `dst` sites, from the document: the receiver
/// has no info series to join on.
pub(crate) fn run_samples(op: u32, report: &str, extra: &[(String, String)]) -> Vec<(Vec<Label>, f64)> {
    let doc: serde_json::Value = serde_json::from_str(report).unwrap_or(serde_json::Value::Null);
    let mesh: Vec<Label> = ["src", "dst"]
        .iter()
        .filter_map(|k| doc["mesh"][k].as_str().map(|v| Label { name: (*k).into(), value: v.into() }))
        .collect();
    let labels = |name: &str, more: &[(&str, &str)]| {
        let mut l = vec![
            Label { name: "__name__".into(), value: name.into() },
            Label { name: "op".into(), value: op.to_string() },
        ];
        l.extend(mesh.iter().cloned());
        l.extend(more.iter().map(|(n, v)| Label { name: (*n).into(), value: (*v).into() }));
        l.extend(extra.iter().map(|(n, v)| Label { name: n.clone(), value: v.clone() }));
        l.sort();
        l
    };
    let ok = f64::from(u8::from(doc["return_code"] == "ok"));
    let mut out = vec![(labels(SUCCESS, &[]), ok)];
    let train = doc["operation"].as_str().and_then(crate::ops::find).is_some_and(|k| k.jitter());
    for v in VALUES.iter().filter(|v| train || !v.jitter_only) {
        let x = v.path.iter().fold(&doc, |d, p| &d[*p]);
        if let Some(x) = x.as_f64() {
            let direction: Vec<(&str, &str)> = v.direction.map(|d| ("direction", d)).into_iter().collect();
            out.push((labels(v.name, &direction), x / v.per_unit));
        }
    }
    // the kind's own gauges, from its part of the document (its top-level keys)
    if let (Some(kind), Some(detail)) = (doc["operation"].as_str().and_then(crate::ops::find), doc.as_object()) {
        for g in kind.gauge_values(detail) {
            let more: Vec<(&str, &str)> = g.labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
            out.push((labels(&format!("ipsla_{}", g.family), &more), g.value));
        }
    }
    out
}

/// A batch as one request: series grouped by labels, samples in time order.
fn request(runs: &[queue::Pending], extra: &[(String, String)]) -> (WriteRequest, u64) {
    let mut series: BTreeMap<Vec<Label>, Vec<Sample>> = BTreeMap::new();
    let mut n = 0;
    for r in runs {
        let timestamp = r.start_ns.div_euclid(1_000_000);
        for (labels, value) in run_samples(r.op, &r.report, extra) {
            series.entry(labels).or_default().push(Sample { value, timestamp });
            n += 1;
        }
    }
    let timeseries = series
        .into_iter()
        .map(|(labels, mut samples)| {
            samples.sort_by_key(|s| s.timestamp);
            TimeSeries { labels, samples }
        })
        .collect();
    (WriteRequest { timeseries }, n)
}

/// The shared store, as the daemon holds it.
pub type SharedStore = Arc<Mutex<Store>>;

/// Starts one task per endpoint on `rt`, each ending when `stop` is cancelled. The cursor table
/// is prepared first, so that the store counts drops from now on.
pub fn start(
    rt: &tokio::runtime::Handle,
    defs: &[RemoteWriteDef],
    store: &SharedStore,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    if defs.is_empty() {
        return Vec::new();
    }
    if let Ok(s) = store.lock() {
        let c = s.connection();
        if let Err(e) = queue::prepare(c).and_then(|()| defs.iter().try_for_each(|d| queue::ensure(c, &d.url))) {
            tracing::error!(error = %e, "remote write: cannot prepare its cursors in the store; nothing will be sent");
            return Vec::new();
        }
    }
    defs.iter()
        .map(|d| rt.spawn(endpoint(Arc::new(d.clone()), store.clone(), metrics.remote_write(&d.url), stop.clone())))
        .collect()
}

/// Runs `f` on the store on the blocking pool.
async fn with_store<T: Send + 'static>(
    store: &SharedStore,
    f: impl FnOnce(&Store) -> rusqlite::Result<T> + Send + 'static,
) -> std::result::Result<T, String> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || match store.lock() {
        Ok(s) => f(&s).map_err(|e| e.to_string()),
        Err(_) => Err("the store's lock is poisoned".into()),
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()))
}

/// How one attempt ended.
enum Attempt {
    Accepted,
    /// Not retried: the receiver will not take this batch.
    Refused(String),
    /// Worth another attempt.
    Transient(String),
}

async fn attempt(d: &RemoteWriteDef, body: Bytes) -> Attempt {
    match tokio::time::timeout(d.http.timeout, post(&d.http, body)).await {
        Ok(Ok(Reply { status, .. })) if status.is_success() => Attempt::Accepted,
        Ok(Ok(Reply { status, body })) => {
            let why = if body.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {body}") };
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                Attempt::Transient(why)
            } else {
                Attempt::Refused(why)
            }
        }
        Ok(Err(f)) => Attempt::Transient(f.why),
        Err(_) => Attempt::Transient(format!("no answer within {}", humantime::format_duration(d.http.timeout))),
    }
}

/// One endpoint: read the next batch after the cursor, send it until it is accepted or refused,
/// advance the cursor, again; when caught up, look again every [`POLL`].
async fn endpoint(d: Arc<RemoteWriteDef>, store: SharedStore, m: RemoteWriteMetrics, stop: CancellationToken) {
    let url = d.url.clone();
    let mut failing: Option<String> = None;
    loop {
        let (u, limit) = (url.clone(), d.batch);
        let q = match with_store(&store, move |s| queue::pending(s.connection(), &u, limit)).await {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(url = %url, error = %e, "remote write: cannot read the store; trying again");
                if sleep_or_stop(&stop, POLL).await {
                    return;
                }
                continue;
            }
        };
        m.dropped.inner().store(q.dropped, std::sync::atomic::Ordering::Relaxed);
        let oldest = q.runs.first().map(|r| r.start_ns);
        let lag = || {
            let now_ns = ipsla_net::clock::wall_now().as_nanos() as i64;
            m.lag.set(oldest.map_or(0.0, |t| (now_ns - t).max(0) as f64 / 1e9));
        };
        lag();
        let Some(last) = q.runs.last().map(|r| r.id) else {
            if sleep_or_stop(&stop, POLL).await {
                return;
            }
            continue;
        };
        let (req, n) = request(&q.runs, &d.labels);
        let body = Bytes::from(proto::encode(&req));
        let mut backoff = MIN_BACKOFF;
        let mut stopping = false;
        loop {
            lag();
            let send = attempt(&d, body.clone());
            tokio::pin!(send);
            let outcome = tokio::select! {
                a = &mut send => a,
                _ = stop.cancelled() => {
                    stopping = true;
                    match tokio::time::timeout(STOP_GRACE, &mut send).await {
                        Ok(a) => a,
                        Err(_) => return,
                    }
                }
            };
            if stopping && matches!(outcome, Attempt::Transient(_)) {
                return;
            }
            match outcome {
                Attempt::Accepted => {
                    if let Some(why) = failing.take() {
                        tracing::info!(url = %url, "remote write: the receiver takes samples again (last error: {why})");
                    }
                    m.sent.inc_by(n);
                    break;
                }
                Attempt::Refused(why) => {
                    tracing::warn!(
                        url = %url,
                        samples = n,
                        "remote write: the receiver refused a batch ({why}); it is not sent again"
                    );
                    m.failed.inc_by(n);
                    break;
                }
                Attempt::Transient(why) => {
                    if failing.is_none() {
                        tracing::warn!(url = %url, "remote write: {why}; retrying with backoff, the runs wait in the store");
                    } else {
                        tracing::debug!(url = %url, "remote write: {why}");
                    }
                    failing = Some(why);
                    if sleep_or_stop(&stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(d.max_backoff);
                }
            }
        }
        let u = url.clone();
        if let Err(e) = with_store(&store, move |s| queue::advance(s.connection(), &u, last)).await {
            // the batch goes again: the same samples, which the receiver keeps once
            tracing::warn!(url = %url, error = %e, "remote write: cannot move the cursor in the store");
            if sleep_or_stop(&stop, POLL).await {
                return;
            }
        }
        if stopping || stop.is_cancelled() {
            return;
        }
    }
}

/// Sleeps `d`; true when `stop` came first.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests;
