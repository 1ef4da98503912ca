//! Send-schedule fidelity: how close to each deadline a sender wakes and sends, and what it costs.
//!
//! For each waiting method and interval, sends N datagrams to a local sink on the schedule
//! start + k × interval and records the error (time of the send call − deadline), the share of
//! sends on time (error ≤ 10 % of the interval) and the sending thread's CPU time.
//!
//! Usage: cargo run --release -p ipsla-bench --bin schedule -- [SECONDS_PER_CASE]
#![forbid(unsafe_code)]

use ipsla_net::pacer::{Pacer, tighten_timer_slack};
use nix::time::{ClockId, clock_gettime};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

#[derive(Clone, Copy)]
enum Method {
    Tokio,
    Sleep,
    /// The pacer before it learnt: ppoll until a fixed spin before the deadline, then spin.
    Fixed(u64),
    /// The pacer (`ipsla_net::pacer::Pacer`): wakes by the learnt lateness, at most this early.
    Pacer(u64),
}

impl Method {
    fn name(self) -> String {
        match self {
            Method::Tokio => "tokio sleep_until (1 ms timer wheel)".into(),
            Method::Sleep => "thread::sleep, 1 ns timer slack".into(),
            Method::Fixed(0) => "ppoll, 1 ns timer slack, no spin".into(),
            Method::Fixed(s) => format!("ppoll, 1 ns timer slack, spin last {s} µs"),
            Method::Pacer(s) => format!("the pacer: ppoll, wake by the learnt lateness (≤ {s} µs), spin the rest"),
        }
    }
}

fn run(m: Method, interval: Duration, n: u32) -> (Vec<i64>, f64) {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(sink.local_addr().unwrap()).unwrap();
    let payload = [0u8; 32];
    let mut errs = Vec::with_capacity(n as usize);
    let cpu0 = thread_cpu();
    let wall0 = Instant::now();
    match m {
        Method::Tokio => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let start = Instant::now() + Duration::from_millis(5);
                for k in 0..n {
                    let d = start + interval * k;
                    tokio::time::sleep_until(d.into()).await;
                    errs.push((Instant::now() - d).as_nanos() as i64);
                    let _ = tx.send(&payload);
                }
            });
        }
        Method::Sleep => {
            tighten_timer_slack();
            let start = Instant::now() + Duration::from_millis(5);
            for k in 0..n {
                let d = start + interval * k;
                if let Some(left) = d.checked_duration_since(Instant::now()) {
                    std::thread::sleep(left);
                }
                errs.push((Instant::now() - d).as_nanos() as i64);
                let _ = tx.send(&payload);
            }
        }
        Method::Fixed(_) | Method::Pacer(_) => {
            let p = match m {
                Method::Pacer(spin) => Some(Pacer::new(Duration::from_micros(spin))),
                _ => {
                    tighten_timer_slack();
                    None
                }
            };
            let start = Instant::now() + Duration::from_millis(5);
            for k in 0..n {
                let d = start + interval * k;
                match (p, m) {
                    (Some(p), _) => {
                        p.wait(&sink, Some(d));
                    }
                    (None, Method::Fixed(spin)) => fixed_spin(&sink, d, Duration::from_micros(spin)),
                    _ => unreachable!(),
                }
                errs.push((Instant::now() - d).as_nanos() as i64);
                let _ = tx.send(&payload);
                // keep the sink empty so that it never wakes the pacer early
                let mut b = [0u8; 64];
                sink.set_nonblocking(true).unwrap();
                while sink.recv(&mut b).is_ok() {}
            }
        }
    }
    let cpu = (thread_cpu() - cpu0).as_secs_f64() / wall0.elapsed().as_secs_f64();
    errs.sort_unstable();
    (errs, cpu)
}

/// The pacer as it was before it learnt its wake-up latency: sleep until a fixed `spin` before
/// the deadline, then busy-wait (the baseline of the comparison).
fn fixed_spin(sock: &UdpSocket, deadline: Instant, spin: Duration) {
    use nix::poll::{PollFd, PollFlags, ppoll};
    use std::os::fd::AsFd;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let sleep = (deadline - now).saturating_sub(spin);
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        let _ = ppoll(&mut fds, Some(nix::sys::time::TimeSpec::from_duration(sleep)), None);
        if sleep.is_zero() {
            std::hint::spin_loop();
        }
    }
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    println!(
        "| interval | method | sends | on time (≤ 10 % of interval) | mean error µs | p50 µs | p99 µs | max µs | achieved rate /s | CPU of one core |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for interval in [Duration::from_millis(1), Duration::from_micros(100)] {
        let n = (secs / interval.as_secs_f64()) as u32;
        for m in
            [Method::Tokio, Method::Sleep, Method::Fixed(0), Method::Fixed(30), Method::Fixed(50), Method::Pacer(50)]
        {
            let t0 = Instant::now();
            let (e, cpu) = run(m, interval, n);
            let elapsed = t0.elapsed().as_secs_f64();
            let lim = interval.as_nanos() as i64 / 10;
            let on = e.iter().filter(|&&x| x <= lim).count() as f64 / e.len() as f64 * 100.0;
            let mean = e.iter().sum::<i64>() as f64 / e.len() as f64 / 1000.0;
            let pct = |p: f64| e[((p * e.len() as f64) as usize).min(e.len() - 1)] as f64 / 1000.0;
            println!(
                "| {:?} | {} | {} | {:.2} % | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} % |",
                interval,
                m.name(),
                e.len(),
                on,
                mean,
                pct(0.5),
                pct(0.99),
                e[e.len() - 1] as f64 / 1000.0,
                e.len() as f64 / elapsed,
                cpu * 100.0
            );
        }
    }
}
