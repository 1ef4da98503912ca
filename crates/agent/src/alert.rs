//! Alert sinks (`[[alert]]`): reaction and track transitions delivered to a webhook (an HTTP POST
//! of the event as JSON, retried with exponential backoff) or to an exec hook (a program that gets
//! the event as JSON on stdin and in `IPSLA_*` environment variables).
//!
//! Every sink is a task on the agent's runtime. Each sink has its own bounded queue: [`Alerts::send`] never waits
//! (a full queue drops the event and counts it), and a slow or failing sink does not delay the
//! others. Every event ends up counted exactly once per sink that wants it, as sent, failed (after
//! its retries) or dropped, in `ipsla_alerts_total{sink,result}`.
//!
//! Webhooks speak HTTP/1.1 over TCP, or over TLS (rustls) for `https://` URLs: the server's
//! certificate is checked against the platform's trusted roots, or against `ca_file` (PEM) when set.
//!
//! ```toml
//! [[alert]]
//! type = "webhook"
//! url = "http://127.0.0.1:9000/ipsla"
//! ```

use crate::config::{ConfigError, Result, check_range, parse_duration};
use crate::metrics::Metrics;
use crate::tracks::Changed;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use ipsla_core::reaction::ReactionEvent;
use prometheus_client::metrics::counter::Counter;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Handle;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

/// Events each sink may hold while it is busy; beyond that new events are dropped.
pub const QUEUE: usize = 1024;

/// How much of an exec hook's stderr is kept for the log.
const STDERR_LIMIT: usize = 1024;

/// Drops are logged at most this often per sink (each line carries the running total).
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// One `[[alert]]` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertFile {
    /// webhook | exec
    #[serde(rename = "type")]
    pub kind: String,
    /// The sink's name in logs and metrics (default `TYPE-INDEX`, e.g. `webhook-0`).
    pub name: Option<String>,
    /// Which events: any of "reaction", "track" (default both).
    pub events: Option<Vec<String>>,
    /// Per attempt (webhook, default 5s) or for the whole run (exec, default 10s).
    pub timeout: Option<String>,
    /// Webhook: `http://HOST[:PORT][/PATH]` or `https://...`.
    pub url: Option<String>,
    /// Webhook over https: PEM file of the CA certificates to trust instead of the platform's.
    pub ca_file: Option<String>,
    /// Webhook: attempts after the first (default 3).
    pub retries: Option<u32>,
    /// Webhook: wait before the first retry, doubling after each (default 1s).
    pub backoff: Option<String>,
    /// Webhook: extra request headers.
    pub headers: Option<BTreeMap<String, String>>,
    /// Exec: program and arguments.
    pub command: Option<Vec<String>>,
}

/// Which kinds of event a sink receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFilter {
    /// Reaction transitions.
    pub reaction: bool,
    /// Track changes.
    pub track: bool,
}

impl EventFilter {
    fn wants(self, kind: AlertKind) -> bool {
        match kind {
            AlertKind::Reaction => self.reaction,
            AlertKind::Track => self.track,
        }
    }
}

/// A validated webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDef {
    /// The URL as written.
    pub url: String,
    /// Host name or address to connect to (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `Host:` header value.
    pub authority: String,
    /// Path and query of the request.
    pub path: String,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// Wait before the first retry; doubles after each.
    pub backoff: Duration,
    /// Extra headers (override the defaults of the same name).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// TLS for an `https://` URL.
    pub tls: Option<Tls>,
}

/// A webhook's TLS client: the roots it trusts and the name it expects in the certificate.
#[derive(Clone)]
pub struct Tls {
    /// `ca_file` as written; `None` trusts the platform's roots.
    pub ca_file: Option<String>,
    /// The trusted roots, as loaded (compared on reload: a changed file is a changed sink).
    roots: Vec<CertificateDer<'static>>,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

impl PartialEq for Tls {
    fn eq(&self, o: &Self) -> bool {
        self.ca_file == o.ca_file && self.roots == o.roots && self.server_name == o.server_name
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca_file", &self.ca_file)
            .field("roots", &self.roots.len())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl Tls {
    /// TLS over `stream`, the server's certificate checked against the roots for the host.
    pub(crate) async fn connect(
        &self,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        tokio_rustls::TlsConnector::from(self.config.clone()).connect(self.server_name.clone(), stream).await
    }

    /// Loads the roots (`ca_file`, else the platform's) for a connection to `host`. `key` names
    /// the `ca_file` key in errors.
    pub(crate) fn new(key: &str, host: &str, ca_file: Option<&str>) -> Result<Tls> {
        let roots: Vec<CertificateDer<'static>> = match ca_file {
            Some(path) => {
                let certs: std::result::Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| ConfigError(format!("{key}: cannot read \"{path}\": {e}")))?
                    .collect();
                let certs = certs.map_err(|e| ConfigError(format!("{key}: \"{path}\" is not PEM: {e}")))?;
                if certs.is_empty() {
                    return Err(ConfigError(format!(
                        "{key}: \"{path}\" holds no certificate (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)"
                    )));
                }
                certs
            }
            None => rustls_native_certs::load_native_certs().certs,
        };
        let mut store = rustls::RootCertStore::empty();
        let (added, _ignored) = store.add_parsable_certificates(roots.iter().cloned());
        if added == 0 {
            return Err(ConfigError(match ca_file {
                Some(path) => format!("{key}: no usable CA certificate in \"{path}\""),
                None => format!(
                    "{key}: not set, and the platform has no trusted CA certificates (install the \
                     ca-certificates package, or set {key} to a PEM file)"
                ),
            }));
        }
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| ConfigError(format!("{key}: \"{host}\" is not a name a certificate can be checked for")))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError(format!("{key}: TLS: {e}")))?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Tls { ca_file: ca_file.map(str::to_string), roots, server_name, config: Arc::new(config) })
    }
}

/// A validated exec hook.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecDef {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Killed after this long.
    pub timeout: Duration,
}

/// Where a sink delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkDef {
    /// HTTP POST.
    Webhook(Box<WebhookDef>),
    /// A program.
    Exec(ExecDef),
}

/// A validated `[[alert]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertDef {
    /// Name in logs and metrics.
    pub name: String,
    /// Which events.
    pub events: EventFilter,
    /// Where to.
    pub sink: SinkDef,
}

/// A webhook URL's parts.
pub(crate) struct Url {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) authority: String,
    pub(crate) path: String,
}

/// Splits an `http[s]://HOST[:PORT][/PATH]` URL; `key` names it in errors.
pub(crate) fn parse_url(key: &str, s: &str) -> Result<Url> {
    let bad = |why: &str| {
        ConfigError(format!(
            "{key}: \"{s}\" {why}; expected http[s]://HOST[:PORT][/PATH], e.g. \"http://127.0.0.1:9000/ipsla\""
        ))
    };
    let uri: Uri = s.parse().map_err(|e| bad(&format!("is not a URL ({e})")))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => return Err(bad(&format!("has scheme {other}; allowed schemes: http, https"))),
        None => return Err(bad("has no scheme")),
    };
    let auth = uri.authority().ok_or_else(|| bad("has no host"))?;
    if auth.as_str().contains('@') {
        return Err(bad("has user info, which is not supported (set an Authorization header instead)"));
    }
    let raw_host = auth.host();
    let host = raw_host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    let port = match auth.as_str()[raw_host.len()..].strip_prefix(':') {
        None if https => 443,
        None => 80,
        Some(p) => {
            p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("has a bad port; allowed 1 to 65535"))?
        }
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let path = if path.is_empty() { "/" } else { path };
    Ok(Url { https, host: host.to_string(), port, authority: auth.as_str().to_string(), path: path.to_string() })
}

/// Finds `program` as `execvp` would: a path when it contains `/`, else the first executable of
/// that name in `$PATH`.
fn find_program(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = Path::new(program);
        return executable(p).then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| executable(p))
}

impl AlertFile {
    /// Validates one `[[alert]]`; `key` is its name in errors (`alert[0]`).
    pub fn validate(&self, key: &str, index: usize) -> Result<AlertDef> {
        let k = |f: &str| format!("{key}.{f}");
        let only = |f: &str, set: bool, kind: &str| {
            if set { Err(ConfigError(format!("{}: only for type = \"{kind}\"", k(f)))) } else { Ok(()) }
        };
        let events = match &self.events {
            None => EventFilter { reaction: true, track: true },
            Some(list) => {
                if list.is_empty() {
                    return Err(ConfigError(format!("{}: empty; allowed: \"reaction\", \"track\"", k("events"))));
                }
                let mut f = EventFilter { reaction: false, track: false };
                for e in list {
                    match e.as_str() {
                        "reaction" => f.reaction = true,
                        "track" => f.track = true,
                        other => {
                            return Err(ConfigError(format!(
                                "{}: \"{other}\" is not an event kind; allowed: \"reaction\", \"track\"",
                                k("events")
                            )));
                        }
                    }
                }
                f
            }
        };
        let name = self.name.clone().unwrap_or_else(|| format!("{}-{index}", self.kind));
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(ConfigError(format!("{}: \"{name}\" must be 1 to 64 printable characters", k("name"))));
        }
        let timeout = |default: Duration| match &self.timeout {
            Some(s) => parse_duration(&k("timeout"), s, Duration::from_millis(10), Duration::from_secs(600)),
            None => Ok(default),
        };
        let sink = match self.kind.as_str() {
            "webhook" => {
                only("command", self.command.is_some(), "exec")?;
                let url = self.url.as_deref().ok_or_else(|| {
                    ConfigError(format!("{}: required for type = \"webhook\" (http[s]://HOST[:PORT][/PATH])", k("url")))
                })?;
                let u = parse_url(&k("url"), url)?;
                if !u.https && self.ca_file.is_some() {
                    return Err(ConfigError(format!(
                        "{}: only for https:// URLs ({} is {url})",
                        k("ca_file"),
                        k("url")
                    )));
                }
                let tls = u.https.then(|| Tls::new(&k("ca_file"), &u.host, self.ca_file.as_deref())).transpose()?;
                let mut headers = Vec::new();
                for (n, v) in self.headers.iter().flatten() {
                    let hk = k(&format!("headers.{n}"));
                    let name = HeaderName::from_bytes(n.as_bytes())
                        .map_err(|_| ConfigError(format!("{hk}: \"{n}\" is not a valid header name")))?;
                    if name == hyper::header::CONTENT_LENGTH || name == hyper::header::TRANSFER_ENCODING {
                        return Err(ConfigError(format!("{hk}: set by the agent; not configurable")));
                    }
                    let value = HeaderValue::from_str(v).map_err(|_| {
                        ConfigError(format!("{hk}: the value must be visible ASCII (no control characters)"))
                    })?;
                    headers.push((name, value));
                }
                SinkDef::Webhook(Box::new(WebhookDef {
                    url: url.to_string(),
                    host: u.host,
                    port: u.port,
                    authority: u.authority,
                    path: u.path,
                    timeout: timeout(Duration::from_secs(5))?,
                    retries: check_range(&k("retries"), self.retries.unwrap_or(3), 0, 10)?,
                    backoff: match &self.backoff {
                        Some(s) => parse_duration(&k("backoff"), s, Duration::ZERO, Duration::from_secs(600))?,
                        None => Duration::from_secs(1),
                    },
                    headers,
                    tls,
                }))
            }
            "exec" => {
                only("url", self.url.is_some(), "webhook")?;
                only("ca_file", self.ca_file.is_some(), "webhook")?;
                only("retries", self.retries.is_some(), "webhook")?;
                only("backoff", self.backoff.is_some(), "webhook")?;
                only("headers", self.headers.is_some(), "webhook")?;
                let command = self.command.clone().unwrap_or_default();
                let Some(program) = command.first().filter(|p| !p.is_empty()) else {
                    return Err(ConfigError(format!(
                        "{}: required for type = \"exec\": [PROGRAM, ARGS...], e.g. [\"/usr/local/bin/notify\", \"--quiet\"]",
                        k("command")
                    )));
                };
                if find_program(program).is_none() {
                    return Err(ConfigError(format!(
                        "{}: \"{program}\" is not an executable file{}",
                        k("command"),
                        if program.contains('/') { "" } else { " in $PATH" }
                    )));
                }
                SinkDef::Exec(ExecDef { command, timeout: timeout(Duration::from_secs(10))? })
            }
            other => {
                return Err(ConfigError(format!("{}: \"{other}\" is not allowed; allowed: webhook, exec", k("type"))));
            }
        };
        Ok(AlertDef { name, events, sink })
    }
}

/// Validates every `[[alert]]`; names must be unique.
pub fn validate(files: &[AlertFile]) -> Result<Vec<AlertDef>> {
    let mut defs: Vec<AlertDef> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let d = f.validate(&format!("alert[{i}]"), i)?;
        if let Some(j) = defs.iter().position(|x| x.name == d.name) {
            return Err(ConfigError(format!("alert[{i}].name: \"{}\" is already used by alert[{j}]", d.name)));
        }
        defs.push(d);
    }
    Ok(defs)
}

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    /// A reaction of an operation occurred or cleared.
    Reaction,
    /// A track went up or down.
    Track,
}

/// One transition, as sinks receive it (the webhook body; the exec hook's stdin).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// reaction | track
    pub kind: AlertKind,
    /// Operation number (reaction) or track number (track).
    pub id: u32,
    /// Reaction element keyword (`rtt`, `timeout`, ...) or `state` for a track.
    pub element: String,
    /// True: the threshold was crossed / the track went down; false: cleared / up.
    pub occurred: bool,
    /// The value behind it (a track: 1 up, 0 down).
    pub value: Option<f64>,
    /// The IOS log line, e.g. `%RTT-3-IPSLATHRESHOLD: IP SLAs(1): Threshold exceeded for rtt`.
    pub text: String,
    /// When, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// When, ns since the Unix epoch.
    pub time_ns: i64,
    /// This host's name.
    pub host: String,
}

/// The host name (read once; `localhost` when it cannot be read).
/// This host's name (read once): what alerts and the web pages say they come from.
pub(crate) fn host_name() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    })
}

impl AlertEvent {
    fn new(kind: AlertKind, id: u32, element: &str, occurred: bool, value: Option<f64>, text: String, ns: i64) -> Self {
        let at = UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64);
        AlertEvent {
            kind,
            id,
            element: element.into(),
            occurred,
            value,
            text,
            time: humantime::format_rfc3339_millis(at).to_string(),
            time_ns: ns,
            host: host_name().into(),
        }
    }

    /// A reaction transition of operation `op` at `time_ns` (ns since the Unix epoch).
    pub fn reaction(op: u32, e: &ReactionEvent, time_ns: i64) -> Self {
        Self::new(AlertKind::Reaction, op, e.element.keyword(), e.occurred, Some(e.value), e.syslog(op), time_ns)
    }

    /// A track change at `time_ns`.
    pub fn track(c: &Changed, time_ns: i64) -> Self {
        let value = Some(if c.up { 1.0 } else { 0.0 });
        Self::new(AlertKind::Track, c.id, "state", !c.up, value, c.text.clone(), time_ns)
    }

    /// The `IPSLA_*` environment of an exec hook.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let kind = match self.kind {
            AlertKind::Reaction => "reaction",
            AlertKind::Track => "track",
        };
        let mut v = vec![
            ("IPSLA_KIND", kind.to_string()),
            ("IPSLA_ID", self.id.to_string()),
            ("IPSLA_ELEMENT", self.element.clone()),
            ("IPSLA_OCCURRED", if self.occurred { "1" } else { "0" }.to_string()),
            ("IPSLA_TEXT", self.text.clone()),
            ("IPSLA_TIME", self.time.clone()),
            ("IPSLA_HOST", self.host.clone()),
        ];
        if let Some(x) = self.value {
            v.push(("IPSLA_VALUE", x.to_string()));
        }
        v
    }
}

/// One sink's outcome counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkCounts {
    /// Delivered.
    pub sent: u64,
    /// Given up on after the retries (webhook) or failed (exec).
    pub failed: u64,
    /// Never attempted: the queue was full, or still queued when the deadline of
    /// [`Alerts::stop`] passed.
    pub dropped: u64,
}

struct SinkState {
    name: String,
    events: EventFilter,
    sent: Counter,
    failed: Counter,
    dropped: Counter,
    /// Accepted and not yet finished (includes the one being delivered).
    queued: AtomicU64,
    last_drop_log: Mutex<Option<Instant>>,
}

impl SinkState {
    fn drop_one(&self, why: &str) {
        self.dropped.inc();
        let Ok(mut last) = self.last_drop_log.lock() else { return };
        if last.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(sink = %self.name, dropped_total = self.dropped.get(), "alert dropped: {why}");
        }
    }
}

struct Running {
    queues: Vec<mpsc::Sender<Arc<AlertEvent>>>,
    stop: oneshot::Sender<Instant>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Closes the queues, lets the sinks deliver until `within` has passed, waits for them, and
    /// counts what was left as dropped.
    async fn finish(self, sinks: &[Arc<SinkState>], within: Duration) {
        drop(self.queues);
        let _ = self.stop.send(Instant::now() + within);
        let _ = self.task.await;
        for s in sinks {
            let left = s.queued.swap(0, Ordering::SeqCst);
            if left > 0 {
                s.dropped.inc_by(left);
                tracing::warn!(sink = %s.name, events = left, "alerts still queued at shutdown were not delivered");
            }
        }
    }
}

/// One configuration's sinks and, until stopped, their tasks.
#[derive(Default)]
struct Inner {
    sinks: Vec<Arc<SinkState>>,
    running: Option<Running>,
}

impl Inner {
    fn launch(rt: &Handle, defs: Vec<AlertDef>, metrics: &Metrics, capacity: usize) -> Inner {
        let mut sinks = Vec::new();
        let mut queues = Vec::new();
        let mut work = Vec::new();
        for d in defs {
            let s = Arc::new(SinkState {
                sent: metrics.alert_counter(&d.name, "sent"),
                failed: metrics.alert_counter(&d.name, "failed"),
                dropped: metrics.alert_counter(&d.name, "dropped"),
                name: d.name,
                events: d.events,
                queued: AtomicU64::new(0),
                last_drop_log: Mutex::new(None),
            });
            let (tx, rx) = mpsc::channel(capacity.max(1));
            sinks.push(s.clone());
            queues.push(tx);
            work.push((s, d.sink, rx));
        }
        if work.is_empty() {
            return Inner { sinks, running: None };
        }
        let (stop, stop_rx) = oneshot::channel();
        let task = rt.spawn(run(work, stop_rx));
        Inner { sinks, running: Some(Running { queues, stop, task }) }
    }
}

/// The running sinks.
pub struct Alerts {
    rt: Handle,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> =
            self.inner.lock().map(|i| i.sinks.iter().map(|s| s.name.clone()).collect()).unwrap_or_default();
        f.debug_list().entries(names).finish()
    }
}

impl Alerts {
    /// Starts the sinks as tasks on `rt` (none when `defs` is empty), counting into `metrics`.
    pub fn start(rt: &Handle, defs: Vec<AlertDef>, metrics: &Metrics) -> Alerts {
        Self::with_capacity(rt, defs, metrics, QUEUE)
    }

    /// [`Alerts::start`] with `capacity` events per sink queue.
    pub fn with_capacity(rt: &Handle, defs: Vec<AlertDef>, metrics: &Metrics, capacity: usize) -> Alerts {
        Alerts { rt: rt.clone(), inner: Mutex::new(Inner::launch(rt, defs, metrics, capacity)) }
    }

    /// Queues `ev` for every sink that wants its kind; never blocks. A full queue drops it (counted,
    /// and logged at most every 10 s per sink).
    pub fn send(&self, ev: AlertEvent) {
        let Ok(inner) = self.inner.lock() else { return };
        let Some(r) = inner.running.as_ref() else { return };
        let ev = Arc::new(ev);
        for (s, q) in inner.sinks.iter().zip(&r.queues) {
            if !s.events.wants(ev.kind) {
                continue;
            }
            s.queued.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = q.try_send(ev.clone()) {
                s.queued.fetch_sub(1, Ordering::SeqCst);
                s.drop_one(match e {
                    TrySendError::Full(_) => "the queue is full (the sink is slower than the events)",
                    TrySendError::Closed(_) => "the alert sinks have stopped",
                });
            }
        }
    }

    /// Replaces the sinks with `defs` (a reload): new events go to the new sinks at once, while
    /// the old ones deliver what they hold for up to `within`. Counters continue for sinks whose
    /// name stays.
    pub fn reconfigure(&self, defs: Vec<AlertDef>, metrics: &Metrics, within: Duration) {
        let new = Inner::launch(&self.rt, defs, metrics, QUEUE);
        let Ok(mut inner) = self.inner.lock() else { return };
        let old = std::mem::replace(&mut *inner, new);
        drop(inner);
        if let Some(r) = old.running {
            let sinks = old.sinks;
            self.rt.spawn(async move { r.finish(&sinks, within).await });
        }
    }

    /// Stops accepting events, delivers what is queued until `within` has passed (what is left
    /// then is counted as dropped), and waits for the sinks. Later calls do nothing.
    pub async fn stopped(&self, within: Duration) {
        let Some((r, sinks)) = self.inner.lock().ok().and_then(|mut i| Some((i.running.take()?, i.sinks.clone())))
        else {
            return;
        };
        r.finish(&sinks, within).await;
    }

    /// [`Alerts::stopped`], from a thread outside the runtime.
    pub fn stop(&self, within: Duration) {
        self.rt.block_on(self.stopped(within));
    }

    /// Each sink's name and counts.
    pub fn counts(&self) -> Vec<(String, SinkCounts)> {
        let Ok(inner) = self.inner.lock() else { return Vec::new() };
        inner
            .sinks
            .iter()
            .map(|s| {
                (s.name.clone(), SinkCounts { sent: s.sent.get(), failed: s.failed.get(), dropped: s.dropped.get() })
            })
            .collect()
    }
}

type Work = Vec<(Arc<SinkState>, SinkDef, mpsc::Receiver<Arc<AlertEvent>>)>;

async fn run(work: Work, stop: oneshot::Receiver<Instant>) {
    let mut tasks = tokio::task::JoinSet::new();
    for (s, def, rx) in work {
        tasks.spawn(sink_loop(s, def, rx));
    }
    // the queues are closed before the deadline arrives, so each loop ends once it is empty;
    // without a stop() (the Alerts was dropped) there is a short grace
    let deadline = stop.await.unwrap_or_else(|_| Instant::now() + Duration::from_secs(2));
    let _ = tokio::time::timeout_at(deadline.into(), async { while tasks.join_next().await.is_some() {} }).await;
    // dropping the set aborts what is still running; exec children are killed on drop
}

async fn sink_loop(s: Arc<SinkState>, def: SinkDef, mut rx: mpsc::Receiver<Arc<AlertEvent>>) {
    while let Some(ev) = rx.recv().await {
        let ok = match &def {
            SinkDef::Webhook(w) => webhook(&s.name, w, &ev).await,
            SinkDef::Exec(x) => exec(&s.name, x, &ev).await,
        };
        if ok {
            s.sent.inc()
        } else {
            s.failed.inc()
        };
        s.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Aborts a spawned task when dropped (the connection driver of a timed-out request).
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why an attempt failed, and whether another attempt may go better.
pub(crate) struct Failure {
    pub(crate) why: String,
    pub(crate) retry: bool,
}

/// What the server answered: its status and the start of its body (its reason, for the log).
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
}

/// How much of an answer's body is kept.
const REPLY_LIMIT: usize = 1024;

impl Failure {
    fn transient(why: String) -> Self {
        Failure { why, retry: true }
    }
}

/// POSTs `body` to the webhook's URL (TCP, or TLS for https), with its headers.
pub(crate) async fn post(w: &WebhookDef, body: Bytes) -> std::result::Result<Reply, Failure> {
    let addrs = tokio::net::lookup_host((w.host.as_str(), w.port))
        .await
        .map_err(|e| Failure::transient(format!("resolving {}: {e}", w.host)))?;
    let mut last = format!("{} resolves to no address", w.host);
    let mut stream = None;
    for a in addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connecting to {a}: {e}"),
        }
    }
    let stream = stream.ok_or(Failure::transient(last))?;
    let Some(tls) = &w.tls else { return request(w, stream, body).await };
    let peer = stream.peer_addr().map_or_else(|_| w.host.clone(), |a| a.to_string());
    let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
        .connect(tls.server_name.clone(), stream)
        .await
        .map_err(|e| {
            // a certificate the roots do not vouch for stays so: not retried
            let rejected = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()).is_some_and(|r| {
                matches!(r, rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
            });
            let trust = match &tls.ca_file {
                Some(f) => format!("the CA certificates in {f}"),
                None => "the platform's trusted CA certificates (set ca_file to trust another CA)".into(),
            };
            Failure {
                why: if rejected {
                    format!("TLS with {peer}: the server's certificate for {} is not accepted by {trust}: {e}", w.host)
                } else {
                    format!("TLS with {peer}: {e}")
                },
                retry: !rejected,
            }
        })?;
    request(w, stream, body).await
}

/// Sends the POST over an established connection (TCP or TLS).
async fn request<S>(w: &WebhookDef, stream: S, body: Bytes) -> std::result::Result<Reply, Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| Failure::transient(format!("HTTP handshake: {e}")))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let mut req = Request::post(w.path.as_str())
        .header(HOST, w.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("ipsla/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(body))
        .map_err(|e| Failure { why: format!("building the request: {e}"), retry: false })?;
    for (n, v) in &w.headers {
        req.headers_mut().insert(n.clone(), v.clone());
    }
    let resp = sender.send_request(req).await.map_err(|e| Failure::transient(format!("HTTP: {e}")))?;
    let status = resp.status();
    // the first REPLY_LIMIT bytes of the body say why a request was refused; a body that does not
    // end (or fails) leaves what was read
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while text.len() < REPLY_LIMIT {
        use http_body_util::BodyExt;
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    text.extend_from_slice(d);
                }
            }
            _ => break,
        }
    }
    text.truncate(REPLY_LIMIT);
    Ok(Reply { status, body: String::from_utf8_lossy(&text).trim().to_string() })
}

/// Posts `ev`, retrying connection errors, timeouts, 5xx and 429; true when a 2xx answered.
async fn webhook(name: &str, w: &WebhookDef, ev: &AlertEvent) -> bool {
    let body = Bytes::from(serde_json::to_vec(ev).unwrap_or_default());
    let mut why = String::new();
    for attempt in 0..=w.retries {
        if attempt > 0 {
            tokio::time::sleep(w.backoff.saturating_mul(1 << (attempt - 1).min(20))).await;
        }
        let retry = match tokio::time::timeout(w.timeout, post(w, body.clone())).await {
            Ok(Ok(reply)) if reply.status.is_success() => return true,
            Ok(Ok(Reply { status, .. })) => {
                why = format!("HTTP {status}");
                status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
            }
            Ok(Err(f)) => {
                why = f.why;
                f.retry
            }
            Err(_) => {
                why = format!("no answer within {}", humantime::format_duration(w.timeout));
                true
            }
        };
        if !retry {
            tracing::warn!(sink = name, url = %w.url, id = ev.id, "webhook refused the alert ({why}); not retried");
            return false;
        }
        tracing::debug!(sink = name, url = %w.url, attempt = attempt + 1, "webhook attempt failed: {why}");
    }
    tracing::warn!(sink = name, url = %w.url, id = ev.id, attempts = w.retries + 1, "webhook failed: {why}");
    false
}

/// Reads `r` to its end, keeping the first [`STDERR_LIMIT`] bytes.
async fn read_bounded(r: Option<tokio::process::ChildStderr>) -> Vec<u8> {
    let Some(mut r) = r else { return Vec::new() };
    let mut keep = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = STDERR_LIMIT.saturating_sub(keep.len());
        keep.extend_from_slice(&buf[..n.min(room)]);
    }
    keep
}

/// Runs the hook with `ev` on stdin and in the environment; true when it exits 0 within its
/// timeout. Only the hook itself is killed on timeout, not processes it started.
async fn exec(name: &str, x: &ExecDef, ev: &AlertEvent) -> bool {
    use std::process::Stdio;
    // one line, so that a shell hook can `read -r json`
    let mut json = serde_json::to_vec(ev).unwrap_or_default();
    json.push(b'\n');
    let mut child = match tokio::process::Command::new(&x.command[0])
        .args(&x.command[1..])
        .envs(ev.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(sink = name, program = %x.command[0], "exec hook could not start: {e}");
            return false;
        }
    };
    let stdin = child.stdin.take();
    let stderr = child.stderr.take();
    let feed = async move {
        if let Some(mut i) = stdin {
            // a hook that does not read stdin closes the pipe early: not an error
            let _ = i.write_all(&json).await;
        }
    };
    let done = tokio::time::timeout(x.timeout, async { tokio::join!(feed, read_bounded(stderr), child.wait()) }).await;
    match done {
        Ok((_, _, Ok(status))) if status.success() => true,
        Ok((_, err, Ok(status))) => {
            let err = String::from_utf8_lossy(&err);
            tracing::warn!(sink = name, program = %x.command[0], id = ev.id, stderr = %err.trim(), "exec hook failed: {status}");
            false
        }
        Ok((_, _, Err(e))) => {
            tracing::warn!(sink = name, program = %x.command[0], "exec hook: waiting for it failed: {e}");
            false
        }
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            tracing::warn!(
                sink = name,
                program = %x.command[0],
                id = ev.id,
                "exec hook killed: still running after {}",
                humantime::format_duration(x.timeout)
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipsla_core::reaction::{Action, Element};

    #[derive(Deserialize)]
    struct F {
        alert: Vec<AlertFile>,
    }

    fn defs(text: &str) -> Result<Vec<AlertDef>> {
        let f: F = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        validate(&f.alert)
    }

    fn err(text: &str) -> String {
        defs(text).unwrap_err().to_string()
    }

    #[test]
    fn webhook_defaults_and_url_parts() {
        let d = defs("[[alert]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9000/hook?x=1\"").unwrap();
        assert_eq!(d[0].name, "webhook-0");
        assert_eq!(d[0].events, EventFilter { reaction: true, track: true });
        let SinkDef::Webhook(w) = &d[0].sink else { panic!("{d:?}") };
        assert_eq!((w.host.as_str(), w.port, w.authority.as_str()), ("127.0.0.1", 9000, "127.0.0.1:9000"));
        assert_eq!(w.path, "/hook?x=1");
        assert_eq!((w.timeout, w.retries, w.backoff), (Duration::from_secs(5), 3, Duration::from_secs(1)));
        let d = defs("[[alert]]\ntype = \"webhook\"\nurl = \"http://[::1]:8080\"\nevents = [\"track\"]\nname = \"noc\"\nheaders = { Authorization = \"Bearer x\" }").unwrap();
        let SinkDef::Webhook(w) = &d[0].sink else { panic!("{d:?}") };
        assert_eq!((w.host.as_str(), w.port, w.path.as_str()), ("::1", 8080, "/"));
        assert_eq!(w.headers, vec![(hyper::header::AUTHORIZATION, HeaderValue::from_static("Bearer x"))]);
        assert_eq!((d[0].name.as_str(), d[0].events), ("noc", EventFilter { reaction: false, track: true }));
        let d = defs("[[alert]]\ntype = \"webhook\"\nurl = \"http://localhost\"").unwrap();
        let SinkDef::Webhook(w) = &d[0].sink else { panic!("{d:?}") };
        assert_eq!(
            (w.host.as_str(), w.port, w.authority.as_str(), w.path.as_str()),
            ("localhost", 80, "localhost", "/")
        );
    }

    #[test]
    fn exec_defaults() {
        let d =
            defs("[[alert]]\ntype = \"exec\"\ncommand = [\"sh\", \"-c\", \"true\"]\nevents = [\"reaction\"]").unwrap();
        assert_eq!(d[0].name, "exec-0");
        assert_eq!(
            d[0].sink,
            SinkDef::Exec(ExecDef {
                command: vec!["sh".into(), "-c".into(), "true".into()],
                timeout: Duration::from_secs(10)
            })
        );
        assert_eq!(d[0].events, EventFilter { reaction: true, track: false });
    }

    #[test]
    fn errors_name_the_key_and_the_allowed_values() {
        let e = err("[[alert]]\ntype = \"email\"");
        assert!(e.contains("alert[0].type: \"email\"") && e.contains("allowed: webhook, exec"), "{e}");
        let e = err("[[alert]]\ntype = \"webhook\"\nurl = \"ftp://example.org/\"");
        assert!(e.starts_with("alert[0].url:") && e.contains("has scheme ftp; allowed schemes: http, https"), "{e}");
        let e = err("[[alert]]\ntype = \"webhook\"\nurl = \"127.0.0.1:9000\"");
        assert!(e.starts_with("alert[0].url:") && e.contains("http[s]://HOST[:PORT][/PATH]"), "{e}");
        let e = err("[[alert]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:0/\"");
        assert!(e.starts_with("alert[0].url:") && e.contains("allowed 1 to 65535"), "{e}");
        let e = err("[[alert]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:70000/\"");
        assert!(e.starts_with("alert[0].url:") && e.contains("allowed 1 to 65535"), "{e}");
        let e = err("[[alert]]\ntype = \"webhook\"");
        assert!(e.starts_with("alert[0].url: required"), "{e}");
        let e = err("[[alert]]\ntype = \"webhook\"\nurl = \"http://h/\"\nretries = 11");
        assert!(e.contains("alert[0].retries: 11 is out of range; allowed 0 to 10"), "{e}");
        let e = err("[[alert]]\ntype = \"webhook\"\nurl = \"http://h/\"\ntimeout = \"1h\"");
        assert!(e.starts_with("alert[0].timeout:"), "{e}");
        let e = err("[[alert]]\ntype = \"webhook\"\nurl = \"http://h/\"\nevents = [\"runs\"]");
        assert!(e.contains("alert[0].events: \"runs\"") && e.contains("\"reaction\", \"track\""), "{e}");
        let e = err("[[alert]]\ntype = \"webhook\"\nurl = \"http://h/\"\ncommand = [\"x\"]");
        assert!(e.contains("alert[0].command: only for type = \"exec\""), "{e}");
        let e = err("[[alert]]\ntype = \"webhook\"\nurl = \"http://h/\"\nheaders = { \"Bad Name\" = \"v\" }");
        assert!(e.starts_with("alert[0].headers.Bad Name:"), "{e}");
        let e = err("[[alert]]\ntype = \"exec\"\ncommand = []");
        assert!(e.starts_with("alert[0].command: required"), "{e}");
        let e = err("[[alert]]\ntype = \"exec\"\ncommand = [\"/nonexistent/hook\"]");
        assert!(e.contains("alert[0].command: \"/nonexistent/hook\" is not an executable file"), "{e}");
        let e = err("[[alert]]\ntype = \"exec\"\ncommand = [\"sh\"]\nurl = \"http://h/\"");
        assert!(e.contains("alert[0].url: only for type = \"webhook\""), "{e}");
        let e = err(
            "[[alert]]\ntype = \"exec\"\ncommand = [\"sh\"]\n[[alert]]\ntype = \"exec\"\ncommand = [\"sh\"]\nname = \"exec-0\"",
        );
        assert!(e.contains("alert[1].name: \"exec-0\" is already used by alert[0]"), "{e}");
        // unknown keys, from serde, name the key and the allowed ones
        let e = err("[[alert]]\ntype = \"webhook\"\nurl = \"http://h/\"\nretry = 2");
        assert!(e.contains("retry") && e.contains("retries"), "{e}");
    }

    #[test]
    fn event_json_shape() {
        let e = ReactionEvent { element: Element::Rtt, occurred: true, value: 12.5, action: Action::Alert };
        let ev = AlertEvent::reaction(1, &e, 1_700_000_000_123_000_000);
        let v = serde_json::to_value(&ev).unwrap();
        let o = v.as_object().unwrap();
        // sorted: the key order depends on serde_json's preserve_order feature, which the
        // workspace build turns on and a build of this crate alone does not
        let mut keys = o.keys().map(String::as_str).collect::<Vec<_>>();
        keys.sort_unstable();
        assert_eq!(keys, ["element", "host", "id", "kind", "occurred", "text", "time", "time_ns", "value"]);
        assert_eq!(v["kind"], "reaction");
        assert_eq!(v["id"], 1);
        assert_eq!(v["element"], "rtt");
        assert_eq!(v["occurred"], true);
        assert_eq!(v["value"], 12.5);
        assert_eq!(v["text"], "%RTT-3-IPSLATHRESHOLD: IP SLAs(1): Threshold exceeded for rtt");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["time_ns"], 1_700_000_000_123_000_000i64);
        assert!(!v["host"].as_str().unwrap().is_empty());

        let c = Changed { id: 3, up: false, text: "%TRACK-6-STATE: 3 ip sla 1 state Up -> Down".into() };
        let v = serde_json::to_value(AlertEvent::track(&c, 0)).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["id"].as_u64(), v["element"].as_str()),
            (Some("track"), Some(3), Some("state"))
        );
        assert_eq!((v["occurred"].as_bool(), v["value"].as_f64()), (Some(true), Some(0.0)));
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_commented_example_is_valid() {
        let example = include_str!("../../../examples/agent.toml");
        let start = example.find("\n# [[alert]]").expect("examples/agent.toml has [[alert]] examples");
        let text: String = example[start..]
            .lines()
            .map(|l| l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let d = defs(&text).unwrap();
        assert_eq!(d.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["noc", "log"]);
        assert!(
            matches!(&d[0].sink, SinkDef::Webhook(w) if w.port == 9000 && w.path == "/ipsla" && w.headers.len() == 1)
        );
        assert!(matches!(&d[1].sink, SinkDef::Exec(x) if x.command[0] == "logger"));
    }

    #[test]
    fn exec_environment() {
        let c = Changed { id: 4, up: true, text: "%TRACK-6-STATE: 4 ip sla 1 state Down -> Up".into() };
        let env = AlertEvent::track(&c, 0).env();
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("IPSLA_KIND"), Some("track"));
        assert_eq!(get("IPSLA_ID"), Some("4"));
        assert_eq!(get("IPSLA_ELEMENT"), Some("state"));
        assert_eq!(get("IPSLA_OCCURRED"), Some("0"));
        assert_eq!(get("IPSLA_VALUE"), Some("1"));
        assert_eq!(get("IPSLA_TEXT"), Some(c.text.as_str()));
    }
}
