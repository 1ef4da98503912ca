//! What the benchmark harnesses read from /proc: a process's memory and the CPU time of its
//! threads (`proc` is `"self"` or a process id), this process's threads by name, and how busy a
//! CPU or the machine was.
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
