//! The app-knowledge scenarios: workloads where a heuristic cannot tell
//! which thread should wait and the application can, plus many-task
//! messaging. The app's own threads run as an unprivileged user
//! ([`APP_UID`]): each registers its hints, drops root, then sets its
//! starting knob with only the rights such a user has. Other users' hogs run
//! as [`OTHER_UID`] and are never annotated.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use crossbeam::channel;

use super::scenarios::{
    fair_share, frame_loop, switch_of, take_request, with_hogs, Backlog, Level, Measurement,
    Params, Scenario, Switcher, Taken, FRAME_PERIOD,
};
use super::workload::{
    join, mono_ns, sleep_until, spawn_as, work_units, Clock, Config, Treatment, APP_UID, OTHER_UID,
};

/// A small deterministic generator for jitter (xorshift64).
struct Jitter(u64);

impl Jitter {
    /// A factor in [0.5, 1.5).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        0.5 + (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A background burst: 1 CPU-ms of work, then a nap; short enough that
/// every heuristic sees a thread that sleeps a lot.
const BURST_MS: f64 = 1.0;

/// One bursty background thread with duty cycle `duty` (its demand in
/// CPUs, its wakeups' CPU cost included): bursts of [`BURST_MS`], naps
/// jittered around the mean that gives that duty. Counts the units done in
/// the measured window into `done`.
fn bursty(c: &Clock, burst_units: u64, nap_mean_ns: f64, seed: u64, done: &AtomicU64) {
    let mut j = Jitter(seed | 1);
    while !c.stopped() {
        let n = work_units(burst_units, &c.stop);
        if c.measuring(mono_ns()) {
            done.fetch_add(n, Ordering::Relaxed);
        }
        sleep_until(mono_ns() + (nap_mean_ns * j.next()) as u64);
    }
}

/// The shape of a game scenario at a level (see [`frame_mix`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct FrameShape {
    /// The render thread's work per frame, CPUs.
    pub render_work: f64,
    /// Its demand, CPUs: the work and its wakeup.
    pub render: f64,
    pub n_bg: usize,
    pub hogs: usize,
    /// The CPUs the app's threads can have: the guest, or beside hogs the
    /// share fairness gives them.
    pub capacity: f64,
    /// What the app's threads ask for, CPUs (work and wakeups).
    pub app_demand: f64,
    /// Each background thread's demand, CPUs (0 without any).
    pub duty: f64,
}

impl FrameShape {
    pub fn of(s: Scenario, level: Level, cpus: usize, wake_cpu_ms: f64) -> FrameShape {
        let (render_work, n_bg, hogs) = match s {
            Scenario::FrameMix => (0.6, 2 * cpus, 0),
            Scenario::FrameMixHogs => (0.3, cpus, cpus),
            _ => (0.8, 0, 2 * cpus),
        };
        let capacity = match s {
            Scenario::FrameMix => cpus as f64,
            _ => fair_share(cpus, 1 + n_bg, hogs),
        };
        // The render thread wakes once a frame.
        let render = render_work + wake_cpu_ms * 1e6 / FRAME_PERIOD as f64;
        let (app_demand, duty) = if n_bg > 0 {
            let duty = ((level.frac() * capacity - render) / n_bg as f64).clamp(0.05, 0.9);
            (render + n_bg as f64 * duty, duty)
        } else {
            // The limit case has one shape: what the render thread needs.
            (render, 0.0)
        };
        FrameShape {
            render_work,
            render,
            n_bg,
            hogs,
            capacity,
            app_demand,
            duty,
        }
    }

    /// Mean nap of a background thread after each burst, ns: a burst and
    /// its wakeup cost `duty` of a CPU over a burst plus a nap.
    pub fn nap_mean_ns(&self, wake_cpu_ms: f64) -> f64 {
        let cpu = BURST_MS + wake_cpu_ms;
        (cpu / self.duty - BURST_MS).max(0.0) * 1e6
    }

    /// Offered load, percent of the capacity the app's threads can have.
    pub fn load_pct(&self) -> f64 {
        100.0 * self.app_demand / self.capacity
    }
}

/// The game scenarios: a render thread (period 16 ms, `fg` treatment)
/// beside the app's bursty background threads (`bg` treatment) and, in
/// the -hogs variants, another user's hogs.
///
/// - frame-mix: render 60% of a CPU, 2 background threads per CPU; the
///   app's demand (render + background) is the level's share of the guest.
/// - frame-mix-hogs: render 30% of a CPU, 1 background thread per CPU,
///   1 hog per CPU; the app's demand is the level's share of what fairness
///   gives its threads, so the render thread stays within its fair share.
/// - frame-over-share: render 80% of a CPU, no background threads, 2 hogs
///   per CPU: its fair share is 40% of a CPU, and no hint may buy more.
pub fn frame_mix(s: Scenario, cfg: Config, p: &Params) -> Result<Measurement> {
    let cpus = p.cpus;
    let wake_ms = p.calib.wake_cpu_ms();
    let shape = FrameShape::of(s, p.level, cpus, wake_ms);
    let FrameShape {
        n_bg,
        hogs,
        render_work,
        ..
    } = shape;
    let clock = Clock::new(p.timing.warmup, p.timing.secs);
    let frame_units = p.units(render_work * FRAME_PERIOD as f64 / 1e6);
    let c = clock.clone();
    let frame = spawn_as("render", cfg.fg, Some(APP_UID), move || {
        frame_loop(&c, FRAME_PERIOD, frame_units)
    });
    let bg_done = Arc::new(AtomicU64::new(0));
    let burst_units = p.units(BURST_MS);
    let nap_ns = shape.nap_mean_ns(wake_ms);
    let bgs: Vec<_> = (0..n_bg)
        .map(|i| {
            let (c, done) = (clock.clone(), bg_done.clone());
            spawn_as("bg-stream", cfg.bg, Some(APP_UID), move || {
                bursty(&c, burst_units, nap_ns, 0x9e37_79b9 * (i as u64 + 1), &done)
            })
        })
        .collect();
    let mut hog_m = Measurement::default();
    let mut frame_m = None;
    with_hogs(
        &mut hog_m,
        hogs,
        Treatment::NONE,
        Some(OTHER_UID),
        &clock,
        || {
            frame_m = Some(join(frame)?);
            for b in bgs {
                join(b)?;
            }
            Ok(())
        },
    )?;
    let mut m = frame_m.expect("set by the body");
    m.metrics.extend(hog_m.metrics);
    let secs = p.timing.secs;
    let periods_per_s = 1e9 / FRAME_PERIOD as f64;
    let achieved = periods_per_s * (1.0 - m.get("missed_pct") / 100.0);
    // The frame loop skips what it missed (bounded); the background
    // threads' own rate is reported beside it.
    m.rates(periods_per_s, achieved, shape.load_pct(), Backlog::Bounded);
    m.set("offered_guest_pct", 100.0 * shape.app_demand / cpus as f64);
    m.set("fg_achieved_per_s", achieved);
    m.set("fg_demand_cpu", shape.render);
    m.set("app_fair_share_cpu", fair_share(cpus, 1 + n_bg, hogs));
    if n_bg == 0 {
        // Alone among always-runnable hogs: the render thread's own share.
        m.set("fg_fair_share_cpu", fair_share(cpus, 1, hogs));
    }
    if n_bg > 0 {
        // Bursts per second a background thread offers, uncontended.
        let bursts_per_s = 1e9 / (BURST_MS * 1e6 + nap_ns);
        let offered = n_bg as f64 * bursts_per_s * burst_units as f64;
        m.set("bg_offered_units_per_s", offered);
        m.set(
            "bg_units_per_s",
            bg_done.load(Ordering::Relaxed) as f64 / secs,
        );
    }
    Ok(m)
}

/// Request and bulk work per cycle of a roles worker, CPU-ms.
const ROLE_REQUEST_MS: f64 = 0.2;
const ROLE_BULK_MS: f64 = 1.5;

/// Unprivileged workers (2 per CPU) each get a request every period (a
/// generator sends them in absolute time). A worker switches up to its
/// request role, handles the request (0.2 CPU-ms), switches down to its
/// bulk role (indexing) and does a 1.5 CPU-ms chunk unless its next request
/// is already waiting (requests come first: under overload the bulk work
/// is what gives). Latency: request sent to handled. A request not started
/// within its period is missed. Under EEVDF's knobs the switch down is
/// nice 10, SCHED_BATCH or SCHED_IDLE and the switch up back to nice 0 /
/// SCHED_OTHER, which an unprivileged thread is refused (EPERM) after
/// nice 10 or SCHED_IDLE: it stays low (counted as `refused`).
pub fn roles(s: Scenario, cfg: Config, p: &Params) -> Result<Measurement> {
    let cpus = p.cpus;
    let workers_n = 2 * cpus;
    let hogs = if s == Scenario::RolesHogs { cpus } else { 0 };
    let sw = switch_of(cfg);
    let clock = Clock::new(p.timing.warmup, p.timing.secs);
    let demand_ms = ROLE_REQUEST_MS + ROLE_BULK_MS + 2.0 * p.calib.wake_cpu_ms();
    let capacity = fair_share(cpus, workers_n, hogs);
    // Each worker's share of the capacity, at the level.
    let per_worker = p.level.frac() * capacity / workers_n as f64;
    let period = (demand_ms / per_worker * 1e6) as u64;
    let (req_units, bulk_units) = (p.units(ROLE_REQUEST_MS), p.units(ROLE_BULK_MS));
    let bulk_done = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..workers_n {
        let (tx, rx) = channel::unbounded::<u64>();
        senders.push(tx);
        let c = clock.clone();
        let bulk_done = bulk_done.clone();
        workers.push(spawn_as(
            "role-worker",
            cfg.fg,
            Some(APP_UID),
            move || -> Result<_> {
                let mut m = Measurement::default();
                let mut s = Switcher::new(sw);
                let (mut missed, mut handled) = (0u64, 0u64);
                while let Some(Taken {
                    sent,
                    start,
                    measured,
                }) = take_request(&rx, &c, &mut s, &mut m)?
                {
                    if measured {
                        handled += 1;
                        if start - sent > period {
                            missed += 1;
                        }
                    }
                    work_units(req_units, &c.stop);
                    s.switch(false, measured)?;
                    if rx.is_empty() {
                        let n = work_units(bulk_units, &c.stop);
                        if measured {
                            bulk_done.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                }
                // Requests still queued at the end were never served: a
                // worker that fell behind does not drain its queue after the
                // run (a starved one would take as long as it is starved).
                let unserved = rx.try_iter().filter(|&ts| c.measuring(ts)).count() as u64;
                m.set("handled", handled as f64);
                m.set("unserved", unserved as f64);
                missed += unserved;
                m.set("missed", missed as f64);
                m.set("refused", s.refused as f64);
                m.set("switches", s.ticks.len() as f64);
                Ok(m)
            },
        ));
    }
    let c = clock.clone();
    let gen = spawn_as("role-gen", Treatment::NONE, Some(APP_UID), move || {
        // Requests for the workers in turn, spread over the period.
        let step = period / senders.len() as u64;
        let mut next = mono_ns() + period;
        while !c.stopped() {
            for tx in &senders {
                sleep_until(next);
                let _ = tx.send(next);
                next += step;
            }
        }
    });
    let mut m = Measurement::default();
    let mut parts = Vec::new();
    with_hogs(
        &mut m,
        hogs,
        Treatment::NONE,
        Some(OTHER_UID),
        &clock,
        || {
            join(gen)?;
            for w in workers {
                parts.push(join(w)??);
            }
            Ok(())
        },
    )?;
    let secs = p.timing.secs;
    let (mut handled, mut missed, mut refused, mut switches) = (0.0, 0.0, 0.0, 0.0);
    let mut unserved = 0.0;
    for part in parts {
        unserved += part.get("unserved");
        handled += part.get("handled");
        missed += part.get("missed");
        refused += part.get("refused");
        switches += part.get("switches");
        m.lat_us.extend(part.lat_us);
    }
    let offered = workers_n as f64 * 1e9 / period as f64;
    m.rates(
        offered,
        handled / secs,
        100.0 * p.level.frac(),
        Backlog::Grows,
    );
    m.set(
        "offered_guest_pct",
        100.0 * p.level.frac() * capacity / cpus as f64,
    );
    m.set("requests_per_s", handled / secs);
    m.set("missed_pct", 100.0 * missed / (handled + unserved).max(1.0));
    m.set("unserved", unserved);
    m.set("refused_per_s", refused / secs);
    m.set("switches_per_s", switches / secs);
    m.set(
        "bg_units_per_s",
        bulk_done.load(Ordering::Relaxed) as f64 / secs,
    );
    m.set(
        "bg_offered_units_per_s",
        offered * ROLE_BULK_MS * p.calib.units_per_cpu_ms,
    );
    Ok(m)
}

/// Messaging shape: groups of senders and receivers (hackbench's default
/// group is 20 + 20).
const GROUPS: usize = 4;
const PER_SIDE: usize = 20;
const MSG: usize = 100;

/// Many-task messaging, hackbench's shape with threads: 4 groups of 20
/// senders and 20 receivers; each receiver has its own Unix datagram
/// socket, each sender sends 100-byte messages to every receiver of its
/// group in turn for the whole run (blocking when a receiver's queue is
/// full). A message carries its send time: latency = received - sent.
/// Throughput: messages received per second. Nobody is hinted (the
/// `cfg` knobs are applied to every thread, which is none in the plans).
pub fn messaging(cfg: Config, p: &Params) -> Result<Measurement> {
    // 160 threads: spawning them while the first ones already run could
    // take longer than the run in a busy guest (the spawner is one thread
    // among 160). They all wait at a barrier; the run's clock starts when
    // the last one is there.
    let n = 2 * GROUPS * PER_SIDE;
    let start = Arc::new(Barrier::new(n + 1));
    let clock_cell: Arc<OnceLock<Clock>> = Arc::new(OnceLock::new());
    let ready = move |start: &Barrier, cell: &OnceLock<Clock>| -> Clock {
        start.wait();
        cell.get().expect("set before the barrier opens").clone()
    };
    let received = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..GROUPS {
        let mut outs = Vec::new();
        for _ in 0..PER_SIDE {
            let (tx, rx) = UnixDatagram::pair().context("socketpair")?;
            rx.set_read_timeout(Some(Duration::from_millis(200)))?;
            tx.set_write_timeout(Some(Duration::from_millis(200)))?;
            outs.push(Arc::new(tx));
            let (start, cell, received) = (start.clone(), clock_cell.clone(), received.clone());
            receivers.push(spawn_as("msg-recv", cfg.fg, None, move || {
                let c = ready(&start, &cell);
                let mut m = Measurement::default();
                let mut buf = [0u8; MSG];
                let mut n_msgs = 0u64;
                loop {
                    match rx.recv(&mut buf) {
                        Ok(n) if n >= 8 => {
                            let now = mono_ns();
                            let sent = u64::from_ne_bytes(buf[..8].try_into().expect("8 bytes"));
                            if c.measuring(sent) {
                                // One sample in 16: 160 threads send a lot.
                                n_msgs += 1;
                                if n_msgs.is_multiple_of(16) {
                                    m.push_ns(now.saturating_sub(sent));
                                }
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(_) => {}
                        Err(_) if c.stopped() => break,
                        Err(_) => {}
                    }
                }
                m
            }));
        }
        for _ in 0..PER_SIDE {
            let (start, cell, outs) = (start.clone(), clock_cell.clone(), outs.clone());
            senders.push(spawn_as("msg-send", cfg.fg, None, move || {
                let c = ready(&start, &cell);
                let mut buf = [0u8; MSG];
                'run: while !c.stopped() {
                    for o in &outs {
                        buf[..8].copy_from_slice(&mono_ns().to_ne_bytes());
                        // A full queue blocks the sender, as hackbench's do;
                        // a timeout lets it notice the end of the run.
                        if o.send(&buf).is_err() && c.stopped() {
                            break 'run;
                        }
                    }
                }
            }));
        }
    }
    let clock = Clock::new(p.timing.warmup, p.timing.secs);
    let _ = clock_cell.set(clock.clone());
    start.wait();
    let mut m = Measurement::default();
    let mut parts = Vec::new();
    with_hogs(&mut m, 0, Treatment::NONE, None, &clock, || {
        for s in senders {
            join(s)?;
        }
        for r in receivers {
            parts.push(join(r)?);
        }
        Ok(())
    })?;
    for part in parts {
        m.lat_us.extend(part.lat_us);
    }
    let per_s = received.load(Ordering::Relaxed) as f64 / p.timing.secs;
    m.set("messages_per_s", per_s);
    // A closed loop: it offers what it achieves.
    m.rates(per_s, per_s, 100.0 * p.level.frac(), Backlog::Bounded);
    Ok(m)
}

/// hackbench (rt-tests) in its default process mode with 4 groups of 20
/// senders and 20 receivers (160 processes). Its loop count is sized from
/// the calibration for a run of about the plan's length: a message costs
/// about one wakeup's CPU. Records hackbench's own time and messages per
/// second; it has no latency samples.
pub fn hackbench(p: &Params) -> Result<Measurement> {
    // The guest job stages it in tmpfs and names the copy here.
    let bin = std::env::var("HINTBENCH_HACKBENCH").unwrap_or_else(|_| "hackbench".into());
    let bin = bin.as_str();
    let per_msg_ms = p.calib.wake_cpu_ms().max(0.001);
    let msgs_per_loop = (GROUPS * PER_SIDE * PER_SIDE) as f64;
    let loops = ((p.timing.secs * 1000.0 * p.cpus as f64 / per_msg_ms / msgs_per_loop).round()
        as u64)
        .clamp(10, 100_000);
    let out = std::process::Command::new(bin)
        .args(["-g", &GROUPS.to_string(), "-f", &PER_SIDE.to_string()])
        .args(["-l", &loops.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {bin} (Debian package rt-tests)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        anyhow::bail!(
            "{bin} failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let secs: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Time:"))
        .and_then(|t| t.trim().parse().ok())
        .with_context(|| format!("no `Time:` line in {bin}'s output: {text}"))?;
    let mut m = Measurement::default();
    let per_s = msgs_per_loop * loops as f64 / secs.max(1e-6);
    m.set("hackbench_secs", secs);
    m.set("loops", loops as f64);
    m.set("messages_per_s", per_s);
    m.rates(per_s, per_s, 100.0, Backlog::Bounded);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAKE_MS: f64 = 0.05;

    #[test]
    fn each_level_offers_its_share_of_the_apps_capacity() {
        for s in [Scenario::FrameMix, Scenario::FrameMixHogs] {
            for l in [Level::Light, Level::Near, Level::Over] {
                let f = FrameShape::of(s, l, 2, WAKE_MS);
                assert!(
                    (f.load_pct() - 100.0 * l.frac()).abs() < 1e-6,
                    "{s:?} {l:?}: {}",
                    f.load_pct()
                );
            }
        }
        // Beside 2 hogs the app's 3 threads can have 3/5 of 2 CPUs.
        let f = FrameShape::of(Scenario::FrameMixHogs, Level::Over, 2, WAKE_MS);
        assert!((f.capacity - 1.2).abs() < 1e-9);
    }

    #[test]
    fn the_limit_case_offers_twice_the_render_threads_fair_share() {
        let f = FrameShape::of(Scenario::FrameOverShare, Level::Fixed, 2, 0.0);
        assert_eq!(f.n_bg, 0);
        assert!((f.capacity - 0.4).abs() < 1e-9);
        assert!((f.load_pct() - 200.0).abs() < 1e-6, "{}", f.load_pct());
    }

    #[test]
    fn a_background_threads_wakeups_count_in_its_duty() {
        let f = FrameShape::of(Scenario::FrameMix, Level::Near, 2, WAKE_MS);
        // A burst and its wakeup over a burst plus the nap is the duty.
        let nap_ms = f.nap_mean_ns(WAKE_MS) / 1e6;
        let duty = (BURST_MS + WAKE_MS) / (BURST_MS + nap_ms);
        assert!((duty - f.duty).abs() < 1e-9, "{duty} vs {}", f.duty);
    }
}
