//! ipsla beside its anchors in one run, on loopback (performance-floor.md §7):
//!
//! 1. RTT error at a 1 ms interval: `ipsla probe udp-jitter --precision us` against
//!    `ipsla responder`, next to `irtt client` against `irtt server`, both pinned cross-core
//!    (responder/server on CPU 1, prober/client on CPU 0). The physical floor of the kernel-stamped
//!    loopback RTT is ≈ 0.7 µs (performance-floor.md §3b), so RTT − 0.7 µs is the error.
//! 2. CPU at 1000 probes/s of the prober and the responder (utime + stime from /proc).
//! 3. The highest single-session rate with < 0.1 % loss: 60000 probes at 20, 10 and 5 µs.
//!
//! Needs `target/release/ipsla` (cargo build --release) and, for the irtt rows, `irtt` on PATH.
//! Usage: cargo run --release -p ipsla-bench --bin anchors -- [SECONDS]
#![forbid(unsafe_code)]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary measured: `IPSLA_BIN` (to compare two builds in one session), else this tree's
/// release build.
fn ipsla() -> String {
    std::env::var("IPSLA_BIN").unwrap_or_else(|_| format!("{}/../target/release/ipsla", env!("CARGO_MANIFEST_DIR")))
}

fn jiffies(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the ")" of comm: state is 3rd; utime 14th, stime 15th overall
    let rest = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
}

fn hz() -> f64 {
    100.0
}

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn responder(port: u16) -> Guard {
    let c = Command::new("taskset")
        .args(["-c", "1", &ipsla(), "responder", "--listen", "127.0.0.1", "--v1-port", &port.to_string(), "--no-v2"])
        .args(["--status-socket", &format!("/tmp/ipsla-anchors-{port}.sock")])
        .stderr(Stdio::null())
        .spawn()
        .expect("target/release/ipsla (cargo build --release)");
    std::thread::sleep(Duration::from_millis(300));
    Guard(c)
}

/// Runs `ipsla probe ... --json --samples` pinned to CPU 0; returns the JSON and the prober's CPU share.
fn probe(args: &[&str]) -> (serde_json::Value, f64) {
    let start = Instant::now();
    let mut c = Command::new("taskset")
        .args(["-c", "0", &ipsla(), "probe"])
        .args(args)
        .args(["--json", "--samples"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = c.id();
    let mut last = 0;
    let mut out = String::new();
    let mut stdout = c.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    while c.try_wait().unwrap().is_none() {
        last = jiffies(pid).max(last);
        std::thread::sleep(Duration::from_millis(20));
    }
    out.push_str(&reader.join().unwrap());
    let cpu = last as f64 / hz() / start.elapsed().as_secs_f64();
    (serde_json::from_str(out.lines().next().unwrap_or("null")).unwrap_or(serde_json::Value::Null), cpu)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn main() {
    let secs: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let n = (secs * 1000).to_string();
    let r = responder(21967);
    let rpid = r.0.id();

    // 1 + 2: 1 ms schedule
    let j0 = jiffies(rpid);
    let t0 = Instant::now();
    let (d, probe_cpu) = probe(&[
        "udp-jitter",
        "127.0.0.1",
        "--control-port",
        "21967",
        "--port",
        "40100",
        "--precision",
        "us",
        "--packets",
        &n,
        "--interval",
        "1ms",
        "--timeout",
        "1s",
    ]);
    let responder_cpu = (jiffies(rpid) - j0) as f64 / hz() / t0.elapsed().as_secs_f64();
    let mut rtts: Vec<f64> =
        d["samples"].as_array().map(|a| a.iter().map(|s| s["rtt_us"].as_f64().unwrap()).collect()).unwrap_or_default();
    let mut ipdv: Vec<f64> = rtts.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    println!("## 1 ms schedule, {} probes, µs precision (kernel RX + TX stamps at the source)\n", rtts.len());
    println!(
        "| tool | RTT median µs | RTT p99 µs | IPDV median µs | IPDV p99 µs | loss | prober CPU | responder CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| ipsla probe udp-jitter → ipsla responder | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.1} % | {:.1} % |",
        pct(&mut rtts.clone(), 0.5),
        pct(&mut rtts, 0.99),
        pct(&mut ipdv.clone(), 0.5),
        pct(&mut ipdv, 0.99),
        d["loss"]["ratio"],
        probe_cpu * 100.0,
        responder_cpu * 100.0
    );
    eprintln!("timestamps: {}", d["timestamps"]);

    if Command::new("irtt").arg("-v").output().is_ok() {
        let server = Guard(
            Command::new("taskset")
                .args(["-c", "1", "irtt", "server", "-b", "127.0.0.1:2112", "-i", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_millis(300));
        let spid = server.0.id();
        let j0 = jiffies(spid);
        let t0 = Instant::now();
        let out = "/tmp/ipsla-anchors-irtt.json";
        let _ = std::fs::remove_file(out);
        let mut client = Command::new("taskset")
            .args([
                "-c",
                "0",
                "irtt",
                "client",
                "-Q",
                "-i",
                "1ms",
                "-d",
                &format!("{secs}s"),
                "-o",
                out,
                "127.0.0.1:2112",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let cpid = client.id();
        let mut cj = 0;
        while client.try_wait().unwrap().is_none() {
            cj = jiffies(cpid).max(cj);
            std::thread::sleep(Duration::from_millis(20));
        }
        let el = t0.elapsed().as_secs_f64();
        let server_cpu = (jiffies(spid) - j0) as f64 / hz() / el;
        // irtt writes plain JSON unless the name ends in .gz
        let text = std::fs::read_to_string(out).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let _ = client.wait();
        let mut rtts: Vec<f64> = v["round_trips"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["delay"]["rtt"].as_f64()).map(|ns| ns / 1000.0).collect())
            .unwrap_or_default();
        let mut ipdv: Vec<f64> = rtts.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
        if !rtts.is_empty() {
            println!(
                "| irtt client → irtt server (userspace stamps; {} of {} sends made) | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.1} % | {:.1} % |",
                v["stats"]["packets_sent"],
                secs * 1000,
                pct(&mut rtts.clone(), 0.5),
                pct(&mut rtts, 0.99),
                pct(&mut ipdv.clone(), 0.5),
                pct(&mut ipdv, 0.99),
                v["stats"]["packet_loss_percent"],
                cj as f64 / hz() / el * 100.0,
                server_cpu * 100.0
            );
        }
        drop(server);
    }
    println!(
        "| physical floor (performance-floor.md §3b, kernel stamps at both ends) | 0.7 | 1.5 | 0.06 | 0.5 | | | |"
    );

    // 3: single-session maximum rate
    println!("\n## single-session rate, 60000 probes\n");
    println!("| interval | sent/s | loss % | RTT median µs | prober CPU |");
    println!("|---|---|---|---|---|");
    for iv in ["20us", "10us", "5us"] {
        let t0 = Instant::now();
        let (d, cpu) = probe(&[
            "udp-jitter",
            "127.0.0.1",
            "--control-port",
            "21967",
            "--port",
            "40101",
            "--precision",
            "us",
            "--packets",
            "60000",
            "--interval",
            iv,
            "--timeout",
            "1s",
        ]);
        let el = t0.elapsed().as_secs_f64();
        let mut rtts: Vec<f64> = d["samples"]
            .as_array()
            .map(|a| a.iter().map(|s| s["rtt_us"].as_f64().unwrap()).collect())
            .unwrap_or_default();
        let sent = d["sent"].as_f64().unwrap_or(0.0);
        let span = d["send_span_us"].as_f64().unwrap_or(0.0) / 1e6;
        let _ = el;
        println!(
            "| {iv} | {:.0} | {:.3} | {:.1} | {:.0} % |",
            (sent - 1.0) / span.max(1e-9),
            d["loss"]["ratio"].as_f64().unwrap_or(1.0) * 100.0,
            if rtts.is_empty() { 0.0 } else { pct(&mut rtts, 0.5) },
            cpu * 100.0
        );
    }
    drop(r);
}
