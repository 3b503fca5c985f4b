//! What `/proc` says about a process, its threads and the machine.
//!
//! CPU per thread comes from `schedstat` (exact nanoseconds); per process
//! from `stat` (which still counts threads that have ended); memory and
//! context switches from `status`. Nothing here needs unsafe code or a
//! crate: the one limit this tool changes, the open-file limit, is raised
//! with the `prlimit` command.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Kernel clock ticks per second in `/proc/*/stat` (USER_HZ, 100 on every
/// Linux architecture that matters here).
const TICKS_PER_S: f64 = 100.0;

/// Busy CPU seconds of the whole machine since boot (all cores).
pub fn machine_busy_s() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle) as f64 / TICKS_PER_S)
}

/// CPU seconds and context switches of a set of threads.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// User + system CPU time, seconds.
    pub cpu_s: f64,
    /// Voluntary + involuntary context switches (each is a wake-up or a
    /// preemption).
    pub switches: u64,
    /// Threads counted.
    pub threads: u64,
    /// After [`Usage::since`]: the thread that used the most CPU in
    /// between, and how much (a thread near one core is a bottleneck).
    pub busiest: Option<(String, f64)>,
    // Thread id -> (name, CPU seconds).
    per_thread: HashMap<String, (String, f64)>,
}

impl Usage {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Usage) -> Usage {
        let deltas = self.per_thread.iter().map(|(tid, (name, cpu))| {
            let before = earlier.per_thread.get(tid).map_or(0.0, |t| t.1);
            (name.clone(), cpu - before)
        });
        Usage {
            cpu_s: self.cpu_s - earlier.cpu_s,
            switches: self.switches.saturating_sub(earlier.switches),
            threads: self.threads,
            busiest: deltas.max_by(|a, b| a.1.total_cmp(&b.1)),
            per_thread: HashMap::new(),
        }
    }
}

/// Sums `/proc/PID/task/*` for threads whose name starts with `prefix`
/// (all threads with `None`).
pub fn threads_usage(pid: &str, prefix: Option<&str>) -> Usage {
    let mut usage = Usage::default();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return usage;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(stat) = fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let Some((name, ticks)) = parse_stat(&stat) else {
            continue;
        };
        if prefix.is_some_and(|p| !name.starts_with(p)) {
            continue;
        }
        let cpu_s = task_cpu_s(&dir).unwrap_or(ticks as f64 / TICKS_PER_S);
        usage.cpu_s += cpu_s;
        usage.threads += 1;
        let tid = task.file_name().to_string_lossy().into_owned();
        usage.per_thread.insert(tid, (name, cpu_s));
        let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
        usage.switches += field(&status, "voluntary_ctxt_switches").unwrap_or(0);
        usage.switches += field(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
    }
    usage
}

/// CPU seconds of one thread from its `schedstat` (nanoseconds on the
/// CPU). Its `stat` ticks are sampled and, over a few busy seconds, came
/// out 20–25 % under the process total here; `schedstat` adds up exactly.
pub fn task_cpu_s(task_dir: &Path) -> Option<f64> {
    let sched = fs::read_to_string(task_dir.join("schedstat")).ok()?;
    let ns: u64 = sched.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// CPU seconds the calling thread has used.
pub fn thread_cpu_s() -> f64 {
    task_cpu_s(Path::new("/proc/thread-self")).unwrap_or(0.0)
}

/// CPU seconds of a whole process (its ended threads included).
pub fn process_cpu_s(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, ticks)| ticks as f64 / TICKS_PER_S)
}

/// `(comm, utime + stime)` from a `stat` line; comm may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the comm: state(0) … utime(11) stime(12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// A numeric field (`VmRSS`, `Threads`, …) of `/proc/PID/status`.
pub fn status_field(pid: &str, name: &str) -> Option<u64> {
    field(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        name,
    )
}

fn field(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.split_whitespace().next()?.parse().ok())?
    })
}

/// Raises this process's open-file soft limit to its hard limit (spawned
/// servers inherit it) with the `prlimit` tool, so no unsafe code or extra
/// crate is needed. Returns the soft limit now in force.
pub fn raise_nofile() -> u64 {
    let (soft, hard) = nofile_limits().unwrap_or((1024, 1024));
    if soft < hard {
        let pid = std::process::id().to_string();
        let limit = format!("--nofile={hard}:{hard}");
        let ok = Command::new("prlimit")
            .args(["--pid", &pid, &limit])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("note: could not raise the open-file limit from {soft} (prlimit)");
        }
    }
    nofile_limits().map_or(soft, |(soft, _)| soft)
}

/// `(soft, hard)` open-file limits from `/proc/self/limits`.
fn nofile_limits() -> Option<(u64, u64)> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line["Max open files".len()..].split_whitespace();
    let parse = |s: Option<&str>| match s? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    Some((parse(nums.next())?, parse(nums.next())?))
}
