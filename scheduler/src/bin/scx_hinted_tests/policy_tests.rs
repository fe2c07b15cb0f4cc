// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! Guest tests of the policy's bounds (issue 8): a hint never backfires, a
//! class change costs at most about one slice of waiting, background
//! newcomers do not starve an old background thread, a low-weight thread
//! never waits near the watchdog, and without hints many-task messaging and
//! CPU hogs beside request serving do as well as under EEVDF.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use scx_hints::LatencyClass::{self, *};

use crate::harness::{self, nr_cpus, Env, Sched};
use crate::workers::{self, mono_ns, Kind, Spec, Worker};

/// CPU hogs in processes of another user (`--spin SECS` children of this
/// program, as uid/gid 65534): killed when dropped.
struct Spinners(Vec<Child>);

impl Spinners {
    fn start(env: &Env, n: usize, secs: u64) -> Result<Self> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(
                Command::new(&env.self_exe)
                    .args(["--spin", &secs.to_string()])
                    .uid(65534)
                    .gid(65534)
                    .stdin(Stdio::null())
                    .spawn()
                    .context("starting a hog process as uid 65534")?,
            );
        }
        Ok(Self(v))
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let idx = ((v.len() as f64 * p / 100.0).ceil() as usize).clamp(1, v.len()) - 1;
    v[idx] as f64 / 1000.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Least absolute slack on p99 comparisons inside one boot, in
/// microseconds: the emulated timer delivers a periodic thread's wake-up up
/// to about a millisecond late now and then whatever the scheduler does (an
/// idle guest's p99 varies by that much between runs).
const P99_SLACK_MIN_US: f64 = 1000.0;

/// One app run: a periodic thread (3 ms of work every 16 ms) and 4 CPU-bound
/// workers of the same process; returns the periodic thread's wake-up
/// latencies and waits for a CPU per period (ns), and missed periods.
fn app_run(
    periodic: Option<LatencyClass>,
    workers: Option<LatencyClass>,
    secs: u64,
) -> (Vec<u64>, Vec<u64>, u64) {
    let ws: Vec<Worker> = (0..4)
        .map(|_| Worker::spawn(Spec::new(Kind::Hog, workers)))
        .collect();
    let f = Worker::spawn(Spec::new(
        Kind::Periodic {
            work: Duration::from_millis(3),
            period: Duration::from_millis(16),
        },
        periodic,
    ));
    sleep(Duration::from_secs(secs));
    let missed = f.missed();
    let mut r = f.stop();
    workers::stop_all(ws);
    // The first periods overlap the workers' start.
    let skip = r.lat_ns.len().min(5);
    r.lat_ns.drain(..skip);
    let skip = r.delay_ns.len().min(5);
    r.delay_ns.drain(..skip);
    (r.lat_ns, r.delay_ns, missed)
}

/// A critical hint on a periodic thread, its process's workers hinted batch
/// or background, beside another user's hogs: the periodic thread's p99 wait
/// for a CPU per period is no worse than with no hints at all (same boot, same
/// scheduler instance, alternated).
///
/// Compared: the kernel's run_delay of the thread per period (time runnable
/// but not running), which leaves out the emulated timer's own lateness; the
/// wake-up latency the thread sees is reported beside it.
pub fn hint_backfire(env: &Env) -> Result<String> {
    // Short phases, alternated many times: the host's load changes over
    // seconds, and each configuration should see the same mix of it.
    const SECS: u64 = 1;
    const REPS: usize = 6;
    let configs: [(&str, Option<LatencyClass>, Option<LatencyClass>); 3] = [
        ("no hints", None, None),
        ("critical + batch workers", Some(Critical), Some(Batch)),
        (
            "critical + background workers",
            Some(Critical),
            Some(Background),
        ),
    ];
    let mut sched = Sched::start(env, &[])?;
    let _hogs = Spinners::start(env, 4, (SECS + 1) * (REPS * configs.len()) as u64 + 10)?;
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); configs.len()];
    let mut wait: Vec<Vec<u64>> = vec![Vec::new(); configs.len()];
    // The unhinted runs split in two halves (odd and even repetitions).
    let mut halves: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut missed = vec![0u64; configs.len()];
    let mut demotions = 0.0;
    for rep in 0..REPS {
        for (i, (_, p, w)) in configs.iter().enumerate() {
            let s0 = harness::stats()?;
            let (l, d, m) = app_run(*p, *w, SECS);
            demotions += harness::stats()?.class("critical", "demotions")
                - s0.class("critical", "demotions");
            if i == 0 {
                halves[rep % 2].extend(&d);
            }
            lat[i].extend(l);
            wait[i].extend(d);
            missed[i] += m;
            sched.check()?;
        }
    }
    sched.stop()?;
    // The noise of this run: how far the unhinted p99 of one half of the
    // repetitions is from the other's.
    let noise = (pct(&mut halves[0], 99.0) - pct(&mut halves[1], 99.0)).abs();
    let slack = noise.max(P99_SLACK_MIN_US);
    let mut p99 = Vec::new();
    let mut detail = Vec::new();
    for (i, (label, _, _)) in configs.iter().enumerate() {
        let n = lat[i].len();
        let (w50, w99) = (pct(&mut wait[i], 50.0), pct(&mut wait[i], 99.0));
        let (l50, l99) = (pct(&mut lat[i], 50.0), pct(&mut lat[i], 99.0));
        p99.push(w99);
        detail.push(format!(
            "{label}: wait per period p50/p99 {w50:.0}/{w99:.0} us, wake-up p50/p99 \
             {l50:.0}/{l99:.0} us, missed {}/{n}",
            missed[i]
        ));
    }
    let detail = format!(
        "{}; unhinted p99 noise (half vs half) {noise:.0} us; critical demotions {demotions}",
        detail.join("; ")
    );
    for (i, (label, _, _)) in configs.iter().enumerate().skip(1) {
        ensure!(
            p99[i] <= 1.05 * p99[0] + slack,
            "{label}: the hinted thread's p99 wait {:.0} us is worse than unhinted {:.0} us \
             (allowed 1.05x + {slack:.0} us): {detail}",
            p99[i],
            p99[0]
        );
    }
    Ok(detail)
}

/// Most a hog may wait for a CPU right after a class change beyond twice
/// the longest wait of the normal hogs beside it, in ms: a few normal slices
/// (3 ms, ending at the next 4 ms tick). The hogs' longest wait measures the
/// emulator's stalls in the same window (a TCG guest on a loaded host stalls
/// for tens to hundreds of ms); twice, because which of the three threads a
/// stall lands on, on top of its turn in the rotation, is chance (measured
/// after the fix: 0.14 to 0.59 s against the hogs' 0.15 to 0.54 s; before:
/// 2.9 and 3.0 s against 0.03 and 0.56 s).
const SWITCH_GAP_MAX_MS: f64 = 15.0;

/// A thread that ran as background alone switches to normal, without
/// sleeping, once two normal hogs have started: its longest wait for a CPU
/// afterwards is about a slice, not the seconds it ran alone.
pub fn switch_stall(env: &Env) -> Result<String> {
    const ALONE_SECS: u64 = 3;
    let mut sched = Sched::start(env, &[])?;
    let w = Worker::spawn(Spec::new(Kind::Hog, Some(Background)));
    sleep(Duration::from_secs(ALONE_SECS));
    let hogs: Vec<Worker> = (0..2)
        .map(|_| Worker::spawn(Spec::new(Kind::Hog, None)))
        .collect();
    w.set_class(Normal);
    let t0 = Instant::now();
    while w.switches() == 0 {
        ensure!(
            t0.elapsed() < Duration::from_secs(5),
            "the background thread did not switch to normal within 5 s"
        );
        sleep(Duration::from_millis(5));
    }
    let applied_after = t0.elapsed();
    sleep(Duration::from_secs(3));
    let gap = w.max_gap_ns() as f64 / 1e6;
    let hog_gap = hogs.iter().map(|h| h.max_gap_ns()).max().unwrap_or(0) as f64 / 1e6;
    w.stop();
    workers::stop_all(hogs);
    sched.check()?;
    sched.stop()?;
    let detail = format!(
        "after {ALONE_SECS} s alone as background, switched to normal ({:.0} ms after the \
         request): longest wait {gap:.1} ms (the normal hogs' {hog_gap:.1} ms)",
        applied_after.as_secs_f64() * 1e3
    );
    ensure!(
        gap <= SWITCH_GAP_MAX_MS + 2.0 * hog_gap,
        "a class switch stalled the thread (bound {SWITCH_GAP_MAX_MS} ms + twice the hogs' \
         longest wait): {detail}"
    );
    Ok(detail)
}

/// Background threads that ran alone are not sorted behind background
/// threads that start later: beside normal hogs (so background runs only in
/// its guaranteed share), their longest wait stays within the documented
/// bound for five background threads on two CPUs.
pub fn bg_newcomers(env: &Env) -> Result<String> {
    const ALONE_SECS: u64 = 3;
    // Documented: one of N equal background threads waits at most about
    // ceil(N / CPUs) x 60 ms (180 ms here). The old threads must not wait
    // much longer than the new ones (which see the same emulator stalls):
    // at most twice as long plus that bound.
    const BG_GAP_SLACK_MS: f64 = 200.0;
    const WINDOW_SECS: u64 = 4;
    let mut sched = Sched::start(env, &[])?;
    // More background threads than CPUs, so that they take turns (and are
    // charged for their time) while alone.
    let old: Vec<Worker> = (0..nr_cpus() + 1)
        .map(|_| Worker::spawn(Spec::new(Kind::Hog, Some(Background))))
        .collect();
    sleep(Duration::from_secs(ALONE_SECS));
    let mut others: Vec<Worker> = (0..2)
        .map(|_| Worker::spawn(Spec::new(Kind::Hog, Some(Background))))
        .collect();
    // The normal hogs at nice -10: their virtual time advances slowly, so
    // the current virtual time does not soon catch up with the old threads
    // by itself (the old policy's starvation then lasts the whole window,
    // instead of the second or two nice-0 hogs take).
    others.extend((0..nr_cpus()).map(|_| {
        Worker::spawn(Spec::new(Kind::Hog, None).setup(|| {
            // SAFETY: setpriority on this thread (tid) only; we run as root.
            unsafe {
                libc::setpriority(
                    libc::PRIO_PROCESS,
                    libc::syscall(libc::SYS_gettid) as libc::id_t,
                    -10,
                )
            };
        }))
    }));
    // Measure from now on (re-applying the class resets the longest wait).
    for w in &old {
        w.set_class(Background);
    }
    let t0 = Instant::now();
    while old.iter().any(|w| w.switches() == 0) && t0.elapsed() < Duration::from_secs(2) {
        sleep(Duration::from_millis(5));
    }
    sleep(Duration::from_secs(WINDOW_SECS));
    let gap = old.iter().map(|w| w.max_gap_ns()).max().unwrap_or(0) as f64 / 1e6;
    let new_gap = others[..2]
        .iter()
        .map(|w| w.max_gap_ns())
        .max()
        .unwrap_or(0) as f64
        / 1e6;
    let new_iters: Vec<u64> = others[..2].iter().map(|w| w.iters()).collect();
    workers::stop_all(old);
    workers::stop_all(others);
    sched.check()?;
    sched.stop()?;
    let detail = format!(
        "{} background threads that ran {ALONE_SECS} s alone: longest wait {gap:.0} ms over \
         {WINDOW_SECS} s beside 2 new background threads (longest wait {new_gap:.0} ms, \
         iterations {new_iters:?}) and {} normal hogs at nice -10",
        nr_cpus() + 1,
        nr_cpus()
    );
    ensure!(
        gap <= 2.0 * new_gap + BG_GAP_SLACK_MS,
        "background newcomers starved older background threads (bound twice their wait + \
         {BG_GAP_SLACK_MS} ms): {detail}"
    );
    Ok(detail)
}

/// A nice-19 hog among 16 nice-0 hogs: its longest wait for a CPU stays
/// near the starvation limit (1 s), far below the 20 s watchdog (without the
/// guard it grows with the number of hogs: 2.8 to 4.9 s here in five boots,
/// 20 s near 130 hogs).
pub fn low_weight_wait(env: &Env) -> Result<String> {
    // The starvation limit (1 s), its 100 ms check period, a slice, and
    // 1.4 s for the emulator; on top, the longest lateness of a light
    // periodic monitor thread (the whole guest's stalls, which reach seconds
    // on a loaded host). Not relative to the hogs' own waits: under the old
    // policy those grow to seconds too (the nice-19 thread drags the current
    // virtual time ahead, and hogs queued after it sort behind the others).
    const MAX_MS: f64 = 2500.0;
    const HOGS: usize = 16;
    // Long enough for several starvation-guard turns; a wait counts while
    // still open, so the old policy's waits (2.8 to 4.9 s) exceed the bound
    // within it.
    const WINDOW_SECS: u64 = 4;
    let mut sched = Sched::start(env, &[])?;
    let hogs: Vec<Worker> = (0..HOGS)
        .map(|_| Worker::spawn(Spec::new(Kind::Hog, None)))
        .collect();
    let low = Worker::spawn(Spec::new(Kind::Hog, None).setup(|| {
        // SAFETY: setpriority on this thread (tid) only.
        unsafe {
            libc::setpriority(
                libc::PRIO_PROCESS,
                libc::syscall(libc::SYS_gettid) as libc::id_t,
                19,
            )
        };
    }));
    let monitor = Worker::spawn(Spec::new(
        Kind::Periodic {
            work: Duration::from_micros(100),
            period: Duration::from_millis(10),
        },
        None,
    ));
    sleep(Duration::from_secs(1));
    // Re-applying the class resets the longest wait: measure from here.
    low.set_class(Normal);
    for h in &hogs {
        h.set_class(Normal);
    }
    let t0 = Instant::now();
    while low.switches() == 0 && t0.elapsed() < Duration::from_secs(10) {
        sleep(Duration::from_millis(10));
    }
    let s0 = harness::stats()?;
    sleep(Duration::from_secs(WINDOW_SECS));
    let gap = low.max_gap_ns() as f64 / 1e6;
    let hog_gap = hogs.iter().map(|h| h.max_gap_ns()).max().unwrap_or(0) as f64 / 1e6;
    let picks = harness::stats()?.get("starve_picks") - s0.get("starve_picks");
    let cpu = low.cpu_ns() as f64 / 1e6;
    let stall = monitor.stop().lat_ns.iter().copied().max().unwrap_or(0) as f64 / 1e6;
    low.stop();
    workers::stop_all(hogs);
    sched.check()?;
    sched.stop()?;
    let detail = format!(
        "nice-19 hog among {HOGS} hogs: longest wait {gap:.0} ms (hogs' {hog_gap:.0} ms, \
         monitor's longest lateness {stall:.0} ms), \
         {cpu:.0} ms CPU in all, {picks} starvation-guard picks in {WINDOW_SECS} s"
    );
    ensure!(
        gap <= MAX_MS + stall,
        "bound {MAX_MS} ms + the monitor's longest lateness: {detail}"
    );
    Ok(detail)
}

/// hackbench-like: `groups` groups of 20 senders and 20 receivers (threads)
/// over Unix stream sockets; each sender writes `loops` 100-byte messages
/// to each receiver of its group. Returns the wall time in seconds.
fn messaging(groups: usize, loops: usize) -> Result<f64> {
    const FDS: usize = 20;
    const MSG: usize = 100;
    let barrier = Arc::new(Barrier::new(groups * 2 * FDS));
    // From the first thread past the barrier to the last one done, taken by
    // the threads themselves: the main thread's own wakeup can come late
    // (behind the 160 threads it would wait for), and must not shorten or
    // stretch the run.
    let first_start = Arc::new(AtomicU64::new(u64::MAX));
    let last_end = Arc::new(AtomicU64::new(0));
    let timed = |b: Arc<Barrier>, work: Box<dyn FnOnce() -> std::io::Result<()> + Send>| {
        let (first, last) = (first_start.clone(), last_end.clone());
        move || -> std::io::Result<()> {
            b.wait();
            first.fetch_min(mono_ns(), Ordering::Relaxed);
            let r = work();
            last.fetch_max(mono_ns(), Ordering::Relaxed);
            r
        }
    };
    let mut handles = Vec::new();
    for _ in 0..groups {
        let mut writers: Vec<UnixStream> = Vec::new();
        for _ in 0..FDS {
            let (rx, tx) = UnixStream::pair()?;
            writers.push(tx);
            let read = Box::new(move || {
                let mut rx = rx;
                let mut buf = [0u8; MSG];
                for _ in 0..FDS * loops {
                    rx.read_exact(&mut buf)?;
                }
                Ok(())
            });
            handles.push(
                std::thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn(timed(barrier.clone(), read))?,
            );
        }
        // The group's senders share the write ends (hackbench's threads
        // share their file descriptors too).
        let writers = Arc::new(writers);
        for _ in 0..FDS {
            let ws = writers.clone();
            let write = Box::new(move || {
                let buf = [0x55u8; MSG];
                for _ in 0..loops {
                    for mut w in ws.iter() {
                        w.write_all(&buf)?;
                    }
                }
                Ok(())
            });
            handles.push(
                std::thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn(timed(barrier.clone(), write))?,
            );
        }
    }
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a messaging thread panicked"))??;
    }
    let (t0, t1) = (
        first_start.load(Ordering::Relaxed),
        last_end.load(Ordering::Relaxed),
    );
    Ok(t1.saturating_sub(t0) as f64 / 1e9)
}

/// Most scx_hinted may take for the messaging run, relative to EEVDF in the
/// same boot: the goal is 1.05x; the fastest runs of one scheduler in one
/// boot still differ by up to about 20% in the emulator, so 1.3x separates a
/// policy problem (1.7 to 1.8x in this test before the fix, 5-8x in the
/// issue's larger run) from noise.
const MESSAGING_MAX_RATIO: f64 = 1.3;

/// Most wakeup preemptions per message in the messaging run. The cause of
/// the slowdown, measured: before the fix, 11 to 17% of the messages' wakeups
/// preempted the running thread (a waker was behind it by up to its wakeup
/// credit); after it (now `--peer-preemption`'s 1 ms protection), under 1%. The run times themselves vary by 4x between
/// runs of one scheduler on a loaded host, the count far less.
const MESSAGING_MAX_PREEMPT_PER_MSG: f64 = 0.03;

/// Many-task messaging without hints (160 threads, hackbench-like): as fast
/// under scx_hinted as under EEVDF in one boot, in the order EEVDF,
/// scx_hinted (two runs), scx_hinted with `--peer-preemption` (one run),
/// EEVDF. Compared: the fastest run of each, since the host's load only ever
/// slows a run down; and the wakeup preemptions per message, which the
/// default policy never makes here and `--peer-preemption` must keep rare.
pub fn messaging_vs_eevdf(env: &Env) -> Result<String> {
    const GROUPS: usize = 4;
    const LOOPS: usize = 25;
    // Each sender writes LOOPS messages to each of the 20 receivers of its
    // group, per run.
    let messages_per_run = (GROUPS * 20 * 20 * LOOPS) as f64;
    let mut eevdf = vec![messaging(GROUPS, LOOPS)?];
    let hinted_runs = |args: &[&str], runs: usize| -> Result<(Vec<f64>, f64)> {
        let mut sched = Sched::start(env, args)?;
        let s0 = harness::stats()?;
        let times = (0..runs)
            .map(|_| messaging(GROUPS, LOOPS))
            .collect::<Result<Vec<_>>>()?;
        let s1 = harness::stats()?;
        sched.check()?;
        sched.stop()?;
        let preempt = s1.class("normal", "preemptions") - s0.class("normal", "preemptions");
        Ok((times, preempt / (messages_per_run * runs as f64)))
    };
    let (mut hinted, per_msg) = hinted_runs(&[], 2)?;
    let (mut peer, peer_per_msg) = hinted_runs(&["--peer-preemption"], 1)?;
    eevdf.push(messaging(GROUPS, LOOPS)?);
    let round = |v: &[f64]| {
        v.iter()
            .map(|t| (t * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    };
    let detail = format!(
        "{} tasks: EEVDF {:?} s, scx_hinted {:?} s ({:.2}% of messages preempted), with \
         --peer-preemption {:?} s ({:.2}%)",
        GROUPS * 40,
        round(&eevdf),
        round(&hinted),
        per_msg * 100.0,
        round(&peer),
        peer_per_msg * 100.0,
    );
    let fastest = |v: &mut [f64]| {
        v.sort_by(f64::total_cmp);
        v[0]
    };
    let base = fastest(&mut eevdf);
    let (ratio, peer_ratio) = (fastest(&mut hinted) / base, fastest(&mut peer) / base);
    for (what, r) in [
        ("scx_hinted", ratio),
        ("with --peer-preemption", peer_ratio),
    ] {
        ensure!(
            r <= MESSAGING_MAX_RATIO,
            "{what} took {r:.2}x EEVDF's time (allowed {MESSAGING_MAX_RATIO}x): {detail}"
        );
    }
    for (what, r) in [
        ("scx_hinted", per_msg),
        ("with --peer-preemption", peer_per_msg),
    ] {
        ensure!(
            r <= MESSAGING_MAX_PREEMPT_PER_MSG,
            "{what}: {:.1}% of the messages preempted a running thread (allowed {:.0}%): \
             {detail}",
            r * 100.0,
            MESSAGING_MAX_PREEMPT_PER_MSG * 100.0
        );
    }
    Ok(format!(
        "ratio {ratio:.2}x (with --peer-preemption {peer_ratio:.2}x); {detail}"
    ))
}

/// The CPUs' time so far by kind (/proc/stat: user, nice, system, idle,
/// iowait, irq, softirq, ...), in clock ticks.
fn cpu_times() -> Vec<u64> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    v
}

/// Shares of idle, system and irq+softirq time between two cpu_times().
fn cpu_shares(a: &[u64], b: &[u64]) -> (f64, f64, f64) {
    let d = |i: usize| {
        b.get(i)
            .unwrap_or(&0)
            .saturating_sub(*a.get(i).unwrap_or(&0)) as f64
    };
    let total: f64 = (0..b.len()).map(d).sum::<f64>().max(1.0);
    (d(3) / total, d(2) / total, (d(5) + d(6)) / total)
}

/// One request-serving run: per CPU a client sends a request every 1 ms
/// (think time) to a server that does 100 us of CPU work and replies, beside
/// two CPU hogs per CPU. Returns (hog CPU s per s, requests per s, and the
/// CPUs' idle, system and irq shares).
fn req_resp(secs: u64) -> Result<(f64, f64, (f64, f64, f64))> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..nr_cpus() {
        let (mut creq, mut sreq) = UnixStream::pair()?;
        let st = stop.clone();
        handles.push(std::thread::spawn(move || {
            let mut b = [0u8; 1];
            while sreq.read_exact(&mut b).is_ok() && b[0] == 1 {
                let end = Instant::now() + Duration::from_micros(100);
                while Instant::now() < end && !st.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
                if sreq.write_all(&b).is_err() {
                    break;
                }
            }
        }));
        let (st, d) = (stop.clone(), done.clone());
        handles.push(std::thread::spawn(move || {
            let mut b = [1u8; 1];
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                if creq.write_all(&[1]).is_err() || creq.read_exact(&mut b).is_err() {
                    break;
                }
                d.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                sleep(Duration::from_millis(1));
            }
            let _ = creq.write_all(&[0]);
        }));
    }
    let hogs: Vec<Worker> = (0..2 * nr_cpus())
        .map(|_| Worker::spawn(Spec::new(Kind::Hog, None)))
        .collect();
    sleep(Duration::from_millis(300));
    let cpu = |h: &[Worker]| h.iter().map(|w| w.cpu_ns()).sum::<u64>();
    let (c0, t0, d0, i0) = (
        cpu(&hogs),
        mono_ns(),
        done.load(std::sync::atomic::Ordering::Relaxed),
        cpu_times(),
    );
    sleep(Duration::from_secs(secs));
    let (c1, t1, d1, i1) = (
        cpu(&hogs),
        mono_ns(),
        done.load(std::sync::atomic::Ordering::Relaxed),
        cpu_times(),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    workers::stop_all(hogs);
    for h in handles {
        let _ = h.join();
    }
    let wall = (t1 - t0) as f64;
    let shares = cpu_shares(&i0, &i1);
    Ok((
        (c1 - c0) as f64 / wall,
        (d1 - d0) as f64 * 1e9 / wall,
        shares,
    ))
}

/// Least hog throughput scx_hinted must give beside request serving,
/// relative to EEVDF in the same boot: the goal is 0.95x; alternated runs of
/// one scheduler vary by about 10% in the emulator, so 0.85x separates the
/// 0.55-0.62x the issue measured (and 0.78-0.82x while a waking normal task
/// preempted a running one by default) from noise.
const HOG_MIN_RATIO: f64 = 0.85;

/// Least request rate scx_hinted must serve in the same run, relative to
/// EEVDF. Without hints a client and its server each wait out a hog's slice
/// (normal threads do not preempt each other), where EEVDF's wakeup
/// preemption serves them at once: measured 0.47 to 0.57x. The floor catches
/// requests starved to make the hogs' number, not that gap.
const REQ_MIN_RATIO: f64 = 0.35;

/// Without hints, CPU hogs beside request-serving threads get as much work
/// done as under EEVDF (alternated in one boot), and the requests are not
/// starved for it.
pub fn nohint_throughput(env: &Env) -> Result<String> {
    const SECS: u64 = 3;
    const REPS: usize = 2;
    let (mut eevdf, mut hinted) = (Vec::new(), Vec::new());
    let (mut eevdf_req, mut hinted_req) = (Vec::new(), Vec::new());
    let mut detail = Vec::new();
    for _ in 0..REPS {
        let (h, r, (idle, sys, irq)) = req_resp(SECS)?;
        eevdf.push(h);
        eevdf_req.push(r);
        detail.push(format!(
            "EEVDF hogs {h:.2} CPUs, {r:.0} req/s, idle/sys/irq {:.0}/{:.0}/{:.0}%",
            idle * 100.0,
            sys * 100.0,
            irq * 100.0
        ));
        let mut sched = Sched::start(env, &[])?;
        let s0 = harness::stats()?;
        let (h, r, (idle, sys, irq)) = req_resp(SECS)?;
        let s1 = harness::stats()?;
        hinted.push(h);
        hinted_req.push(r);
        detail.push(format!(
            "scx_hinted hogs {h:.2} CPUs, {r:.0} req/s, idle/sys/irq {:.0}/{:.0}/{:.0}%, \
             {} preemptions",
            idle * 100.0,
            sys * 100.0,
            irq * 100.0,
            s1.class("normal", "preemptions") - s0.class("normal", "preemptions")
        ));
        sched.check()?;
        sched.stop()?;
    }
    let detail = detail.join("; ");
    let ratio = median(&mut hinted) / median(&mut eevdf);
    let req_ratio = median(&mut hinted_req) / median(&mut eevdf_req);
    ensure!(
        ratio >= HOG_MIN_RATIO,
        "hog work under scx_hinted is {ratio:.2}x EEVDF's (at least {HOG_MIN_RATIO}x): {detail}"
    );
    ensure!(
        req_ratio >= REQ_MIN_RATIO,
        "requests served under scx_hinted are {req_ratio:.2}x EEVDF's (at least \
         {REQ_MIN_RATIO}x): {detail}"
    );
    Ok(format!(
        "hog work ratio {ratio:.2}x, requests {req_ratio:.2}x; {detail}"
    ))
}

/// What a hog and a thread calling sched_yield() in a loop, both pinned to
/// CPU 0, get of it over `secs`: the hog's share, the two threads' CPU time
/// over the wall time (about 1 if they shared one CPU), and the yields made.
fn hog_beside_yielders(secs: u64) -> Result<(f64, f64, u64)> {
    let pin = || {
        if let Err(e) = crate::topo_tests::set_affinity(0, &[0]) {
            eprintln!("yield test: pinning failed: {e:#}");
        }
    };
    let hog = Worker::spawn(Spec::new(Kind::Hog, None).setup(pin));
    let yielders: Vec<Worker> = (0..1)
        .map(|_| Worker::spawn(Spec::new(Kind::Yielder, None).setup(pin)))
        .collect();
    let all_ran = || hog.iters() > 0 && yielders.iter().all(|y| y.iters() > 0);
    let t0 = Instant::now();
    while !all_ran() && t0.elapsed() < Duration::from_secs(10) {
        sleep(Duration::from_millis(5));
    }
    ensure!(
        all_ran(),
        "the hog and the yielders did not all start in 10 s"
    );
    let cpu = |w: &Worker| w.cpu_ns();
    let (h0, y0) = (cpu(&hog), yielders.iter().map(cpu).sum::<u64>());
    let n0: u64 = yielders.iter().map(|y| y.iters()).sum();
    let w0 = Instant::now();
    sleep(Duration::from_secs(secs));
    let wall = w0.elapsed().as_nanos() as f64;
    let hog_ns = cpu(&hog).saturating_sub(h0) as f64;
    let y_ns = yielders.iter().map(cpu).sum::<u64>().saturating_sub(y0) as f64;
    let yields = yielders.iter().map(|y| y.iters()).sum::<u64>() - n0;
    hog.stop();
    workers::stop_all(yielders);
    Ok((hog_ns / wall, (hog_ns + y_ns) / wall, yields))
}

/// sched_yield() gives the CPU away. A thread that spins on sched_yield()
/// (the backoff of a lock or channel before it sleeps) has used little CPU,
/// so it is the earliest deadline; if the scheduler handed its CPU straight
/// back, it would spin through its slice while the thread it waits for waits
/// for that CPU. A hog pinned beside a yielder on one CPU gets at least 80%
/// of it (EEVDF, measured first for reference, gives it about all); the
/// yielder still runs (at least 30 yields a second). (Two yielders can hand
/// the CPU to each other: see hinted_yield().)
pub fn yield_gives_way(env: &Env) -> Result<String> {
    const SECS: u64 = 3;
    const MIN_HOG_SHARE: f64 = 0.8;
    const MIN_YIELDS_PER_S: u64 = 30;
    let (eevdf, _, eevdf_yields) = hog_beside_yielders(SECS)?;
    let mut sched = Sched::start(env, &[])?;
    let (share, used, yields) = hog_beside_yielders(SECS)?;
    sched.check()?;
    sched.stop()?;
    let detail = format!(
        "hog's share of its CPU beside a sched_yield() loop: {:.0}% ({} yields in {SECS} s; \
         the two used {:.2} CPUs); EEVDF {:.0}% ({} yields)",
        100.0 * share,
        yields,
        used,
        100.0 * eevdf,
        eevdf_yields
    );
    ensure!(used <= 1.15, "the threads did not share one CPU: {detail}");
    ensure!(
        yields >= MIN_YIELDS_PER_S * SECS,
        "the yielding thread hardly ran: {detail}"
    );
    ensure!(
        share >= MIN_HOG_SHARE,
        "the yielding thread kept the CPU: {detail}"
    );
    Ok(detail)
}

/// Many short background runs beside normal hogs: background's minimum share
/// is run time, not one pick per period. 300 background threads that run
/// 50 us and nap 2 ms, beside 2 normal hogs per CPU: counted per pick, each
/// CPU served one of them every 60 ms and a thread ran about once every 8 s;
/// thousands of them waited past the watchdog. Every one must run at least
/// once in a 4 s window.
pub fn bg_crowd(env: &Env) -> Result<String> {
    const THREADS: usize = 300;
    const WINDOW: Duration = Duration::from_secs(4);
    let mut sched = Sched::start(env, &[])?;
    let hogs: Vec<Worker> = (0..2 * nr_cpus())
        .map(|_| Worker::spawn(Spec::new(Kind::Hog, None)))
        .collect();
    let crowd: Vec<Worker> = (0..THREADS)
        .map(|_| {
            Worker::spawn(Spec::new(
                Kind::Bursty {
                    run: Duration::from_micros(50),
                    nap: Duration::from_millis(2),
                },
                Some(Background),
            ))
        })
        .collect();
    // Every thread has run once (its hint is applied) before the window.
    let t0 = Instant::now();
    while crowd.iter().any(|w| w.iters() == 0) && t0.elapsed() < Duration::from_secs(30) {
        sleep(Duration::from_millis(20));
    }
    let started = t0.elapsed();
    let before: Vec<u64> = crowd.iter().map(|w| w.iters()).collect();
    sleep(WINDOW);
    let mut runs: Vec<u64> = crowd
        .iter()
        .zip(&before)
        .map(|(w, b)| w.iters() - b)
        .collect();
    workers::stop_all(crowd);
    workers::stop_all(hogs);
    sched.check()?;
    let s = harness::stats()?;
    let (picks, starve) = (s.get("bg_guard_picks"), s.get("starve_picks"));
    sched.stop()?;
    runs.sort_unstable();
    let idle = runs.iter().filter(|&&r| r == 0).count();
    let detail = format!(
        "{THREADS} background threads (50 us runs, 2 ms naps) beside {} normal hogs: \
         all had run after {:.1} s; runs per thread in {} s: min {}, median {}, max {} \
         ({idle} never ran); guard picks {picks}, starvation picks {starve}",
        2 * nr_cpus(),
        started.as_secs_f64(),
        WINDOW.as_secs(),
        runs[0],
        runs[THREADS / 2],
        runs[THREADS - 1]
    );
    ensure!(
        idle == 0,
        "background threads waited the whole window: {detail}"
    );
    Ok(detail)
}
