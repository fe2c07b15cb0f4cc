//! What setting a hint costs, next to the system calls a hint replaces,
//! measured in one run on the host kernel.
//!
//! - **hint set**: `set_latency_class` (two alternating values) and
//!   `set_priority`, on a thread registered in a real pinned task-storage map
//!   (the BPF reader of `tld_kernel_tests`); and again with no map pinned.
//! - **sched_setattr** on the calling thread, toggling `sched_nice` 0/1
//!   under SCHED_OTHER; `setpriority` likewise.
//! - **task-storage map update through a cached pidfd** (scx_layered's hint
//!   path): `BPF_MAP_UPDATE_ELEM` on the same map, key = the thread's pidfd
//!   opened once, value = a zeroed `tld_map_value` (null user pointers, so
//!   nothing is pinned: a plain value, like scx_layered's). Also with real
//!   user pointers (what registering a thread does: two pages pinned).
//! - `pidfd_open(PIDFD_THREAD)` + `close`, the other half of registration.
//! - **first use**: a fresh thread's first hint set (block allocation,
//!   pidfd, map update), one timing per thread, with and without the map.
//!
//! Every loop runs one operation per iteration on values hidden from the
//! optimiser (`black_box`), which also stops it from hoisting the hint's
//! per-thread checks out of the loop. The steady-state benchmarks run on
//! two threads pinned to one CPU: the hint thread (which also makes the
//! `sched_setattr` calls on itself) and the map thread (its own pidfd is the
//! update's key, so the hint thread's registration is left alone). Their
//! samples are interleaved round by round, in a rotating order; the no-map
//! case needs the map unpinned, so it runs first, as a phase of its own.

use crate::harness::{self, Body, Worker};
use crate::stats::{fmt_ns, fmt_ratio, Summary};
use crate::sys::{self, MapElemAttr, SchedAttr};
use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::MapCore;
use scx_hints::tld::{self, abi::MapValue, Registration};
use scx_hints::LatencyClass;
use std::hint::black_box;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long and where to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Rounds; each takes one sample of every steady-state benchmark.
    pub rounds: usize,
    /// The target duration of one sample (a batch of iterations).
    pub sample: Duration,
    /// Fresh threads timed per round, for the first-use cost.
    pub threads_per_round: usize,
    /// The CPU every benchmark thread is pinned to; None: not pinned.
    pub cpu: Option<usize>,
    pub quick: bool,
}

impl Options {
    /// The full run (about 10 s here).
    pub fn full(cpu: Option<usize>) -> Options {
        Options {
            rounds: 400,
            sample: Duration::from_millis(1),
            threads_per_round: 5,
            cpu,
            quick: false,
        }
    }

    /// A run of a couple of seconds, for smoke tests. Same benchmarks,
    /// fewer and shorter samples: the figures are rougher.
    pub fn quick(cpu: Option<usize>) -> Options {
        Options {
            rounds: 50,
            sample: Duration::from_micros(300),
            threads_per_round: 3,
            cpu,
            quick: true,
        }
    }
}

/// The hint values the loops alternate between.
const CLASSES: [LatencyClass; 2] = [LatencyClass::Interactive, LatencyClass::Batch];
const PRIOS: [i32; 2] = [-5, 5];

/// `set_latency_class`, alternating values, one store per iteration.
#[inline(never)]
pub fn set_latency_class_loop(n: u64) {
    for i in 0..n {
        scx_hints::set_latency_class(black_box(CLASSES[(i & 1) as usize]));
    }
}

/// `set_priority` (with its range check), alternating values.
#[inline(never)]
pub fn set_priority_loop(n: u64) {
    for i in 0..n {
        let _ = scx_hints::set_priority(black_box(PRIOS[(i & 1) as usize]));
    }
}

/// Baseline: a volatile store of the same values into plain memory.
///
/// # Safety
/// `p` must be valid for writes, and written by no one else meanwhile.
#[inline(never)]
pub unsafe fn plain_store_loop(n: u64, p: *mut i32) {
    for i in 0..n {
        // SAFETY: the caller's.
        unsafe { std::ptr::write_volatile(p, black_box(CLASSES[(i & 1) as usize]) as i32) };
    }
}

/// Baseline: the loop and the `black_box` alone.
#[inline(never)]
pub fn empty_loop(n: u64) {
    for i in 0..n {
        black_box(CLASSES[(i & 1) as usize]);
    }
}

/// `sched_setattr` on the calling thread, nice toggling 1/0 (ends at 0).
#[inline(never)]
pub fn sched_setattr_loop(n: u64) {
    let attrs = [SchedAttr::other(1), SchedAttr::other(0)];
    for i in 0..n {
        let r = sys::sched_setattr(black_box(&attrs[((i + n) & 1) as usize]));
        if r != 0 {
            panic!("sched_setattr: {}", std::io::Error::last_os_error());
        }
    }
}

/// `setpriority` on the calling thread, nice toggling 1/0 (ends at 0).
#[inline(never)]
pub fn setpriority_loop(n: u64) {
    for i in 0..n {
        if sys::setpriority(black_box(((i + n) & 1) as i32 ^ 1)) != 0 {
            panic!("setpriority: {}", std::io::Error::last_os_error());
        }
    }
}

/// `BPF_MAP_UPDATE_ELEM`, alternating between two prepared updates.
#[inline(never)]
pub fn map_update_loop(n: u64, attrs: &[MapElemAttr; 2]) {
    for i in 0..n {
        if sys::map_update(black_box(&attrs[(i & 1) as usize])) != 0 {
            panic!("map update: {}", std::io::Error::last_os_error());
        }
    }
}

/// `pidfd_open(gettid(), PIDFD_THREAD)` and `close`.
#[inline(never)]
pub fn pidfd_loop(n: u64) {
    for _ in 0..n {
        let fd = sys::pidfd_open_raw();
        if fd < 0 {
            panic!("pidfd_open: {}", std::io::Error::last_os_error());
        }
        // SAFETY: closing the fd just opened.
        unsafe { libc::close(fd as i32) };
    }
}

/// Which figure a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Id {
    HintClass,
    HintPriority,
    HintClassNoMap,
    HintPriorityNoMap,
    PlainStore,
    EmptyLoop,
    SchedSetattr,
    Setpriority,
    MapUpdate,
    MapUpdateUptr,
    Pidfd,
    FirstUse,
    FirstUseNoMap,
    FreshPidfd,
    FreshMapUpdate,
}

/// One line of the results.
#[derive(Clone, Debug)]
pub struct Row {
    pub id: Id,
    pub label: &'static str,
    pub summary: Summary,
    /// Iterations per sample; 1 for the one-shot first-use timings.
    pub iters: u64,
}

/// Everything a run measured, and where.
#[derive(Clone, Debug)]
pub struct Report {
    pub rows: Vec<Row>,
    pub options: Options,
    pub cpu_model: String,
    pub kernel: String,
    pub rustc: String,
    pub cpus: usize,
    pub load_before: String,
    pub load_after: String,
    pub elapsed: Duration,
    /// What reading the two hints costs a BPF program per decision, on the
    /// host kernel: (median ns per iteration without reads, with reads).
    pub bpf_read: (f64, f64),
}

/// A steady-state benchmark: a loop run in batches on one worker.
struct Steady {
    id: Id,
    label: &'static str,
    worker: usize,
    body: Body,
    iters: u64,
    samples: Vec<f64>,
}

impl Steady {
    fn new(id: Id, label: &'static str, worker: usize, body: Body) -> Steady {
        Steady {
            id,
            label,
            worker,
            body,
            iters: 0,
            samples: Vec::new(),
        }
    }

    fn calibrate(&mut self, workers: &[Worker], target: Duration) {
        let body = self.body.clone();
        self.iters = workers[self.worker].run(move || harness::calibrate(&*body, target));
    }

    fn sample(&mut self, workers: &[Worker]) {
        let body = self.body.clone();
        let n = self.iters;
        let ns = workers[self.worker].run(move || harness::time_batch(&*body, n));
        self.samples.push(ns);
    }

    fn row(&self) -> Row {
        Row {
            id: self.id,
            label: self.label,
            summary: Summary::of(&self.samples).expect("sampled"),
            iters: self.iters,
        }
    }
}

/// Runs the calibration, then `rounds` rounds of one sample each, in a
/// rotating order, with `between` called after each round.
fn interleave(
    benches: &mut [Steady],
    workers: &[Worker],
    opts: &Options,
    mut between: impl FnMut(usize) -> Result<()>,
) -> Result<()> {
    for b in benches.iter_mut() {
        b.calibrate(workers, opts.sample);
    }
    let k = benches.len();
    for round in 0..opts.rounds {
        for j in 0..k {
            benches[(round + j) % k].sample(workers);
        }
        between(round)?;
        if (round + 1) % (opts.rounds / 4).max(1) == 0 {
            eprint!(".");
        }
    }
    eprintln!();
    Ok(())
}

/// Times a fresh thread's first hint set.
/// The BPF side of a hint: a registered thread runs the reader's
/// `tld_bench` loop (a scheduler's per-decision hint reads: task-storage
/// lookup, header checks, two cached keys) and the same loop without the
/// reads, alternated; returns the medians in ns per iteration.
fn bpf_read_cost(
    fx: &'static tld_kernel_tests::Fixture,
    cpu: Option<usize>,
    rounds: usize,
) -> Result<(f64, f64)> {
    std::thread::spawn(move || -> Result<(f64, f64)> {
        if let Some(c) = cpu {
            harness::pin_to_cpu(c)?;
        }
        scx_hints::set_latency_class(LatencyClass::Interactive);
        let _ = scx_hints::set_priority(1);
        ensure!(
            scx_hints::registration() == Registration::Registered,
            "the BPF read benchmark thread is not registered"
        );
        const N: u32 = 100_000;
        let per_iter = |d: Duration| d.as_nanos() as f64 / N as f64;
        fx.bench_reads(N, true);
        let (mut base, mut with) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            base.push(per_iter(fx.bench_reads(N, false).0));
            let (t, sum) = fx.bench_reads(N, true);
            ensure!(sum == 3 * N as i64, "the BPF loop did not read the hints");
            with.push(per_iter(t));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Ok((median(&mut base), median(&mut with)))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the BPF read thread panicked"))?
}

fn first_use(cpu: Option<usize>) -> Result<(f64, Registration)> {
    std::thread::spawn(move || -> Result<(f64, Registration)> {
        if let Some(c) = cpu {
            harness::pin_to_cpu(c)?;
        }
        let t = Instant::now();
        scx_hints::set_latency_class(black_box(LatencyClass::Interactive));
        let ns = t.elapsed().as_nanos() as f64;
        Ok((ns, scx_hints::registration()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a first-use thread panicked"))?
}

/// Times, in a fresh thread that never touches a hint, the two system
/// calls of a registration: `pidfd_open`, then the first update of the
/// thread's entry (which creates its task storage and pins the pages),
/// with `close` after it, as scx_hints does. The entry is deleted
/// afterwards, as at thread exit (not timed).
fn fresh_syscalls(cpu: Option<usize>, map_fd: i32, value: MapValue) -> Result<(f64, f64)> {
    std::thread::spawn(move || -> Result<(f64, f64)> {
        if let Some(c) = cpu {
            harness::pin_to_cpu(c)?;
        }
        let t0 = Instant::now();
        let fd = sys::pidfd_open_raw();
        let t1 = Instant::now();
        ensure!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        let key = fd as i32;
        let attr = MapElemAttr::new(map_fd, &key, &value as *const MapValue as *const u8);
        let t2 = Instant::now();
        let r = sys::map_update(&attr);
        // SAFETY: closing the fd just opened.
        unsafe { libc::close(key) };
        let t3 = Instant::now();
        ensure!(r == 0, "map update: {}", std::io::Error::last_os_error());
        let fd = sys::thread_pidfd()?;
        sys::map_delete(map_fd, fd.as_raw_fd())?;
        Ok(((t1 - t0).as_nanos() as f64, (t3 - t2).as_nanos() as f64))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a fresh thread panicked"))?
}

fn first_use_batch(
    samples: &mut Vec<f64>,
    count: usize,
    cpu: Option<usize>,
    expect: Registration,
) -> Result<()> {
    for _ in 0..count {
        let (ns, reg) = first_use(cpu)?;
        ensure!(
            reg == expect,
            "a fresh thread ended up {reg:?} instead of {expect:?}"
        );
        samples.push(ns);
    }
    Ok(())
}

/// Measures everything. Needs root (loads a BPF program, pins its map).
pub fn run(opts: &Options) -> Result<Report> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the hint-cost benchmark needs root: it loads a BPF program and pins its map");
    }
    let started = Instant::now();
    let load_before = crate::env::loadavg();
    tld_kernel_tests::clean_stale_pins();
    // Before any hint is touched: the map is pinned and scx_hints pointed at it.
    let fx = tld_kernel_tests::fixture().context("no TLD fixture (not root?)")?;
    let map = &fx.skel.maps.scx_hints_tld;
    ensure!(
        map.value_size() as usize == std::mem::size_of::<MapValue>(),
        "the map's value is {} bytes, tld_map_value {}",
        map.value_size(),
        std::mem::size_of::<MapValue>()
    );
    let map_fd = map.as_fd().as_raw_fd();
    let mut rows = Vec::new();

    // Phase 1: no map pinned. Threads find none and keep hints to themselves.
    fx.unpin();
    tld::recheck_map();
    eprint!("no map pinned: ");
    {
        let workers = [Worker::spawn("bench-nomap", opts.cpu)?];
        let reg = workers[0].run(|| {
            scx_hints::set_latency_class(LatencyClass::Normal);
            scx_hints::registration()
        });
        ensure!(reg == Registration::NoMap, "without a map: {reg:?}");
        let mut benches = vec![
            Steady::new(
                Id::HintClassNoMap,
                "hint set: set_latency_class, no map",
                0,
                Arc::new(set_latency_class_loop),
            ),
            Steady::new(
                Id::HintPriorityNoMap,
                "hint set: set_priority, no map",
                0,
                Arc::new(set_priority_loop),
            ),
        ];
        let mut fresh = Vec::new();
        warm_up_first_use(opts.cpu, Registration::NoMap)?;
        interleave(&mut benches, &workers, opts, |_| {
            first_use_batch(
                &mut fresh,
                opts.threads_per_round,
                opts.cpu,
                Registration::NoMap,
            )
        })?;
        rows.extend(benches.iter().map(Steady::row));
        rows.push(one_shot(
            Id::FirstUseNoMap,
            "first use, no map (block allocation)",
            &fresh,
        ));
    }

    // Phase 2: the map pinned; every thread registers on first use.
    fx.pin()?;
    tld::recheck_map();
    let epoch = tld::testing::epoch();
    eprint!("map pinned:    ");
    let workers = [
        Worker::spawn("bench-hint", opts.cpu)?,
        Worker::spawn("bench-map", opts.cpu)?,
    ];
    let reg = workers[0].run(|| {
        scx_hints::set_latency_class(LatencyClass::Normal);
        let _ = scx_hints::set_priority(0);
        scx_hints::registration()
    });
    ensure!(
        reg == Registration::Registered,
        "the hint thread is not registered in the pinned map: {reg:?}"
    );
    let map_thread = MapThread::new(&workers[1], map_fd)?;
    let plain = Box::into_raw(Box::new(0i32)) as usize;

    let (zero, uptr) = (map_thread.zero, map_thread.uptr);
    let mut benches = vec![
        Steady::new(
            Id::HintClass,
            "hint set: set_latency_class, registered",
            0,
            Arc::new(set_latency_class_loop),
        ),
        Steady::new(
            Id::HintPriority,
            "hint set: set_priority, registered",
            0,
            Arc::new(set_priority_loop),
        ),
        Steady::new(
            Id::PlainStore,
            "baseline: volatile store to plain memory",
            0,
            // SAFETY: `plain` lives until after the last sample, and only
            // this loop, on one worker, writes it.
            Arc::new(move |n| unsafe { plain_store_loop(n, plain as *mut i32) }),
        ),
        Steady::new(
            Id::EmptyLoop,
            "baseline: empty loop",
            0,
            Arc::new(empty_loop),
        ),
        Steady::new(
            Id::SchedSetattr,
            "sched_setattr (nice 0/1, own thread)",
            0,
            Arc::new(sched_setattr_loop),
        ),
        Steady::new(
            Id::Setpriority,
            "setpriority (nice 0/1, own thread)",
            0,
            Arc::new(setpriority_loop),
        ),
        Steady::new(
            Id::MapUpdate,
            "task-storage map update, cached pidfd",
            1,
            Arc::new(move |n| map_update_loop(n, &zero)),
        ),
        Steady::new(
            Id::MapUpdateUptr,
            "same, value with 2 uptrs (pins 2 pages)",
            1,
            Arc::new(move |n| map_update_loop(n, &uptr)),
        ),
        Steady::new(
            Id::Pidfd,
            "pidfd_open(PIDFD_THREAD) + close",
            1,
            Arc::new(pidfd_loop),
        ),
    ];
    let mut fresh = Vec::new();
    let (mut fresh_pidfd, mut fresh_update) = (Vec::new(), Vec::new());
    let uptr_value = map_thread.uptr_value;
    warm_up_first_use(opts.cpu, Registration::Registered)?;
    interleave(&mut benches, &workers, opts, |_| {
        first_use_batch(
            &mut fresh,
            opts.threads_per_round,
            opts.cpu,
            Registration::Registered,
        )?;
        for _ in 0..opts.threads_per_round {
            let (p, u) = fresh_syscalls(opts.cpu, map_fd, uptr_value)?;
            fresh_pidfd.push(p);
            fresh_update.push(u);
        }
        Ok(())
    })?;
    ensure!(
        tld::testing::epoch() == epoch,
        "the map changed during the run (epoch {epoch} -> {}): threads re-registered",
        tld::testing::epoch()
    );

    // The stores landed where the kernel reads them.
    let (class, prio, reg) = workers[0].run(move || {
        scx_hints::set_latency_class(LatencyClass::Critical);
        let _ = scx_hints::set_priority(-7);
        let class = fx.read(scx_hints::vocab::KEY_LATENCY_CLASS, 4, 0);
        let prio = fx.read(scx_hints::vocab::KEY_PRIORITY, 4, 1);
        (class, prio, scx_hints::registration())
    });
    ensure!(
        reg == Registration::Registered
            && class.value.map(|v| v as u32 as i32) == Some(LatencyClass::Critical as i32)
            && prio.value.map(|v| v as u32 as i32) == Some(-7),
        "BPF does not see the hint thread's values ({reg:?}, {class:?}, {prio:?})"
    );
    map_thread.finish(&workers[1])?;
    drop(workers);
    // SAFETY: allocated above with Box::into_raw; no loop uses it any more.
    drop(unsafe { Box::from_raw(plain as *mut i32) });

    let first = benches.iter().map(Steady::row).collect::<Vec<_>>();
    let mut all = first;
    all.extend(rows);
    all.push(one_shot(
        Id::FirstUse,
        "first use, registered (alloc + pidfd + update)",
        &fresh,
    ));
    all.push(one_shot(
        Id::FreshPidfd,
        "fresh thread: pidfd_open alone",
        &fresh_pidfd,
    ));
    all.push(one_shot(
        Id::FreshMapUpdate,
        "fresh thread: first map update + close",
        &fresh_update,
    ));
    let bpf_read = bpf_read_cost(fx, opts.cpu, if opts.quick { 5 } else { 41 })?;
    fx.unpin();
    if let Some(dir) = fx.pin_path().parent() {
        let _ = std::fs::remove_dir(dir);
    }
    let order = [
        Id::HintClass,
        Id::HintPriority,
        Id::HintClassNoMap,
        Id::HintPriorityNoMap,
        Id::PlainStore,
        Id::EmptyLoop,
        Id::SchedSetattr,
        Id::Setpriority,
        Id::MapUpdate,
        Id::MapUpdateUptr,
        Id::Pidfd,
        Id::FirstUse,
        Id::FreshPidfd,
        Id::FreshMapUpdate,
        Id::FirstUseNoMap,
    ];
    all.sort_by_key(|r| order.iter().position(|&i| i == r.id));
    Ok(Report {
        rows: all,
        options: opts.clone(),
        cpu_model: crate::env::cpu_model(),
        kernel: crate::env::kernel(),
        rustc: crate::env::rustc().to_string(),
        cpus: crate::env::cpus(),
        load_before,
        load_after: crate::env::loadavg(),
        elapsed: started.elapsed(),
        bpf_read,
    })
}

/// The process-wide one-time work (metadata page, opening the map, the
/// watcher thread) is paid by a few threads that are not counted.
fn warm_up_first_use(cpu: Option<usize>, expect: Registration) -> Result<()> {
    let mut discard = Vec::new();
    first_use_batch(&mut discard, 5, cpu, expect)
}

fn one_shot(id: Id, label: &'static str, samples: &[f64]) -> Row {
    Row {
        id,
        label,
        summary: Summary::of(samples).expect("first-use samples"),
        iters: 1,
    }
}

/// The map thread's pidfd (the updates' key) and its two prepared updates.
struct MapThread {
    pidfd: OwnedFd,
    map_fd: i32,
    zero: [MapElemAttr; 2],
    uptr: [MapElemAttr; 2],
    uptr_value: MapValue,
}

impl MapThread {
    fn new(worker: &Worker, map_fd: i32) -> Result<MapThread> {
        let pidfd = worker.run(sys::thread_pidfd).context("pidfd_open")?;
        let key = Box::leak(Box::new(pidfd.as_raw_fd()));
        // Null user pointers (nothing pinned), `start` alternating 0 and 8:
        // a plain value, like scx_layered's task hint.
        let zero_values: &'static [MapValue; 2] = Box::leak(Box::new([
            MapValue::default(),
            MapValue {
                start: 8,
                ..Default::default()
            },
        ]));
        // Two pages of our own, as a registration passes (the kernel pins
        // them on every update and unpins the previous value's).
        let (data, meta) = (sys::leaked_page()?, sys::leaked_page()?);
        let uptr_value: &'static MapValue = Box::leak(Box::new(MapValue {
            data: data as u64,
            meta: meta as u64,
            start: 8,
            reserved: [0; 3],
        }));
        let attr = |v: &'static MapValue| MapElemAttr::new(map_fd, key, v as *const _ as *const u8);
        let t = MapThread {
            pidfd,
            map_fd,
            zero: [attr(&zero_values[0]), attr(&zero_values[1])],
            uptr: [attr(uptr_value), attr(uptr_value)],
            uptr_value: *uptr_value,
        };
        // Both work before anything is timed.
        let (zero, uptr) = (t.zero, t.uptr);
        let r = worker.run(move || {
            let a = sys::map_update(&uptr[0]);
            let ea = std::io::Error::last_os_error();
            let b = sys::map_update(&zero[0]);
            let eb = std::io::Error::last_os_error();
            (a, ea, b, eb)
        });
        ensure!(r.0 == 0, "map update with user pointers: {}", r.1);
        ensure!(r.2 == 0, "map update: {}", r.3);
        Ok(t)
    }

    /// Deletes the map thread's entry (its pages stay leaked: harmless).
    fn finish(self, worker: &Worker) -> Result<()> {
        let (map_fd, key) = (self.map_fd, self.pidfd.as_raw_fd());
        worker
            .run(move || sys::map_delete(map_fd, key))
            .context("deleting the map thread's entry")
    }
}

impl Report {
    pub fn row(&self, id: Id) -> &Row {
        self.rows
            .iter()
            .find(|r| r.id == id)
            .expect("every row is measured")
    }

    /// The steady-state hint set the ratios divide by: `set_latency_class`
    /// on a registered thread.
    pub fn hint_set(&self) -> f64 {
        self.row(Id::HintClass).summary.median
    }

    pub fn ratio(&self, id: Id) -> f64 {
        self.row(id).summary.median / self.hint_set()
    }

    /// The table, the environment, the targets, and last the two ratio
    /// lines (`ratio <what>/hint_set: <number>`) for scripts.
    pub fn print(&self, w: &mut impl Write) -> std::io::Result<()> {
        let o = &self.options;
        writeln!(w)?;
        writeln!(
            w,
            "hint-cost{}: {} rounds, {} us samples, {} fresh threads per case; {}",
            if o.quick { " --quick" } else { "" },
            o.rounds,
            o.sample.as_micros(),
            o.rounds * o.threads_per_round,
            match o.cpu {
                Some(c) => format!("threads pinned to CPU {c}"),
                None => "threads not pinned".into(),
            }
        )?;
        writeln!(
            w,
            "CPU: {} ({} online); kernel {}; {}; load {} -> {}; took {:.1} s",
            self.cpu_model,
            self.cpus,
            self.kernel,
            self.rustc,
            self.load_before,
            self.load_after,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(w)?;
        writeln!(
            w,
            "| operation | median ns | p10 | p90 | min | max | samples x iters | / hint set |"
        )?;
        writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|")?;
        for r in &self.rows {
            let s = &r.summary;
            let iters = if r.iters == 1 {
                format!("{} threads", s.n)
            } else {
                format!("{} x {}", s.n, fmt_count(r.iters))
            };
            writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                fmt_ns(s.median),
                fmt_ns(s.p10),
                fmt_ns(s.p90),
                fmt_ns(s.min),
                fmt_ns(s.max),
                iters,
                fmt_ratio(s.median / self.hint_set()),
            )?;
        }
        writeln!(w)?;
        let hint = self.hint_set();
        let vs_setattr = self.ratio(Id::SchedSetattr);
        writeln!(
            w,
            "target: hint set median <= 2 ns: {} ({} ns)",
            verdict(hint <= 2.0),
            fmt_ns(hint)
        )?;
        writeln!(
            w,
            "target: hint set >= 300x cheaper than sched_setattr: {} ({}x)",
            verdict(vs_setattr >= 300.0),
            fmt_ratio(vs_setattr)
        )?;
        let (base, with) = self.bpf_read;
        writeln!(
            w,
            "BPF side, host kernel: reading both hints costs a program {} ns per decision \
             ({} ns with the reads, {} ns without; tld_bench loop, medians)",
            fmt_ns(with - base),
            fmt_ns(with),
            fmt_ns(base)
        )?;
        writeln!(
            w,
            "target: hint reads add <= 30 ns per enqueue (host measure): {}",
            verdict(with - base <= 30.0)
        )?;
        writeln!(w, "ratio sched_setattr/hint_set: {vs_setattr:.1}")?;
        writeln!(
            w,
            "ratio map_update/hint_set: {:.1}",
            self.ratio(Id::MapUpdate)
        )?;
        Ok(())
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn fmt_count(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1}M", n as f64 / 1e6)
    } else if n >= 10_000 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}
