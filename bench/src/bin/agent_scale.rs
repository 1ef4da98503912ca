//! Agent scale: N udp-echo operations at a 60 s frequency, spread over the minute by one
//! `[[group]]` schedule, against the agent's own responder on loopback. Runs the agent in this
//! process for a bounded time and reports what it costs: resident memory, CPU per second of wall
//! time, runs completed against runs due, busies, the store's size, and the size and time of a
//! /metrics scrape (scraped every 15 s meanwhile, as Prometheus would; every
//! `IPSLA_BENCH_SCRAPE_EVERY` seconds, at least 0.05, when that is set).
//!
//! Each run is what IOS does: a v1 control message asks the responder to open the operation's
//! port, then one probe. With CONTROL = none the operations send to a permanent udp-echo port of
//! the responder instead (IOS `ip sla responder udp-echo port`), without control.
//!
//! Usage: cargo run --release -p ipsla-bench --bin agent_scale -- [N] [SECONDS] [v1|none] [WORKERS] [histograms]
//! (defaults 10000, 180, v1, the agent's default; `histograms` sets `metrics_histograms = true`)
//!
//! With `IPSLA_BENCH_REMOTE_WRITE=URL` in the environment the agent also ships every run to that
//! `[[remote_write]]` receiver, and the table ends with its remote-write counters
//! (`remote_write_scale` runs this harness twice, without and with, against a local receiver).
#![forbid(unsafe_code)]

use ipsla_agent::daemon::{Agent, AgentFile};
use ipsla_core::schedule::StartTime;
use nix::sys::resource::{UsageWho, getrusage};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

/// User + system CPU time of this process.
fn cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let tv = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

/// VmRSS and VmHWM (peak) of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    (ipsla_bench::status_kib("self", "VmRSS:"), ipsla_bench::status_kib("self", "VmHWM:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// GET with an optional Accept header: the body length and the time to the last byte. The body
/// is kept only when `keep` (the scrapes are counted, not stored: this process is the one measured).
fn scrape(addr: SocketAddr, path: &str, accept: Option<&str>, keep: bool) -> (usize, Duration, String) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{accept}\r\n").unwrap();
    let (mut total, mut kept, mut buf) = (0usize, Vec::new(), [0u8; 64 * 1024]);
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
        if keep {
            kept.extend_from_slice(&buf[..n]);
        }
    }
    let elapsed = t.elapsed();
    let kept = String::from_utf8(kept).unwrap_or_default();
    let body = kept.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    // the headers are a few hundred bytes of the total
    (total, elapsed, body)
}

const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

fn config(
    dir: &Path,
    n: u32,
    control: &str,
    workers: Option<usize>,
    histograms: bool,
    remote_write: Option<&str>,
) -> String {
    let free = || UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (v1, echo) = (free(), free());
    let mut workers = workers.map(|w| format!("workers = {w}\n")).unwrap_or_default();
    if histograms {
        workers += "metrics_histograms = true\n";
    }
    let mut t = format!(
        "[agent]\nhttp = \"127.0.0.1:0\"\nstore = \"{}\"\n{workers}\n\
         [responder]\nlisten = [\"127.0.0.1\"]\nv1_port = {v1}\nv2 = false\n\
         control_rate = 0.0\nmax_sessions = {n}\nmax_sessions_per_source = {n}\n\
         udp_echo = [\"127.0.0.1:{echo}\"]\n\n\
         [[group]]\nid = 1\noperations = \"1-{n}\"\nschedule_period = \"60s\"\nfrequency = \"60s\"\n",
        dir.join("runs.db").display()
    );
    if let Some(url) = remote_write {
        t += &format!("\n[[remote_write]]\nurl = \"{url}\"\n");
    }
    for id in 1..=n {
        // v1: each operation asks for its own port (20000-59999), as separate IOS operations would
        let port = if control == "none" { echo } else { 20_000 + (id % 40_000) as u16 };
        t += &format!(
            "\n[[operation]]\nid = {id}\ntype = \"udp-echo\"\ntarget = \"127.0.0.1\"\nport = {port}\n\
             control = \"{control}\"\ncontrol_port = {v1}\ntimeout = \"1s\"\n"
        );
    }
    t
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(180);
    let control = args.get(3).map(String::as_str).unwrap_or("v1");
    assert!(matches!(control, "v1" | "none"), "CONTROL is v1 or none");
    let workers: Option<usize> = args.get(4).and_then(|s| s.parse().ok());
    let histograms = args.get(5).is_some_and(|s| s == "histograms");
    let remote_write = std::env::var("IPSLA_BENCH_REMOTE_WRITE").ok();
    let scrape_every = std::env::var("IPSLA_BENCH_SCRAPE_EVERY")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s >= 0.05)
        .map_or(Duration::from_secs(15), Duration::from_secs_f64);

    let dir = std::env::temp_dir().join(format!("ipsla-agent-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (rss0, _) = rss_kib();
    let t_cfg = Instant::now();
    let text = config(&dir, n, control, workers, histograms, remote_write.as_deref());
    let cfg = AgentFile::parse(&text).unwrap().validate().unwrap();
    let cfg_time = t_cfg.elapsed();
    let starts: Vec<Duration> = cfg
        .operations
        .iter()
        .map(|o| match o.schedule.start {
            StartTime::After(d) => d,
            _ => Duration::ZERO,
        })
        .collect();
    let freq = cfg.operations.first().map_or(Duration::from_secs(60), |o| o.schedule.frequency);
    let workers = cfg.workers;

    let cpu0 = cpu();
    let t0 = Instant::now();
    let agent = Agent::start(cfg).unwrap();
    let http = agent.http_addr();
    let (rss_started, _) = rss_kib();
    eprintln!("agent_scale: {n} operations ({control} control), {secs} s, {workers} workers, http {http}");

    let end = t0 + Duration::from_secs(secs);
    let mut next_scrape = t0 + scrape_every;
    let (mut scrapes, mut scrape_max, mut scrape_total) = (0u32, Duration::ZERO, Duration::ZERO);
    let mut marks = Vec::new(); // (elapsed, cpu) to get the steady-state window
    while Instant::now() < end {
        let wake = end.min(next_scrape).min(Instant::now() + Duration::from_millis(500));
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        marks.push((now - t0, cpu() - cpu0));
        if now >= next_scrape {
            next_scrape += scrape_every;
            let (_, t, _) = scrape(http, "/metrics", Some(PROMETHEUS_ACCEPT), false);
            scrapes += 1;
            scrape_max = scrape_max.max(t);
            scrape_total += t;
            let (rss, _) = rss_kib();
            eprintln!(
                "  {:>4.0} s  rss {:>6.1} MiB  scrape {:>6.1} ms",
                (now - t0).as_secs_f64(),
                mib(rss),
                t.as_secs_f64() * 1e3
            );
        }
    }
    let wall = t0.elapsed();
    let cpu_run = cpu() - cpu0;
    let (rss_end, hwm) = rss_kib();

    // the last minute, once every operation has started: the steady state
    let steady = marks.iter().rev().find(|(e, _)| *e <= wall.saturating_sub(Duration::from_secs(60))).copied();

    let (om_len, om_time, exposition) = scrape(http, "/metrics", Some(PROMETHEUS_ACCEPT), remote_write.is_some());
    let (txt_len, txt_time, _) = scrape(http, "/metrics", None, false);
    let at_query = t0.elapsed();
    let (_, ops_time, ops) = scrape(http, "/api/v1/operations", None, true);
    let ops: serde_json::Value = serde_json::from_str(&ops).unwrap_or_default();
    let ops = ops.as_array().cloned().unwrap_or_default();
    let sum = |k: &str| ops.iter().map(|o| o[k].as_u64().unwrap_or(0)).sum::<u64>();
    let (runs, busies, stored) = (sum("runs"), sum("busies"), sum("stored"));
    // runs due by the time of the query (a run counts once it started)
    let expected: u64 = starts
        .iter()
        .filter(|s| **s < at_query)
        .map(|s| ((at_query - *s).as_secs_f64() / freq.as_secs_f64()).floor() as u64 + 1)
        .sum();
    let t_stop = Instant::now();
    agent.stop();
    let stop_time = t_stop.elapsed();
    let store_bytes: u64 =
        std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);

    let mut h = if histograms { ", metrics_histograms" } else { "" }.to_string();
    if let Some(url) = &remote_write {
        h += &format!(", remote write to {url}");
    }
    println!("## agent_scale: {n} udp-echo operations, {control} control, {secs} s, {workers} workers{h}");
    println!("| metric | value |");
    println!("|---|---|");
    println!("| config parse + validate | {:.0} ms |", cfg_time.as_secs_f64() * 1e3);
    println!(
        "| RSS before start / after start / end / peak (VmHWM) | {:.1} / {:.1} / {:.1} / {:.1} MiB |",
        mib(rss0),
        mib(rss_started),
        mib(rss_end),
        mib(hwm)
    );
    println!(
        "| CPU (user+sys) per wall second, whole run | {:.1} % |",
        cpu_run.as_secs_f64() / wall.as_secs_f64() * 100.0
    );
    if let Some((e, c)) = steady {
        let (w, c) = (wall - e, cpu_run - c);
        println!(
            "| CPU per wall second, last {:.0} s | {:.1} % |",
            w.as_secs_f64(),
            c.as_secs_f64() / w.as_secs_f64() * 100.0
        );
    }
    println!("| runs started / due | {runs} / {expected} |");
    println!("| runs stored | {stored} |");
    println!("| busies (skipped: previous run still going) | {busies} |");
    println!("| store on disk (db + wal) | {:.1} MiB |", store_bytes as f64 / 1048576.0);
    println!(
        "| /metrics, OpenMetrics (Prometheus' Accept) | {:.2} MiB in {:.0} ms |",
        om_len as f64 / 1048576.0,
        om_time.as_secs_f64() * 1e3
    );
    println!(
        "| /metrics, classic text (no Accept) | {:.2} MiB in {:.0} ms |",
        txt_len as f64 / 1048576.0,
        txt_time.as_secs_f64() * 1e3
    );
    if scrapes > 0 {
        println!(
            "| scrapes every {} s during the run | {scrapes}, mean {:.0} ms, max {:.0} ms |",
            scrape_every.as_secs_f64(),
            scrape_total.as_secs_f64() * 1e3 / f64::from(scrapes),
            scrape_max.as_secs_f64() * 1e3
        );
    }
    println!("| /api/v1/operations | {:.0} ms |", ops_time.as_secs_f64() * 1e3);
    println!("| stop (running operations finish) | {:.0} ms |", stop_time.as_secs_f64() * 1e3);
    if remote_write.is_some() {
        // the endpoint's families, at the end of the run (before the stop)
        for family in [
            "ipsla_remote_write_samples_sent_total",
            "ipsla_remote_write_samples_failed_total",
            "ipsla_remote_write_samples_dropped_total",
            "ipsla_remote_write_queue_lag_seconds",
        ] {
            let value = exposition
                .lines()
                .find(|l| l.starts_with(family) && l[family.len()..].starts_with('{'))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or("absent");
            println!("| {family} | {value} |");
        }
    }
}
