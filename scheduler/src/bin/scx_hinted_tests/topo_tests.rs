// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! Topology tests (issue 11): they need a guest of two last-level caches
//! (`cargo xtask vm --topology 2s2c2t`; `cargo xtask test` boots one for
//! them) and run only when named.
//!
//! - `topo_work_conservation`: unpinned CPU hogs queued in LLC 0 while all
//!   CPUs are taken, then LLC 1's CPUs freed: no CPU may stay idle while the
//!   other LLC has work queued.
//! - `topo_cross_llc`: a periodic thread hinted interactive, started in
//!   LLC 0 and allowed everywhere, while LLC 0 is saturated: it must run in
//!   LLC 1, first idle, then busy with a lower class (batch) while LLC 0's
//!   work is interactive too (so it cannot preempt there), with a median
//!   wake-to-run latency close to its own on an idle guest.

use std::thread::sleep;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use scx_hints::LatencyClass::{self, *};

use crate::harness::{stats, Env, Sched};
use crate::tests::TestFn;
use crate::workers::{self, mono_ns, Kind, Spec, Worker};

pub const TOPO_TESTS: &[(&str, TestFn)] = &[
    ("topo_work_conservation", work_conservation),
    ("topo_cross_llc", cross_llc),
];

/// The CPUs of each LLC (online CPUs, ascending), at least two LLCs.
fn llcs() -> Result<Vec<Vec<usize>>> {
    let topo = scx_utils::Topology::new().context("reading the CPU topology")?;
    let mut llcs: Vec<Vec<usize>> = topo
        .all_llcs
        .values()
        .map(|l| l.all_cpus.keys().copied().collect())
        .filter(|c: &Vec<usize>| !c.is_empty())
        .collect();
    llcs.sort();
    if llcs.len() < 2 {
        bail!(
            "needs two last-level caches, this guest has {} (boot it with a topology: \
             cargo xtask vm --topology 2s2c2t)",
            llcs.len()
        );
    }
    Ok(llcs)
}

/// Restricts the calling thread to `cpus`.
fn pin_self(cpus: &[usize]) {
    if let Err(e) = set_affinity(0, cpus) {
        panic!("{e:#}");
    }
}

/// Restricts thread `tid` to `cpus`.
pub fn set_affinity(tid: i32, cpus: &[usize]) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays in its bounds for
    // ids below CPU_SETSIZE, and sched_setaffinity reads it.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    ensure!(
        r == 0,
        "sched_setaffinity({tid}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// This process's thread ids.
fn own_tids() -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Hogs of `class` pinned to `cpus`, `per_cpu` per CPU.
fn pinned_hogs(
    cpus: &[usize],
    per_cpu: usize,
    kind: Kind,
    class: Option<LatencyClass>,
) -> Vec<Worker> {
    (0..cpus.len() * per_cpu)
        .map(|_| {
            let set = cpus.to_vec();
            Worker::spawn(Spec::new(kind, class).setup(move || pin_self(&set)))
        })
        .collect()
}

/// Per-CPU (idle, total) jiffies from /proc/stat.
fn cpu_times() -> Result<Vec<(u64, u64)>> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        let Some(id) = name.strip_prefix("cpu").filter(|s| !s.is_empty()) else {
            continue;
        };
        let id: usize = id.parse()?;
        let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
        ensure!(v.len() >= 5, "short /proc/stat line: {line}");
        let idle = v[3] + v[4];
        // user nice system idle iowait irq softirq steal (guest time is in user).
        let total: u64 = v.iter().take(8).sum();
        if out.len() <= id {
            out.resize(id + 1, (0, 0));
        }
        out[id] = (idle, total);
    }
    Ok(out)
}

fn work_conservation(env: &Env) -> Result<String> {
    let llcs = llcs()?;
    let all = llcs.concat();
    // The starvation guard off: it would run the queued hogs (below) in
    // LLC 0 after 1 s, and they could then move at their next enqueue;
    // what is tested is that LLC 1's CPUs take them when they go idle.
    let mut sched = Sched::start(env, &["--starve-ms", "0"])?;

    // LLC 1's CPUs taken by pinned hogs, LLC 0's by pinned hogs of high
    // weight (priority -20, allowed as root), and unpinned hogs of low
    // weight (priority 19), forked from a thread in LLC 0: they queue in
    // LLC 0, where they get a slice every few seconds. Then LLC 1's hogs
    // stop.
    let blockers = pinned_hogs(&llcs[1], 1, Kind::Hog, None);
    let mut hogs: Vec<Worker> = llcs[0]
        .iter()
        .map(|_| {
            let set = llcs[0].clone();
            Worker::spawn(
                Spec::new(Kind::Hog, None)
                    .prio(-20)
                    .setup(move || pin_self(&set)),
            )
        })
        .collect();
    sleep(Duration::from_millis(300));
    // The queued hogs are forked from a thread in LLC 0 with priority 19,
    // which they inherit with its affinity, and widened from here: they
    // need not run before LLC 1 is freed to be allowed there.
    let (llc0, nr_queued) = (llcs[0].clone(), llcs[1].len());
    let (queued, tids): (Vec<Worker>, Vec<i32>) = std::thread::spawn(move || {
        pin_self(&llc0);
        let _ = scx_hints::set_priority(19);
        let before = own_tids();
        let queued: Vec<Worker> = (0..nr_queued)
            .map(|_| Worker::spawn(Spec::new(Kind::Hog, None)))
            .collect();
        let tids = own_tids()
            .into_iter()
            .filter(|t| !before.contains(t))
            .collect();
        (queued, tids)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the hog spawner panicked"))?;
    ensure!(
        tids.len() >= nr_queued,
        "expected {nr_queued} new threads for the queued hogs, found {}",
        tids.len()
    );
    for &tid in &tids {
        set_affinity(tid, &all)?;
    }
    hogs.extend(queued);
    sleep(Duration::from_millis(1500));
    let steals0 = stats()?.get("llc_steals");
    workers::stop_all(blockers);

    // The freed CPUs must take the queued hogs at once.
    sleep(Duration::from_millis(200));
    let t0 = cpu_times()?;
    sleep(Duration::from_millis(1500));
    let t1 = cpu_times()?;
    let steals = stats()?.get("llc_steals") - steals0;
    sched.check()?;
    workers::stop_all(hogs);
    sched.stop()?;

    let idle: Vec<f64> = all
        .iter()
        .map(|&c| {
            let (i0, a0) = t0.get(c).copied().unwrap_or_default();
            let (i1, a1) = t1.get(c).copied().unwrap_or_default();
            100.0 * i1.saturating_sub(i0) as f64 / a1.saturating_sub(a0).max(1) as f64
        })
        .collect();
    let shown: Vec<String> = idle.iter().map(|p| format!("{p:.0}")).collect();
    let detail = format!(
        "{} hogs on {} CPUs ({} LLCs; {nr_queued} of low weight queued in LLC 0 when LLC 1's \
         CPUs were freed), idle % per CPU [{}], {steals} tasks stolen across LLCs",
        llcs[0].len() + nr_queued,
        all.len(),
        llcs.len(),
        shown.join(" ")
    );
    // A busy CPU's idle share is 0 but for the guest's own stalls; a CPU left
    // without work is near 100.
    let worst = idle.iter().copied().fold(0.0, f64::max);
    ensure!(
        worst <= 15.0,
        "a CPU idled while hogs were queued: {detail}"
    );
    Ok(detail)
}

/// What a periodic probe saw: wake-to-run latency (ns) and the CPU it ran
/// on, per period.
struct Probe {
    lat_ns: Vec<u64>,
    cpus: Vec<usize>,
}

impl Probe {
    /// Runs on the calling thread: `work` of spinning every `period`, for
    /// `secs` seconds.
    fn run(work: Duration, period: Duration, secs: f64) -> Probe {
        let period_ns = period.as_nanos() as u64;
        let end = mono_ns() + (secs * 1e9) as u64;
        let mut next = mono_ns() + period_ns;
        let mut probe = Probe {
            lat_ns: Vec::new(),
            cpus: Vec::new(),
        };
        while next < end {
            workers::sleep_until_ns(next);
            let woke = mono_ns();
            probe.lat_ns.push(woke.saturating_sub(next));
            // SAFETY: sched_getcpu has no preconditions.
            probe
                .cpus
                .push(unsafe { libc::sched_getcpu() }.max(0) as usize);
            let stop = woke + work.as_nanos() as u64;
            while mono_ns() < stop {
                std::hint::spin_loop();
            }
            next += period_ns;
            let now = mono_ns();
            if now > next {
                next += (now - next) / period_ns * period_ns + period_ns;
            }
        }
        probe
    }

    /// A probe thread hinted `class`, forked from a thread pinned to
    /// `start_cpus`, allowed on `cpus`.
    fn spawn(
        class: LatencyClass,
        start_cpus: &[usize],
        cpus: &[usize],
        secs: f64,
    ) -> Result<Probe> {
        let (start_cpus, cpus) = (start_cpus.to_vec(), cpus.to_vec());
        std::thread::spawn(move || {
            pin_self(&start_cpus);
            std::thread::spawn(move || {
                scx_hints::set_latency_class(class);
                pin_self(&cpus);
                Probe::run(Duration::from_millis(1), Duration::from_millis(10), secs)
            })
            .join()
        })
        .join()
        .ok()
        .and_then(|r| r.ok())
        .context("the probe thread panicked")
    }

    fn percentile_us(&self, pct: usize) -> f64 {
        let mut v = self.lat_ns.clone();
        v.sort_unstable();
        v.get((v.len() * pct / 100).min(v.len().saturating_sub(1)))
            .map_or(0.0, |&x| x as f64 / 1000.0)
    }

    /// Share of periods run on one of `cpus`, in percent.
    fn share_on(&self, cpus: &[usize]) -> f64 {
        let on = self.cpus.iter().filter(|c| cpus.contains(c)).count();
        100.0 * on as f64 / self.cpus.len().max(1) as f64
    }
}

fn cross_llc(env: &Env) -> Result<String> {
    let llcs = llcs()?;
    let (llc0, llc1) = (llcs[0].clone(), llcs[1].clone());
    let all = llcs.concat();
    let mut sched = Sched::start(env, &[])?;
    let secs = 3.0;

    // Reference: the probe on an otherwise idle guest, in this boot. The
    // median is compared: the emulated guest's own stalls (tens of ms with
    // 8 vCPUs on one host thread) reach the p99 of any phase.
    let idle = Probe::spawn(Interactive, &llc0, &all, 2.0)?;
    let bound_us = 3.0 * idle.percentile_us(50) + 2000.0;

    // LLC 0 saturated with normal hogs, LLC 1 idle.
    let hogs = pinned_hogs(&llc0, 2, Kind::Hog, None);
    sleep(Duration::from_millis(300));
    let a = Probe::spawn(Interactive, &llc0, &all, secs)?;
    sched.check()?;
    workers::stop_all(hogs);

    // LLC 0 saturated with interactive work (which an interactive waker may
    // not preempt; 3 ms bursts stay below the interactive budget), LLC 1
    // with batch hogs: the probe belongs on LLC 1, preempting batch.
    let mut hogs = pinned_hogs(
        &llc0,
        2,
        Kind::Bursty {
            run: Duration::from_millis(3),
            nap: Duration::from_micros(200),
        },
        Some(Interactive),
    );
    hogs.extend(pinned_hogs(&llc1, 1, Kind::Hog, Some(Batch)));
    sleep(Duration::from_millis(300));
    let s0 = stats()?;
    let b = Probe::spawn(Interactive, &llc0, &all, secs)?;
    let s1 = stats()?;
    sched.check()?;
    workers::stop_all(hogs);
    sched.stop()?;

    let remote = s1.get("remote_preemptions") - s0.get("remote_preemptions");
    let lat = |p: &Probe| format!("{:.0}/{:.0}", p.percentile_us(50), p.percentile_us(99));
    let detail = format!(
        "probe wake-to-run p50/p99 idle {} us; LLC 1 idle: {:.0}% of periods on LLC 1, \
         {} us; LLC 1 running batch: {:.0}% on LLC 1, {} us, {remote} remote preemptions \
         (p50 bound {:.0} us)",
        lat(&idle),
        a.share_on(&llc1),
        lat(&a),
        b.share_on(&llc1),
        lat(&b),
        bound_us
    );
    ensure!(
        a.share_on(&llc1) >= 90.0 && b.share_on(&llc1) >= 80.0,
        "the interactive probe stayed on its busy LLC: {detail}"
    );
    ensure!(
        a.percentile_us(50) <= bound_us && b.percentile_us(50) <= bound_us,
        "the interactive probe waited too long: {detail}"
    );
    Ok(detail)
}
