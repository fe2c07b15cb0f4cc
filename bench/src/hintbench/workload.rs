//! Building blocks of the hintbench scenarios: clocks, CPU work measured in
//! thread CPU time, the per-thread knobs a user has today (nice, policy,
//! slice request) and the hints, and CPU hogs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Result};
use scx_hints::LatencyClass;
use serde::{Deserialize, Serialize};

use crate::sys::{self, SchedAttr};

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn mono_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// The calling thread's CPU time in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Sleeps until CLOCK_MONOTONIC reaches `t` (an absolute-time wakeup, as a
/// frame loop does).
pub fn sleep_until(t: u64) {
    let ts = libc::timespec {
        tv_sec: (t / 1_000_000_000) as libc::time_t,
        tv_nsec: (t % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: an absolute CLOCK_MONOTONIC sleep on a valid timespec; EINTR
    // only ends the sleep early, which the callers measure.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// Spins until the calling thread has used `ns` more nanoseconds of CPU
/// time (not wall time: work preempted half-way still has to be done), or
/// `stop` is set.
pub fn work_cpu(ns: u64, stop: &AtomicBool) {
    let end = thread_cpu_ns() + ns;
    loop {
        for _ in 0..256 {
            std::hint::spin_loop();
        }
        if thread_cpu_ns() >= end || stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// Spin iterations per unit of the scenarios' work loop. The calibration
/// measures how many units a vCPU does per CPU-millisecond; scenarios size
/// their work in units derived from that, never in absolute time. Small,
/// so that the smallest work (0.05 CPU-ms) is still many units on a slow
/// emulated guest: at 256 spins a unit was 77 us of such a guest, and
/// 0.05 CPU-ms rounded up to 1.5 times itself (6 times on a host 4x
/// slower).
pub const WORK_UNIT: u32 = 4;

/// Does `n` units of the work loop (a fixed amount of computation, however
/// long it takes), or fewer if `stop` is set; returns the units done.
pub fn work_units(n: u64, stop: &AtomicBool) -> u64 {
    for i in 0..n {
        for _ in 0..WORK_UNIT {
            std::hint::spin_loop();
        }
        if i % 64 == 63 && stop.load(Ordering::Relaxed) {
            return i + 1;
        }
    }
    n
}

/// Switches the calling thread (only it: the raw system calls, not libc's
/// process-wide wrappers) to `uid`/gid `uid`, dropping root's capabilities,
/// as if another, unprivileged user ran it.
pub fn become_user(uid: u32) -> Result<()> {
    // SAFETY: plain system calls on the calling thread's credentials. The
    // supplementary groups go first (root's group 0 would stay otherwise).
    let r = unsafe {
        let mut r = libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>());
        if r == 0 {
            r = libc::syscall(libc::SYS_setresgid, uid, uid, uid);
        }
        if r == 0 {
            r = libc::syscall(libc::SYS_setresuid, uid, uid, uid);
        }
        r
    };
    if r != 0 {
        bail!("setresuid({uid}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The unprivileged user the app-knowledge scenarios' own threads run as.
pub const APP_UID: u32 = 64_001;
/// Another unprivileged user, who runs the unannotated CPU hogs.
pub const OTHER_UID: u32 = 64_002;

/// What the kernel offers a user today for one thread, applied by the
/// thread to itself with a system call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Knob {
    #[default]
    None,
    /// `setpriority` to this nice value (negative needs root).
    Nice(i32),
    /// `SCHED_BATCH`.
    Batch,
    /// `SCHED_IDLE`.
    Idle,
    /// `sched_setattr` with SCHED_OTHER and this `sched_runtime` (ns): the
    /// fair class's slice request.
    Slice(u64),
}

impl Knob {
    /// Applies the knob to the calling thread.
    pub fn apply(self) -> Result<()> {
        let r = match self {
            Knob::None => return Ok(()),
            // SAFETY: plain syscall on the calling thread.
            Knob::Nice(n) => unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) as i64 },
            Knob::Batch => sys::sched_setattr(&policy(libc::SCHED_BATCH, 0)),
            Knob::Idle => sys::sched_setattr(&policy(libc::SCHED_IDLE, 0)),
            Knob::Slice(ns) => sys::sched_setattr(&policy(libc::SCHED_OTHER, ns)),
        };
        if r != 0 {
            bail!("{self:?}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A sched_attr for `policy` at nice 0 with a slice request of `runtime` ns
/// (0: none).
pub fn policy(policy: libc::c_int, runtime: u64) -> SchedAttr {
    SchedAttr {
        sched_policy: policy as u32,
        sched_runtime: runtime,
        ..SchedAttr::other(0)
    }
}

/// How one role of a scenario's threads is treated: a hint, a knob, both
/// or neither.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Treatment {
    #[serde(with = "class_name")]
    pub class: Option<LatencyClass>,
    pub knob: Knob,
}

impl Treatment {
    pub const NONE: Treatment = Treatment {
        class: None,
        knob: Knob::None,
    };

    pub fn hint(class: LatencyClass) -> Self {
        Treatment {
            class: Some(class),
            knob: Knob::None,
        }
    }

    pub fn knob(knob: Knob) -> Self {
        Treatment { class: None, knob }
    }

    /// Applies it to the calling thread (at the thread's start).
    pub fn apply(self) -> Result<()> {
        self.knob.apply()?;
        self.apply_hint();
        Ok(())
    }

    /// Sets the hint only (registering the thread on its first hint).
    pub fn apply_hint(self) {
        if let Some(c) = self.class {
            scx_hints::set_latency_class(c);
        }
    }
}

/// How a run treats the latency-sensitive threads (`fg`) and the load
/// (`bg`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub fg: Treatment,
    pub bg: Treatment,
}

/// Spawns a named thread that applies `t` to itself first. A failing knob
/// aborts the run: a contender that could not be set up measures nothing.
pub fn spawn<R: Send + 'static>(
    name: &str,
    t: Treatment,
    f: impl FnOnce() -> R + Send + 'static,
) -> JoinHandle<Result<R>> {
    spawn_as(name, t, None, f)
}

/// [`spawn`] as `uid` (if given): the thread registers its hint as root,
/// becomes `uid`, and only then applies its knob, so that a knob contender
/// has exactly an unprivileged user's rights (a knob that needed more
/// fails the run; a knob it lowers cannot be raised again).
pub fn spawn_as<R: Send + 'static>(
    name: &str,
    t: Treatment,
    uid: Option<u32>,
    f: impl FnOnce() -> R + Send + 'static,
) -> JoinHandle<Result<R>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            match uid {
                Some(u) => {
                    t.apply_hint();
                    become_user(u)?;
                    t.knob.apply()?;
                }
                None => t.apply()?,
            }
            Ok(f())
        })
        .expect("spawning a benchmark thread")
}

/// Joins a benchmark thread.
pub fn join<R>(h: JoinHandle<Result<R>>) -> Result<R> {
    match h.join() {
        Ok(r) => r,
        Err(_) => bail!("a benchmark thread panicked"),
    }
}

/// CPU hogs: threads that never sleep and count units of work.
pub struct Hogs {
    stop: Arc<AtomicBool>,
    units: Arc<AtomicU64>,
    handles: Vec<JoinHandle<Result<()>>>,
}

/// Work units a hog counts at a time.
const HOG_BATCH: u64 = 4096;

impl Hogs {
    pub fn start(n: usize, t: Treatment) -> Hogs {
        Hogs::start_as(n, t, None)
    }

    /// Hogs run by `uid` (another user's), if given.
    pub fn start_as(n: usize, t: Treatment, uid: Option<u32>) -> Hogs {
        let stop = Arc::new(AtomicBool::new(false));
        let units = Arc::new(AtomicU64::new(0));
        let handles = (0..n)
            .map(|_| {
                let (stop, units) = (stop.clone(), units.clone());
                spawn_as("hog", t, uid, move || {
                    while !stop.load(Ordering::Relaxed) {
                        let done = work_units(HOG_BATCH, &stop);
                        units.fetch_add(done, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Hogs {
            stop,
            units,
            handles,
        }
    }

    /// Units of work done so far.
    pub fn units(&self) -> u64 {
        self.units.load(Ordering::Relaxed)
    }

    pub fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            join(h)?;
        }
        Ok(())
    }
}

/// A stop flag with a deadline shared by a scenario's threads.
#[derive(Clone)]
pub struct Clock {
    pub stop: Arc<AtomicBool>,
    /// Samples before this instant (CLOCK_MONOTONIC ns) are warm-up.
    pub measure_from: u64,
    pub end: u64,
}

impl Clock {
    /// A run of `secs` seconds whose first `warmup` seconds are not measured.
    pub fn new(warmup: f64, secs: f64) -> Clock {
        let now = mono_ns();
        Clock {
            stop: Arc::new(AtomicBool::new(false)),
            measure_from: now + (warmup * 1e9) as u64,
            end: now + ((warmup + secs) * 1e9) as u64,
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn measuring(&self, t: u64) -> bool {
        t >= self.measure_from && t < self.end
    }

    /// Sleeps until the warm-up is over; returns the time.
    pub fn wait_measure(&self) -> u64 {
        sleep_until(self.measure_from);
        mono_ns()
    }

    /// Sleeps until the end and tells every thread to stop; returns the
    /// time.
    pub fn wait_end(&self) -> u64 {
        sleep_until(self.end);
        let t = mono_ns();
        self.stop.store(true, Ordering::Relaxed);
        t
    }
}

/// Latency classes by name in the JSON.
mod class_name {
    use scx_hints::LatencyClass;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Option<LatencyClass>, s: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => s.serialize_some(c.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LatencyClass>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|n| n.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// A thread spawned as another user applies its knob with that user's
    /// rights only, and keeps none of root's groups.
    #[test]
    fn a_knob_is_applied_with_the_users_rights_only() {
        if !is_root() {
            assert!(std::env::var_os("CI").is_none(), "needs root in CI");
            eprintln!("skipped: needs root (setresuid)");
            return;
        }
        // Raising the priority needs CAP_SYS_NICE: refused to the user.
        let raised = spawn_as("t", Treatment::knob(Knob::Nice(-5)), Some(APP_UID), || ());
        assert!(join(raised).is_err(), "nice -5 applied with root's rights");
        // Lowering it is every user's right.
        let lowered = spawn_as("t", Treatment::knob(Knob::Nice(5)), Some(APP_UID), || {
            // SAFETY: plain queries of the calling thread's credentials.
            unsafe {
                (
                    libc::syscall(libc::SYS_geteuid),
                    libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>()),
                    libc::getpriority(libc::PRIO_PROCESS, 0),
                )
            }
        });
        let (euid, groups, nice) = join(lowered).expect("nice 5 as a user");
        assert_eq!(euid, APP_UID as i64);
        assert_eq!(groups, 0, "supplementary groups kept");
        assert_eq!(nice, 5);
    }
}
