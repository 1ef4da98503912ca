//! Alert sinks against real receivers on loopback: webhook retries and their limits, the bounded
//! queue, exec hooks (event on stdin and in the environment, failures, the timeout kill), and an
//! agent whose reaction fires end to end into a webhook.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ipsla_agent::alert::{AlertDef, AlertEvent, AlertFile, Alerts, SinkCounts};
use ipsla_agent::daemon::{Agent, AgentFile};
use ipsla_agent::metrics::Metrics;
use ipsla_agent::tracks::Changed;
use ipsla_core::reaction::{Action, Element, ReactionEvent};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What the receiver saw: headers and body of each request, in order.
type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

#[derive(Clone)]
struct Script {
    seen: Seen,
    /// Status of request i; the last one repeats.
    answers: Arc<Vec<u16>>,
    /// Each request takes a permit before it is answered (None: answer at once).
    gate: Option<Arc<Semaphore>>,
}

/// An HTTP receiver on 127.0.0.1:0, stopped on drop.
struct Receiver {
    addr: SocketAddr,
    seen: Seen,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn record(State(s): State<Script>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = {
        let mut seen = s.seen.lock().unwrap();
        seen.push((headers, body));
        seen.len()
    };
    if let Some(g) = &s.gate {
        g.acquire().await.unwrap().forget();
    }
    let code = s.answers.get(n - 1).or(s.answers.last()).copied().unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}

fn receiver(answers: &[u16], gate: Option<Arc<Semaphore>>) -> Receiver {
    let seen = Seen::default();
    let script = Script { seen: seen.clone(), answers: Arc::new(answers.to_vec()), gate };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = Router::new().route("/hook", post(record)).with_state(script);
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
        });
    });
    Receiver { addr, seen, stop: Some(stop), thread: Some(thread) }
}

impl Receiver {
    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    fn bodies(&self) -> Vec<serde_json::Value> {
        self.seen.lock().unwrap().iter().map(|(_, b)| serde_json::from_slice(b).unwrap()).collect()
    }
    /// Waits (at most 10 s) until `n` requests have arrived.
    fn wait_for(&self, n: usize) {
        let t = Instant::now();
        while self.count() < n {
            assert!(t.elapsed() < Duration::from_secs(10), "{} of {n} requests arrived", self.count());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn defs(toml_text: &str) -> Vec<AlertDef> {
    #[derive(serde::Deserialize)]
    struct F {
        alert: Vec<AlertFile>,
    }
    let f: F = toml::from_str(toml_text).unwrap();
    ipsla_agent::alert::validate(&f.alert).unwrap()
}

fn rtt_event(op: u32) -> AlertEvent {
    let e = ReactionEvent { element: Element::Rtt, occurred: true, value: 151.5, action: Action::Alert };
    AlertEvent::reaction(op, &e, 1_700_000_000_000_000_000)
}

fn counts(a: &Alerts) -> Vec<SinkCounts> {
    a.counts().into_iter().map(|(_, c)| c).collect()
}

const STOP: Duration = Duration::from_secs(20);

/// The runtime the sinks run on (the agent's, in the agent).
fn rt() -> &'static tokio::runtime::Handle {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
        .handle()
}

#[test]
fn webhook_retries_5xx_then_delivers_once() {
    let rx = receiver(&[503, 503, 200], None);
    let metrics = Metrics::new();
    let a = Alerts::start(
        rt(),
        defs(&format!(
            "[[alert]]\ntype = \"webhook\"\nname = \"noc\"\nurl = \"{}\"\nbackoff = \"10ms\"\nheaders = {{ X-Token = \"t0k\" }}",
            rx.url()
        )),
        &metrics,
    );
    a.send(rtt_event(1));
    a.stop(STOP);
    assert_eq!(rx.count(), 3, "two 503s retried, then the 200");
    assert_eq!(counts(&a), [SinkCounts { sent: 1, failed: 0, dropped: 0 }]);
    let seen = rx.seen.lock().unwrap();
    for (h, b) in seen.iter() {
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-token"], "t0k");
        let v: serde_json::Value = serde_json::from_slice(b).unwrap();
        assert_eq!(v["kind"], "reaction");
        assert_eq!(v["id"], 1);
        assert_eq!(v["element"], "rtt");
        assert_eq!(v["occurred"], true);
        assert_eq!(v["value"], 151.5);
        assert_eq!(v["text"], "%RTT-3-IPSLATHRESHOLD: IP SLAs(1): Threshold exceeded for rtt");
        assert_eq!(v["time"], "2023-11-14T22:13:20.000Z");
    }
    let text = metrics.encode();
    assert!(text.contains("ipsla_alerts_total{sink=\"noc\",result=\"sent\"} 1\n"), "{text}");
    assert!(text.contains("ipsla_alerts_total{sink=\"noc\",result=\"failed\"} 0\n"), "{text}");
}

#[test]
fn webhook_4xx_is_not_retried_and_retries_are_bounded() {
    let bad_request = receiver(&[400], None);
    let always_500 = receiver(&[500], None);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let a = Alerts::start(
        rt(),
        defs(&format!(
            "[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\nbackoff = \"10ms\"\n\
             [[alert]]\ntype = \"webhook\"\nurl = \"{}\"\nbackoff = \"10ms\"\nretries = 2\n\
             [[alert]]\ntype = \"webhook\"\nurl = \"http://{closed}/\"\nbackoff = \"10ms\"\nretries = 1",
            bad_request.url(),
            always_500.url()
        )),
        &Metrics::new(),
    );
    a.send(rtt_event(2));
    a.stop(STOP);
    assert_eq!(bad_request.count(), 1, "a 400 is the receiver's final word");
    assert_eq!(always_500.count(), 3, "the first attempt and 2 retries");
    let failed = SinkCounts { sent: 0, failed: 1, dropped: 0 };
    assert_eq!(counts(&a), [failed, failed, failed]);
}

#[test]
fn a_full_queue_drops_without_blocking_and_counts() {
    let gate = Arc::new(Semaphore::new(0));
    let rx = receiver(&[200], Some(gate.clone()));
    let a = Alerts::with_capacity(
        rt(),
        defs(&format!("[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\ntimeout = \"10m\"", rx.url())),
        &Metrics::new(),
        2,
    );
    a.send(rtt_event(1));
    rx.wait_for(1); // the sink is now stuck in event 1's request; its queue holds 2 more
    for op in 2..=6 {
        a.send(rtt_event(op));
    }
    assert_eq!(counts(&a), [SinkCounts { sent: 0, failed: 0, dropped: 3 }]);
    gate.add_permits(10);
    a.stop(STOP);
    assert_eq!(counts(&a), [SinkCounts { sent: 3, failed: 0, dropped: 3 }]);
    let ids: Vec<u64> = rx.bodies().iter().map(|v| v["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3], "in order; 4-6 were dropped");
}

#[test]
fn the_events_filter_picks_kinds() {
    let tracks = receiver(&[200], None);
    let all = receiver(&[200], None);
    let a = Alerts::start(
        rt(),
        defs(&format!(
            "[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\nevents = [\"track\"]\n[[alert]]\ntype = \"webhook\"\nurl = \"{}\"",
            tracks.url(),
            all.url()
        )),
        &Metrics::new(),
    );
    a.send(rtt_event(1));
    let c = Changed { id: 5, up: false, text: "%TRACK-6-STATE: 5 ip sla 1 state Up -> Down".into() };
    a.send(AlertEvent::track(&c, 0));
    a.stop(STOP);
    let kinds = |r: &Receiver| r.bodies().iter().map(|v| v["kind"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(kinds(&tracks), ["track"]);
    assert_eq!(kinds(&all), ["reaction", "track"]);
    assert_eq!(tracks.bodies()[0]["text"], "%TRACK-6-STATE: 5 ip sla 1 state Up -> Down");
    assert_eq!(tracks.bodies()[0]["occurred"], true);
}

#[test]
fn reconfigure_moves_new_events_to_the_new_sinks() {
    let old = receiver(&[200], None);
    let new = receiver(&[200], None);
    let metrics = Metrics::new();
    let hook = |r: &Receiver| defs(&format!("[[alert]]\ntype = \"webhook\"\nname = \"noc\"\nurl = \"{}\"", r.url()));
    let a = Alerts::start(rt(), hook(&old), &metrics);
    a.send(rtt_event(1));
    a.reconfigure(hook(&new), &metrics, STOP);
    a.send(rtt_event(2));
    a.stop(STOP);
    old.wait_for(1); // the old sink drains on a thread of its own
    assert_eq!(old.bodies().iter().map(|v| v["id"].as_u64().unwrap()).collect::<Vec<_>>(), [1]);
    assert_eq!(new.bodies().iter().map(|v| v["id"].as_u64().unwrap()).collect::<Vec<_>>(), [2]);
    // same name, same counter: both deliveries count once the old sink has reported its own
    let t = Instant::now();
    while !metrics.encode().contains("ipsla_alerts_total{sink=\"noc\",result=\"sent\"} 2\n") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", metrics.encode());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn exec_hook_gets_the_event_on_stdin_and_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out");
    let script = format!(
        "cat > {f}; echo $IPSLA_ID >> {f}; echo \"$IPSLA_KIND $IPSLA_ELEMENT $IPSLA_OCCURRED $IPSLA_VALUE\" >> {f}; echo \"$IPSLA_TEXT\" >> {f}",
        f = file.display()
    );
    let a = Alerts::start(
        rt(),
        vec![AlertDef {
            name: "hook".into(),
            events: ipsla_agent::alert::EventFilter { reaction: true, track: true },
            sink: ipsla_agent::alert::SinkDef::Exec(ipsla_agent::alert::ExecDef {
                command: vec!["sh".into(), "-c".into(), script],
                timeout: Duration::from_secs(10),
            }),
        }],
        &Metrics::new(),
    );
    a.send(rtt_event(7));
    a.stop(STOP);
    assert_eq!(counts(&a), [SinkCounts { sent: 1, failed: 0, dropped: 0 }]);
    let out = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!((v["kind"].as_str(), v["id"].as_u64()), (Some("reaction"), Some(7)));
    assert_eq!(v["text"], "%RTT-3-IPSLATHRESHOLD: IP SLAs(7): Threshold exceeded for rtt");
    assert_eq!(lines[1], "7");
    assert_eq!(lines[2], "reaction rtt 1 151.5");
    assert_eq!(lines[3], "%RTT-3-IPSLATHRESHOLD: IP SLAs(7): Threshold exceeded for rtt");
}

#[test]
fn exec_hook_failures_and_timeout_kill() {
    let a = Alerts::start(
        rt(),
        defs(
            "[[alert]]\ntype = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo oops >&2; exit 3\"]\n\
             [[alert]]\ntype = \"exec\"\ncommand = [\"sleep\", \"30\"]\ntimeout = \"200ms\"",
        ),
        &Metrics::new(),
    );
    a.send(rtt_event(1));
    a.stop(STOP);
    // failed, not dropped: the sleeping hook was killed at its timeout, long before the deadline
    // of stop() would have cancelled it
    let failed = SinkCounts { sent: 0, failed: 1, dropped: 0 };
    assert_eq!(counts(&a), [failed, failed]);
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r
}

#[test]
fn an_agent_reaction_reaches_the_webhook() {
    let rx = receiver(&[200], None);
    let dir = tempfile::tempdir().unwrap();
    // a UDP port that swallows every probe: each run of operation 7 times out
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let text = format!(
        r#"
[agent]
http = "127.0.0.1:0"
store = "{store}"
workers = 2

[[operation]]
id = 7
type = "udp-echo"
target = "127.0.0.1"
port = {port}
control = "none"
timeout = "100ms"
frequency = "1s"

[[operation.reaction]]
element = "timeout"
threshold_type = "immediate"
action = "alert"

[[alert]]
type = "webhook"
name = "noc"
url = "{url}"
backoff = "10ms"
"#,
        store = dir.path().join("runs.db").display(),
        port = silent.local_addr().unwrap().port(),
        url = rx.url(),
    );
    let cfg = AgentFile::parse(&text).unwrap().validate().unwrap();
    let agent = Agent::start(cfg.clone()).unwrap();
    rx.wait_for(1);
    let v = &rx.bodies()[0];
    assert_eq!(v["text"], "%RTT-3-IPSLATHRESHOLD: IP SLAs(7): Threshold Occurred for timeout");
    assert_eq!(
        (v["kind"].as_str(), v["id"].as_u64(), v["element"].as_str()),
        (Some("reaction"), Some(7), Some("timeout"))
    );
    assert_eq!((v["occurred"].as_bool(), v["value"].as_f64()), (Some(true), Some(1.0)));
    // the counter goes up once the receiver's answer is in
    let t = Instant::now();
    loop {
        let m = http_get(agent.http_addr(), "/metrics");
        if m.contains("ipsla_alerts_total{sink=\"noc\",result=\"sent\"} 1\n") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{m}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // only the transition is alerted: a second timed-out run keeps the reaction occurred
    let t = Instant::now();
    loop {
        let ops = http_get(agent.http_addr(), "/api/v1/operations");
        let body = ops.split_once("\r\n\r\n").unwrap().1;
        let ops: serde_json::Value = serde_json::from_str(body).unwrap();
        if ops[0]["runs"].as_u64().unwrap() >= 3 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{ops}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // a reload applies [[alert]] changes, and only when there are some
    assert!(!agent.reload(cfg.clone()).alerts_changed);
    let other = receiver(&[200], None);
    let moved = AgentFile::parse(&text.replace(&rx.url(), &other.url())).unwrap().validate().unwrap();
    assert!(agent.reload(moved).alerts_changed);
    agent.stop();
    assert_eq!(rx.count(), 1);
}

/// A test CA and a certificate it signed for 127.0.0.1: (CA PEM, server config).
fn tls_server_config() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    (ca.pem(), Arc::new(config))
}

/// An HTTPS receiver on 127.0.0.1:0 answering every POST with 200: the TCP connections it
/// accepted and the bodies it read over TLS.
struct TlsReceiver {
    addr: SocketAddr,
    connections: Arc<Mutex<usize>>,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP/1.1 request (headers, then Content-Length bytes), records its body in `bodies`
/// and only then answers 200: whoever sees the answer finds the body recorded.
async fn answer_one<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    bodies: &Mutex<Vec<serde_json::Value>>,
) -> Option<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).map(|v| v.trim().parse().unwrap())?;
    while buf.len() < end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    bodies.lock().unwrap().push(serde_json::from_slice(&buf[end..end + len]).unwrap());
    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await.ok()?;
    s.shutdown().await.ok()
}

fn tls_receiver(config: Arc<rustls::ServerConfig>) -> TlsReceiver {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (connections, bodies) = (Arc::new(Mutex::new(0)), Arc::new(Mutex::new(Vec::new())));
    let (c, b) = (connections.clone(), bodies.clone());
    let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            loop {
                let stream = tokio::select! {
                    _ = &mut stop_rx => break,
                    a = listener.accept() => a.unwrap().0,
                };
                *c.lock().unwrap() += 1;
                // a client that refuses our certificate ends the handshake: nothing to read
                let Ok(tls) = acceptor.accept(stream).await else { continue };
                let _ = answer_one(tls, &b).await;
            }
        });
    });
    TlsReceiver { addr, connections, bodies, stop: Some(stop), thread: Some(thread) }
}

#[test]
fn webhook_over_https_trusts_its_ca_file_and_refuses_other_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, config) = tls_server_config();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let trusted = tls_receiver(config.clone());
    let untrusted = tls_receiver(config);
    let a = Alerts::start(
        rt(),
        defs(&format!(
            "[[alert]]\ntype = \"webhook\"\nname = \"tls\"\nurl = \"https://{}/hook\"\nca_file = \"{}\"\n\
             [[alert]]\ntype = \"webhook\"\nname = \"platform-roots\"\nurl = \"https://{}/hook\"\nbackoff = \"10ms\"\nretries = 2",
            trusted.addr,
            ca_file.display(),
            untrusted.addr
        )),
        &Metrics::new(),
    );
    a.send(rtt_event(7));
    a.stop(STOP);
    let got = trusted.bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0]["kind"].as_str(), got[0]["id"].as_u64()), (Some("reaction"), Some(7)), "{}", got[0]);
    // the platform's roots do not know the test CA: one handshake, refused, not retried
    assert_eq!(*untrusted.connections.lock().unwrap(), 1);
    assert!(untrusted.bodies.lock().unwrap().is_empty());
    assert_eq!(
        counts(&a),
        [SinkCounts { sent: 1, failed: 0, dropped: 0 }, SinkCounts { sent: 0, failed: 1, dropped: 0 }]
    );
}

#[test]
fn webhook_tls_settings_are_checked_at_load() {
    #[derive(serde::Deserialize)]
    struct F {
        alert: Vec<AlertFile>,
    }
    let err = |text: &str| {
        let f: F = toml::from_str(text).unwrap();
        ipsla_agent::alert::validate(&f.alert).unwrap_err().to_string()
    };
    let e = err("[[alert]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nca_file = \"/x.pem\"");
    assert_eq!(e, "alert[0].ca_file: only for https:// URLs (alert[0].url is http://127.0.0.1:9/)");
    let e = err("[[alert]]\ntype = \"webhook\"\nurl = \"https://127.0.0.1:9/\"\nca_file = \"/nonexistent/ca.pem\"");
    assert!(e.starts_with("alert[0].ca_file: cannot read \"/nonexistent/ca.pem\": "), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = err(&format!(
        "[[alert]]\ntype = \"webhook\"\nurl = \"https://127.0.0.1:9/\"\nca_file = \"{}\"",
        empty.display()
    ));
    assert!(e.contains("holds no certificate"), "{e}");
    let e = err("[[alert]]\ntype = \"exec\"\ncommand = [\"sh\"]\nca_file = \"/x.pem\"");
    assert_eq!(e, "alert[0].ca_file: only for type = \"webhook\"");
}
