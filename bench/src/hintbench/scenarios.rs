//! The hintbench scenarios. Each runs for a fixed time under whatever
//! scheduler is attached, treating its latency-sensitive threads and its
//! load as a [`Config`] says, and returns latency samples and metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use crossbeam::channel;
use scx_hints::LatencyClass;
use serde::{Deserialize, Serialize};

use super::calib::Calibration;
use super::workload::{
    join, mono_ns, policy, sleep_until, spawn, thread_cpu_ns, work_units, Clock, Config, Hogs,
    Knob, Treatment,
};
use crate::sys::{self, SchedAttr};

/// The scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// A periodic frame thread (25% of a CPU, 16 ms period) beside 2 hogs
    /// per CPU.
    Render,
    /// The frame thread alone on an idle machine: the floor.
    RenderIdle,
    /// Request handlers that switch between interactive and batch work
    /// thousands of times per second, beside 1 hog per CPU.
    Dynamic,
    /// Client/server pairs over crossbeam channels beside 2 hogs per CPU.
    ReqResp,
    /// schbench-style: a messenger wakes 2 workers per CPU every period,
    /// beside 1 hog per CPU.
    Wakeup,
    /// A game: a render thread needing 60% of a CPU per 16 ms frame beside
    /// the same app's bursty background threads (asset streaming,
    /// compaction: short bursts and naps).
    FrameMix,
    /// The same app (render thread at 30% of a CPU) beside another user's
    /// unannotated CPU hogs, one per CPU: within the app's fair share.
    FrameMixHogs,
    /// The limit: a render thread needing 80% of a CPU beside another
    /// user's 2 hogs per CPU, far beyond its fair share. It must miss.
    FrameOverShare,
    /// Unprivileged request workers (2 per CPU) switching roles hundreds of
    /// times per second: a latency-critical request, then a bulk chunk
    /// (indexing).
    Roles,
    /// The same workers beside another user's hogs, one per CPU.
    RolesHogs,
    /// Many-task messaging: 4 groups of 20 sender and 20 receiver threads
    /// over Unix sockets (160 threads), hackbench's shape.
    Messaging,
    /// hackbench from rt-tests (Debian package), 4 groups of 20 + 20
    /// processes over Unix sockets: run time.
    Hackbench,
}

impl Scenario {
    pub const ALL: [Scenario; 12] = [
        Scenario::Render,
        Scenario::RenderIdle,
        Scenario::Dynamic,
        Scenario::ReqResp,
        Scenario::Wakeup,
        Scenario::FrameMix,
        Scenario::FrameMixHogs,
        Scenario::FrameOverShare,
        Scenario::Roles,
        Scenario::RolesHogs,
        Scenario::Messaging,
        Scenario::Hackbench,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Render => "render",
            Scenario::RenderIdle => "render-idle",
            Scenario::Dynamic => "dynamic",
            Scenario::ReqResp => "req-resp",
            Scenario::Wakeup => "wakeup",
            Scenario::FrameMix => "frame-mix",
            Scenario::FrameMixHogs => "frame-mix-hogs",
            Scenario::FrameOverShare => "frame-over-share",
            Scenario::Roles => "roles",
            Scenario::RolesHogs => "roles-hogs",
            Scenario::Messaging => "messaging",
            Scenario::Hackbench => "hackbench",
        }
    }

    pub fn by_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// What its latency samples measure.
    pub fn latency_name(self) -> &'static str {
        match self {
            Scenario::Render
            | Scenario::RenderIdle
            | Scenario::FrameMix
            | Scenario::FrameMixHogs
            | Scenario::FrameOverShare => "frame wake-to-run",
            Scenario::Dynamic | Scenario::Roles | Scenario::RolesHogs => {
                "request wait (queued to handled)"
            }
            Scenario::ReqResp => "request round trip (from its due time)",
            Scenario::Wakeup => "worker wake-to-run (from the round's due time)",
            Scenario::Messaging => "message delivery (sent to received)",
            Scenario::Hackbench => "none: hackbench reports its run time",
        }
    }

    /// Where only the application knows which thread should wait: the
    /// scenarios the hints are for.
    pub fn app_knowledge(self) -> bool {
        matches!(
            self,
            Scenario::FrameMix | Scenario::FrameMixHogs | Scenario::Roles | Scenario::RolesHogs
        )
    }

    /// The contender whose hints the app-knowledge goals judge: the hint
    /// the app gives its other threads, chosen in advance from what they do
    /// (docs/adopting.md), not from the results. The roles workers' bulk
    /// phase is work their next request waits on: batch. The frame-mix
    /// background threads are work nobody waits on: background.
    pub fn hinted_contender(self) -> &'static str {
        match self {
            Scenario::Roles | Scenario::RolesHogs => "hinted-batch",
            _ => "hinted-both",
        }
    }

    /// The load levels it runs at: a shape fixed by design (hogs saturate
    /// the machine, a closed loop, the limit case) runs once, at `Fixed`.
    pub fn levels(self) -> &'static [Level] {
        match self {
            Scenario::Render
            | Scenario::RenderIdle
            | Scenario::FrameOverShare
            | Scenario::Messaging
            | Scenario::Hackbench => &[Level::Fixed],
            _ => &[Level::Light, Level::Near, Level::Over],
        }
    }
}

/// Offered load: the demand of a scenario's own threads (work plus the
/// calibrated cost of their wakeups) relative to the capacity they can
/// have: the whole guest, or in the scenarios beside another user's hogs,
/// the share fairness gives the app's threads. Other users' hogs come on
/// top.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// About 50% of capacity.
    Light,
    /// About 90%.
    Near,
    /// About 120%: someone must wait.
    Over,
    /// The scenario's one shape (see [`Scenario::levels`]).
    Fixed,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Light, Level::Near, Level::Over, Level::Fixed];

    pub fn name(self) -> &'static str {
        match self {
            Level::Light => "light",
            Level::Near => "near",
            Level::Over => "over",
            Level::Fixed => "fixed",
        }
    }

    /// Offered load as a fraction of capacity (Fixed: the scenario's own).
    pub fn frac(self) -> f64 {
        match self {
            Level::Light => 0.5,
            Level::Near => 0.9,
            Level::Over => 1.2,
            Level::Fixed => 1.0,
        }
    }
}

/// What a scenario run needs besides the treatment: its level, the
/// machine's calibration and timing.
#[derive(Clone, Debug)]
pub struct Params {
    pub level: Level,
    pub calib: Calibration,
    pub cpus: usize,
    pub timing: Timing,
}

impl Params {
    pub fn units(&self, cpu_ms: f64) -> u64 {
        self.calib.units(cpu_ms)
    }
}

/// One run of one scenario.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Measurement {
    /// Latency samples in microseconds, in the order taken.
    pub lat_us: Vec<f32>,
    pub metrics: BTreeMap<String, f64>,
}

impl Measurement {
    pub(crate) fn set(&mut self, k: &str, v: f64) {
        self.metrics.insert(k.to_string(), v);
    }

    pub(crate) fn get(&self, k: &str) -> f64 {
        self.metrics.get(k).copied().unwrap_or(0.0)
    }

    /// Records the offered and achieved rates of the latency threads'
    /// events and the offered load (`load_pct`: percent of the capacity the
    /// scenario's own threads can have, the unit of the levels and of the
    /// plots' x axis). A run of a queue (`Backlog::Grows`)
    /// whose events were served at less than 90% of the offered rate fell
    /// behind without bound (its queue grows for as long as it runs):
    /// `behind` = 1. A frame loop skips the periods it missed and a closed
    /// loop offers what it achieves: they never fall behind for good.
    pub(crate) fn rates(
        &mut self,
        offered_per_s: f64,
        achieved_per_s: f64,
        load_pct: f64,
        b: Backlog,
    ) {
        self.set("offered_per_s", offered_per_s);
        self.set("achieved_per_s", achieved_per_s);
        self.set("offered_load_pct", load_pct);
        let behind =
            b == Backlog::Grows && offered_per_s > 0.0 && achieved_per_s < 0.9 * offered_per_s;
        self.set("behind", if behind { 1.0 } else { 0.0 });
    }

    pub(crate) fn push_ns(&mut self, ns: u64) {
        self.lat_us.push((ns as f64 / 1000.0) as f32);
    }

    /// Adds the latency percentiles to the metrics.
    pub(crate) fn finish(mut self) -> Self {
        let mut v: Vec<f64> = self.lat_us.iter().map(|&x| x as f64).collect();
        v.sort_by(f64::total_cmp);
        self.set("samples", v.len() as f64);
        if !v.is_empty() {
            for (name, q) in [("p50_us", 0.5), ("p99_us", 0.99), ("p999_us", 0.999)] {
                self.set(name, crate::stats::quantile(&v, q));
            }
            self.set("max_us", v[v.len() - 1]);
        }
        self
    }
}

/// Whether a scenario's latency threads can fall behind without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backlog {
    /// Requests queue up: served slower than offered, the queue grows.
    Grows,
    /// A frame loop (skips missed periods) or a closed loop.
    Bounded,
}

/// Timing of a run: `warmup` seconds not measured, then `secs` measured.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub warmup: f64,
    pub secs: f64,
}

pub fn run(s: Scenario, cfg: Config, p: &Params) -> Result<Measurement> {
    let cpus = p.cpus;
    let m = match s {
        Scenario::Render => render(cfg, 2 * cpus, p)?,
        Scenario::RenderIdle => render(Config::default(), 0, p)?,
        Scenario::Dynamic => dynamic(cfg, p)?,
        Scenario::ReqResp => req_resp(cfg, p)?,
        Scenario::Wakeup => wakeup(cfg, p)?,
        Scenario::FrameMix | Scenario::FrameMixHogs | Scenario::FrameOverShare => {
            super::apps::frame_mix(s, cfg, p)?
        }
        Scenario::Roles | Scenario::RolesHogs => super::apps::roles(s, cfg, p)?,
        Scenario::Messaging => super::apps::messaging(cfg, p)?,
        Scenario::Hackbench => super::apps::hackbench(p)?,
    };
    Ok(m.finish())
}

/// CPUs fairness gives `app` always-runnable threads beside `hogs` hogs.
pub fn fair_share(cpus: usize, app: usize, hogs: usize) -> f64 {
    let app = app.max(1) as f64;
    (cpus as f64) * app / (app + hogs as f64)
}

/// Runs `hogs` with `bg` (as `uid` if given) while `body` runs, and records
/// their throughput over the measured window.
pub(crate) fn with_hogs(
    m: &mut Measurement,
    n: usize,
    bg: Treatment,
    uid: Option<u32>,
    clock: &Clock,
    body: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let hogs = Hogs::start_as(n, bg, uid);
    let t0 = clock.wait_measure();
    let u0 = hogs.units();
    let t1 = clock.wait_end();
    let u1 = hogs.units();
    let r = body();
    hogs.stop()?;
    r?;
    if n > 0 {
        m.set(
            "hog_units_per_s",
            (u1 - u0) as f64 / ((t1 - t0) as f64 / 1e9),
        );
    }
    Ok(())
}

pub(crate) const FRAME_PERIOD: u64 = 16_000_000;

/// A frame thread: absolute-time wakeups every `period` ns, `units` of
/// work per frame. Latency = wakeup time minus the requested time. A frame
/// is missed when its work ends after its period; whole periods skipped
/// because of an overrun count as missed too. Also records the share of a
/// CPU the thread got over the measured window.
pub(crate) fn frame_loop(c: &Clock, period: u64, units: u64) -> Measurement {
    let mut m = Measurement::default();
    let (mut frames, mut missed, mut skipped_all) = (0u64, 0u64, 0u64);
    let mut next = (mono_ns() / period + 1) * period;
    let (mut cpu0, mut t0) = (None, 0);
    let mut cpu1 = 0;
    while !c.stopped() {
        sleep_until(next);
        let woke = mono_ns();
        let measured = c.measuring(next);
        if measured {
            if cpu0.is_none() {
                cpu0 = Some(thread_cpu_ns());
                t0 = woke;
            }
            m.push_ns(woke.saturating_sub(next));
            frames += 1;
        }
        work_units(units, &c.stop);
        let done = mono_ns();
        if measured {
            cpu1 = thread_cpu_ns();
        }
        next += period;
        if done > next {
            let skipped = (done - next) / period;
            if measured {
                missed += 1 + skipped;
                skipped_all += skipped;
            }
            next += (skipped + 1) * period;
        }
    }
    // Periods: frames run plus periods skipped entirely.
    let periods = frames + skipped_all;
    m.set("frames", periods as f64);
    m.set("missed", missed as f64);
    m.set("missed_pct", 100.0 * missed as f64 / periods.max(1) as f64);
    if let Some(c0) = cpu0 {
        let wall = (c.end.max(t0) - t0) as f64;
        m.set("fg_cpu_share", (cpu1 - c0) as f64 / wall.max(1.0));
    }
    m
}

/// The frame thread: 25% of a CPU every 16 ms beside `hogs` hogs.
fn render(cfg: Config, hogs: usize, p: &Params) -> Result<Measurement> {
    let clock = Clock::new(p.timing.warmup, p.timing.secs);
    let c = clock.clone();
    let units = p.units(4.0);
    let frame = spawn("frame", cfg.fg, move || frame_loop(&c, FRAME_PERIOD, units));
    let mut hog_m = Measurement::default();
    let mut frame_m = None;
    with_hogs(&mut hog_m, hogs, cfg.bg, None, &clock, || {
        frame_m = Some(join(frame)?);
        Ok(())
    })?;
    let mut m = frame_m.expect("set by the body");
    m.metrics.extend(hog_m.metrics);
    let periods_per_s = 1e9 / FRAME_PERIOD as f64;
    let achieved = periods_per_s * (1.0 - m.get("missed_pct") / 100.0);
    // A frame loop skips what it missed: it never falls behind for good.
    let demand = 0.25 + p.calib.wake_cpu_ms() * 1e6 / FRAME_PERIOD as f64;
    m.rates(
        periods_per_s,
        achieved,
        100.0 * demand / fair_share(p.cpus, 1, hogs),
        Backlog::Bounded,
    );
    m.set("offered_guest_pct", 100.0 * demand / p.cpus as f64);
    m.set("fg_achieved_per_s", achieved);
    Ok(m)
}

/// How the dynamic scenario's workers switch between request handling and
/// batch work.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Switch {
    /// They do not switch (no hints, no knobs).
    None,
    /// `set_latency_class` to the fg class / the bg class (Normal if none).
    Hint(LatencyClass, LatencyClass),
    /// `sched_setattr`: the fg knob's own policy / the bg knob's.
    Syscall(SchedAttr, SchedAttr),
}

/// The system call a knob is as a role switch (nice and policy in one).
fn knob_attr(k: Knob) -> SchedAttr {
    match k {
        Knob::Nice(n) => SchedAttr::other(n),
        Knob::Slice(ns) => policy(libc::SCHED_OTHER, ns),
        Knob::Batch => policy(libc::SCHED_BATCH, 0),
        Knob::Idle => policy(libc::SCHED_IDLE, 0),
        Knob::None => SchedAttr::other(0),
    }
}

pub(crate) fn switch_of(cfg: Config) -> Switch {
    if cfg.fg.class.is_some() || cfg.bg.class.is_some() {
        return Switch::Hint(
            cfg.fg.class.unwrap_or(LatencyClass::Normal),
            cfg.bg.class.unwrap_or(LatencyClass::Normal),
        );
    }
    if cfg.fg.knob == Knob::None && cfg.bg.knob == Knob::None {
        return Switch::None;
    }
    // A knob contender with no bulk-phase knob of its own demotes the bulk
    // phase to SCHED_BATCH (the previous dynamic scenario's comparison).
    let bg = match cfg.bg.knob {
        Knob::None => Knob::Batch,
        k => k,
    };
    Switch::Syscall(knob_attr(cfg.fg.knob), knob_attr(bg))
}

#[inline(always)]
pub(crate) fn tsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    mono_ns()
}

/// A role switch, timed with the TSC. A system call refused (EPERM: an
/// unprivileged thread cannot raise its priority back) is counted, and the
/// thread carries on where it is: that is what such an app can do.
pub(crate) struct Switcher {
    sw: Switch,
    empty: u64,
    pub ticks: Vec<u64>,
    pub refused: u64,
}

impl Switcher {
    pub fn new(sw: Switch) -> Switcher {
        // The timer's own cost: an empty timed region.
        let mut empty = u64::MAX;
        for _ in 0..1000 {
            let a = tsc();
            let b = tsc();
            empty = empty.min(b - a);
        }
        Switcher {
            sw,
            empty,
            ticks: Vec::new(),
            refused: 0,
        }
    }

    pub fn switch(&mut self, fg: bool, measured: bool) -> Result<()> {
        let a = tsc();
        match self.sw {
            Switch::None => {}
            Switch::Hint(f, b) => scx_hints::set_latency_class(if fg { f } else { b }),
            Switch::Syscall(ref f, ref b) => {
                if sys::sched_setattr(if fg { f } else { b }) != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EPERM) {
                        bail!("sched_setattr: {e}");
                    }
                    if measured {
                        self.refused += 1;
                    }
                }
            }
        }
        let b = tsc();
        if measured && !matches!(self.sw, Switch::None) {
            self.ticks.push((b - a).saturating_sub(self.empty));
        }
        Ok(())
    }
}

/// A request a worker took: when it was sent, when the worker started it,
/// and whether it falls in the measured window.
pub(crate) struct Taken {
    pub sent: u64,
    pub start: u64,
    pub measured: bool,
}

/// A request worker's wait: switch up to the request role, then take the next
/// request and record its wait (sent to started) if it is measured. `None`
/// once the run is over. Requests still queued at the end are not drained: a
/// worker that fell behind would take as long as it is behind.
pub(crate) fn take_request(
    rx: &channel::Receiver<u64>,
    c: &Clock,
    s: &mut Switcher,
    m: &mut Measurement,
) -> Result<Option<Taken>> {
    loop {
        s.switch(true, c.measuring(mono_ns()))?;
        let sent = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(_) | Err(_) if c.stopped() => return Ok(None),
            Ok(ts) => ts,
            Err(channel::RecvTimeoutError::Timeout) => continue,
            Err(_) => return Ok(None),
        };
        let start = mono_ns();
        let measured = c.measuring(sent);
        if measured {
            m.push_ns(start.saturating_sub(sent));
        }
        return Ok(Some(Taken {
            sent,
            start,
            measured,
        }));
    }
}

/// The smallest work of any scenario, CPU-ms.
pub(crate) const REQ_WORK_MS: f64 = 0.05;
const BATCH_CHUNK_MS: f64 = 0.2;

/// Workers (one per CPU) each get a request every period. Per request a
/// worker switches to its request role, waits for and handles it (0.05
/// CPU-ms), switches to its batch role and does a 0.2 CPU-ms batch chunk:
/// two switches per request. Each switch is timed with the TSC (the
/// timer's own cost subtracted). One hog per CPU; the period makes the
/// workers' demand the level's share of what fairness gives them.
fn dynamic(cfg: Config, p: &Params) -> Result<Measurement> {
    let cpus = p.cpus;
    let sw = switch_of(cfg);
    let clock = Clock::new(p.timing.warmup, p.timing.secs);
    let demand_ms = REQ_WORK_MS + BATCH_CHUNK_MS + 2.0 * p.calib.wake_cpu_ms();
    let share = fair_share(cpus, cpus, cpus) / cpus as f64;
    let period = (demand_ms / (p.level.frac() * share) * 1e6) as u64;
    let (req_units, batch_units) = (p.units(REQ_WORK_MS), p.units(BATCH_CHUNK_MS));
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..cpus {
        let (tx, rx) = channel::unbounded::<u64>();
        senders.push(tx);
        let c = clock.clone();
        workers.push(spawn("dyn-worker", cfg.fg, move || -> Result<_> {
            let mut m = Measurement::default();
            let mut s = Switcher::new(sw);
            let mut batch = 0u64;
            let (t0, k0) = (mono_ns(), tsc());
            let mut cpu_in_window = 0u64;
            while let Some(Taken { measured, .. }) = take_request(&rx, &c, &mut s, &mut m)? {
                let cpu_a = thread_cpu_ns();
                work_units(req_units, &c.stop);
                s.switch(false, measured)?;
                work_units(batch_units, &c.stop);
                if measured {
                    batch += 1;
                    cpu_in_window += thread_cpu_ns() - cpu_a;
                }
            }
            let (t1, k1) = (mono_ns(), tsc());
            let tsc_per_ns = (k1 - k0) as f64 / (t1 - t0).max(1) as f64;
            let total: u64 = s.ticks.iter().sum();
            m.set("switches", s.ticks.len() as f64);
            m.set("switch_ns_total", total as f64 / tsc_per_ns);
            m.set("refused", s.refused as f64);
            s.ticks.sort_unstable();
            if let Some(&med) = s.ticks.get(s.ticks.len() / 2) {
                m.set("switch_ns_median", med as f64 / tsc_per_ns);
            }
            m.set("cpu_ns", cpu_in_window as f64);
            m.set("batch_chunks", batch as f64);
            Ok(m)
        }));
    }
    let c = clock.clone();
    let gen = spawn("dyn-gen", cfg.fg, move || {
        let mut next = mono_ns() + period;
        while !c.stopped() {
            sleep_until(next);
            for tx in &senders {
                let _ = tx.send(next);
            }
            next += period;
        }
        // Dropping the senders ends the workers.
    });
    let mut m = Measurement::default();
    let mut parts = Vec::new();
    with_hogs(&mut m, cpus, cfg.bg, None, &clock, || {
        join(gen)?;
        for w in workers {
            parts.push(join(w)??);
        }
        Ok(())
    })?;
    let secs = p.timing.secs;
    let (mut switches, mut switch_ns, mut cpu, mut batch) = (0.0, 0.0, 0.0, 0.0);
    let mut medians = Vec::new();
    for part in parts {
        if let Some(&x) = part.metrics.get("switch_ns_median") {
            medians.push(x);
        }
        switches += part.get("switches");
        switch_ns += part.get("switch_ns_total");
        cpu += part.get("cpu_ns");
        batch += part.get("batch_chunks");
        m.lat_us.extend(part.lat_us);
    }
    let offered = cpus as f64 * 1e9 / period as f64;
    m.rates(
        offered,
        m.lat_us.len() as f64 / secs,
        100.0 * p.level.frac(),
        Backlog::Grows,
    );
    m.set("switches_per_s", switches / secs);
    m.set("requests_per_s", m.lat_us.len() as f64 / secs);
    m.set("batch_chunks_per_s", batch / secs);
    if switches > 0.0 && !medians.is_empty() {
        // The typical switch (median over switches, median over workers):
        // a mean would include the times a worker was preempted inside the
        // system call, which is not CPU time it lost.
        medians.sort_by(f64::total_cmp);
        let per = crate::stats::quantile(&medians, 0.5);
        m.set("switch_ns", per);
        m.set("switch_ns_mean", switch_ns / switches);
        // CPU time lost at 10,000 switches per second, in percent.
        m.set("switch_cost_pct_at_10k", per * 10_000.0 / 1e9 * 100.0);
        // Wall time inside switches (preemption included) over CPU time used.
        m.set("switch_wall_pct", 100.0 * switch_ns / cpu.max(1.0));
    }
    Ok(m)
}

const RR_WORK_MS: f64 = 0.1;

/// One client/server pair per CPU over crossbeam channels: the client sends
/// a request, the server does 0.1 CPU-ms of work and replies, the client
/// records the round trip from when the request was due (the end of its
/// think time) and thinks again; the think time makes the pairs' demand the
/// level's share of what fairness gives them beside 2 hogs per CPU.
fn req_resp(cfg: Config, p: &Params) -> Result<Measurement> {
    let cpus = p.cpus;
    let clock = Clock::new(p.timing.warmup, p.timing.secs);
    let done = Arc::new(AtomicU64::new(0));
    let demand_ms = RR_WORK_MS + 2.0 * p.calib.wake_cpu_ms();
    // Each pair keeps about one thread runnable: a pair's share is one
    // thread's.
    let share = fair_share(cpus, cpus, 2 * cpus) / cpus as f64;
    let cycle_ms = demand_ms / (p.level.frac() * share);
    let think = ((cycle_ms - RR_WORK_MS - p.calib.wake_rtt_us / 1000.0).max(0.0) * 1e6) as u64;
    let work = p.units(RR_WORK_MS);
    let mut handles = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..cpus {
        let (req_tx, req_rx) = channel::bounded::<u64>(1);
        let (rep_tx, rep_rx) = channel::bounded::<u64>(1);
        let c = clock.clone();
        servers.push(spawn("rr-server", cfg.fg, move || {
            while let Ok(ts) = req_rx.recv() {
                work_units(work, &c.stop);
                if rep_tx.send(ts).is_err() {
                    break;
                }
            }
        }));
        let c = clock.clone();
        let done = done.clone();
        handles.push(spawn("rr-client", cfg.fg, move || {
            let mut m = Measurement::default();
            // The round trip counts from when the request was due (the end
            // of the think time), so a client that wakes late from its
            // think pays for it: measured from the send, the wait for a
            // CPU after the timer would be left out.
            let mut due = mono_ns();
            while !c.stopped() {
                sleep_until(due);
                if req_tx.send(due).is_err() || rep_rx.recv().is_err() {
                    break;
                }
                let t1 = mono_ns();
                if c.measuring(due) {
                    m.push_ns(t1.saturating_sub(due));
                    done.fetch_add(1, Ordering::Relaxed);
                }
                due = t1 + think;
            }
            m
        }));
    }
    let mut m = Measurement::default();
    let mut parts = Vec::new();
    with_hogs(&mut m, 2 * cpus, cfg.bg, None, &clock, || {
        for h in handles {
            parts.push(join(h)?);
        }
        for s in servers {
            join(s)?;
        }
        Ok(())
    })?;
    for part in parts {
        m.lat_us.extend(part.lat_us);
    }
    let rps = done.load(Ordering::Relaxed) as f64 / p.timing.secs;
    m.set("requests_per_s", rps);
    // A closed loop: at most one request per cycle per pair is offered.
    let offered = cpus as f64 * 1e3 / cycle_ms;
    m.rates(offered, rps, 100.0 * p.level.frac(), Backlog::Bounded);
    m.set("fg_achieved_per_s", rps);
    Ok(m)
}

const WAKE_WORK_MS: f64 = 0.2;

/// schbench-style: a messenger wakes 2 workers per CPU every period
/// (absolute time) through their channels; each worker records the time
/// from the round's due time to running and does 0.2 CPU-ms of work. 1 hog
/// per CPU.
fn wakeup(cfg: Config, p: &Params) -> Result<Measurement> {
    let cpus = p.cpus;
    let clock = Clock::new(p.timing.warmup, p.timing.secs);
    let workers_n = 2 * cpus;
    let demand_ms = workers_n as f64 * (WAKE_WORK_MS + p.calib.wake_cpu_ms());
    let share = fair_share(cpus, workers_n, cpus);
    let period = (demand_ms / (p.level.frac() * share) * 1e6) as u64;
    let work = p.units(WAKE_WORK_MS);
    let handled = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..workers_n {
        let (tx, rx) = channel::unbounded::<u64>();
        senders.push(tx);
        let c = clock.clone();
        let handled = handled.clone();
        workers.push(spawn("wk-worker", cfg.fg, move || {
            let mut m = Measurement::default();
            while let Ok(ts) = rx.recv() {
                let now = mono_ns();
                if c.measuring(ts) {
                    m.push_ns(now.saturating_sub(ts));
                }
                // The service rate: wakeups handled in the window, whenever
                // they were due (a steady delay is not falling behind).
                if c.measuring(now) {
                    handled.fetch_add(1, Ordering::Relaxed);
                }
                // After the stop this returns at once: the backlog drains,
                // each round counted with the wait it had (a lower bound).
                work_units(work, &c.stop);
            }
            m
        }));
    }
    let c = clock.clone();
    let messenger = spawn("wk-messenger", cfg.fg, move || {
        let mut next = mono_ns() + period;
        let mut rounds = 0u64;
        while !c.stopped() {
            sleep_until(next);
            // Every round is sent, late or not, stamped with its due time:
            // a messenger that runs late delays the workers as much as a
            // worker that waits, and skipping its late rounds would offer
            // less load to the scheduler that delays it.
            for tx in &senders {
                let _ = tx.send(next);
            }
            if c.measuring(next) {
                rounds += 1;
            }
            next += period;
        }
        // Rounds that fell due in the window but were never sent are owed
        // too: sent now, they count with the wait they had.
        // (rounds/s counts the rounds sent before the stop: the due rate
        // less what the messenger still owed then.)
        while next < c.end {
            for tx in &senders {
                let _ = tx.send(next);
            }
            next += period;
        }
        rounds
    });
    let mut m = Measurement::default();
    let mut parts = Vec::new();
    let mut rounds = 0;
    with_hogs(&mut m, cpus, cfg.bg, None, &clock, || {
        rounds = join(messenger)?;
        for w in workers {
            parts.push(join(w)?);
        }
        Ok(())
    })?;
    for part in parts {
        m.lat_us.extend(part.lat_us);
    }
    let secs = p.timing.secs;
    m.set("rounds_per_s", rounds as f64 / secs);
    m.rates(
        workers_n as f64 * 1e9 / period as f64,
        handled.load(Ordering::Relaxed) as f64 / secs,
        100.0 * p.level.frac(),
        Backlog::Grows,
    );
    Ok(m)
}
