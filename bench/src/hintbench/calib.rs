//! Calibration: how much work the machine does, measured where the
//! scenarios run, so that their load means the same on a fast host and on a
//! slow one. A scenario asks for "x% of a CPU-ms" and "y% of the guest's
//! capacity"; the calibration turns that into work-loop units and periods.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Result;
use crossbeam::channel;
use serde::{Deserialize, Serialize};

use super::workload::{mono_ns, thread_cpu_ns, work_units};

/// What one calibration measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Calibration {
    /// Work-loop units per CPU-millisecond, median over the vCPUs.
    pub units_per_cpu_ms: f64,
    /// The same, per vCPU (each measured alone, pinned).
    pub per_cpu: Vec<f64>,
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
            "{:.1} work units per CPU-ms (per vCPU: {}), wakeup round trip {:.1} us \
             wall, {:.1} us CPU",
            self.units_per_cpu_ms,
            self.per_cpu
                .iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
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

/// Units per CPU-ms of one thread pinned to `cpu`, over about `ms` of CPU.
fn rate_on(cpu: usize, ms: f64) -> f64 {
    std::thread::spawn(move || {
        pin_to(cpu);
        let stop = AtomicBool::new(false);
        // Warm up, then size batches of about 1 CPU-ms.
        let c0 = thread_cpu_ns();
        let mut n = 0u64;
        while thread_cpu_ns() - c0 < 2_000_000 {
            n += work_units(16, &stop);
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
    .join()
    .unwrap_or(f64::NAN)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Ping-pong between two threads over channels: (wall us, CPU us) per
/// round trip, medians over batches.
fn round_trip(rounds: usize) -> Result<(f64, f64)> {
    let (ping_tx, ping_rx) = channel::bounded::<u64>(1);
    let (pong_tx, pong_rx) = channel::bounded::<u64>(1);
    let echo = std::thread::spawn(move || -> u64 {
        let c0 = thread_cpu_ns();
        while let Ok(x) = ping_rx.recv() {
            if pong_tx.send(x).is_err() {
                break;
            }
        }
        thread_cpu_ns() - c0
    });
    let batch = 50;
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..rounds / batch {
        let (t0, c0) = (mono_ns(), thread_cpu_ns());
        for i in 0..batch {
            ping_tx.send(i as u64)?;
            pong_rx.recv_timeout(Duration::from_secs(5))?;
        }
        let (t1, c1) = (mono_ns(), thread_cpu_ns());
        wall.push((t1 - t0) as f64 / batch as f64 / 1000.0);
        cpu.push((c1 - c0) as f64 / batch as f64 / 1000.0);
    }
    drop(ping_tx);
    let echo_cpu = echo.join().unwrap_or(0);
    let n = (rounds / batch * batch).max(1) as f64;
    // The echo thread's CPU is known only in total: add its mean to the
    // waker's per-batch median.
    let cpu_med = median(&mut cpu) + echo_cpu as f64 / n / 1000.0;
    Ok((median(&mut wall), cpu_med))
}

/// Measures the machine (about a second per vCPU plus the round trips).
pub fn measure(cpus: usize) -> Result<Calibration> {
    let per_cpu: Vec<f64> = (0..cpus).map(|c| rate_on(c, 200.0)).collect();
    let (wake_rtt_us, wake_cpu_us) = round_trip(2000)?;
    let mut v = per_cpu.clone();
    Ok(Calibration {
        units_per_cpu_ms: median(&mut v),
        per_cpu,
        wake_rtt_us,
        wake_cpu_us,
    })
}
