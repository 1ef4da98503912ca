//! What the benchmark harnesses share: what they read from /proc (a process's memory and the CPU
//! time of its threads, `proc` being `"self"` or a process id; this process's threads by name; how
//! busy a CPU or the machine was), pinning a thread, and the probes they send to a responder.
#![forbid(unsafe_code)]

use std::path::Path;

/// A field of `/proc/PROC/status` in KiB (`VmRSS:`, `VmHWM:`); 0 when it cannot be read.
pub fn status_kib(proc: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{proc}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Time one thread has spent on a CPU, ns, from its `schedstat` (`/proc/PROC/task/TID`); 0 when
/// it is gone. Softirq work done while it ran is in it (this kernel has no separate IRQ time
/// accounting).
pub fn thread_ns(task: &Path) -> u64 {
    std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// [`thread_ns`] summed over every thread of the process.
pub fn process_ns(proc: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{proc}/task")) else { return 0 };
    tasks.filter_map(|t| Some(thread_ns(&t.ok()?.path()))).sum()
}

/// [`thread_ns`] of the thread `tid` of this process.
pub fn own_thread_ns(tid: i32) -> u64 {
    thread_ns(&Path::new("/proc/self/task").join(tid.to_string()))
}

/// The ids of this process's threads whose name satisfies `name`.
pub fn own_threads(name: impl Fn(&str) -> bool) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|t| t.parse().ok()))
        .filter(|t: &i32| std::fs::read_to_string(format!("/proc/self/task/{t}/comm")).is_ok_and(|c| name(c.trim())))
        .collect()
}

/// (busy, total) jiffies from `/proc/stat`: of CPU `cpu`, or of the whole machine when `None`.
pub fn busy_jiffies(cpu: Option<usize>) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = cpu.map_or_else(|| "cpu ".to_string(), |c| format!("cpu{c} "));
    let line = stat.lines().find(|l| l.starts_with(&name)).unwrap_or("");
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 5 {
        return (0, 1);
    }
    let idle = v[3] + v[4];
    let total: u64 = v.iter().take(8).sum();
    (total - idle, total)
}

/// Pins the calling thread to CPU `cpu`; a warning when it cannot.
pub fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("cpu index");
    if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
        eprintln!("warning: cannot pin to CPU {cpu}: {e}");
    }
}

/// A type-2 (udp-jitter, ms) probe with sender sequence 1.
pub fn type2_probe() -> Vec<u8> {
    let mut p = vec![0u8; 32];
    p[1] = 2;
    p[13] = 1;
    p
}

/// An unauthenticated STAMP / TWAMP-Light test packet (sequence, timestamp, error estimate, MBZ),
/// 44 octets: an Error Estimate with multiplier 0 is invalid (RFC 4656 §4.1.2) and TWAMP-Light
/// drops it, so the multiplier is 1.
pub fn test_packet() -> Vec<u8> {
    let mut p = vec![0u8; 44];
    p[13] = 1;
    p
}

/// Asks the responder's v1 control port `v1` to open a udp-jitter session on 127.0.0.1:`port`
/// for 65 s, and waits (up to 1 s) for its reply.
pub fn v1_control(v1: std::net::SocketAddr, port: u16) {
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(1))).unwrap();
    let mut req = vec![1, 1, 0, 52, 0, 0, 0, 0, 0, 4, 0, 16, 0, 0, 0, 0, 127, 0, 0, 1];
    req.extend_from_slice(&port.to_be_bytes());
    req.extend_from_slice(&65_000u16.to_be_bytes());
    req.extend_from_slice(&[0, 1, 0, 28]);
    req.resize(52, 0);
    c.send_to(&req, v1).unwrap();
    let mut b = [0u8; 64];
    c.recv_from(&mut b).expect("control reply");
}
