//! The http operation against real servers started by the test on loopback: a hyper server with
//! scripted routes (a delay before the head, a slow body, 500, a body beyond max_body, a route that
//! never answers, a redirect loop), raw TCP answers (cut mid-body, not HTTP), TLS with a test CA
//! (rcgen), a listener whose handshake never completes, a name server that never answers, and a
//! real resolver (`dnsmasq`, skipped with the reason when it is not installed: scripts/test.sh
//! installs it as root).
//!
//! Phase times are checked against what the server was told to do, as bounds that a loaded
//! machine cannot break (at least the scripted delay, never an upper bound).

use crate::common::{AgentToml, InProcess, Killed, Op, Reaction, free_tcp, get, ipsla, is_root, on_path, wait_some};
use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use serde_json::Value;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

type Body = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e: Infallible| match e {}).boxed()
}

/// The scripted routes.
async fn route(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let ok = |b: Body| Response::new(b);
    Ok(match req.uri().path() {
        "/ok" => ok(full("hello")),
        "/version" => ok(full(format!("{:?}", req.version()))),
        "/slow-head" => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            ok(full("late"))
        }
        "/slow-body" => {
            // three parts, 100 ms apart: the transfer takes at least 200 ms
            let parts = stream::unfold(0, |i| async move {
                if i == 3 {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Some((Ok(Frame::data(Bytes::from_static(b"part"))), i + 1))
            });
            ok(StreamBody::new(parts).boxed())
        }
        "/500" => Response::builder().status(500).body(full("boom")).unwrap(),
        "/big" => {
            // 3 MiB, more than the default max_body
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let parts = stream::iter((0..48).map(move |_| Ok(Frame::data(chunk.clone()))));
            Response::builder().header("content-length", 48 * 64 * 1024).body(StreamBody::new(parts).boxed()).unwrap()
        }
        "/never" => std::future::pending().await,
        "/loop" => Response::builder().status(302).header("location", "/loop").body(full("")).unwrap(),
        _ => Response::builder().status(404).body(full("")).unwrap(),
    })
}

/// A hyper server on 127.0.0.1:0 (TLS with `tls`), on its own runtime, stopped on drop.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // the /never handlers wait forever: do not wait for them
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

pub(crate) fn server(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    server_on("127.0.0.1:0", tls)
}

fn server_on(bind: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind(bind)).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            let tls = tls.clone();
            tokio::spawn(async move {
                let http = hyper::server::conn::http1::Builder::new();
                let svc = hyper::service::service_fn(route);
                match tls {
                    None => {
                        let _ = http.serve_connection(hyper_util::rt::TokioIo::new(s), svc).await;
                    }
                    Some(c) => {
                        // a client that refuses the certificate ends the handshake: nothing to serve
                        let Ok(t) = tokio_rustls::TlsAcceptor::from(c).accept(s).await else { return };
                        let _ = http.serve_connection(hyper_util::rt::TokioIo::new(t), svc).await;
                    }
                }
            });
        }
    });
    Server { addr, rt: Some(rt) }
}

/// A TCP server on 127.0.0.1:0 that reads a request's head, writes `reply` and closes: the
/// answers no HTTP server library would give.
fn raw_server(reply: &'static [u8]) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&b[..n]),
                }
            }
            let _ = s.write_all(reply);
        }
    });
    addr
}

/// `ipsla probe http URL ARGS --json`: the exit code and the one document.
fn probe(url: &str, args: &[&str]) -> (i32, Value) {
    let out = ipsla().args(["probe", "http", url]).args(args).arg("--json").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let doc = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!("{e}: {text:?}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    });
    (out.status.code().unwrap(), doc)
}

fn us(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

/// The phases and the counts of a plain http run that succeeded.
#[test]
fn phases_status_and_body_of_a_get() {
    let _machine = crate::common::shared();
    let s = server(None);
    let url = format!("http://{}/ok", s.addr);
    let (code, doc) = probe(&url, &[]);
    assert_eq!((code, &doc["return_code"], &doc["reason"]), (0, &Value::from("ok"), &Value::Null), "{doc}");
    assert_eq!(doc["operation"], "http");
    assert_eq!(doc["target"], url.as_str());
    let h = &doc["http"];
    let keys: Vec<&str> = h.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "scheme",
            "dns_server",
            "address",
            "status",
            "body_octets",
            "body_truncated",
            "dns_us",
            "connect_us",
            "tls_us",
            "first_byte_us",
            "transfer_us",
            "total_us"
        ]
    );
    assert_eq!(
        (&h["status"], &h["body_octets"], &h["body_truncated"]),
        (&Value::from(200), &Value::from(5), &false.into())
    );
    assert_eq!((&h["scheme"], &h["address"]), (&Value::from("http"), &Value::from(s.addr.to_string())));
    // an address needs no lookup and has no DNS time (not 0); http has no TLS
    assert_eq!((&h["dns_server"], &h["dns_us"], &h["tls_us"]), (&Value::Null, &Value::Null, &Value::Null));
    let (connect, first, transfer, total) =
        (us(&h["connect_us"]), us(&h["first_byte_us"]), us(&h["transfer_us"]), us(&h["total_us"]));
    assert!(connect > 0.0 && first > 0.0 && transfer >= 0.0, "{h}");
    assert!(total >= connect + first + transfer, "{h}");
    // IOS's RTT is the whole transaction: one sample, the total
    assert_eq!((&doc["rtt_us"]["count"], us(&doc["rtt_us"]["avg"])), (&Value::from(1), total), "{doc}");

    // an IPv6 literal
    let s6 = server_on("[::1]:0", None);
    let (code, doc) = probe(&format!("http://{}/ok", s6.addr), &[]);
    assert_eq!(
        (code, &doc["http"]["address"], &doc["http"]["status"]),
        (0, &Value::from(s6.addr.to_string()), &Value::from(200))
    );

    // the request goes out as the version asked for (the route answers the version it read)
    let version = format!("http://{}/version", s.addr);
    assert_eq!(probe(&version, &["--http-version", "1.0", "--expect-body", "^HTTP/1\\.0$"]).1["return_code"], "ok");
    assert_eq!(probe(&version, &["--expect-body", "^HTTP/1\\.1$"]).1["return_code"], "ok");
    assert_eq!(probe(&version, &["--expect-body", "^HTTP/1\\.0$"]).1["return_code"], "http_error");

    // a body that matches, and one that does not
    assert_eq!(probe(&url, &["--expect-body", "hel+o"]).1["return_code"], "ok");
    let (code, doc) = probe(&url, &["--expect-body", "bye"]);
    assert_eq!((code, &doc["return_code"]), (1, &Value::from("http_error")));
    assert_eq!(doc["reason"], format!("GET {url}: the body (5 octets) does not match expect_body \"bye\"").as_str());
}

/// The text report says each phase in IOS's words, and why a phase has no time.
#[test]
fn the_text_report_has_the_ios_lines() {
    let _machine = crate::common::shared();
    let s = server(None);
    let out = ipsla().args(["probe", "http", &format!("http://{}/ok", s.addr)]).output().unwrap();
    let t = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{t}");
    for line in [
        "Latest operation return code: OK\n",
        "Latest DNS RTT: none (the URL's host is an address: no lookup)\n",
        "Latest TLS Handshake RTT: none (http://: no TLS)\n",
        "Latest HTTP status code: 200\n",
        "Latest HTTP body octets: 5\n",
    ] {
        assert!(t.contains(line), "{line:?} in\n{t}");
    }
    for prefix in ["Latest TCP Connection RTT: ", "Latest Time To First Byte: ", "Latest HTTP Transaction RTT: "] {
        let l = t.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix} in\n{t}"));
        assert!(l.ends_with(" microseconds"), "{l}");
    }
}

/// Phase times come from the phases: a head held back 200 ms is a first byte of 200 ms or more,
/// a body sent in three parts 100 ms apart a transfer of 200 ms or more.
#[test]
fn phase_times_follow_the_server() {
    let _machine = crate::common::shared();
    let s = server(None);
    let (code, doc) = probe(&format!("http://{}/slow-head", s.addr), &[]);
    let h = &doc["http"];
    assert_eq!((code, &h["status"], &h["body_octets"]), (0, &Value::from(200), &Value::from(4)), "{doc}");
    assert!(us(&h["first_byte_us"]) >= 200_000.0, "{h}");
    assert!(us(&h["transfer_us"]) < us(&h["first_byte_us"]), "the delay is before the head: {h}");
    // the total is the RTT the threshold is compared with
    let (_, doc) = probe(&format!("http://{}/slow-head", s.addr), &["--threshold", "150ms"]);
    assert_eq!(
        (&doc["return_code"], &doc["over_threshold"]),
        (&Value::from("over_threshold"), &Value::from(1)),
        "{doc}"
    );

    let (code, doc) = probe(&format!("http://{}/slow-body", s.addr), &[]);
    let h = &doc["http"];
    assert_eq!((code, &h["body_octets"]), (0, &Value::from(12)), "{doc}");
    assert!(us(&h["transfer_us"]) >= 200_000.0, "{h}");
    assert!(us(&h["total_us"]) >= us(&h["transfer_us"]) + us(&h["first_byte_us"]), "{h}");
}

/// What the server answers decides the return code, IOS's way; nothing is followed or buffered
/// beyond max_body.
#[test]
fn status_redirects_and_bodies_beyond_the_limit() {
    let _machine = crate::common::shared();
    let s = server(None);
    let url = format!("http://{}/500", s.addr);
    let (code, doc) = probe(&url, &[]);
    assert_eq!((code, &doc["return_code"]), (1, &Value::from("http_error")), "{doc}");
    assert_eq!(
        doc["reason"],
        format!(
            "GET {url}: answered 500 Internal Server Error; expected 2xx or 3xx (set expect_status to accept another)"
        )
        .as_str()
    );
    assert_eq!((&doc["http"]["status"], &doc["http"]["body_octets"]), (&Value::from(500), &Value::from(4)));
    assert_eq!(
        (&doc["rtt_us"]["count"], &doc["rtt_us"]["avg"]),
        (&Value::from(0), &Value::Null),
        "no RTT for a failure"
    );
    assert_eq!(probe(&url, &["--expect-status", "500"]).1["return_code"], "ok");

    // a redirect to itself is reported as it is, not followed
    let url = format!("http://{}/loop", s.addr);
    let (code, doc) = probe(&url, &[]);
    assert_eq!((code, &doc["return_code"], &doc["http"]["status"]), (0, &Value::from("ok"), &Value::from(302)));
    let (_, doc) = probe(&url, &["--expect-status", "200"]);
    assert_eq!(doc["reason"], format!("GET {url}: answered 302 Found; expected 200 (expect_status)").as_str());

    // 3 MiB: cut at the default max_body (1 MiB), and at a set one
    let url = format!("http://{}/big", s.addr);
    let (code, doc) = probe(&url, &[]);
    assert_eq!(
        (code, &doc["http"]["body_octets"], &doc["http"]["body_truncated"]),
        (0, &Value::from(1 << 20), &true.into())
    );
    let (code, doc) = probe(&url, &["--max-body", "100000"]);
    assert_eq!(
        (code, &doc["http"]["body_octets"], &doc["http"]["body_truncated"]),
        (0, &Value::from(100_000), &true.into())
    );
    let (_, doc) = probe(&url, &["--max-body", "100000", "--expect-body", "y"]);
    assert_eq!(
        doc["reason"],
        format!("GET {url}: the body (100000 octets, the first max_body = 100000) does not match expect_body \"y\"")
            .as_str()
    );
}

/// Servers that fail: each a counted, exact return code with the address in its reason.
#[test]
fn failing_servers_give_ios_return_codes() {
    let _machine = crate::common::shared();
    let s = server(None);
    // an answer that never comes: the transaction times out, after the connection
    let url = format!("http://{}/never", s.addr);
    let (code, doc) = probe(&url, &["--timeout", "500ms"]);
    assert_eq!((code, &doc["return_code"]), (1, &Value::from("http_transaction_timeout")), "{doc}");
    assert_eq!(
        doc["reason"],
        format!("GET {url}: no response head from {} (the request was sent) within the 500ms timeout", s.addr).as_str()
    );
    assert!(us(&doc["http"]["connect_us"]) > 0.0);
    assert_eq!((&doc["http"]["first_byte_us"], &doc["http"]["status"]), (&Value::Null, &Value::Null));

    // nothing listens
    let port = free_tcp();
    let (code, doc) = probe(&format!("http://127.0.0.1:{port}/"), &[]);
    assert_eq!((code, &doc["return_code"]), (1, &Value::from("http_error")));
    assert_eq!(
        doc["reason"],
        format!("connection refused (TCP reset) by 127.0.0.1:{port}: nothing listens on that port").as_str()
    );

    // a handshake that never completes: a listener whose backlog (0) is already full
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    l.listen(0).unwrap();
    let full_at = l.local_addr().unwrap().as_socket().unwrap();
    let _first = TcpStream::connect(full_at).unwrap();
    let (code, doc) = probe(&format!("http://{full_at}/"), &["--timeout", "300ms"]);
    assert_eq!((code, &doc["return_code"]), (1, &Value::from("tcp_connect_timeout")), "{doc}");
    assert_eq!(
        doc["reason"],
        format!("the TCP handshake with {full_at} was not done within the 300ms timeout: is the host up, and the port open rather than filtered?")
            .as_str()
    );
    assert_eq!(doc["http"]["connect_us"], Value::Null);

    // closed after 100 of 1000 announced octets
    let cut = raw_server(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789");
    let url = format!("http://{cut}/");
    let (code, doc) = probe(&url, &[]);
    assert_eq!((code, &doc["return_code"]), (1, &Value::from("http_error")), "{doc}");
    let why = doc["reason"].as_str().unwrap();
    assert!(why.starts_with(&format!("GET {url}: the body from {cut} broke off after 100 octets: ")), "{why}");
    assert_eq!((&doc["http"]["status"], &doc["http"]["body_octets"]), (&Value::from(200), &Value::from(100)));

    // not HTTP at all
    let junk = raw_server(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
    let url = format!("http://{junk}/");
    let (code, doc) = probe(&url, &[]);
    assert_eq!((code, &doc["return_code"]), (1, &Value::from("http_error")), "{doc}");
    let why = doc["reason"].as_str().unwrap();
    assert!(why.starts_with(&format!("GET {url}: the answer of {junk} is not an HTTP response: ")), "{why}");
}

/// A test CA named `ca` and a certificate for 127.0.0.1 (signed by it, or self-signed): (CA PEM,
/// server config).
fn tls_config(ca: &str, self_signed: bool) -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, ca);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = if self_signed { params.self_signed(&key) } else { params.signed_by(&key, &issuer) }.unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    (ca.pem(), Arc::new(config))
}

#[test]
fn https_with_a_test_ca_insecure_and_a_wrong_ca() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let (ca, config) = tls_config("ipsla test CA", false);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let s = server(Some(config));
    let url = format!("https://{}/ok", s.addr);
    let (code, doc) = probe(&url, &["--ca-file", ca_file.to_str().unwrap()]);
    let h = &doc["http"];
    assert_eq!(
        (code, &doc["return_code"], &h["status"], &h["scheme"]),
        (0, &Value::from("ok"), &Value::from(200), &Value::from("https")),
        "{doc}"
    );
    assert!(us(&h["tls_us"]) > 0.0, "{h}");
    assert!(us(&h["total_us"]) >= us(&h["connect_us"]) + us(&h["tls_us"]) + us(&h["first_byte_us"]), "{h}");

    // a self-signed certificate: refused against the CA file, accepted with --insecure
    let (other_ca, self_signed) = tls_config("another CA", true);
    let s2 = server(Some(self_signed));
    let url = format!("https://{}/ok", s2.addr);
    let (code, doc) = probe(&url, &["--insecure"]);
    assert_eq!((code, &doc["return_code"]), (0, &Value::from("ok")), "{doc}");
    assert!(us(&doc["http"]["tls_us"]) > 0.0);
    let (code, doc) = probe(&url, &["--ca-file", ca_file.to_str().unwrap()]);
    assert_eq!((code, &doc["return_code"]), (1, &Value::from("http_error")), "{doc}");
    assert_eq!(
        doc["reason"],
        format!(
            "TLS with {}: the server's certificate for 127.0.0.1 is not accepted by the CA certificates in {}: invalid peer certificate: UnknownIssuer",
            s2.addr,
            ca_file.display()
        )
        .as_str()
    );
    assert_eq!((&doc["http"]["tls_us"], &doc["http"]["status"]), (&Value::Null, &Value::Null));
    // and the right server against another CA's file (the self-signed one's unused CA)
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(&wrong, other_ca).unwrap();
    let (_, doc) = probe(&format!("https://{}/ok", s.addr), &["--ca-file", wrong.to_str().unwrap()]);
    assert_eq!(doc["return_code"], "http_error");
    assert!(doc["reason"].as_str().unwrap().ends_with("invalid peer certificate: UnknownIssuer"), "{doc}");
}

/// A name server that never answers: dnsServerTimeout, naming it, and nothing after the lookup.
#[test]
fn a_silent_name_server_is_a_dns_server_timeout() {
    let _machine = crate::common::shared();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let (code, doc) = probe(
        "http://test.example/",
        &["--name-server", "127.0.0.1", "--name-server-port", &port, "--timeout", "300ms"],
    );
    assert_eq!((code, &doc["return_code"]), (1, &Value::from("dns_server_timeout")), "{doc}");
    assert_eq!(
        doc["reason"],
        format!("looking up test.example: no answer from 127.0.0.1:{port} in 300 ms: is a name server listening there and allowed through?")
            .as_str()
    );
    let h = &doc["http"];
    assert_eq!(h["dns_server"], format!("127.0.0.1:{port}").as_str());
    assert_eq!((&h["dns_us"], &h["address"], &h["connect_us"]), (&Value::Null, &Value::Null, &Value::Null));

    // a closed port says so at once (ICMP port unreachable), with the same code
    drop(silent);
    let (code, doc) = probe("http://test.example/", &["--name-server", "127.0.0.1", "--name-server-port", &port]);
    assert_eq!((code, &doc["return_code"]), (1, &Value::from("dns_server_timeout")), "{doc}");
    assert_eq!(
        doc["reason"],
        format!("looking up test.example: nothing listens on 127.0.0.1:{port} (ICMP port unreachable): is the name server running there, on that port?")
            .as_str()
    );
}

/// `dnsmasq` on 127.0.0.1:PORT answering test.example with 127.0.0.1 and missing.example with
/// NXDOMAIN; `None` (with the reason printed) when it is not installed.
fn dnsmasq(dir: &Path) -> Option<(Killed, u16)> {
    let bin = on_path("dnsmasq").or_else(|| Some(Path::new("/usr/sbin/dnsmasq").to_path_buf()).filter(|p| p.is_file()));
    let Some(bin) = bin else {
        eprintln!(
            "skipped: no `dnsmasq` (apt-get install dnsmasq-base{})",
            if is_root() { "" } else { "; scripts/test.sh installs it as root" }
        );
        return None;
    };
    let port = crate::common::free_udp();
    let child = std::process::Command::new(bin)
        .args([
            "--no-daemon",
            &format!("--port={port}"),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--address=/test.example/127.0.0.1",
            "--address=/test.example/::1",
            "--address=/missing.example/",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let k = Killed(child);
    // ready once it answers a query for test.example (id 0x1234, A, IN)
    let q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x07example\x00\x00\x01\x00\x01";
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    wait_some("dnsmasq answering", Duration::from_secs(30), || {
        sock.send_to(q, ("127.0.0.1", port)).ok()?;
        let mut b = [0u8; 512];
        sock.recv(&mut b).ok()
    });
    Some((k, port))
}

/// The URL's host looked up through a real resolver, then the transaction to the address it gave.
#[test]
fn a_host_name_through_a_real_resolver() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let Some((_dns, port)) = dnsmasq(dir.path()) else { return };
    let s = server(None);
    let ns = ["--name-server", "127.0.0.1", "--name-server-port", &port.to_string()];
    let url = format!("http://test.example:{}/ok", s.addr.port());
    let (code, doc) = probe(&url, &ns);
    let h = &doc["http"];
    assert_eq!((code, &doc["return_code"], &h["status"]), (0, &Value::from("ok"), &Value::from(200)), "{doc}");
    assert_eq!(
        (&h["dns_server"], &h["address"]),
        (&Value::from(format!("127.0.0.1:{port}")), &Value::from(s.addr.to_string()))
    );
    let dns = us(&h["dns_us"]);
    assert!(dns > 0.0 && us(&h["total_us"]) >= dns + us(&h["connect_us"]) + us(&h["first_byte_us"]), "{h}");

    // an IPv6 source asks for AAAA (the name server itself is reached over IPv4)
    let s6 = server_on("[::1]:0", None);
    let url6 = format!("http://test.example:{}/ok", s6.addr.port());
    let (code, doc) = probe(&url6, &[&ns[..], &["--source-ip", "::1"]].concat());
    assert_eq!((code, &doc["http"]["address"]), (0, &Value::from(s6.addr.to_string())), "{doc}");

    let url = format!("http://missing.example:{}/ok", s.addr.port());
    let (code, doc) = probe(&url, &ns);
    assert_eq!((code, &doc["return_code"]), (1, &Value::from("dns_query_error")), "{doc}");
    assert_eq!(
        doc["reason"],
        format!("looking up missing.example: 127.0.0.1:{port} answered NXDomain to missing.example A").as_str()
    );
    // the name server answered: the lookup's time is real, and nothing was connected to
    assert!(doc["http"]["dns_us"].as_f64().is_some_and(|us| us > 0.0), "{doc}");
    assert_eq!(doc["http"]["address"], Value::Null);
}

/// The agent runs it on its schedule: the detail is stored and served, /metrics has the phases it
/// had (and not the ones it did not), and a failing one is counted under its IOS code.
#[test]
fn the_agent_stores_serves_and_exports_it() {
    let _machine = crate::common::shared();
    let dir = tempfile::tempdir().unwrap();
    let s = server(None);
    let agent = InProcess::start(
        &AgentToml::new()
            .http(0)
            .store(&dir.path().join("runs.db"))
            .operation(
                Op::new("http", &format!("http://{}/ok", s.addr)).id(3).key("frequency", "5s").key("timeout", "5s"),
            )
            .operation(
                Op::new("http", &format!("http://{}/500", s.addr)).id(4).key("frequency", "5s").key("timeout", "5s"),
            )
            .operation(
                Op::new("http", &format!("http://{}/never", s.addr))
                    .id(5)
                    .key("frequency", "1s")
                    .key("timeout", "300ms")
                    .reaction(Reaction::immediate("timeout", "alert")),
            ),
    );
    let http = agent.http();
    let latest = |id: u32| {
        wait_some("a stored http run", Duration::from_secs(60), || {
            get(http, &format!("/api/v1/operations/{id}/latest")).filter(|(c, _)| *c == 200)
        })
    };
    let ok: Value = serde_json::from_str(&latest(3).1).unwrap();
    assert_eq!(
        (&ok["return_code"], &ok["http"]["status"], &ok["http"]["body_octets"]),
        (&Value::from("ok"), &Value::from(200), &Value::from(5))
    );
    assert_eq!(us(&ok["rtt_us"]["avg"]), us(&ok["http"]["total_us"]));
    let bad: Value = serde_json::from_str(&latest(4).1).unwrap();
    assert_eq!((&bad["return_code"], &bad["http"]["status"]), (&Value::from("http_error"), &Value::from(500)));

    let never: Value = serde_json::from_str(&latest(5).1).unwrap();
    assert_eq!(never["return_code"], "http_transaction_timeout");

    // the runs above are stored before /metrics sees them: it has all three
    // `ipsla show` renders the stored run with the kind's own lines
    let out =
        ipsla().args(["show", "statistics", "3", "--agent", &format!("http://127.0.0.1:{http}")]).output().unwrap();
    let t = String::from_utf8(out.stdout).unwrap();
    assert!(t.contains("\nLatest HTTP status code: 200\nLatest HTTP body octets: 5\n"), "{t}");
    assert!(t.contains("\nLatest DNS RTT: none (the URL's host is an address: no lookup)\n"), "{t}");

    let c = crate::common::api(http, "/api/v1/operations/3/configuration");
    let line =
        |label: &str| c["lines"].as_array().unwrap().iter().find(|l| l["label"] == label).map(|l| l["value"].clone());
    assert_eq!(line("Type of operation to perform"), Some(Value::from("http")));
    assert_eq!(line("HTTP Operation"), Some(Value::from("get")));
    assert_eq!(line("URL"), Some(Value::from(format!("http://{}/ok", s.addr))));
    assert_eq!(line("Expected status"), Some(Value::from("any 2xx or 3xx")));
    assert_eq!(line("Target port/Source port"), None, "the port is the URL's");

    let (_, m) = get(http, "/metrics").unwrap();
    let has = |prefix: &str| m.lines().any(|l| l.starts_with(prefix));
    assert!(has(r#"ipsla_http_status_code{op="3"} 200"#), "{m}");
    assert!(has(r#"ipsla_http_status_code{op="4"} 500"#), "{m}");
    assert!(has(r#"ipsla_http_body_octets{op="3"} 5"#), "{m}");
    for phase in ["connect", "first_byte", "transfer", "total"] {
        assert!(has(&format!(r#"ipsla_http_phase_seconds{{op="3",phase="{phase}"}} "#)), "{phase}: {m}");
    }
    assert!(!has(r#"ipsla_http_phase_seconds{op="3",phase="dns"}"#), "no lookup, no DNS series: {m}");
    assert!(!has(r#"ipsla_http_phase_seconds{op="3",phase="tls"}"#), "{m}");
    assert!(has(r#"ipsla_operation_return_code{op="4",code="http_error"} 1"#), "{m}");
    assert!(has(r#"ipsla_operation_info{op="3",type="http","#), "{m}");
    // IOS's timeout reaction fires on the protocol's own timeouts too (handled after the store)
    wait_some("the timeout reaction", Duration::from_secs(60), || {
        get(http, "/metrics").filter(|(_, m)| m.contains(r#"ipsla_reaction_active{op="5",element="timeout"} 1"#))
    });
}
