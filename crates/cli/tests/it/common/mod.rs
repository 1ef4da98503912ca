//! Helpers shared by every module, each defined once: free loopback ports, a child process
//! killed on drop, a minimal HTTP/1.0 client, waiting for a condition, the wall clock, the
//! responder's status, an agent (process or in-process), the typed config builder and a real
//! Prometheus scraping an agent.

pub mod config;
pub mod prom;

pub use config::{AgentToml, Alert, Op, Reaction, RemoteWrite, Responder, Route, Track};
pub use prom::{Prometheus, VictoriaMetrics};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A child process killed and reaped when the test ends, whether it passed or panicked.
pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` on 127.0.0.1:port: the status code and the body, or None when nothing answers.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    request(port, "GET", path)
}

/// `method path` (empty body) on 127.0.0.1:port: the status code and the body.
pub fn request(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    let code = r.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, r.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default()))
}

/// Percent-encodes a query-string value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How long a test waits for something that takes well under a second on a quiet machine: a
/// deadline that only a hang reaches, not a speed requirement.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `ok` every 20 ms until it holds; fails the test naming `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` every 20 ms until it returns Some; fails the test naming `what` after `limit`.
pub fn wait_some<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until something is bound to UDP `port` on 127.0.0.1 (our own bind fails).
pub fn wait_udp(port: u16) {
    wait_for(&format!("a listener on udp {port}"), PATIENCE, || UdpSocket::bind(("127.0.0.1", port)).is_err());
}

/// Waits until TCP `port` on 127.0.0.1 accepts connections.
pub fn wait_tcp(port: u16) {
    wait_for(&format!("a listener on tcp {port}"), PATIENCE, || TcpStream::connect(("127.0.0.1", port)).is_ok());
}

/// Waits until `child` exits; returns its status.
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    wait_some("the process to exit", PATIENCE, || child.try_wait().unwrap())
}

/// The lines of `pipe` (a child's stdout or stderr) as they come, read on a thread of their own.
pub fn lines(pipe: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Sends `sig` ("-TERM", "-HUP", ...) to `child`.
pub fn signal(child: &Child, sig: &str) {
    assert!(std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

/// The wall clock as a duration since the Unix epoch.
pub fn wall() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// The wall clock as an NTP timestamp.
pub fn wall_ntp() -> ipsla_wire::time::NtpTimestamp {
    ipsla_wire::time::NtpTimestamp::from_unix(wall())
}

/// True when the tests run as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Tests that load the machine (the flood, every lab link, the failover namespaces) run alone;
/// every other test shares it with the rest. Without this, a test with a 300 ms control timeout
/// beside a flood of 100,000 datagrams/s on a 2-core machine can time out for real.
static MACHINE: RwLock<()> = RwLock::new(());

/// Held for the whole of a test that loads the machine: no other test runs meanwhile.
pub fn alone() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

/// Held for the whole of every other test (`machine_use_is_declared` checks that each test
/// takes one or the other): it runs beside other sharing tests, never beside one that runs alone.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

/// `GET path` on `http`, which must answer 200 with JSON.
pub fn api(http: u16, path: &str) -> serde_json::Value {
    let (code, body) = get(http, path).unwrap_or_else(|| panic!("GET {path}: no answer"));
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// A `u64` field, 0 when absent.
pub fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// `ipsla agent --config CFG` (stderr discarded), once its HTTP API on `http` is healthy.
pub fn agent_process(cfg: &Path, http: u16) -> Killed {
    let k = Killed(ipsla().args(["agent", "--config"]).arg(cfg).stderr(Stdio::null()).spawn().unwrap());
    wait_for("the agent's /-/healthy", PATIENCE, || get(http, "/-/healthy").is_some_and(|(c, _)| c == 200));
    k
}

/// The agent started in this process from `cfg` (whose `agent.http` should be port 0): for tests
/// of what the agent serves, where a separate process adds nothing. Stopped on drop.
pub struct InProcess(Option<ipsla_agent::daemon::Agent>);

impl InProcess {
    pub fn start(cfg: &AgentToml) -> InProcess {
        let text = cfg.render();
        let cfg = ipsla_agent::daemon::AgentFile::parse(&text)
            .and_then(|f| f.validate())
            .unwrap_or_else(|e| panic!("{e}:\n{text}"));
        InProcess(Some(ipsla_agent::daemon::Agent::start(cfg).unwrap()))
    }

    /// The port of its HTTP API.
    pub fn http(&self) -> u16 {
        self.0.as_ref().unwrap().http_addr().port()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.stop();
        }
    }
}

/// The `ipsla` binary under test.
pub fn ipsla() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_ipsla"))
}

/// `ipsla responder --status --json` against the status socket `sock`.
pub fn responder_status(sock: &std::path::Path) -> serde_json::Value {
    let out = ipsla().args(["responder", "--status", "--json", "--status-socket"]).arg(sock).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Every test in the modules beside `common` takes the machine `alone()` or `shared()` as its
/// first statement: one that forgot would run beside the flood again.
#[test]
fn machine_use_is_declared() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let mut undeclared = Vec::new();
    let mut tests = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, _) in lines.iter().enumerate().filter(|(_, l)| l.trim() == "#[test]") {
            tests += 1;
            let sig = lines[i + 1..].iter().position(|l| l.trim_start().starts_with("fn ")).map(|k| i + 1 + k).unwrap();
            let first = lines.get(sig + 1).copied().unwrap_or_default();
            if !(first.contains("common::shared()") || first.contains("alone()")) {
                undeclared.push(format!("{}:{}: {}", path.display(), sig + 1, lines[sig].trim()));
            }
        }
    }
    assert!(tests >= 70, "found only {tests} tests under {}", dir.display());
    assert!(undeclared.is_empty(), "tests that take neither alone() nor shared():\n{}", undeclared.join("\n"));
}
