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

use super::workload::{
    join, mono_ns, policy, sleep_until, spawn, work_cpu, Clock, Config, Hogs, Knob, Treatment,
};
use crate::sys::{self, SchedAttr};

/// The scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// A periodic frame thread (4 ms of CPU every 16 ms) beside 2 hogs per CPU.
    Render,
    /// The frame thread alone on an idle machine: the floor.
    RenderIdle,
    /// Request handlers that switch between interactive and batch work
    /// thousands of times per second, beside 1 hog per CPU.
    Dynamic,
    /// Client/server pairs over crossbeam channels beside 2 hogs per CPU.
    ReqResp,
    /// schbench-style: a messenger wakes 2 workers per CPU every 5 ms,
    /// beside 1 hog per CPU.
    Wakeup,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Render,
        Scenario::RenderIdle,
        Scenario::Dynamic,
        Scenario::ReqResp,
        Scenario::Wakeup,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Render => "render",
            Scenario::RenderIdle => "render-idle",
            Scenario::Dynamic => "dynamic",
            Scenario::ReqResp => "req-resp",
            Scenario::Wakeup => "wakeup",
        }
    }

    /// What its latency samples measure.
    pub fn latency_name(self) -> &'static str {
        match self {
            Scenario::Render | Scenario::RenderIdle => "frame wake-to-run",
            Scenario::Dynamic => "request wait (queued to handled)",
            Scenario::ReqResp => "request round trip",
            Scenario::Wakeup => "worker wake-to-run",
        }
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
    fn set(&mut self, k: &str, v: f64) {
        self.metrics.insert(k.to_string(), v);
    }

    fn push_ns(&mut self, ns: u64) {
        self.lat_us.push((ns as f64 / 1000.0) as f32);
    }

    /// Adds the latency percentiles to the metrics.
    fn finish(mut self) -> Self {
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

/// Timing of a run: `warmup` seconds not measured, then `secs` measured.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub warmup: f64,
    pub secs: f64,
}

pub fn run(s: Scenario, cfg: Config, t: Timing, cpus: usize) -> Result<Measurement> {
    let m = match s {
        Scenario::Render => render(cfg, 2 * cpus, t)?,
        Scenario::RenderIdle => render(Config::default(), 0, t)?,
        Scenario::Dynamic => dynamic(cfg, cpus, t)?,
        Scenario::ReqResp => req_resp(cfg, cpus, t)?,
        Scenario::Wakeup => wakeup(cfg, cpus, t)?,
    };
    Ok(m.finish())
}

/// Runs `hogs` with `bg` while `body` runs, and records their throughput
/// over the measured window.
fn with_hogs(
    m: &mut Measurement,
    n: usize,
    bg: Treatment,
    clock: &Clock,
    body: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let hogs = Hogs::start(n, bg);
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

const FRAME_PERIOD: u64 = 16_000_000;
const FRAME_WORK: u64 = 4_000_000;

/// A frame thread: absolute-time wakeups every 16 ms, 4 ms of CPU work per
/// frame. Latency = wakeup time minus the requested time. A frame is missed
/// when its work ends after its period; whole periods skipped because of an
/// overrun count as missed too.
fn render(cfg: Config, hogs: usize, t: Timing) -> Result<Measurement> {
    let clock = Clock::new(t.warmup, t.secs);
    let c = clock.clone();
    let frame = spawn("frame", cfg.fg, move || {
        let mut m = Measurement::default();
        let (mut frames, mut missed, mut skipped_all) = (0u64, 0u64, 0u64);
        let mut next = (mono_ns() / FRAME_PERIOD + 1) * FRAME_PERIOD;
        while !c.stopped() {
            sleep_until(next);
            let woke = mono_ns();
            let measured = c.measuring(next);
            if measured {
                m.push_ns(woke.saturating_sub(next));
                frames += 1;
            }
            work_cpu(FRAME_WORK, &c.stop);
            let done = mono_ns();
            next += FRAME_PERIOD;
            if done > next {
                let skipped = (done - next) / FRAME_PERIOD;
                if measured {
                    missed += 1 + skipped;
                    skipped_all += skipped;
                }
                next += (skipped + 1) * FRAME_PERIOD;
            }
        }
        // Periods: frames run plus periods skipped entirely.
        let periods = frames + skipped_all;
        m.set("frames", periods as f64);
        m.set("missed", missed as f64);
        m.set("missed_pct", 100.0 * missed as f64 / periods.max(1) as f64);
        m
    });
    let mut hog_m = Measurement::default();
    let mut frame_m = None;
    with_hogs(&mut hog_m, hogs, cfg.bg, &clock, || {
        frame_m = Some(join(frame)?);
        Ok(())
    })?;
    let mut m = frame_m.expect("set by the body");
    m.metrics.extend(hog_m.metrics);
    Ok(m)
}

/// How the dynamic scenario's workers switch between request handling and
/// batch work.
#[derive(Clone, Copy, Debug)]
enum Switch {
    /// They do not switch (no hints, no knobs).
    None,
    /// `set_latency_class` interactive / batch: a store.
    Hint,
    /// `sched_setattr`: the fg knob's own policy / SCHED_BATCH.
    Syscall(SchedAttr, SchedAttr),
}

fn switch_of(cfg: Config) -> Switch {
    if cfg.fg.class.is_some() {
        return Switch::Hint;
    }
    if cfg.fg.knob == Knob::None && cfg.bg.knob == Knob::None {
        return Switch::None;
    }
    let fg = match cfg.fg.knob {
        Knob::Nice(n) => SchedAttr::other(n),
        Knob::Slice(ns) => policy(libc::SCHED_OTHER, ns),
        _ => SchedAttr::other(0),
    };
    Switch::Syscall(fg, policy(libc::SCHED_BATCH, 0))
}

#[inline(always)]
fn tsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    mono_ns()
}

const REQ_PERIOD: u64 = 1_000_000;
const REQ_WORK: u64 = 50_000;
const BATCH_CHUNK: u64 = 200_000;

/// Workers (one per CPU) each get a request every millisecond. Per request
/// a worker switches to interactive, waits for and handles it (50 us of
/// CPU), switches to batch and does a 200 us batch chunk: two switches per
/// request. Each switch is timed with the TSC (the timer's own cost
/// subtracted); the switch cost is that time over the CPU time used.
fn dynamic(cfg: Config, cpus: usize, t: Timing) -> Result<Measurement> {
    let sw = switch_of(cfg);
    let clock = Clock::new(t.warmup, t.secs);
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    let fg_start = Treatment {
        class: cfg.fg.class,
        knob: cfg.fg.knob,
    };
    for _ in 0..cpus {
        let (tx, rx) = channel::unbounded::<u64>();
        senders.push(tx);
        let c = clock.clone();
        workers.push(spawn("dyn-worker", fg_start, move || -> Result<_> {
            let mut m = Measurement::default();
            // The timer's own cost: an empty timed region.
            let mut empty = u64::MAX;
            for _ in 0..1000 {
                let a = tsc();
                let b = tsc();
                empty = empty.min(b - a);
            }
            let mut switch_ticks: Vec<u64> = Vec::new();
            let mut batch = 0u64;
            let mut do_switch = |interactive: bool, measured: bool| -> Result<()> {
                let a = tsc();
                match sw {
                    Switch::None => {}
                    Switch::Hint => scx_hints::set_latency_class(if interactive {
                        LatencyClass::Interactive
                    } else {
                        LatencyClass::Batch
                    }),
                    Switch::Syscall(ref fg, ref bg) => {
                        if sys::sched_setattr(if interactive { fg } else { bg }) != 0 {
                            bail!("sched_setattr: {}", std::io::Error::last_os_error());
                        }
                    }
                }
                let b = tsc();
                if measured && !matches!(sw, Switch::None) {
                    switch_ticks.push((b - a).saturating_sub(empty));
                }
                Ok(())
            };
            let (t0, c0, k0) = (mono_ns(), super::workload::thread_cpu_ns(), tsc());
            let mut cpu_in_window = 0u64;
            loop {
                let measured = c.measuring(mono_ns());
                do_switch(true, measured)?;
                let sent = match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(ts) => ts,
                    Err(channel::RecvTimeoutError::Timeout) if !c.stopped() => continue,
                    Err(_) => break,
                };
                let start = mono_ns();
                let measured = c.measuring(sent);
                if measured {
                    m.push_ns(start.saturating_sub(sent));
                }
                let cpu_a = super::workload::thread_cpu_ns();
                work_cpu(REQ_WORK, &c.stop);
                do_switch(false, measured)?;
                work_cpu(BATCH_CHUNK, &c.stop);
                if measured {
                    batch += 1;
                    cpu_in_window += super::workload::thread_cpu_ns() - cpu_a;
                }
            }
            let (t1, c1, k1) = (mono_ns(), super::workload::thread_cpu_ns(), tsc());
            let _ = c1 - c0;
            let tsc_per_ns = (k1 - k0) as f64 / (t1 - t0).max(1) as f64;
            let total: u64 = switch_ticks.iter().sum();
            m.set("switches", switch_ticks.len() as f64);
            m.set("switch_ns_total", total as f64 / tsc_per_ns);
            switch_ticks.sort_unstable();
            if let Some(&med) = switch_ticks.get(switch_ticks.len() / 2) {
                m.set("switch_ns_median", med as f64 / tsc_per_ns);
            }
            m.set("cpu_ns", cpu_in_window as f64);
            m.set("batch_chunks", batch as f64);
            Ok(m)
        }));
    }
    let c = clock.clone();
    let gen = spawn("dyn-gen", cfg.fg, move || {
        let mut next = mono_ns() + REQ_PERIOD;
        while !c.stopped() {
            sleep_until(next);
            for tx in &senders {
                let _ = tx.send(next);
            }
            next += REQ_PERIOD;
        }
        // Dropping the senders ends the workers.
    });
    let mut m = Measurement::default();
    let mut parts = Vec::new();
    with_hogs(&mut m, cpus, cfg.bg, &clock, || {
        join(gen)?;
        for w in workers {
            parts.push(join(w)??);
        }
        Ok(())
    })?;
    let (mut switches, mut switch_ns, mut cpu, mut batch) = (0.0, 0.0, 0.0, 0.0);
    let mut medians = Vec::new();
    for p in parts {
        if let Some(&x) = p.metrics.get("switch_ns_median") {
            medians.push(x);
        }
        switches += p.metrics["switches"];
        switch_ns += p.metrics["switch_ns_total"];
        cpu += p.metrics["cpu_ns"];
        batch += p.metrics["batch_chunks"];
        m.lat_us.extend(p.lat_us);
    }
    m.set("switches_per_s", switches / t.secs);
    m.set("requests_per_s", m.lat_us.len() as f64 / t.secs);
    m.set("batch_chunks_per_s", batch / t.secs);
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

const RR_THINK: u64 = 1_000_000;
const RR_WORK: u64 = 100_000;

/// One client/server pair per CPU over crossbeam channels: the client sends
/// a request, the server does 100 us of CPU work and replies, the client
/// records the round trip and thinks for 1 ms.
fn req_resp(cfg: Config, cpus: usize, t: Timing) -> Result<Measurement> {
    let clock = Clock::new(t.warmup, t.secs);
    let done = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..cpus {
        let (req_tx, req_rx) = channel::bounded::<u64>(1);
        let (rep_tx, rep_rx) = channel::bounded::<u64>(1);
        let c = clock.clone();
        servers.push(spawn("rr-server", cfg.fg, move || {
            while let Ok(ts) = req_rx.recv() {
                work_cpu(RR_WORK, &c.stop);
                if rep_tx.send(ts).is_err() {
                    break;
                }
            }
        }));
        let c = clock.clone();
        let done = done.clone();
        handles.push(spawn("rr-client", cfg.fg, move || {
            let mut m = Measurement::default();
            while !c.stopped() {
                let t0 = mono_ns();
                if req_tx.send(t0).is_err() || rep_rx.recv().is_err() {
                    break;
                }
                let t1 = mono_ns();
                if c.measuring(t0) {
                    m.push_ns(t1 - t0);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                sleep_until(t1 + RR_THINK);
            }
            m
        }));
    }
    let mut m = Measurement::default();
    let mut parts = Vec::new();
    with_hogs(&mut m, 2 * cpus, cfg.bg, &clock, || {
        for h in handles {
            parts.push(join(h)?);
        }
        for s in servers {
            join(s)?;
        }
        Ok(())
    })?;
    for p in parts {
        m.lat_us.extend(p.lat_us);
    }
    m.set(
        "requests_per_s",
        done.load(Ordering::Relaxed) as f64 / t.secs,
    );
    Ok(m)
}

const WAKE_PERIOD: u64 = 5_000_000;
const WAKE_WORK: u64 = 200_000;

/// schbench-style: a messenger wakes 2 workers per CPU every 5 ms (absolute
/// time) through their channels; each worker records the time from the
/// message to running and does 200 us of CPU work. 1 hog per CPU.
fn wakeup(cfg: Config, cpus: usize, t: Timing) -> Result<Measurement> {
    let clock = Clock::new(t.warmup, t.secs);
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..2 * cpus {
        let (tx, rx) = channel::unbounded::<u64>();
        senders.push(tx);
        let c = clock.clone();
        workers.push(spawn("wk-worker", cfg.fg, move || {
            let mut m = Measurement::default();
            while let Ok(ts) = rx.recv() {
                let now = mono_ns();
                if c.measuring(ts) {
                    m.push_ns(now.saturating_sub(ts));
                }
                work_cpu(WAKE_WORK, &c.stop);
            }
            m
        }));
    }
    let c = clock.clone();
    let messenger = spawn("wk-messenger", cfg.fg, move || {
        let mut next = mono_ns() + WAKE_PERIOD;
        let mut rounds = 0u64;
        while !c.stopped() {
            sleep_until(next);
            let ts = mono_ns();
            for tx in &senders {
                let _ = tx.send(ts);
            }
            if c.measuring(ts) {
                rounds += 1;
            }
            next += WAKE_PERIOD;
            let now = mono_ns();
            if now > next {
                next += (now - next) / WAKE_PERIOD * WAKE_PERIOD + WAKE_PERIOD;
            }
        }
        rounds
    });
    let mut m = Measurement::default();
    let mut parts = Vec::new();
    let mut rounds = 0;
    with_hogs(&mut m, cpus, cfg.bg, &clock, || {
        rounds = join(messenger)?;
        for w in workers {
            parts.push(join(w)?);
        }
        Ok(())
    })?;
    for p in parts {
        m.lat_us.extend(p.lat_us);
    }
    m.set("rounds_per_s", rounds as f64 / t.secs);
    Ok(m)
}
