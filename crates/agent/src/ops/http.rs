//! http: one HTTP GET of a URL (IOS `http get URL`), timed phase by phase from the phases
//! themselves: the DNS lookup of the URL's host (one query to the name server), the TCP handshake,
//! the TLS handshake (https), the time from the request written to the response's head, the body.
//! IOS's "Latest RTT" is the whole transaction, lookup included. Redirects are not followed, as
//! IOS does not: a 3xx is the answer.

use super::dns::{Lookup, host_name_server, lookup};
use super::{Base, Detail, Fields, GaugeDef, GaugeValue, Key, Kind, Operation, Ty};
use crate::config::Result;
use crate::runner::{OperationSpec, RunContext, RunError, RunOutcome, Target};
use crate::tls::Tls;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use hyper::{Request, Uri, Version};
use ipsla_core::ops::dns::{DnsConfig, Question};
use ipsla_core::ops::{Cause, OperationResult, ReturnCode, StampSources};
use ipsla_core::stats::Sample;
use ipsla_net::clock::wall_now;
use ipsla_net::probe::{Hooks, SocketOptions, connect};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::timeout_at;

pub(super) static KIND: HttpKind = HttpKind;

/// Body octets read before stopping when `max_body` is not set.
const MAX_BODY: u64 = 1 << 20;

const KEYS: &[Key] = &[
    Key::new(
        "name_server",
        Ty::Addr,
        "DNS server that resolves the URL's host (IOS name-server); default: the first nameserver of /etc/resolv.conf. A host that is an address is not looked up",
    ),
    Key::new("name_server_port", Ty::Int, "UDP port of name_server (default 53)"),
    Key::new(
        "ca_file",
        Ty::Path,
        "https: PEM file of the CA certificates the server's certificate must chain to (default: the platform's trusted roots)",
    ),
    Key::new("insecure", Ty::Bool, "https: accept any certificate (the handshake is still made and timed)"),
    Key::new(
        "expect_status",
        Ty::Int,
        "The status code that counts as success, 100-599 (default: any 2xx or 3xx; redirects are not followed)",
    ),
    Key::new(
        "expect_body",
        Ty::Text,
        "A regular expression the body (its first max_body octets) must match (default: none)",
    ),
    Key::new(
        "max_body",
        Ty::Int,
        "Body octets read before stopping, 0-1073741824 (default 1048576); a longer body is cut there and reported as cut",
    ),
    Key::new(
        "http_version",
        Ty::Choice(&["1.0", "1.1"]),
        "HTTP version of the request (IOS http-version, default 1.1)",
    ),
];

pub(super) struct HttpKind;

/// The URL of an http operation, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Url {
    /// As written (with `http://` added when it had no scheme).
    pub text: String,
    /// `https://`.
    pub https: bool,
    /// The host: a name to look up, or an address.
    pub host: Host,
    /// TCP port (80 or 443 unless the URL says).
    pub port: u16,
    /// `Host:` header value.
    pub authority: String,
    /// Path and query of the request.
    pub path: String,
}

/// The host of a URL.
#[derive(Debug, Clone, PartialEq)]
pub enum Host {
    /// A DNS name, looked up on every run.
    Name(String),
    /// An address: no lookup.
    Ip(IpAddr),
}

/// A regular expression compared by its text (a reload keeps an unchanged one).
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::bytes::Regex);

impl PartialEq for Pattern {
    fn eq(&self, o: &Self) -> bool {
        self.0.as_str() == o.0.as_str()
    }
}

/// A validated http operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Http {
    /// What to get.
    pub url: Url,
    /// The name server; `None`: the first of /etc/resolv.conf, read at each run.
    pub name_server: Option<IpAddr>,
    /// Its port.
    pub name_server_port: u16,
    /// TLS for an `https://` URL.
    pub tls: Option<Tls>,
    /// The status that counts as success; `None`: any 2xx or 3xx.
    pub expect_status: Option<u16>,
    /// What the body must match.
    pub expect_body: Option<Pattern>,
    /// Body octets read before stopping.
    pub max_body: u64,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
}

/// The http operation's part of a report (`"http": {...}` in JSON): each phase's time, µs, or
/// null when the run did not get to it (or, for DNS, when the host is an address).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpDetail {
    /// `http` or `https`.
    pub scheme: String,
    /// The name server asked (`ADDR:PORT`); null when the host is an address.
    pub dns_server: Option<String>,
    /// The address connected to (`ADDR:PORT`); null when the lookup failed.
    pub address: Option<String>,
    /// Status code of the response; null without a response.
    pub status: Option<u16>,
    /// Body octets read (at most `max_body`); null without a response.
    pub body_octets: Option<u64>,
    /// The body was longer than `max_body` and was cut there.
    pub body_truncated: bool,
    /// Query sent to the answer received.
    pub dns_us: Option<f64>,
    /// TCP handshake.
    pub connect_us: Option<f64>,
    /// TLS handshake (https).
    pub tls_us: Option<f64>,
    /// Request written to the response's head received.
    pub first_byte_us: Option<f64>,
    /// The response's head to its body's end (or to `max_body`).
    pub transfer_us: Option<f64>,
    /// The whole transaction, lookup included (IOS's RTT).
    pub total_us: Option<f64>,
}

impl HttpDetail {
    fn of(detail: &Detail) -> Option<HttpDetail> {
        detail.get("http").and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// `target` as a URL: http or https, with a host; a target without a scheme is `http://` as curl
/// takes it.
fn parse_url(f: &Fields, text: &str) -> Result<Url> {
    let full = if text.contains("://") { text.to_string() } else { format!("http://{text}") };
    let bad = |why: String| f.error("target", format!("\"{text}\" {why}"));
    let uri: Uri =
        full.parse().map_err(|e| bad(format!("is not a URL ({e}); expected http://HOST[:PORT]/PATH or https://…")))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(s) => return Err(bad(format!("has the scheme {s}; only http:// and https:// are measured"))),
        None => return Err(bad("has no scheme; expected http://HOST[:PORT]/PATH or https://…".into())),
    };
    let authority = uri.authority().ok_or_else(|| bad("has no host".into()))?;
    if authority.as_str().contains('@') {
        return Err(bad("carries a user name; credentials are not sent".into()));
    }
    let raw = authority.host();
    if raw.is_empty() {
        return Err(bad("has no host".into()));
    }
    let host = match raw.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(a) => Host::Ip(a),
        Err(_) => {
            // the dns operation's validation, words included ("... is not a domain name (...)")
            Question::new(raw, "A").map_err(|e| bad(format!("has a host that is not a DNS name: {e}")))?;
            Host::Name(raw.to_string())
        }
    };
    Ok(Url {
        text: full.clone(),
        https,
        host,
        port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
        authority: authority.as_str().to_string(),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
    })
}

impl Kind for HttpKind {
    fn name(&self) -> &'static str {
        "http"
    }
    fn about(&self) -> &'static str {
        "One HTTP GET: DNS, TCP, TLS, first byte and transfer times, status and body size"
    }
    fn example(&self) -> &'static str {
        "ipsla probe http https://example.com/health --expect-status 200      (any web server: phase by phase)"
    }
    fn keys(&self) -> &'static [&'static [Key]] {
        &[KEYS]
    }
    fn default_port(&self) -> Option<u16> {
        None
    }
    fn resolves_target(&self) -> bool {
        false
    }
    fn build(&self, f: &Fields, base: &Base) -> Result<Box<dyn Operation>> {
        let text = match &base.target {
            Target::Name(t) => t.clone(),
            Target::Ip(a) => a.to_string(),
        };
        let url = parse_url(f, &text)?;
        let ca_file = f.path("ca_file")?;
        let insecure = f.bool("insecure")?.unwrap_or(false);
        if !url.https {
            for key in ["ca_file", "insecure"] {
                if f.is_set(key) {
                    return Err(f.error(key, format!("only https:// URLs use it; the target is {}", url.text)));
                }
            }
        }
        if insecure && ca_file.is_some() {
            return Err(f.error(
                "insecure",
                format!("accepts any certificate, so {} would not be read; set one of the two", f.short("ca_file")),
            ));
        }
        let tls = match (url.https, insecure) {
            (false, _) => None,
            (true, true) => Some(Tls::insecure(&f.key("insecure"), &tls_host(&url))?),
            (true, false) => {
                let ca = ca_file.as_ref().map(|p| p.to_string_lossy().into_owned());
                Some(Tls::new(&f.key("ca_file"), &tls_host(&url), ca.as_deref())?)
            }
        };
        let expect_status = match f.int::<i64>("expect_status")? {
            None => None,
            Some(s @ 100..=599) => Some(s as u16),
            Some(s) => return Err(f.error("expect_status", format!("{s} is not a status code; allowed 100 to 599"))),
        };
        let expect_body = match f.text("expect_body")? {
            None => None,
            Some(re) => Some(Pattern(
                regex::bytes::Regex::new(re)
                    .map_err(|e| f.error("expect_body", format!("\"{re}\" is not a regular expression: {e}")))?,
            )),
        };
        Ok(Box::new(Http {
            url,
            name_server: f.addr("name_server")?,
            name_server_port: f.range("name_server_port", 53, 1, 65535)?,
            tls,
            expect_status,
            expect_body,
            max_body: f.range::<i64>("max_body", MAX_BODY as i64, 0, 1 << 30)? as u64,
            version: f.choose(
                "http_version",
                Version::HTTP_11,
                &[("1.0", Version::HTTP_10), ("1.1", Version::HTTP_11)],
            )?,
        }))
    }

    fn text(&self, detail: &Detail, w: &mut String) {
        let Some(d) = HttpDetail::of(detail) else { return };
        let us = |v: Option<f64>, none: &str| match v {
            Some(v) => format!("{v:.3} microseconds"),
            None => format!("none ({none})"),
        };
        let dns_none = match &d.dns_server {
            None => "the URL's host is an address: no lookup".to_string(),
            Some(s) => format!("no answer from {s}"),
        };
        let tls_none = if d.scheme == "https" { "not reached" } else { "http://: no TLS" };
        let transaction = d.total_us.map(|t| t - d.dns_us.unwrap_or(0.0) - d.connect_us.unwrap_or(0.0));
        let _ = writeln!(w, "Latest DNS RTT: {}", us(d.dns_us, &dns_none));
        let _ = writeln!(w, "Latest TCP Connection RTT: {}", us(d.connect_us, "not reached"));
        let _ = writeln!(w, "Latest TLS Handshake RTT: {}", us(d.tls_us, tls_none));
        let _ = writeln!(w, "Latest Time To First Byte: {}", us(d.first_byte_us, "no response head"));
        let _ = writeln!(w, "Latest Body Transfer Time: {}", us(d.transfer_us, "no complete body"));
        let _ = writeln!(w, "Latest HTTP Transaction RTT: {}", us(transaction, "not completed"));
        let status = d.status.map_or("none (no response)".to_string(), |s| s.to_string());
        let _ = writeln!(w, "Latest HTTP status code: {status}");
        let body = match (d.body_octets, d.body_truncated) {
            (None, _) => "none (no response)".to_string(),
            (Some(n), false) => n.to_string(),
            (Some(n), true) => format!("{n} (cut at max_body: the body is longer)"),
        };
        let _ = writeln!(w, "Latest HTTP body octets: {body}");
        if let Some(a) = &d.address {
            let _ = writeln!(w, "Latest HTTP server address: {a}");
        }
    }

    fn gauges(&self) -> &'static [GaugeDef] {
        &[
            GaugeDef {
                name: "http_phase_seconds",
                help: "Duration of each phase of the latest http run (dns, connect, tls, first_byte, transfer, total); a phase the run did not have is absent",
            },
            GaugeDef { name: "http_status_code", help: "Status code of the latest http run's response" },
            GaugeDef { name: "http_body_octets", help: "Body octets the latest http run read (at most max_body)" },
        ]
    }

    fn gauge_values(&self, detail: &Detail) -> Vec<GaugeValue> {
        let Some(d) = HttpDetail::of(detail) else { return Vec::new() };
        let phases = [
            ("dns", d.dns_us),
            ("connect", d.connect_us),
            ("tls", d.tls_us),
            ("first_byte", d.first_byte_us),
            ("transfer", d.transfer_us),
            ("total", d.total_us),
        ];
        let mut v: Vec<GaugeValue> = phases
            .into_iter()
            .filter_map(|(p, us)| {
                us.map(|us| GaugeValue {
                    family: "http_phase_seconds",
                    labels: vec![("phase", p.to_string())],
                    value: us / 1e6,
                })
            })
            .collect();
        v.extend(d.status.map(|s| GaugeValue { family: "http_status_code", labels: vec![], value: f64::from(s) }));
        v.extend(d.body_octets.map(|n| GaugeValue { family: "http_body_octets", labels: vec![], value: n as f64 }));
        v
    }
}

/// The name the server's certificate is checked for: the URL's host, an address without brackets.
fn tls_host(url: &Url) -> String {
    match &url.host {
        Host::Name(n) => n.clone(),
        Host::Ip(a) => a.to_string(),
    }
}

impl Operation for Http {
    fn kind(&self) -> &'static dyn Kind {
        &KIND
    }
    fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.push(("HTTP Operation", "get".into()));
        out.push(("HTTP Server Version", if self.version == Version::HTTP_10 { "1.0" } else { "1.1" }.into()));
        out.push(("URL", self.url.text.clone()));
        if let Host::Name(_) = self.url.host {
            let ns = self.name_server.map_or_else(
                || format!("the first nameserver of {}, port {}", super::dns::RESOLV_CONF, self.name_server_port),
                |a| SocketAddr::new(a, self.name_server_port).to_string(),
            );
            out.push(("Name Server", ns));
        }
        if let Some(t) = &self.tls {
            let v = if t.insecure { "any certificate (insecure)".to_string() } else { t.trust() };
            out.push(("TLS certificate check", v));
        }
        let s = self.expect_status.map_or("any 2xx or 3xx".to_string(), |s| s.to_string());
        out.push(("Expected status", s));
        if let Some(p) = &self.expect_body {
            out.push(("Expected body", p.0.as_str().to_string()));
        }
        out.push(("Maximum body octets", self.max_body.to_string()));
    }
    fn run(&self, spec: &OperationSpec, ctx: &RunContext<'_>) -> std::result::Result<RunOutcome, RunError> {
        let t1 = wall_now();
        let start = Instant::now();
        let mut d = HttpDetail { scheme: if self.url.https { "https" } else { "http" }.into(), ..Default::default() };
        // the lookup (a name's) on this thread as the dns operation makes it, then the rest
        let ip = match &self.url.host {
            Host::Ip(a) => Ok(*a),
            Host::Name(name) => self.look_up(name, spec, ctx, &mut d)?,
        };
        let failure = match ip {
            Err(f) => Some(f),
            Ok(ip) => ctx.rt.block_on(cancellable(ctx.hooks, self.transaction(spec, start, ip, &mut d)))?.err(),
        };
        let sample = match (&failure, d.total_us) {
            (None, Some(us)) => {
                // the ns the total was made from: the RTT reads back as total_us exactly
                let rtt = (us * 1000.0).round() as i64;
                let t1 = t1.as_nanos() as i64;
                Some(Sample { seq: 1, rtt, t1, t4: t1 + rtt, ..Sample::default() })
            }
            _ => None,
        };
        let mut stamps = StampSources::default();
        if sample.is_some() {
            stamps.note_rx(false);
        }
        let (code, cause) = failure.map_or((None, None), |(c, why)| (Some(c), Some(Cause::Service { reason: why })));
        let mut result = OperationResult::single(code, Some(t1), sample, 0, spec.threshold, stamps, 0);
        result.cause = cause;
        let mut detail = Detail::new();
        detail.insert("http".into(), serde_json::to_value(&d).unwrap_or_default());
        Ok(RunOutcome::with_detail(result, detail))
    }
}

/// A failed run: its IOS return code and why, in words that name the URL or address.
type Failure = (ReturnCode, String);

fn us_since(t: Instant) -> f64 {
    t.elapsed().as_nanos() as f64 / 1000.0
}

/// A duration as an error message says it.
fn said(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// An error and its sources, each said once.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let t = c.to_string();
        if !s.contains(&t) {
            s = format!("{s}: {t}");
        }
        next = c.source();
    }
    s
}

impl Http {
    /// The DNS phase: one query for the address of `name` (AAAA when the operation's source
    /// address is IPv6, else A) to the name server, as the dns operation asks it (UDP, TCP when
    /// truncated; what is not the answer is ignored). Its RTT is `dns_us`; the first address
    /// answered is connected to.
    fn look_up(
        &self,
        name: &str,
        spec: &OperationSpec,
        ctx: &RunContext<'_>,
        d: &mut HttpDetail,
    ) -> std::result::Result<std::result::Result<IpAddr, Failure>, RunError> {
        let v6 = spec.sockets.source_ip.is_some_and(|a| a.is_ipv6());
        let record_type = if v6 { "AAAA" } else { "A" };
        let failed = |why: String| Err((ReturnCode::DnsQueryError, format!("looking up {name}: {why}")));
        let server = match self.name_server.map(Ok).unwrap_or_else(host_name_server) {
            Ok(a) => SocketAddr::new(a, self.name_server_port),
            Err(why) => return Ok(failed(format!("{why}; set name_server to the DNS server to ask"))),
        };
        let question = match Question::new(name, record_type) {
            Ok(q) => q,
            Err(why) => return Ok(failed(why)),
        };
        d.dns_server = Some(server.to_string());
        // the operation's ToS and VRF; its source address when it is of the server's family (the
        // name server may be of the other), any source port
        let sockets = SocketOptions {
            source_ip: spec.sockets.source_ip.filter(|a| a.is_ipv6() == server.is_ipv6()),
            source_port: 0,
            ..spec.sockets.clone()
        };
        // no threshold of its own: the transaction's total is compared with the threshold
        let cfg = DnsConfig {
            question,
            recursion_desired: true,
            expect: None,
            server,
            id: rand::random(),
            timeout: spec.timeout,
            threshold: spec.timeout,
        };
        let Lookup { result, detail } = lookup(cfg, &sockets, ctx)?;
        d.dns_us = result.stats.rtt.mean().map(|ns| ns / 1000.0);
        let address = detail
            .answer
            .iter()
            .flat_map(|a| &a.answers)
            .filter(|r| r.record_type == record_type)
            .find_map(|r| r.data.parse::<IpAddr>().ok());
        Ok(match (result.return_code, address) {
            (ReturnCode::Ok | ReturnCode::OverThreshold, Some(a)) => Ok(a),
            (code, _) => Err((
                if code == ReturnCode::DnsServerTimeout { code } else { ReturnCode::DnsQueryError },
                format!(
                    "looking up {name}: {}",
                    result.cause.map_or_else(|| "no address in the answer".to_string(), |c| c.to_string())
                ),
            )),
        })
    }

    /// The transaction after the lookup, filling `d` phase by phase as each ends.
    async fn transaction(
        &self,
        spec: &OperationSpec,
        start: Instant,
        ip: IpAddr,
        d: &mut HttpDetail,
    ) -> std::result::Result<(), Failure> {
        let deadline = tokio::time::Instant::from_std(start + spec.timeout);
        let url = &self.url.text;
        let to = SocketAddr::new(ip, self.url.port);
        d.address = Some(to.to_string());
        let t = Instant::now();
        let tcp = match timeout_at(deadline, connect(to, &spec.sockets)).await {
            Err(_) => {
                return Err((
                    ReturnCode::TcpConnectTimeout,
                    format!(
                        "the TCP handshake with {to} was not done within the {} timeout: is the host up, and the port open rather than filtered?",
                        said(spec.timeout)
                    ),
                ));
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err((
                    ReturnCode::HttpError,
                    format!("connection refused (TCP reset) by {to}: nothing listens on that port"),
                ));
            }
            Ok(Err(e)) => {
                return Err((ReturnCode::HttpError, format!("cannot connect to {to} ({url}): {e}")));
            }
            Ok(Ok(s)) => s,
        };
        d.connect_us = Some(us_since(t));
        let written = Arc::new(Mutex::new(None));
        let tcp = Timed { inner: tcp, written: written.clone() };
        match &self.tls {
            None => self.exchange(tcp, &written, to, deadline, spec.timeout, start, d).await,
            Some(tls) => {
                let t = Instant::now();
                let handshake =
                    tokio_rustls::TlsConnector::from(tls.config.clone()).connect(tls.server_name.clone(), tcp);
                let stream = match timeout_at(deadline, handshake).await {
                    Err(_) => {
                        return Err((
                            ReturnCode::HttpTransactionTimeout,
                            format!(
                                "the TLS handshake with {to} was not done within the {} timeout",
                                said(spec.timeout)
                            ),
                        ));
                    }
                    Ok(Err(e)) => {
                        let host = tls_host(&self.url);
                        return Err((
                            ReturnCode::HttpError,
                            match crate::tls::refused_certificate(&e) {
                                Some(r) => format!(
                                    "TLS with {to}: the server's certificate for {host} is not accepted by {}: {r}",
                                    tls.trust()
                                ),
                                None => format!("the TLS handshake with {to} failed: {}", chain(&e)),
                            },
                        ));
                    }
                    Ok(Ok(s)) => s,
                };
                d.tls_us = Some(us_since(t));
                self.exchange(stream, &written, to, deadline, spec.timeout, start, d).await
            }
        }
    }

    /// The request and its response over an established connection (TCP or TLS).
    #[allow(clippy::too_many_arguments)]
    async fn exchange<S>(
        &self,
        stream: S,
        written: &Mutex<Option<Instant>>,
        to: SocketAddr,
        deadline: tokio::time::Instant,
        timeout: Duration,
        start: Instant,
        d: &mut HttpDetail,
    ) -> std::result::Result<(), Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let url = &self.url.text;
        let late = |what: String| {
            (ReturnCode::HttpTransactionTimeout, format!("GET {url}: {what} within the {} timeout", said(timeout)))
        };
        let broken = |what: String| (ReturnCode::HttpError, format!("GET {url}: {what}"));
        let (mut sender, conn) =
            match timeout_at(deadline, hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)))
                .await
            {
                Err(_) => return Err(late(format!("no connection to {to} ready"))),
                Ok(Err(e)) => return Err(broken(format!("HTTP over the connection to {to}: {}", chain(&e)))),
                Ok(Ok(x)) => x,
            };
        // the connection is driven beside the request and dropped with this run
        let conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let mut req = Request::get(self.url.path.as_str())
            .version(self.version)
            .header(HOST, self.url.authority.as_str())
            .header(USER_AGENT, concat!("ipsla/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "*/*");
        if self.version == Version::HTTP_11 {
            req = req.header(CONNECTION, "close");
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| broken(format!("cannot build the request: {e}")))?;
        let resp = match timeout_at(deadline, sender.send_request(req)).await {
            Err(_) => return Err(late(format!("no response head from {to} (the request was sent)"))),
            Ok(Err(e)) if e.is_parse() || e.is_parse_status() => {
                return Err(broken(format!("the answer of {to} is not an HTTP response: {}", chain(&e))));
            }
            Ok(Err(e)) => return Err(broken(format!("no response from {to}: {}", chain(&e)))),
            Ok(Ok(r)) => r,
        };
        let head = Instant::now();
        let sent = written.lock().ok().and_then(|w| *w).unwrap_or(head);
        d.first_byte_us = Some(head.saturating_duration_since(sent).as_nanos() as f64 / 1000.0);
        let status = resp.status();
        d.status = Some(status.as_u16());
        d.body_octets = Some(0);
        let mut body = resp.into_body();
        let mut octets = 0u64;
        let mut kept = Vec::new();
        loop {
            match timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(late(format!("the body from {to} was still arriving ({octets} octets read)"))),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(broken(format!("the body from {to} broke off after {octets} octets: {}", chain(&e))));
                }
                Ok(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let take = data.len().min((self.max_body - octets) as usize);
                    if self.expect_body.is_some() {
                        kept.extend_from_slice(&data[..take]);
                    }
                    octets += take as u64;
                    d.body_octets = Some(octets);
                    if take < data.len() {
                        d.body_truncated = true;
                        break;
                    }
                }
            }
        }
        drop(conn);
        d.transfer_us = Some(us_since(head));
        d.total_us = Some(us_since(start));
        let reason = status.canonical_reason().map_or(String::new(), |r| format!(" {r}"));
        match self.expect_status {
            Some(want) if status.as_u16() != want => {
                return Err(broken(format!("answered {}{reason}; expected {want} (expect_status)", status.as_u16())));
            }
            None if !(status.is_success() || status.is_redirection()) => {
                return Err(broken(format!(
                    "answered {}{reason}; expected 2xx or 3xx (set expect_status to accept another)",
                    status.as_u16()
                )));
            }
            _ => {}
        }
        if let Some(p) = &self.expect_body
            && !p.0.is_match(&kept)
        {
            let cut =
                if d.body_truncated { format!(", the first max_body = {}", self.max_body) } else { String::new() };
            return Err(broken(format!(
                "the body ({octets} octets{cut}) does not match expect_body \"{}\"",
                p.0.as_str()
            )));
        }
        Ok(())
    }
}

/// Runs `fut`, returning `Cancelled` soon after the hooks say so.
async fn cancellable<T>(hooks: Hooks<'_>, fut: impl Future<Output = T>) -> std::result::Result<T, RunError> {
    tokio::pin!(fut);
    loop {
        if hooks.is_cancelled() {
            return Err(RunError::Cancelled);
        }
        match hooks.wait_until(None) {
            None => return Ok(fut.await),
            Some(poll) => tokio::select! {
                v = &mut fut => return Ok(v),
                _ = tokio::time::sleep_until(poll.into()) => {}
            },
        }
    }
}

/// A task aborted when dropped (the connection of a finished, failed or cancelled run).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A stream that notes when its last write completed: the request written, the start of the time
/// to first byte.
struct Timed<S> {
    inner: S,
    written: Arc<Mutex<Option<Instant>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> Timed<S> {
    fn note<T>(&self, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Ok(_)) = &p
            && let Ok(mut w) = self.written.lock()
        {
            *w = Some(Instant::now());
        }
        p
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(p)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(p)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::common::validate;
    use crate::ops::{Namer, OperationDef};

    fn check(extra: &str) -> Result<OperationDef> {
        let table: toml::Table = toml::from_str(&format!("type = \"http\"\n{extra}")).unwrap();
        validate(&table, Namer::Config("operation[2]"), 2)
    }
    fn http(extra: &str) -> Http {
        check(extra).unwrap().spec.op_as::<Http>().unwrap().clone()
    }
    fn err(extra: &str) -> String {
        check(extra).unwrap_err().to_string()
    }

    #[test]
    fn the_url_is_the_target() {
        let h = http("target = \"http://test.example:8080/health?full=1\"");
        assert_eq!(h.url.host, Host::Name("test.example".into()));
        assert_eq!((h.url.port, h.url.https), (8080, false));
        assert_eq!((h.url.authority.as_str(), h.url.path.as_str()), ("test.example:8080", "/health?full=1"));
        assert_eq!((h.max_body, h.version, h.expect_status, h.name_server), (1 << 20, Version::HTTP_11, None, None));
        // without a scheme, http:// as curl takes it; the default ports
        let h = http("target = \"127.0.0.1\"");
        assert_eq!((h.url.text.as_str(), h.url.port, h.url.path.as_str()), ("http://127.0.0.1", 80, "/"));
        assert_eq!(h.url.host, Host::Ip("127.0.0.1".parse().unwrap()));
        let h = http("target = \"https://[::1]/\"\ninsecure = true");
        assert_eq!((h.url.host.clone(), h.url.port), (Host::Ip("::1".parse().unwrap()), 443));
        assert_eq!(tls_host(&h.url), "::1");
        let d = check("target = \"http://test.example/\"\nname_server = \"127.0.0.1\"").unwrap();
        assert_eq!(d.spec.target_label(), "http://test.example/");
        assert_eq!(d.spec.port, 0);
    }

    #[test]
    fn errors_name_the_key_and_what_it_takes() {
        assert_eq!(
            err("target = \"ftp://files.example/\""),
            "operation[2].target: \"ftp://files.example/\" has the scheme ftp; only http:// and https:// are measured"
        );
        assert_eq!(
            err("target = \"http://user:pw@test.example/\""),
            "operation[2].target: \"http://user:pw@test.example/\" carries a user name; credentials are not sent"
        );
        assert!(err("target = \"http://a b/\"").starts_with("operation[2].target: \"http://a b/\" is not a URL ("));
        assert_eq!(
            err("target = \"http://test.example/\"\nca_file = \"/etc/ssl/ca.pem\""),
            "operation[2].ca_file: only https:// URLs use it; the target is http://test.example/"
        );
        assert_eq!(
            err("target = \"https://test.example/\"\nca_file = \"/etc/ssl/ca.pem\"\ninsecure = true"),
            "operation[2].insecure: accepts any certificate, so ca_file would not be read; set one of the two"
        );
        assert_eq!(
            err("target = \"https://test.example/\"\nca_file = \"/nonexistent/ca.pem\""),
            "operation[2].ca_file: cannot read \"/nonexistent/ca.pem\": I/O error: No such file or directory (os error 2)"
        );
        assert_eq!(
            err("target = \"http://test.example/\"\nexpect_status = 99"),
            "operation[2].expect_status: 99 is not a status code; allowed 100 to 599"
        );
        assert!(
            err("target = \"http://test.example/\"\nexpect_body = \"(ok\"")
                .starts_with("operation[2].expect_body: \"(ok\" is not a regular expression: regex parse error"),
        );
        assert_eq!(
            err("target = \"http://test.example/\"\nhttp_version = \"2\""),
            "operation[2].http_version: \"2\" is not allowed; allowed: 1.0, 1.1"
        );
        assert_eq!(
            err("target = \"http://test.example/\"\nmax_body = -1"),
            "operation[2].max_body: -1 is out of range; allowed 0 to 1073741824"
        );
    }

    #[test]
    fn a_phase_that_did_not_happen_is_words_and_no_series() {
        let d = HttpDetail {
            scheme: "http".into(),
            address: Some("127.0.0.1:8080".into()),
            status: Some(200),
            body_octets: Some(5),
            connect_us: Some(100.0),
            first_byte_us: Some(200.0),
            transfer_us: Some(50.0),
            total_us: Some(400.0),
            ..Default::default()
        };
        let mut detail = Detail::new();
        detail.insert("http".into(), serde_json::to_value(&d).unwrap());
        let mut w = String::new();
        KIND.text(&detail, &mut w);
        assert_eq!(
            w,
            "Latest DNS RTT: none (the URL's host is an address: no lookup)\n\
             Latest TCP Connection RTT: 100.000 microseconds\n\
             Latest TLS Handshake RTT: none (http://: no TLS)\n\
             Latest Time To First Byte: 200.000 microseconds\n\
             Latest Body Transfer Time: 50.000 microseconds\n\
             Latest HTTP Transaction RTT: 300.000 microseconds\n\
             Latest HTTP status code: 200\n\
             Latest HTTP body octets: 5\n\
             Latest HTTP server address: 127.0.0.1:8080\n"
        );
        let g: Vec<(String, f64)> =
            KIND.gauge_values(&detail).into_iter().map(|v| (format!("{}{:?}", v.family, v.labels), v.value)).collect();
        let want = [
            ("http_phase_seconds[(\"phase\", \"connect\")]", 100e-6),
            ("http_phase_seconds[(\"phase\", \"first_byte\")]", 200e-6),
            ("http_phase_seconds[(\"phase\", \"transfer\")]", 50e-6),
            ("http_phase_seconds[(\"phase\", \"total\")]", 400e-6),
            ("http_status_code[]", 200.0),
            ("http_body_octets[]", 5.0),
        ];
        assert_eq!(g, want.map(|(a, b)| (a.to_string(), b)));
        // the name server that did not answer is named; a run without a response has no series
        let d = HttpDetail { scheme: "https".into(), dns_server: Some("127.0.0.1:53".into()), ..Default::default() };
        detail.insert("http".into(), serde_json::to_value(&d).unwrap());
        let mut w = String::new();
        KIND.text(&detail, &mut w);
        assert!(w.starts_with("Latest DNS RTT: none (no answer from 127.0.0.1:53)\n"), "{w}");
        assert!(w.contains("\nLatest TLS Handshake RTT: none (not reached)\n"), "{w}");
        assert!(w.contains("\nLatest HTTP status code: none (no response)\n"), "{w}");
        assert_eq!(KIND.gauge_values(&detail), vec![]);
    }
}
