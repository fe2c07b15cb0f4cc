// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! Test threads: CPU hogs and periodic "frame" threads that publish hints,
//! can change their class at run time, and report CPU time and wake-up
//! latency.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use scx_hints::LatencyClass;

/// No class change requested.
const KEEP: i32 = i32::MIN;

#[derive(Clone, Copy)]
pub enum Kind {
    /// Runs without ever sleeping.
    Hog,
    /// Works `work`, then sleeps until the next multiple of `period`.
    Periodic { work: Duration, period: Duration },
    /// Runs `run`, sleeps `nap`, forever: short sleeps between long bursts.
    Bursty { run: Duration, nap: Duration },
    /// Calls sched_yield() in a loop, as a spin-wait's backoff does.
    Yielder,
}

/// What a worker does before its loop (runs on the worker thread).
pub type Setup = Box<dyn FnOnce() + Send>;

pub struct Spec {
    pub kind: Kind,
    pub class: Option<LatencyClass>,
    pub prio: Option<i32>,
    pub setup: Option<Setup>,
}

impl Spec {
    pub fn new(kind: Kind, class: Option<LatencyClass>) -> Self {
        Self {
            kind,
            class,
            prio: None,
            setup: None,
        }
    }

    pub fn prio(mut self, prio: i32) -> Self {
        self.prio = Some(prio);
        self
    }

    pub fn setup(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.setup = Some(Box::new(f));
        self
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    class: AtomicI32,
    iters: AtomicU64,
    missed: AtomicU64,
    lat_max_ns: AtomicU64,
    /// Longest time between two loop iterations of a hog (its longest wait
    /// for a CPU), since it last applied a class change.
    gap_max_ns: AtomicU64,
    /// When the hog last finished an iteration (monotonic ns).
    last_ns: AtomicU64,
    /// Class changes applied so far.
    switches: AtomicU64,
}

/// Wake-up latencies of a periodic worker, in nanoseconds.
#[derive(Default)]
pub struct Report {
    pub lat_ns: Vec<u64>,
    /// Time spent runnable but not running in each period (the kernel's
    /// run_delay): waiting for a CPU, without the timer's own lateness.
    pub delay_ns: Vec<u64>,
}

/// This thread's run_delay so far (ns): time runnable but not running.
fn run_delay_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

impl Report {
    pub fn percentile_us(&self, pct: f64) -> f64 {
        if self.lat_ns.is_empty() {
            return 0.0;
        }
        let mut v = self.lat_ns.clone();
        v.sort_unstable();
        let idx = ((v.len() as f64 * pct / 100.0).ceil() as usize).clamp(1, v.len()) - 1;
        v[idx] as f64 / 1000.0
    }
}

pub struct Worker {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<Report>>,
}

fn now_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn spin_for(d: Duration, shared: &Shared) {
    let end = Instant::now() + d;
    while Instant::now() < end && !shared.stop.load(Ordering::Relaxed) {
        std::hint::spin_loop();
    }
}

pub fn sleep_until_ns(t: u64) {
    let ts = libc::timespec {
        tv_sec: (t / 1_000_000_000) as libc::time_t,
        tv_nsec: (t % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: absolute CLOCK_MONOTONIC sleep on a valid timespec.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// Applies a requested class change; true if there was one.
fn apply_class(shared: &Shared) -> bool {
    let c = shared.class.swap(KEEP, Ordering::Relaxed);
    if c == KEEP {
        return false;
    }
    scx_hints::set_latency_class(LatencyClass::from_raw(c));
    shared.switches.fetch_add(1, Ordering::Relaxed);
    true
}

impl Worker {
    pub fn spawn(spec: Spec) -> Self {
        let shared = Arc::new(Shared::default());
        shared.class.store(KEEP, Ordering::Relaxed);
        let sh = shared.clone();
        let name = match spec.kind {
            Kind::Hog => "hog",
            Kind::Bursty { .. } => "bursty",
            Kind::Periodic { .. } => "periodic",
            Kind::Yielder => "yielder",
        };
        let builder = std::thread::Builder::new().name(name.into());
        let handle = builder.spawn(move || {
            if let Some(setup) = spec.setup {
                setup();
            }
            if let Some(p) = spec.prio {
                let _ = scx_hints::set_priority(p);
            }
            if let Some(c) = spec.class {
                scx_hints::set_latency_class(c);
            }
            let mut report = Report::default();
            match spec.kind {
                Kind::Hog => {
                    let mut last = now_ns(libc::CLOCK_MONOTONIC);
                    while !sh.stop.load(Ordering::Relaxed) {
                        if apply_class(&sh) {
                            sh.gap_max_ns.store(0, Ordering::Relaxed);
                            last = now_ns(libc::CLOCK_MONOTONIC);
                        }
                        // Short rounds, so that a gap between two is time
                        // spent waiting for a CPU, not computing.
                        for _ in 0..256 {
                            std::hint::spin_loop();
                        }
                        let now = now_ns(libc::CLOCK_MONOTONIC);
                        sh.gap_max_ns.fetch_max(now - last, Ordering::Relaxed);
                        sh.last_ns.store(now, Ordering::Relaxed);
                        last = now;
                        sh.iters.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Kind::Bursty { run, nap } => {
                    while !sh.stop.load(Ordering::Relaxed) {
                        apply_class(&sh);
                        spin_for(run, &sh);
                        std::thread::sleep(nap);
                        sh.iters.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Kind::Yielder => {
                    while !sh.stop.load(Ordering::Relaxed) {
                        apply_class(&sh);
                        // SAFETY: no arguments, no memory.
                        unsafe { libc::sched_yield() };
                        sh.iters.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Kind::Periodic { work, period } => {
                    let period_ns = period.as_nanos() as u64;
                    let mut next = now_ns(libc::CLOCK_MONOTONIC) + period_ns;
                    let mut delay0 = run_delay_ns();
                    while !sh.stop.load(Ordering::Relaxed) {
                        apply_class(&sh);
                        sleep_until_ns(next);
                        let woke = now_ns(libc::CLOCK_MONOTONIC);
                        let lat = woke.saturating_sub(next);
                        report.lat_ns.push(lat);
                        sh.lat_max_ns.fetch_max(lat, Ordering::Relaxed);
                        spin_for(work, &sh);
                        let delay = run_delay_ns();
                        report.delay_ns.push(delay.saturating_sub(delay0));
                        delay0 = delay;
                        sh.iters.fetch_add(1, Ordering::Relaxed);
                        next += period_ns;
                        let done = now_ns(libc::CLOCK_MONOTONIC);
                        if done > next {
                            // Skip the periods we overran.
                            let behind = (done - next) / period_ns + 1;
                            sh.missed.fetch_add(behind, Ordering::Relaxed);
                            next += behind * period_ns;
                        }
                    }
                }
            }
            report
        });
        let handle = handle.expect("spawning a test thread");
        Self {
            shared,
            handle: Some(handle),
        }
    }

    /// Asks the worker to switch its latency class (it does at its next loop).
    pub fn set_class(&self, class: LatencyClass) {
        self.shared.class.store(class as i32, Ordering::Relaxed);
    }

    pub fn iters(&self) -> u64 {
        self.shared.iters.load(Ordering::Relaxed)
    }

    /// Class changes the worker has applied.
    pub fn switches(&self) -> u64 {
        self.shared.switches.load(Ordering::Relaxed)
    }

    /// A hog's longest wait for a CPU since its last class change, counting
    /// the wait it may be in right now (nanoseconds).
    pub fn max_gap_ns(&self) -> u64 {
        let last = self.shared.last_ns.load(Ordering::Relaxed);
        let open = if last == 0 {
            0
        } else {
            now_ns(libc::CLOCK_MONOTONIC).saturating_sub(last)
        };
        self.shared.gap_max_ns.load(Ordering::Relaxed).max(open)
    }

    pub fn missed(&self) -> u64 {
        self.shared.missed.load(Ordering::Relaxed)
    }

    /// CPU time the thread used so far, in nanoseconds.
    pub fn cpu_ns(&self) -> u64 {
        let Some(h) = self.handle.as_ref() else {
            return 0;
        };
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the thread is alive (joined only in stop()), its pthread_t valid.
        if unsafe { libc::pthread_getcpuclockid(h.as_pthread_t(), &mut clock) } != 0 {
            return 0;
        }
        now_ns(clock)
    }

    pub fn stop(mut self) -> Report {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub fn stop_all(workers: Vec<Worker>) {
    for w in &workers {
        w.shared.stop.store(true, Ordering::Relaxed);
    }
    drop(workers);
}

/// Monotonic time in nanoseconds.
pub fn mono_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC)
}
