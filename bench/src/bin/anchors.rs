//! ipsla beside its anchors in one run, on loopback (performance-floor.md §7):
//!
//! 1. RTT error at a 1 ms interval: `ipsla probe udp-jitter --precision us` against
//!    `ipsla responder`, next to `irtt client` against `irtt server`, both pinned cross-core
//!    (responder/server on CPU 1, prober/client on CPU 0). The physical floor of the kernel-stamped
//!    loopback RTT is ≈ 0.7 µs (performance-floor.md §3b), so RTT − 0.7 µs is the error.
//! 2. CPU at 1000 probes/s of the prober and the responder (utime + stime from /proc).
//! 3. The highest single-session rate with < 0.1 % loss: 60000 probes at 20, 10 and 5 µs.
//! 4. What this machine allows any prober and responder at 1 ms, measured in the same run: a bare
//!    prober (the pacer, a send, its kernel transmit stamp, the replies read with their kernel
//!    receive stamps: what `ipsla probe` does, and nothing else) against a bare echo that writes
//!    its receive stamp and a userspace reading taken right before its send into the reply, as a
//!    T3 must be, and reads its own kernel transmit stamp afterwards. Its RTT is computed with
//!    the best T3 calibration possible: the reading plus the smallest send delay of the whole run
//!    (known only afterwards) less 0.25 µs. Their CPU is the floor of a prober and a responder at
//!    1,000 probes/s; the RTT p99 is the floor of any protocol that carries a software T3.
//!
//! Needs `target/release/ipsla` (cargo build --release) and, for the irtt rows, `irtt` on PATH.
//! `IPSLA_BENCH_NO_BARE=1` leaves out the bare rows (4); `IPSLA_BENCH_LATE=1` lists on stderr each
//! probe that left more than 100 µs late (a burst of them is the VM stalling).
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

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    use nix::time::{ClockId, clock_gettime};
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// The bare echo: answers each datagram with, after its first 8 bytes (the prober's sequence
/// number), its kernel receive stamp and a userspace reading taken right before the send, then
/// reads the kernel transmit stamp of that send. Ends on a datagram of one byte, or after a
/// second without any. Returns, per
/// reply, (reading, kernel transmit stamp) in ns since the epoch, and its CPU share.
fn bare_echo(sock: std::net::UdpSocket) -> (Vec<(i64, i64)>, f64) {
    use ipsla_net::{clock::wall_now, pacer::Pacer, socket};
    ipsla_bench::pin(1);
    socket::enable_timestamps(&sock, true);
    sock.set_nonblocking(true).unwrap();
    let wait = Pacer::new(Duration::ZERO);
    let (mut buf, mut cmsg, mut errq) = ([0u8; 64], socket::cmsg_buffer(), socket::errqueue_cmsg_buffer());
    let mut sent = Vec::new();
    let (cpu0, t0) = (thread_cpu(), Instant::now());
    loop {
        let r = match socket::recv_stamped(&sock, &mut buf, &mut cmsg) {
            Ok(r) => r,
            Err(_) => {
                // a second without a datagram: the prober is gone
                if wait.wait(&sock, None) == ipsla_net::pacer::Wake::Deadline {
                    break;
                }
                continue;
            }
        };
        if r.len == 1 {
            break;
        }
        buf[8..16].copy_from_slice(&(r.rx.wall.as_nanos() as u64).to_be_bytes());
        let reading = wall_now();
        buf[16..24].copy_from_slice(&(reading.as_nanos() as u64).to_be_bytes());
        let _ = sock.send_to(&buf[..r.len], r.src);
        let mut tx = 0;
        socket::drain_tx_stamps(&sock, &mut errq, |t| tx = t.wall.as_nanos() as i64);
        sent.push((reading.as_nanos() as i64, tx));
    }
    let cpu = (thread_cpu() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    (sent, cpu)
}

/// One bare prober run at 1 ms against a bare echo (see the module doc): `spin` is the pacer's
/// most spin (0: sleep to each deadline and never spin). Prints one row.
fn bare_pair(secs: u32, spin: Duration) {
    use ipsla_net::{pacer::Pacer, socket};
    let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = echo.local_addr().unwrap();
    let echo = std::thread::spawn(move || bare_echo(echo));
    std::thread::sleep(Duration::from_millis(100));
    ipsla_bench::pin(0);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket::enable_timestamps(&sock, true);
    sock.set_nonblocking(true).unwrap();
    let pacer = Pacer::new(spin);
    let n = secs as usize * 1000;
    // per probe: T1 (kernel transmit stamp), T4 (kernel receive stamp), the echo's T2 and reading
    let (mut t1, mut back) = (vec![0i64; n], vec![None; n]);
    let mut taken = Vec::with_capacity(n);
    let (mut buf, mut cmsg, mut errq) = ([0u8; 64], socket::cmsg_buffer(), socket::errqueue_cmsg_buffer());
    let mut read = |sock: &std::net::UdpSocket, back: &mut Vec<Option<(i64, i64, i64)>>| {
        while let Ok(r) = socket::recv_stamped(sock, &mut buf, &mut cmsg) {
            let k = u64::from_be_bytes(buf[..8].try_into().unwrap()) as usize;
            let at = |i: usize| u64::from_be_bytes(buf[i..i + 8].try_into().unwrap()) as i64;
            if k < back.len() && r.len == 64 {
                back[k] = Some((r.rx.wall.as_nanos() as i64, at(8), at(16)));
            }
        }
    };
    let (cpu0, t0) = (thread_cpu(), Instant::now());
    let start = Instant::now() + Duration::from_millis(5);
    for k in 0..n {
        let deadline = start + Duration::from_millis(k as u64);
        pacer.sleep(Some(deadline));
        let mut probe = [0u8; 64];
        probe[..8].copy_from_slice(&(k as u64).to_be_bytes());
        // the kernel numbers the stamps of the sends it took: a failed send takes no number
        if sock.send_to(&probe, to).is_ok() {
            taken.push(k);
        }
        socket::drain_tx_stamps(&sock, &mut errq, |t| {
            if let Some(slot) = taken.get(t.id as usize).and_then(|&k| t1.get_mut(k)) {
                *slot = t.wall.as_nanos() as i64;
            }
        });
        read(&sock, &mut back);
    }
    let cpu = (thread_cpu() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(20));
    read(&sock, &mut back);
    let _ = sock.send_to(&[0], to);
    let (sent, echo_cpu) = echo.join().unwrap();
    // the best lead a calibration could have: the smallest send delay of the whole run
    let delays: Vec<i64> = sent.iter().filter(|(_, tx)| *tx > 0).map(|(u, tx)| tx - u).collect();
    let lead = delays.iter().copied().min().unwrap_or(0) - 250;
    let rtts: Vec<f64> = (0..n)
        .filter_map(|k| {
            back[k].filter(|_| t1[k] > 0).map(|(t4, t2, reading)| (t4 - t1[k] - (reading + lead - t2)) as f64 / 1000.0)
        })
        .collect();
    let mut ipdv: Vec<f64> = rtts.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    let mut d: Vec<f64> = delays.iter().map(|&x| x as f64 / 1000.0).collect();
    println!(
        "| bare prober ({}) → bare echo, best T3 lead {:.2} µs; its send delay p1 / p50 / p99 {:.2} / {:.2} / {:.2} µs; {} | {:.2} | {:.2} | {:.2} | {:.2} | {} of {} | {:.1} % | {:.1} % |",
        if spin.is_zero() { "no spin".to_string() } else { format!("pacer, spin ≤ {} µs", spin.as_micros()) },
        lead as f64 / 1000.0,
        pct(&mut d.clone(), 0.01),
        pct(&mut d.clone(), 0.5),
        pct(&mut d, 0.99),
        schedule_error(&t1),
        pct(&mut rtts.clone(), 0.5),
        pct(&mut rtts.clone(), 0.99),
        pct(&mut ipdv.clone(), 0.5),
        pct(&mut ipdv, 0.99),
        n - rtts.len(),
        n,
        cpu * 100.0,
        echo_cpu * 100.0
    );
}

/// How far each probe left from a 1 ms schedule, from the kernel transmit stamps (T1, ns since the
/// epoch; 0 = none) of probes 0, 1, 2, …: T1 − k ms less the smallest such value, so the error of
/// the most punctual probe counts as 0. In words: mean and p50 / p99, µs, and the share within
/// 100 µs.
fn schedule_error(t1: &[i64]) -> String {
    let e: Vec<i64> = t1.iter().enumerate().filter(|(_, t)| **t > 0).map(|(k, t)| t - k as i64 * 1_000_000).collect();
    let Some(&min) = e.iter().min() else { return "send error unknown (no transmit stamps)".into() };
    let mut us: Vec<f64> = e.iter().map(|x| (x - min) as f64 / 1000.0).collect();
    if std::env::var_os("IPSLA_BENCH_LATE").is_some() {
        eprintln!(
            "late: {:?}",
            us.iter().enumerate().filter(|(_, u)| **u > 100.0).map(|(k, u)| (k, *u as i64)).collect::<Vec<_>>()
        );
    }
    let mean = us.iter().sum::<f64>() / us.len() as f64;
    let within = us.iter().filter(|&&x| x <= 100.0).count() as f64 / us.len() as f64 * 100.0;
    format!(
        "send error mean {mean:.1} µs, p50 / p99 {:.1} / {:.1} µs, {within:.2} % ≤ 100 µs",
        pct(&mut us.clone(), 0.5),
        pct(&mut us, 0.99)
    )
}

/// ns since the epoch of an RFC 3339 UTC time with ns (`2026-12-08T00:34:23.123456789Z`), as
/// `ipsla probe --samples` writes T1: days from the civil date, then the time of day.
fn rfc3339_ns(s: &str) -> Option<i64> {
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    // days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let secs = days * 86_400 + t.next()?? * 3600 + t.next()?? * 60 + t.next()??;
    let ns: i64 = format!("{frac:0<9}")[..9].parse().ok()?;
    Some(secs * 1_000_000_000 + ns)
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
    let mut t1 = vec![0i64; n.parse().unwrap()];
    for s in d["samples"].as_array().into_iter().flatten() {
        let k = s["seq"].as_u64().unwrap_or(0) as usize;
        if let (Some(slot), Some(t)) =
            (k.checked_sub(1).and_then(|k| t1.get_mut(k)), s["t1"].as_str().and_then(rfc3339_ns))
        {
            *slot = t;
        }
    }
    println!("## 1 ms schedule, {} probes, µs precision (kernel RX + TX stamps at the source)\n", rtts.len());
    println!(
        "| tool | RTT median µs | RTT p99 µs | IPDV median µs | IPDV p99 µs | loss | prober CPU | responder CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| ipsla probe udp-jitter → ipsla responder; {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.1} % | {:.1} % |",
        schedule_error(&t1),
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
    if std::env::var_os("IPSLA_BENCH_NO_BARE").is_none() {
        bare_pair(secs, ipsla_net::pacer::DEFAULT_SPIN);
        bare_pair(secs, Duration::ZERO);
    }

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
