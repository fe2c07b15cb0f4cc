// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! Scale (issue 11): the BPF time per scheduler callback from the kernel's
//! own accounting (`kernel.bpf_stats_enabled`), the `--bench-scale` load
//! that `cargo xtask bench scale` runs per vCPU count, and the test with
//! many registered hinted threads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::query::ProgInfoIter;
use scx_hints::LatencyClass::{self, *};

use crate::harness::{nr_cpus, stats, wait_stats, Env, Sched};
use crate::workers::{self, mono_ns, Kind, Spec, Worker};

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The callbacks whose cost is reported, by their program names (the kernel
/// keeps the first 15 characters).
pub const CALLBACKS: [(&str, &str); 7] = [
    ("enqueue", "hinted_enqueue"),
    ("dispatch", "hinted_dispatch"),
    ("select_cpu", "hinted_select_c"),
    ("running", "hinted_running"),
    ("stopping", "hinted_stopping"),
    ("runnable", "hinted_runnable"),
    ("quiescent", "hinted_quiescen"),
];

/// Turns the kernel's BPF run-time accounting on for its lifetime and
/// restores the previous setting.
pub struct BpfStats {
    old: String,
}

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let old = std::fs::read_to_string(BPF_STATS_SYSCTL)
            .with_context(|| format!("reading {BPF_STATS_SYSCTL}"))?;
        std::fs::write(BPF_STATS_SYSCTL, "1")
            .with_context(|| format!("enabling {BPF_STATS_SYSCTL}"))?;
        Ok(Self {
            old: old.trim().to_string(),
        })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS_SYSCTL, &self.old);
    }
}

const MAX_MAP_COUNT_SYSCTL: &str = "/proc/sys/vm/max_map_count";

/// Raises the per-process mapping limit to at least `maps` for its
/// lifetime: a thread of this process takes 4 mappings (its stack and the
/// signal stack, each with a guard page), so the default 65,530 stops near
/// 16,000 live threads with ENOMEM.
struct MapCountAtLeast {
    old: Option<String>,
}

impl MapCountAtLeast {
    fn raise(maps: u64) -> Result<Self> {
        let old = std::fs::read_to_string(MAX_MAP_COUNT_SYSCTL)
            .with_context(|| format!("reading {MAX_MAP_COUNT_SYSCTL}"))?;
        let now: u64 = old
            .trim()
            .parse()
            .with_context(|| format!("{MAX_MAP_COUNT_SYSCTL}: {old:?}"))?;
        if now >= maps {
            return Ok(Self { old: None });
        }
        std::fs::write(MAX_MAP_COUNT_SYSCTL, maps.to_string())
            .with_context(|| format!("raising {MAX_MAP_COUNT_SYSCTL} to {maps}"))?;
        Ok(Self {
            old: Some(old.trim().to_string()),
        })
    }
}

impl Drop for MapCountAtLeast {
    fn drop(&mut self) {
        if let Some(old) = &self.old {
            let _ = std::fs::write(MAX_MAP_COUNT_SYSCTL, old);
        }
    }
}

/// Run time (ns) and run count of every loaded BPF program named
/// `hinted_*`, summed by name.
pub fn prog_stats() -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for p in ProgInfoIter::default() {
        let name = p.name.to_string_lossy().into_owned();
        if name.starts_with("hinted_") {
            let e = out.entry(name).or_insert((0, 0));
            e.0 += p.run_time_ns;
            e.1 += p.run_cnt;
        }
    }
    out
}

/// Per callback: (ns per call, calls) between two [`prog_stats`] reads.
pub fn cost(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
) -> Vec<(&'static str, f64, u64)> {
    CALLBACKS
        .iter()
        .map(|(label, prog)| {
            let (t0, c0) = before.get(*prog).copied().unwrap_or_default();
            let (t1, c1) = after.get(*prog).copied().unwrap_or_default();
            let calls = c1.saturating_sub(c0);
            let ns = if calls == 0 {
                0.0
            } else {
                t1.saturating_sub(t0) as f64 / calls as f64
            };
            (*label, ns, calls)
        })
        .collect()
}

fn cost_line(c: &[(&str, f64, u64)]) -> String {
    c.iter()
        .map(|(l, ns, n)| format!("{l}_ns={ns:.0} {l}_calls={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The scale benchmark's load: one unhinted hog per CPU, one unhinted
/// bursty thread per CPU (wakeups: select_cpu, enqueue), and a periodic
/// interactive thread (1 ms of work every 10 ms) whose wake-to-run latency
/// is the latency figure.
struct Load {
    hogs: Vec<Worker>,
    others: Vec<Worker>,
    frame: Worker,
}

impl Load {
    fn start(hinted: bool) -> Self {
        let n = nr_cpus();
        let hogs = (0..n)
            .map(|_| Worker::spawn(Spec::new(Kind::Hog, None)))
            .collect();
        let others = (0..n)
            .map(|_| {
                Worker::spawn(Spec::new(
                    Kind::Bursty {
                        run: Duration::from_micros(300),
                        nap: Duration::from_micros(700),
                    },
                    None,
                ))
            })
            .collect();
        let frame = Worker::spawn(Spec::new(
            Kind::Periodic {
                work: Duration::from_millis(1),
                period: Duration::from_millis(10),
            },
            hinted.then_some(Interactive),
        ));
        Self {
            hogs,
            others,
            frame,
        }
    }

    fn hog_iters(&self) -> u64 {
        self.hogs.iter().map(Worker::iters).sum()
    }

    /// Stops the load; returns (wake-to-run p50 and p99 in us, periods
    /// missed) of the frame thread over the whole run.
    fn stop(self) -> (f64, f64, u64) {
        let missed = self.frame.missed();
        let report = self.frame.stop();
        workers::stop_all(self.hogs);
        workers::stop_all(self.others);
        (
            report.percentile_us(50.0),
            report.percentile_us(99.0),
            missed,
        )
    }
}

/// One measured phase of the benchmark.
fn bench_phase(label: &str, secs: u64, hinted: bool) -> Result<String> {
    let load = Load::start(hinted);
    sleep(Duration::from_secs(2));
    let (i0, t0, s0) = (load.hog_iters(), mono_ns(), prog_stats());
    sleep(Duration::from_secs(secs));
    let (i1, t1, s1) = (load.hog_iters(), mono_ns(), prog_stats());
    let (p50, p99, missed) = load.stop();
    let hog_rate = (i1 - i0) as f64 / ((t1 - t0) as f64 / 1e9);
    let mut line = format!(
        "SCALE cpus={} sched={label} frame_p50_us={p50:.0} frame_p99_us={p99:.0} \
         frame_missed={missed} hog_iters_per_s={hog_rate:.1}",
        nr_cpus(),
    );
    if hinted {
        line += " ";
        line += &cost_line(&cost(&s0, &s1));
    }
    Ok(line)
}

/// `--bench-scale SECS`: the load under EEVDF, then under scx_hinted (with
/// BPF run-time accounting on), one `SCALE ...` line each.
pub fn bench(env: &Env, secs: u64) -> Result<()> {
    println!("{}", bench_phase("eevdf", secs, false)?);
    let _bpf_stats = BpfStats::enable()?;
    let mut sched = Sched::start(env, &[])?;
    let line = bench_phase("scx_hinted", secs, true)?;
    sched.check()?;
    sched.stop()?;
    println!("{line}");
    Ok(())
}

/// Threads that register hints (the class given; `None`: no hint, no
/// registration) and then sleep until released; a released thread exits.
struct Sleepers {
    release: Arc<(Mutex<bool>, Condvar)>,
    ready: Arc<AtomicUsize>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Sleepers {
    fn spawn(n: usize, class: Option<LatencyClass>) -> Result<Self> {
        let release = Arc::new((Mutex::new(false), Condvar::new()));
        let ready = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (release, ready) = (release.clone(), ready.clone());
            let h = std::thread::Builder::new()
                .name("sleeper".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    if let Some(c) = class {
                        scx_hints::set_latency_class(c);
                        // scx_hinted reads a thread's hints when it wakes.
                        // A sleep whose timer fires before the thread has
                        // left its CPU is no wakeup for the scheduler (seen
                        // for 1 to 3 of 1,000 one-shot 1 ms sleeps under
                        // TCG): a few longer ones make a real one certain.
                        for _ in 0..3 {
                            sleep(Duration::from_millis(5));
                        }
                    }
                    ready.fetch_add(1, Ordering::Release);
                    let (lock, cv) = &*release;
                    let mut go = lock.lock().unwrap_or_else(|e| e.into_inner());
                    while !*go {
                        go = cv.wait(go).unwrap_or_else(|e| e.into_inner());
                    }
                })
                .with_context(|| format!("spawning sleeper {i} of {n}"))?;
            handles.push(h);
        }
        let s = Self {
            release,
            ready,
            handles,
        };
        // The emulated guest creates about 50 threads per second.
        let limit = Duration::from_secs(120).max(Duration::from_millis(60 * n as u64));
        let start = Instant::now();
        while s.ready.load(Ordering::Acquire) < n {
            ensure!(
                start.elapsed() < limit,
                "only {} of {n} sleepers registered in {limit:?}",
                s.ready.load(Ordering::Acquire)
            );
            sleep(Duration::from_millis(20));
        }
        Ok(s)
    }

    fn release(self) {
        {
            let (lock, cv) = &*self.release;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        for h in self.handles {
            let _ = h.join();
        }
    }
}

/// A progress line in the kernel log: the host's stall watchdog reads the
/// console, and /dev/kmsg is no 9p file.
pub fn progress(msg: &str) {
    let _ = std::fs::write("/dev/kmsg", format!("scx_hinted_tests: {msg}\n"));
}

/// Pages pinned with FOLL_PIN (the UPTR pins), system-wide.
fn foll_pinned() -> Result<i64> {
    let text = std::fs::read_to_string("/proc/vmstat")?;
    let field = |name: &str| -> Result<i64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .with_context(|| format!("{name} not in /proc/vmstat"))
    };
    Ok(field("nr_foll_pin_acquired ")? - field("nr_foll_pin_released ")?)
}

/// Slab caches in use: name -> (objects in use, object size in bytes), from
/// /proc/slabinfo (BPF task-storage elements live in the kmalloc caches).
fn slab_caches() -> Result<BTreeMap<String, (i64, i64)>> {
    let text = std::fs::read_to_string("/proc/slabinfo").context("reading /proc/slabinfo")?;
    let mut out = BTreeMap::new();
    // Lines after the two header lines: name active_objs num_objs objsize ...
    for line in text.lines().skip(2) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let (Some(name), Some(Ok(active)), Some(Ok(size))) = (
            f.first(),
            f.get(1).map(|v| v.parse()),
            f.get(3).map(|v| v.parse()),
        ) {
            out.insert(name.to_string(), (active, size));
        }
    }
    ensure!(!out.is_empty(), "/proc/slabinfo lists no cache");
    Ok(out)
}

/// Per cache, the objects added between two [`slab_caches`] reads.
fn slab_growth(
    before: &BTreeMap<String, (i64, i64)>,
    after: &BTreeMap<String, (i64, i64)>,
) -> BTreeMap<String, (i64, i64)> {
    after
        .iter()
        .map(|(name, &(n1, size))| {
            let n0 = before.get(name).map_or(0, |c| c.0);
            (name.clone(), (n1 - n0, size))
        })
        .collect()
}

/// The kernel memory a registration adds: the slab growth of `m` hinted
/// threads less that of `m` unhinted ones, per thread, in bytes and per
/// cache (the caches that grew by at least one object per ten threads).
fn registration_slab(
    hinted: &BTreeMap<String, (i64, i64)>,
    unhinted: &BTreeMap<String, (i64, i64)>,
    m: usize,
) -> (f64, String) {
    let mut bytes = 0i64;
    let mut caches = Vec::new();
    for (name, &(n, size)) in hinted {
        let extra = n - unhinted.get(name).map_or(0, |c| c.0);
        bytes += extra * size;
        if extra.abs() * 10 >= m as i64 {
            caches.push(format!("{name} {:+.2} x {size} B", extra as f64 / m as f64));
        }
    }
    (bytes as f64 / m as f64, caches.join(", "))
}

/// The counts of `many_threads`: SCX_HINTS_MANY_THREADS="SLEEPERS,CHURN"
/// (default: the CI form, 1,000 sleepers and 3,000 threads churned; the
/// issue's full form is `10000,100000`).
fn many_counts() -> Result<(usize, usize)> {
    match std::env::var("SCX_HINTS_MANY_THREADS") {
        Err(_) => Ok((1_000, 3_000)),
        Ok(v) => {
            let parsed = v
                .split_once(',')
                .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
            match parsed {
                Some((a, b)) if a >= 100 && b >= 1000 => Ok((a, b)),
                _ => bail!(
                    "SCX_HINTS_MANY_THREADS={v:?}: expected SLEEPERS,CHURN with at least 100 and 1000"
                ),
            }
        }
    }
}

/// Many registered threads: the enqueue and dispatch cost with 100 and
/// with many registered sleepers under the same wakeup load; then threads
/// created and exited with hints in batches, after which the registered
/// gauge, the per-class task gauges and the pinned pages are back at their
/// baseline. Also states the kernel memory per registered thread.
pub fn many_threads(env: &Env) -> Result<String> {
    let (n_sleepers, n_churn) = many_counts()?;
    // Up to twice the sleepers live at once, plus the churn batch.
    let _maps = MapCountAtLeast::raise(65_530 + 8 * (2 * n_sleepers as u64 + 1_000))?;
    let _bpf_stats = BpfStats::enable()?;
    let mut sched = Sched::start(env, &[])?;
    let base = stats()?;
    let (reg0, pin0) = (base.get("registered"), foll_pinned()?);
    let bg0 = base.class("background", "tasks");

    // The wakeup load of both cost phases: short periodic hinted threads.
    let load: Vec<Worker> = (0..2 * nr_cpus())
        .map(|_| {
            Worker::spawn(Spec::new(
                Kind::Periodic {
                    work: Duration::from_micros(200),
                    period: Duration::from_millis(2),
                },
                Some(Interactive),
            ))
        })
        .collect();
    let phase = |secs: u64| {
        let s0 = prog_stats();
        sleep(Duration::from_secs(secs));
        cost(&s0, &prog_stats())
    };

    progress("many_threads: 100 hinted sleepers, cost phase");
    let few = Sleepers::spawn(100, Some(Background))?;
    sleep(Duration::from_secs(1));
    let cost_few = phase(5);

    // Kernel memory of a registration: the slab growth of hinted sleepers
    // less that of as many unhinted ones (threads cost slab of their own).
    // Both sets stay alive until both are measured: no thread exits in
    // between, whose memory the kernel frees later (RCU) in the middle of
    // a measurement.
    let m = n_sleepers - 100;
    let slab0 = slab_caches()?;
    progress(&format!("many_threads: {m} unhinted sleepers"));
    let unhinted = Sleepers::spawn(m, None)?;
    let (slab1, pin_before) = (slab_caches()?, foll_pinned()?);
    progress(&format!("many_threads: {m} more hinted sleepers"));
    let many = Sleepers::spawn(m, Some(Background))?;
    let (slab2, pin_after) = (slab_caches()?, foll_pinned()?);
    sched.check()?;
    // `registered` also counts the load's threads: wait for the class too.
    let s = wait_stats(Duration::from_secs(30), |s| {
        s.get("registered") >= reg0 + n_sleepers as f64
            && s.class("background", "tasks") >= bg0 + n_sleepers as f64
    })
    .context("the gauges did not count every sleeper")?;
    let bg_tasks = s.class("background", "tasks");
    progress("many_threads: cost phase");
    let cost_many = phase(5);
    sched.check()?;
    workers::stop_all(load);
    many.release();
    unhinted.release();
    few.release();

    let (per_thread_slab, slab_caches_grown) = registration_slab(
        &slab_growth(&slab1, &slab2),
        &slab_growth(&slab0, &slab1),
        m,
    );
    let pins_per_thread = (pin_after - pin_before) as f64 / m as f64;

    // Churn: threads created, hinted and exited, in batches.
    let batch = 1000;
    let start = Instant::now();
    let mut created = 0;
    while created < n_churn {
        let n = batch.min(n_churn - created);
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let class = LatencyClass::ALL[i % LatencyClass::ALL.len()];
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || scx_hints::set_latency_class(class))
            })
            .collect::<std::io::Result<_>>()
            .context("spawning churn threads")?;
        for h in handles {
            let _ = h.join();
        }
        created += n;
        progress(&format!("many_threads: {created} of {n_churn} churned"));
        sched.check()?;
    }
    let churn_secs = start.elapsed().as_secs_f64();
    println!(
        "many_threads: 100 registered: {}; {n_sleepers} registered: {}; registration: \
         {per_thread_slab:.0} B slab ({slab_caches_grown}), {pins_per_thread:.2} pins; \
         {n_churn} churned in {churn_secs:.1} s",
        cost_line(&cost_few),
        cost_line(&cost_many)
    );
    // Reaped threads drop their entries and pins shortly after they exit.
    let end = wait_stats(Duration::from_secs(60), |s| {
        s.get("registered") <= reg0 && s.class("background", "tasks") <= bg0
    })
    .context("gauges not back at their baseline after the churn")?;
    let mut pin_end = foll_pinned()?;
    let t = Instant::now();
    while pin_end > pin0 && t.elapsed() < Duration::from_secs(30) {
        sleep(Duration::from_millis(200));
        pin_end = foll_pinned()?;
    }
    ensure!(
        pin_end <= pin0,
        "pinned pages not back at the baseline: {pin0} before, {pin_end} after"
    );
    // The normal class also holds every unhinted task of the system.
    for class in [Critical, Interactive, Batch, Background].map(LatencyClass::name) {
        ensure!(
            end.class(class, "tasks") <= base.class(class, "tasks"),
            "{class} tasks gauge {} above its baseline {}",
            end.class(class, "tasks"),
            base.class(class, "tasks")
        );
    }
    sched.check()?;
    sched.stop()?;

    let ratio = |i: usize| {
        if cost_few[i].1 > 0.0 {
            cost_many[i].1 / cost_few[i].1
        } else {
            f64::NAN
        }
    };
    let (enq, disp, running) = (ratio(0), ratio(1), ratio(3));
    // The goal is 10%; the emulated guest's BPF timings vary more
    // than that between phases of one boot (raw ratios of 0.74 to 2.1 seen
    // with nothing changed but the phase: a callback's run time also holds
    // the time the host took the emulator away). `running` does the same
    // work whatever the thread count, so each cost is compared relative to
    // it in its own phase, and the test fails only on a cost that grows
    // with the thread count (ten times the threads: a per-thread cost would
    // be several times this bound).
    let (enq_rel, disp_rel) = (enq / running, disp / running);
    ensure!(
        enq_rel < 2.0 && disp_rel < 2.0,
        "cost grew with {n_sleepers} registered threads: enqueue {:.0} -> {:.0} ns, \
         dispatch {:.0} -> {:.0} ns, running {:.0} -> {:.0} ns (relative to running: \
         enqueue x{enq_rel:.2}, dispatch x{disp_rel:.2})",
        cost_few[0].1,
        cost_many[0].1,
        cost_few[1].1,
        cost_many[1].1,
        cost_few[3].1,
        cost_many[3].1,
    );
    ensure!(
        bg_tasks >= bg0 + n_sleepers as f64,
        "background tasks gauge {bg_tasks} did not count {n_sleepers} sleepers"
    );
    Ok(format!(
        "{n_sleepers} registered: enqueue {:.0} -> {:.0} ns (x{enq:.2}, x{enq_rel:.2} relative to \
         running), dispatch {:.0} -> {:.0} ns (x{disp:.2}, x{disp_rel:.2}) vs 100; a registration costs {:.0} B of kernel slab \
         ({slab_caches_grown}) and {pins_per_thread:.2} pinned pages; {n_churn} hinted threads churned in {churn_secs:.1} s, \
         registered/tasks/pins back to baseline ({reg0}/{bg0}/{pin0})",
        cost_few[0].1,
        cost_many[0].1,
        cost_few[1].1,
        cost_many[1].1,
        per_thread_slab
    ))
}
