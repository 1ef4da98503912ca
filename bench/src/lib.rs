//! What the benchmark harnesses read about a process from /proc: its memory and the CPU time of
//! its threads. `proc` is `"self"` or a process id.
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
