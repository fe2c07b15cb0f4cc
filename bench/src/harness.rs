//! A small measurement harness: threads pinned to one CPU that run jobs on
//! request, batches timed with the monotonic clock, and batch sizes
//! calibrated to a target duration.

use anyhow::{bail, Context, Result};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and
    // sched_setaffinity only touch the set we pass.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        bail!(
            "cannot pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread that runs the closures it is given, one at a time, pinned to a
/// CPU. Per-thread state (its hint block, its pidfd) lives as long as it.
pub struct Worker {
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<JoinHandle<()>>,
    name: String,
}

impl Worker {
    pub fn spawn(name: &str, cpu: Option<usize>) -> Result<Worker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let pinned = cpu.map_or(Ok(()), pin_to_cpu);
                let ok = pinned.is_ok();
                let _ = ready_tx.send(pinned);
                if ok {
                    for job in rx {
                        job();
                    }
                }
            })
            .with_context(|| format!("spawning the {name} thread"))?;
        ready_rx
            .recv()
            .context("the worker thread died before starting")??;
        Ok(Worker {
            tx: Some(tx),
            handle: Some(handle),
            name: name.into(),
        })
    }

    /// Runs `f` on the worker and returns its result.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (rtx, rrx) = mpsc::sync_channel(1);
        self.tx
            .as_ref()
            .expect("worker is running")
            .send(Box::new(move || {
                let _ = rtx.send(f());
            }))
            .unwrap_or_else(|_| panic!("the {} thread is gone", self.name));
        rrx.recv()
            .unwrap_or_else(|_| panic!("the {} thread panicked", self.name))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A loop under test: runs its operation `n` times.
pub type Body = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// Runs `n` iterations and returns the mean time of one, in ns.
pub fn time_batch(body: &dyn Fn(u64), n: u64) -> f64 {
    let t = Instant::now();
    body(n);
    t.elapsed().as_nanos() as f64 / n as f64
}

/// The number of iterations that takes about `target`: doubles until a
/// batch takes a tenth of it (which also warms caches and branch predictors
/// up), then refines with three full batches, trusting the fastest (a
/// preempted batch only makes later samples shorter).
pub fn calibrate(body: &dyn Fn(u64), target: Duration) -> u64 {
    let target = target.as_nanos() as f64;
    let mut n: u64 = 1;
    let mut per = loop {
        let per = time_batch(body, n);
        if per * n as f64 >= target / 10.0 || n >= 1 << 40 {
            break per;
        }
        n *= 2;
    };
    for _ in 0..3 {
        n = ((target / per.max(0.01)) as u64).max(1);
        per = per.min(time_batch(body, n));
    }
    ((target / per.max(0.01)) as u64).max(1)
}
