//! Remote write at scale (issue 17, item 6): `agent_scale` (N udp-echo operations at 60 s, one
//! group schedule, the agent's own responder on loopback) run twice in one session, first as it
//! is (the baseline), then shipping every run by `[[remote_write]]` to a receiver on loopback
//! that this process serves: it reads each request, decodes it (snappy, then the protobuf
//! `WriteRequest`), counts its samples and bytes and answers 204, as a time-series database that
//! keeps up would. The agent runs in its own process (`agent_scale`), so its CPU and RSS are its
//! own, without the receiver's.
//!
//! Reported: both agent_scale tables, then the receiver's count of samples and bytes (the
//! compressed bodies as sent, and their protobuf size) over the run and over its last 60 s, and
//! the two runs' CPU and RSS side by side.
//!
//! With OUTAGE (seconds), a third run in which the receiver answers 503 for its first OUTAGE
//! seconds (the agent keeps the runs in its store and retries with backoff), then accepts: how
//! fast the backlog drains, from the first accepted request to the first request smaller than a
//! full batch.
//!
//! Usage: cargo build --release -p ipsla-bench && ./target/release/remote_write_scale [N] [SECONDS] [OUTAGE]
//! (defaults 10000, 180, no outage run; SECONDS ≥ 120 so that the last 60 s are a steady state)
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver took: when, samples, compressed bytes, protobuf bytes, runs (each
/// run has one `ipsla_operation_success` sample).
type Got = (Instant, u64, u64, u64, u64);

/// Until when the receiver answers 503 (the outage), if it does.
type Refuse = Arc<Mutex<Option<Instant>>>;

/// Serves one connection (HTTP/1.1 keep-alive): every POST body decoded and counted, or during
/// the outage refused with 503.
fn serve(s: TcpStream, log: Arc<Mutex<Vec<Got>>>, refuse: Refuse) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut len = None;
        let mut line = String::new();
        // the request line and the headers
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse::<usize>().ok();
            }
        }
        let len = len.expect("the agent sends a Content-Length");
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        let raw = snap::raw::decompress_len(&body).unwrap_or(0) as u64;
        let req = ipsla_agent::remote_write::proto::decode(&body).expect("a snappy-compressed WriteRequest");
        let samples: u64 = req.timeseries.iter().map(|t| t.samples.len() as u64).sum();
        let runs: u64 = req
            .timeseries
            .iter()
            .filter(|t| t.labels.iter().any(|l| l.name == "__name__" && l.value == "ipsla_operation_success"))
            .map(|t| t.samples.len() as u64)
            .sum();
        let answer: &[u8] = if refuse.lock().unwrap().is_some_and(|until| Instant::now() < until) {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        } else {
            log.lock().unwrap().push((Instant::now(), samples, len as u64, raw, runs));
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
        };
        if w.write_all(answer).is_err() {
            return;
        }
    }
}

/// Runs `agent_scale N SECONDS` (the sibling binary), with `remote_write` in its environment when
/// given; returns its table.
fn agent_scale(n: &str, secs: &str, remote_write: Option<&str>) -> String {
    let exe = std::env::current_exe().unwrap().with_file_name("agent_scale");
    let mut cmd = Command::new(&exe);
    cmd.args([n, secs]);
    match remote_write {
        Some(url) => cmd.env("IPSLA_BENCH_REMOTE_WRITE", url),
        None => cmd.env_remove("IPSLA_BENCH_REMOTE_WRITE"),
    };
    let out = cmd.output().unwrap_or_else(|e| panic!("{}: {e} (cargo build --release -p ipsla-bench)", exe.display()));
    assert!(out.status.success(), "agent_scale failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The value column of the table row whose label starts with `label`.
fn row<'a>(table: &'a str, label: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(&format!("| {label}")))
        .and_then(|l| l.split('|').nth(2))
        .map_or("absent", str::trim)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args.get(1).cloned().unwrap_or_else(|| "10000".into());
    let secs = args.get(2).cloned().unwrap_or_else(|| "180".into());
    let seconds: f64 = secs.parse().expect("SECONDS is a number");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
    let outage: Option<u64> = args.get(3).map(|s| s.parse().expect("OUTAGE is a number of seconds"));
    let log: Arc<Mutex<Vec<Got>>> = Arc::default();
    let refuse: Refuse = Arc::default();
    let (l, r) = (log.clone(), refuse.clone());
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let (l, r) = (l.clone(), r.clone());
            std::thread::spawn(move || serve(s, l, r));
        }
    });

    eprintln!("remote_write_scale: {n} operations, {secs} s without, then with remote write to {url}");
    let baseline = agent_scale(&n, &secs, None);
    println!("{baseline}");
    let t0 = Instant::now();
    let shipping = agent_scale(&n, &secs, Some(&url));
    println!("{shipping}");

    let got = log.lock().unwrap().clone();
    let total = |g: &[Got]| g.iter().fold((0u64, 0u64, 0u64), |a, x| (a.0 + x.1, a.1 + x.2, a.2 + x.3));
    let (samples, bytes, raw) = total(&got);
    let last = got.last().map_or(t0, |g| g.0);
    let window: Vec<Got> = got.iter().filter(|g| g.0 + Duration::from_secs(60) > last).copied().collect();
    let (w_samples, w_bytes, w_raw) = total(&window);

    println!("## remote write: {n} udp-echo operations, {secs} s, a local receiver decoding every request");
    println!("| | over the run ({secs} s) | last 60 s of requests |");
    println!("|---|---|---|");
    println!("| requests | {} | {} |", got.len(), window.len());
    println!("| samples received | {samples} | {w_samples} |");
    println!("| samples/s | {:.0} | {:.0} |", samples as f64 / seconds, w_samples as f64 / 60.0);
    println!(
        "| bytes/s sent (snappy) / protobuf | {:.0} / {:.0} | {:.0} / {:.0} |",
        bytes as f64 / seconds,
        raw as f64 / seconds,
        w_bytes as f64 / 60.0,
        w_raw as f64 / 60.0
    );
    println!(
        "| bytes per sample (snappy) | {:.1} | {:.1} |",
        bytes as f64 / samples.max(1) as f64,
        w_bytes as f64 / w_samples.max(1) as f64
    );
    println!();
    println!("| agent | baseline | with remote write |");
    println!("|---|---|---|");
    for label in [
        "CPU per wall second, last",
        "CPU (user+sys) per wall second, whole run",
        "RSS before start / after start / end / peak",
        "runs started / due",
        "busies",
        "store on disk",
    ] {
        println!("| {label} | {} | {} |", row(&baseline, label), row(&shipping, label));
    }

    let Some(outage) = outage else { return };
    log.lock().unwrap().clear();
    *refuse.lock().unwrap() = Some(Instant::now() + Duration::from_secs(outage));
    let after = agent_scale(&n, &secs, Some(&url));
    println!();
    println!("{after}");
    let got = log.lock().unwrap().clone();
    let full = got.iter().map(|g| g.4).max().unwrap_or(0);
    // the backlog: the first accepted request (the batch refused first, sent again as it was),
    // the full batches after it, and the partial one that ends them; the rate counts what arrived
    // after the first (whose sending time is unknown)
    let end = got.iter().skip(1).position(|g| g.4 < full).map_or(got.len().saturating_sub(1), |i| i + 1);
    let (samples, _, _) = total(&got[..=end.min(got.len().saturating_sub(1))]);
    let (after_first, after_first_bytes, _) = total(got.get(1..=end).unwrap_or_default());
    let span = got.get(end).map_or(Duration::ZERO, |l| l.0 - got[0].0);
    println!("## catch-up after a {outage} s outage (503), same {n} operations");
    println!("| metric | value |");
    println!("|---|---|");
    println!(
        "| backlog shipped (full batches of {full} runs, then the partial one) | {} requests, {samples} samples |",
        end + 1
    );
    if end == 0 {
        println!("| catch-up rate | the backlog fit in one request: none measured |");
    } else {
        println!("| time from the first accepted request to the end of the backlog | {:.2} s |", span.as_secs_f64());
        println!(
            "| catch-up rate | {:.0} samples/s, {:.0} bytes/s (snappy) |",
            after_first as f64 / span.as_secs_f64(),
            after_first_bytes as f64 / span.as_secs_f64()
        );
    }
    println!(
        "| agent CPU per wall second, last 60 s / whole run | {} / {} |",
        row(&after, "CPU per wall second, last"),
        row(&after, "CPU (user+sys) per wall second, whole run")
    );
    println!("| agent RSS end / peak | {} |", row(&after, "RSS before start / after start / end / peak"));
}
