// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! Restarts as a user meets them (issue 8): an application in its own
//! process sets each thread's hint once at start and never again, beside CPU
//! hogs; scx_hinted is stopped and started again, three times: SIGINT (the
//! pinned map is reused), SIGKILL (reused too), and SIGINT with the pin
//! removed in between (what scx_hinted tells to do when a pinned map of
//! another version cannot be reused: the new instance makes a new map).
//! Each time, within 1 s of the new instance attaching, the application's
//! threads must be registered and scheduled by their hints again, the
//! application doing nothing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use scx_hints::LatencyClass;

use crate::harness::{self, nr_cpus, sched_state, stats, Env, Sched, Stats};
use crate::workers::{self, Kind, Spec, Worker};

/// The longest a running application may stay unhinted after the new
/// scheduler instance is attached (issue 8's goal).
const RECOVERY_LIMIT: Duration = Duration::from_secs(1);
/// How long recovery is watched for, so that a failure reports how late it
/// came (or that it never came).
const RECOVERY_WATCH: Duration = Duration::from_secs(6);
/// CPU hogs of another "user" (unhinted threads of this process), at nice
/// 19 so that the scheduler's own start (BPF verification, slow under TCG)
/// is not starved while no sched_ext scheduler is attached. (At nice 0 the
/// outcome was the same, each start only took longer.)
const HOGS: usize = 4;

/// The application: `--hinted-app SECS` of scx_hinted_tests.
const CRITICAL_THREADS: f64 = 1.0;
const BATCH_THREADS: f64 = 2.0;

#[derive(Clone, Copy, Debug)]
enum Stop {
    Sigint,
    Sigkill,
    SigintNewMap,
}

impl Stop {
    fn describe(self) -> &'static str {
        match self {
            Stop::Sigint => "SIGINT (map reused)",
            Stop::Sigkill => "SIGKILL (map reused)",
            Stop::SigintNewMap => "SIGINT, pin removed (new map)",
        }
    }
}

/// Registered threads, critical and batch tasks, as the scheduler counts them.
fn counts(s: &Stats) -> [f64; 3] {
    [
        s.get("registered"),
        s.class("critical", "tasks"),
        s.class("batch", "tasks"),
    ]
}

/// Whether the application's threads are counted in their hinted classes,
/// beyond the `base` counts.
fn app_hinted(s: &Stats, base: [f64; 3]) -> bool {
    let [reg, crit, batch] = counts(s);
    reg - base[0] >= CRITICAL_THREADS + BATCH_THREADS
        && crit - base[1] >= CRITICAL_THREADS
        && batch - base[2] >= BATCH_THREADS
}

/// Notes when sched_ext turns `enabled` (polling sysfs every 2 ms from a
/// thread of its own: the kernel offers no event for it), so that recovery
/// is timed from the attach, not from when the stats server answers.
struct AttachClock {
    stop: Arc<AtomicBool>,
    at: Arc<Mutex<Option<Instant>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AttachClock {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let at = Arc::new(Mutex::new(None));
        let (st, a) = (stop.clone(), at.clone());
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut said = 0;
            while !st.load(Ordering::Relaxed) {
                if sched_state() == "enabled" {
                    *a.lock().unwrap() = Some(Instant::now());
                    return;
                }
                // A start under load can take minutes on a busy TCG host:
                // say so in the kernel log (no 9p access during a restart),
                // which also feeds the harness's stall watchdog.
                let secs = start.elapsed().as_secs();
                if secs >= said + 20 {
                    said = secs;
                    kmsg(&format!("restart_app: waiting {secs} s for the attach"));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Self {
            stop,
            at,
            thread: Some(thread),
        }
    }

    /// When the attach was seen (now, if it was missed).
    fn attached(mut self) -> Instant {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let seen = *self.at.lock().unwrap();
        seen.unwrap_or_else(Instant::now)
    }
}

/// Writes a line to the kernel log.
fn kmsg(line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = writeln!(f, "scx_hinted_tests: {line}");
    }
}

/// The three restarts, one application, one set of hogs.
pub fn restart_app(env: &Env) -> Result<String> {
    let mut sched = Sched::start(env, &[])?;
    let hogs: Vec<Worker> = (0..HOGS.max(2 * nr_cpus()))
        .map(|_| {
            Worker::spawn(Spec::new(Kind::Hog, None).setup(|| {
                // SAFETY: setpriority on the calling thread (who = 0).
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
            }))
        })
        .collect();
    // This process's own registrations (none expected), for comparison.
    let base = counts(&stats()?);
    let mut app = App::start(env, 600)?;
    let result = (|| -> Result<(Vec<String>, Sched)> {
        harness::wait_stats(Duration::from_secs(10), |s| app_hinted(s, base))
            .context("the application's hints were never seen, before any restart")?;
        let mut times = Vec::new();
        for stop in [Stop::Sigint, Stop::Sigkill, Stop::SigintNewMap] {
            let (mut next, took) = restart_once(env, sched, stop, base)?;
            ensure!(app.alive(), "the application died at {}", stop.describe());
            next.check()?;
            times.push(format!(
                "{} {:.0} ms",
                stop.describe(),
                took.as_secs_f64() * 1e3
            ));
            sched = next;
        }
        Ok((times, sched))
    })();
    let app_report = app.stop();
    workers::stop_all(hogs);
    // On failure the scheduler was dropped, which kills it.
    let (times, sched) = result.with_context(|| format!("app: {app_report}"))?;
    sched.stop()?;
    Ok(format!(
        "the app's 3 threads were hinted again after the attach: {}",
        times.join(", ")
    ))
}

/// Stops `sched` as `stop` says, starts a new instance, and returns it with
/// the time from its attach until the application is hinted again.
fn restart_once(env: &Env, sched: Sched, stop: Stop, base: [f64; 3]) -> Result<(Sched, Duration)> {
    match stop {
        Stop::Sigint => sched.stop()?,
        Stop::SigintNewMap => {
            sched.stop()?;
            std::fs::remove_file(&env.pin)
                .with_context(|| format!("removing {}", env.pin.display()))?;
        }
        Stop::Sigkill => {
            sched.kill9()?;
            harness::wait_state("disabled", Duration::from_secs(10))
                .context("the kernel did not detach the killed scheduler")?;
        }
    }
    let clock = AttachClock::start();
    let started = Sched::start(env, &[]);
    let attached = clock.attached();
    let sched = started?;
    let mut last = stats()?;
    let recovered = loop {
        if app_hinted(&last, base) {
            break Some(attached.elapsed());
        }
        if attached.elapsed() > RECOVERY_WATCH {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
        last = stats()?;
    };
    match recovered {
        Some(t) if t <= RECOVERY_LIMIT => Ok((sched, t)),
        Some(t) => bail!(
            "after {}, the app's hints came back only {:.0} ms after the attach (limit {} ms)",
            stop.describe(),
            t.as_secs_f64() * 1e3,
            RECOVERY_LIMIT.as_millis()
        ),
        None => bail!(
            "after {}, the app's hints were not seen within {} s of the attach: {}",
            stop.describe(),
            RECOVERY_WATCH.as_secs(),
            last.summary()
        ),
    }
}

/// The application under test, a child process.
struct App {
    child: Child,
}

impl App {
    fn start(env: &Env, secs: u64) -> Result<Self> {
        let mut child = Command::new(&env.self_exe)
            .args(["--hinted-app", &secs.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the application (--hinted-app)")?;
        let out = child.stdout.take().context("no stdout pipe")?;
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .context("reading the application's first line")?;
        if !line.starts_with("ready") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the application did not start: {line:?}");
        }
        Ok(Self { child })
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn stop(mut self) -> String {
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(st) => format!("app ended with {st} when stopped"),
            Err(e) => format!("app: {e}"),
        }
    }
}

/// `--hinted-app SECS`: one critical periodic thread and two batch hogs,
/// each setting its class once and never touching a hint again. Prints
/// `ready` once every thread set its class, then runs SECS seconds (or until
/// its parent dies).
pub fn hinted_app(secs: u64) -> i32 {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only affects this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let (tx, rx) = std::sync::mpsc::channel();
    let specs = [
        (LatencyClass::Critical, periodic()),
        (LatencyClass::Batch, Kind::Hog),
        (LatencyClass::Batch, Kind::Hog),
    ];
    let workers: Vec<Worker> = specs
        .into_iter()
        .map(|(class, kind)| {
            let tx = tx.clone();
            // The class is set here, once; the worker itself never sets one.
            Worker::spawn(Spec::new(kind, None).setup(move || {
                scx_hints::set_latency_class(class);
                let _ = tx.send(format!("{class}:{:?}", scx_hints::registration()));
            }))
        })
        .collect();
    drop(tx);
    let states: Vec<String> = rx.iter().collect();
    println!("ready {}", states.join(" "));
    std::thread::sleep(Duration::from_secs(secs));
    workers::stop_all(workers);
    0
}

fn periodic() -> Kind {
    Kind::Periodic {
        work: Duration::from_micros(500),
        period: Duration::from_millis(4),
    }
}
