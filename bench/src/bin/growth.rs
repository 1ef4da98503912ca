//! Growth curves: how the responder's CPU and memory grow with concurrent sessions and with the
//! probe rate, and how the agent's grow with its number of operations. Each point is measured on
//! a fresh process, one after the other in the same run; each curve is printed as a table and
//! drawn as an SVG (bench/growth-*.svg).
//!
//! - Responder: `ipsla responder` (the release binary beside this one) on loopback. The load
//!   generator opens N udp-jitter sessions with v1 control (60 s each), then sends type-2 probes
//!   round-robin over them at a fixed total rate for a few seconds and counts the replies. CPU is
//!   the responder process's own (every thread's `schedstat` run time, ns), RSS its `VmRSS`.
//! - Agent: `agent_scale N SECONDS` (beside this one) for each N; its table's steady CPU and RSS.
//! - Agent vs scrapes: `agent_scale 1000 75` with /metrics scraped every 15, 5, 1 and 0.25 s.
//!   (Remote write at 10,000 operations is `remote_write_scale`'s.)
//!
//! Usage: cargo run --release -p ipsla-bench --bin growth -- [responder|agent|scrapes|all] [SECONDS_PER_POINT]
//! (default all, 5 s per responder point; each agent point runs 75 s; GROWTH_OUT=DIR draws there)
#![forbid(unsafe_code)]

use ipsla_wire::cisco::control_v1::{ControlV1Repr, MeasurementRepr, Operation};
use plotters::prelude::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const FIRST_PORT: u16 = 20000;

fn beside(name: &str) -> PathBuf {
    std::env::current_exe().unwrap().with_file_name(name)
}

/// CPU time of every thread of `pid` so far, ns.
fn cpu_ns(pid: u32) -> u64 {
    ipsla_bench::process_ns(&pid.to_string())
}

fn rss_kib(pid: u32) -> u64 {
    ipsla_bench::status_kib(&pid.to_string(), "VmRSS:")
}

/// A responder child process, killed on drop.
struct Responder {
    child: Child,
    v1: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Responder {
    fn start() -> Responder {
        let dir = tempfile::tempdir().unwrap();
        let v1 = UdpSocket::bind((LO, 0)).unwrap().local_addr().unwrap();
        let child = Command::new(beside("ipsla"))
            .args(["responder", "--listen", "127.0.0.1", "--no-v2", "--v1-port"])
            .arg(v1.port().to_string())
            .args(["--port-range", "20000-40000", "--max-sessions", "20000", "--max-sessions-per-source", "20000"])
            .args(["--control-rate", "0", "--status-socket"])
            .arg(dir.path().join("status.sock"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the release ipsla binary beside this one (cargo build --release -p ipsla)");
        let r = Responder { child, v1, _dir: dir };
        // ready when a control message is answered
        let c = UdpSocket::bind((LO, 0)).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        for _ in 0..100 {
            if r.open(&c, &[39_999]) == 1 {
                return r;
            }
        }
        panic!("the responder did not answer control on {v1}");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Opens a udp-jitter session on each port (200 requests in flight at most); how many were
    /// accepted.
    fn open(&self, c: &UdpSocket, ports: &[u16]) -> usize {
        let mut ok = 0;
        let mut buf = [0u8; 256];
        for chunk in ports.chunks(200) {
            for (i, &port) in chunk.iter().enumerate() {
                let m = MeasurementRepr {
                    operation: Operation::UdpJitter,
                    reserved: 0,
                    target: LO,
                    port,
                    duration_ms: 60_000,
                };
                let req = ControlV1Repr::request(i as u8, m);
                let mut b = vec![0u8; req.buffer_len()];
                req.emit(&mut b);
                c.send_to(&b, self.v1).unwrap();
            }
            for _ in chunk {
                match c.recv_from(&mut buf) {
                    // a reply of the request's length with a zero status accepts it
                    Ok((n, _)) if n >= 8 && buf[4..8] == [0, 0, 0, 0] => ok += 1,
                    _ => {}
                }
            }
        }
        ok
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One responder point: N sessions, `rate` probes/s for `secs`.
struct Point {
    sessions: usize,
    rate: u32,
    cpu_pct: f64,
    rss_idle_mib: f64,
    rss_mib: f64,
    sent: u64,
    answered: u64,
}

fn responder_point(sessions: usize, rate: u32, secs: f64) -> Point {
    let r = Responder::start();
    let c = UdpSocket::bind((LO, 0)).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let ports: Vec<u16> = (0..sessions as u16).map(|i| FIRST_PORT + i).collect();
    let opened = r.open(&c, &ports);
    assert_eq!(opened, sessions, "sessions opened");
    let rss_idle = rss_kib(r.pid());
    c.set_nonblocking(true).unwrap();
    // type-2 probe (ms precision): version, type 2, the rest zero but the sender sequence
    let mut probe = [0u8; 32];
    probe[1] = 2;
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut buf = [0u8; 256];
    let per_tick = (rate / 1000).max(1);
    let tick = Duration::from_secs_f64(f64::from(per_tick) / f64::from(rate));
    let cpu0 = cpu_ns(r.pid());
    let start = Instant::now();
    let mut next = start;
    let mut k = 0usize;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..per_tick {
            probe[12..16].copy_from_slice(&(sent as u32).to_be_bytes());
            if c.send_to(&probe, SocketAddr::new(LO, ports[k % sessions])).is_ok() {
                sent += 1;
            }
            k += 1;
        }
        while c.recv_from(&mut buf).is_ok() {
            answered += 1;
        }
        next += tick;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let wall = start.elapsed();
    let cpu = cpu_ns(r.pid()) - cpu0;
    std::thread::sleep(Duration::from_millis(100));
    while c.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    Point {
        sessions,
        rate,
        cpu_pct: cpu as f64 / wall.as_nanos() as f64 * 100.0,
        rss_idle_mib: rss_idle as f64 / 1024.0,
        rss_mib: rss_kib(r.pid()) as f64 / 1024.0,
        sent,
        answered,
    }
}

fn print_points(title: &str, points: &[Point]) {
    println!("\n### {title}\n");
    println!(
        "| sessions | probes/s asked | sent | answered | responder CPU (% of a core) | RSS after opening / after probing (MiB) |"
    );
    println!("|---|---|---|---|---|---|");
    for p in points {
        println!(
            "| {} | {} | {} | {} | {:.2} % | {:.1} / {:.1} |",
            p.sessions, p.rate, p.sent, p.answered, p.cpu_pct, p.rss_idle_mib, p.rss_mib
        );
    }
}

/// Two curves against one x axis (log scale), CPU on the left axis and RSS on the right.
fn draw(path: &Path, title: &str, x_label: &str, xs: &[f64], cpu: &[f64], rss: &[f64]) {
    let root = SVGBackend::new(path, (720, 360)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let x_range = (xs[0] * 0.8)..(xs[xs.len() - 1] * 1.25);
    let cpu_max = cpu.iter().copied().fold(1.0, f64::max) * 1.2;
    let rss_max = rss.iter().copied().fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .right_y_label_area_size(56)
        .build_cartesian_2d(x_range.clone().log_scale(), 0.0..cpu_max)
        .unwrap()
        .set_secondary_coord(x_range.log_scale(), 0.0..rss_max);
    chart.configure_mesh().x_desc(x_label).y_desc("CPU (% of a core)").draw().unwrap();
    chart.configure_secondary_axes().y_desc("RSS (MiB)").draw().unwrap();
    chart
        .draw_series(LineSeries::new(xs.iter().copied().zip(cpu.iter().copied()), BLUE.stroke_width(2)))
        .unwrap()
        .label("CPU")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
    chart.draw_series(xs.iter().zip(cpu).map(|(&x, &y)| Circle::new((x, y), 3, BLUE.filled()))).unwrap();
    chart
        .draw_secondary_series(LineSeries::new(xs.iter().copied().zip(rss.iter().copied()), RED.stroke_width(2)))
        .unwrap()
        .label("RSS")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    chart.draw_secondary_series(xs.iter().zip(rss).map(|(&x, &y)| Circle::new((x, y), 3, RED.filled()))).unwrap();
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .unwrap();
    root.present().unwrap();
    println!("\n(drawn: {})", path.display());
}

/// Where the SVGs go: `GROWTH_OUT`, or bench/ (where the recorded ones are kept).
fn out_dir() -> PathBuf {
    std::env::var_os("GROWTH_OUT").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(), PathBuf::from)
}

fn responder(secs: f64) {
    let by_sessions: Vec<Point> =
        [10, 100, 1000, 5000, 10000].into_iter().map(|n| responder_point(n, 1000, secs)).collect();
    print_points("Responder vs concurrent sessions, 1,000 probes/s", &by_sessions);
    let xs: Vec<f64> = by_sessions.iter().map(|p| p.sessions as f64).collect();
    draw(
        &out_dir().join("growth-responder-sessions.svg"),
        "responder vs concurrent sessions (1,000 probes/s)",
        "concurrent sessions",
        &xs,
        &by_sessions.iter().map(|p| p.cpu_pct).collect::<Vec<_>>(),
        &by_sessions.iter().map(|p| p.rss_mib).collect::<Vec<_>>(),
    );
    let by_rate: Vec<Point> = [100, 1000, 10_000, 50_000].into_iter().map(|r| responder_point(100, r, secs)).collect();
    print_points("Responder vs probe rate, 100 sessions", &by_rate);
    let xs: Vec<f64> = by_rate.iter().map(|p| f64::from(p.rate)).collect();
    draw(
        &out_dir().join("growth-responder-rate.svg"),
        "responder vs probe rate (100 sessions)",
        "probes per second",
        &xs,
        &by_rate.iter().map(|p| p.cpu_pct).collect::<Vec<_>>(),
        &by_rate.iter().map(|p| p.rss_mib).collect::<Vec<_>>(),
    );
}

/// A value from agent_scale's table: the first number of the row whose label starts with `label`.
fn table_value(out: &str, label: &str, nth: usize) -> Option<f64> {
    let row = out.lines().find(|l| l.starts_with(&format!("| {label}")))?;
    let value = row.split('|').nth(2)?;
    value.split(['/', ' ', '%']).filter_map(|w| w.trim().parse::<f64>().ok()).nth(nth)
}

/// One `agent_scale` run (beside this one): its steady CPU (% of a core), RSS at the end (MiB),
/// mean scrape time (ms) and its "runs started / due" cell.
fn agent_point(args: &[&str], scrape_every: Option<f64>) -> (f64, f64, f64, String) {
    let mut cmd = Command::new(beside("agent_scale"));
    cmd.args(args).stderr(Stdio::null());
    if let Some(every) = scrape_every {
        cmd.env("IPSLA_BENCH_SCRAPE_EVERY", every.to_string());
    }
    let out = cmd.output().expect("agent_scale beside this one (cargo build --release -p ipsla-bench)");
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    let cpu = table_value(&out, "CPU per wall second, last", 0).unwrap_or(f64::NAN);
    let rss = table_value(&out, "RSS before start", 2).unwrap_or(f64::NAN);
    // "N, mean M ms, max X ms": "N," is not a number, so M is the first
    let scrape = table_value(&out, "scrapes every", 0).unwrap_or(f64::NAN);
    let runs = out
        .lines()
        .find(|l| l.starts_with("| runs started / due"))
        .and_then(|l| l.split('|').nth(2))
        .unwrap_or("?")
        .trim()
        .to_string();
    (cpu, rss, scrape, runs)
}

fn agent() {
    println!("\n### Agent vs operations (udp-echo at 60 s to its own responder, /metrics scraped every 15 s)\n");
    println!("| operations | CPU, steady (% of a core) | RSS end (MiB) | runs started / due |");
    println!("|---|---|---|---|");
    let (mut xs, mut cpu, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for n in [100u32, 1000, 3000, 10_000] {
        let (c, r, _, runs) = agent_point(&[&n.to_string(), "75"], None);
        println!("| {n} | {c:.1} % | {r:.1} | {runs} |");
        xs.push(f64::from(n));
        cpu.push(c);
        rss.push(r);
    }
    draw(
        &out_dir().join("growth-agent-operations.svg"),
        "agent vs operations (udp-echo every 60 s)",
        "operations",
        &xs,
        &cpu,
        &rss,
    );
}

/// The agent at 1,000 operations, its /metrics scraped every 15 s down to every 0.25 s.
fn agent_scrapes() {
    println!("\n### Agent vs scrape rate (1,000 udp-echo operations at 60 s, /metrics scraped every S seconds)\n");
    println!("| scraped every | CPU, steady (% of a core) | RSS end (MiB) | mean scrape (ms) | runs started / due |");
    println!("|---|---|---|---|---|");
    let (mut xs, mut cpu, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for every in [15.0f64, 5.0, 1.0, 0.25] {
        let (c, r, mean, runs) = agent_point(&["1000", "75"], Some(every));
        println!("| {every} s | {c:.1} % | {r:.1} | {mean:.1} | {runs} |");
        xs.push(1.0 / every);
        cpu.push(c);
        rss.push(r);
    }
    draw(
        &out_dir().join("growth-agent-scrapes.svg"),
        "agent vs scrapes per second (1,000 operations)",
        "scrapes per second",
        &xs,
        &cpu,
        &rss,
    );
}

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let secs: f64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    if what == "responder" || what == "all" {
        responder(secs);
    }
    if what == "agent" || what == "all" {
        agent();
    }
    if what == "scrapes" || what == "all" {
        agent_scrapes();
    }
}
