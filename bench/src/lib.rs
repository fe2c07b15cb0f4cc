//! Benchmarks of scx-hints (results and commands in docs/benchmarks.md).
//!
//! `cargo xtask bench hint-cost` runs [`hint_cost`]: what setting a hint
//! costs, next to the system calls a hint replaces, measured in one run.
//! `cargo xtask demo` and `cargo xtask bench` run [`hintbench`] in a
//! sched_ext guest: scheduling latency and throughput under contenders.
//!
//! The harness is hand-written rather than criterion because the
//! measurements need things criterion does not give: each benchmark runs on
//! a thread of its own (a hint set must run on a thread registered in the
//! map; a map update must use that thread's pidfd, on another thread so as
//! not to overwrite the registration), the samples of all benchmarks are
//! interleaved round by round so that a noisy moment hits them all, the
//! first-use cost is one timing per fresh thread, and the result is a few
//! medians and ratios printed in a fixed form for scripts.

pub mod harness;
pub mod hint_cost;
pub mod hintbench;
pub mod stats;
pub mod sys;

/// The environment a result was measured in.
pub mod env {
    /// The CPU model from /proc/cpuinfo.
    pub fn cpu_model() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into())
    }

    /// The kernel release (`uname -r`).
    pub fn kernel() -> String {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    }

    /// The compiler that built the benchmark.
    pub fn rustc() -> &'static str {
        env!("BENCH_RUSTC_VERSION")
    }

    /// The 1-minute load average: other work on the machine.
    pub fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "?".into())
    }

    /// Online CPUs.
    pub fn cpus() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}
