//! Calibration: how much work the machine does, measured where the
//! scenarios run, so that their load means the same on a fast host and on a
//! slow one. A scenario asks for "x% of a CPU-ms" and "y% of the guest's
//! capacity"; the calibration turns that into work-loop units and periods.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::workload::{mono_ns, thread_cpu_ns, work_units};

/// What one calibration measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Calibration {
    /// Work-loop units per CPU-millisecond with every vCPU busy, median
    /// over the vCPUs: the unit scenarios size their work in.
    pub units_per_cpu_ms: f64,
    /// The same, per vCPU (one pinned thread each, all at once).
    pub per_cpu: Vec<f64>,
    /// One vCPU busy, the others idle.
    #[serde(default)]
    pub alone_units_per_cpu_ms: f64,
    /// A wakeup round trip between two threads (wall time, median of
    /// batches), microseconds.
    pub wake_rtt_us: f64,
    /// CPU time a round trip costs both threads together, microseconds:
    /// the overhead every wakeup adds to a scenario's demand.
    pub wake_cpu_us: f64,
}

impl Calibration {
    /// Work-loop units for `cpu_ms` milliseconds of one vCPU.
    pub fn units(&self, cpu_ms: f64) -> u64 {
        (cpu_ms * self.units_per_cpu_ms).round().max(1.0) as u64
    }

    /// Relative error of [`Calibration::units`] for `cpu_ms` (0.1 = the
    /// work done is 10% more or less than asked): units are whole.
    pub fn sizing_error(&self, cpu_ms: f64) -> f64 {
        let want = cpu_ms * self.units_per_cpu_ms;
        if want <= 0.0 {
            return f64::INFINITY;
        }
        (self.units(cpu_ms) as f64 - want).abs() / want
    }

    /// CPU-milliseconds one wakeup costs (half a round trip).
    pub fn wake_cpu_ms(&self) -> f64 {
        self.wake_cpu_us / 2000.0
    }

    /// Relative change of capacity from `self` to `later` (0.1 = 10%).
    pub fn drift(&self, later: &Calibration) -> f64 {
        if self.units_per_cpu_ms <= 0.0 {
            return f64::NAN;
        }
        later.units_per_cpu_ms / self.units_per_cpu_ms - 1.0
    }

    pub fn line(&self) -> String {
        format!(
            "{:.1} work units per CPU-ms with all vCPUs busy (per vCPU: {}; one vCPU \
             alone: {:.1}), wakeup round trip {:.1} us wall, {:.1} us CPU",
            self.units_per_cpu_ms,
            self.per_cpu
                .iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.alone_units_per_cpu_ms,
            self.wake_rtt_us,
            self.wake_cpu_us
        )
    }
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays inside it
    // for cpu < CPU_SETSIZE; sched_setaffinity(0) pins the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Units per CPU-ms of one thread pinned to each CPU in `cpus`, all
/// running at once (started together), over about `ms` of CPU each.
fn rates_on(cpus: &[usize], ms: f64) -> Vec<f64> {
    let start = Arc::new(Barrier::new(cpus.len()));
    let handles: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            let start = start.clone();
            std::thread::spawn(move || {
                pin_to(cpu);
                let stop = AtomicBool::new(false);
                start.wait();
                // Warm up, then batches of about 1 CPU-ms.
                let c0 = thread_cpu_ns();
                let mut n = 0u64;
                while thread_cpu_ns() - c0 < 2_000_000 {
                    n += work_units(1024, &stop);
                }
                let per_ms = (n as f64 / 2.0).max(1.0);
                let mut rates = Vec::new();
                let end = thread_cpu_ns() + (ms * 1e6) as u64;
                while thread_cpu_ns() < end {
                    let a = thread_cpu_ns();
                    let k = work_units(per_ms as u64, &stop);
                    let b = thread_cpu_ns();
                    if b > a {
                        rates.push(k as f64 / ((b - a) as f64 / 1e6));
                    }
                }
                median(&mut rates)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or(f64::NAN))
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Ping-pong between two threads over a Unix datagram socket pair (each
/// side blocks in the kernel, so every message is a real wakeup): (wall us,
/// CPU us of both threads) per round trip; wall is the median of batches.
fn round_trip(rounds: usize) -> Result<(f64, f64)> {
    let (a, b) = UnixDatagram::pair()?;
    b.set_read_timeout(Some(Duration::from_secs(5)))?;
    a.set_read_timeout(Some(Duration::from_secs(5)))?;
    let echo = std::thread::spawn(move || -> u64 {
        let c0 = thread_cpu_ns();
        let mut buf = [0u8; 8];
        while let Ok(n) = b.recv(&mut buf) {
            if n == 0 || b.send(&buf[..n]).is_err() {
                break;
            }
        }
        thread_cpu_ns() - c0
    });
    let batch = 50;
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    let mut my_cpu = 0u64;
    let mut buf = [0u8; 8];
    for _ in 0..rounds / batch {
        let (t0, c0) = (mono_ns(), thread_cpu_ns());
        for i in 0..batch as u64 {
            a.send(&i.to_ne_bytes())?;
            a.recv(&mut buf)?;
        }
        let (t1, c1) = (mono_ns(), thread_cpu_ns());
        wall.push((t1 - t0) as f64 / batch as f64 / 1000.0);
        cpu.push((c1 - c0) as f64 / batch as f64 / 1000.0);
        my_cpu += c1 - c0;
    }
    // An empty datagram ends the echo thread.
    a.send(&[])?;
    let echo_cpu = echo.join().unwrap_or(0);
    // Both sides do the same work per round trip: the waker's median per
    // batch, scaled by the two sides' total ratio, resists a batch that a
    // host hiccup stretched.
    let both_over_mine = (my_cpu + echo_cpu) as f64 / my_cpu.max(1) as f64;
    Ok((median(&mut wall), median(&mut cpu) * both_over_mine))
}

/// Measures the machine (about a second plus the round trips). The rate is
/// measured with every vCPU busy at once: an emulated guest whose vCPUs
/// share host threads does less per CPU-ms when all of them run, and a
/// loaded guest is what the scenarios measure. The rate of one vCPU with
/// the others idle is recorded beside it.
pub fn measure(cpus: usize) -> Result<Calibration> {
    let all: Vec<usize> = (0..cpus).collect();
    let per_cpu = rates_on(&all, 300.0);
    let alone = rates_on(&[0], 200.0)[0];
    let (wake_rtt_us, wake_cpu_us) = round_trip(2000)?;
    let mut v = per_cpu.clone();
    Ok(Calibration {
        units_per_cpu_ms: median(&mut v),
        per_cpu,
        alone_units_per_cpu_ms: alone,
        wake_rtt_us,
        wake_cpu_us,
    })
}
