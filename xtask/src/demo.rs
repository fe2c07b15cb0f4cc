//! `cargo xtask demo`: what hints buy, shown where only the application
//! knows who should wait. A game's render thread (60% of a CPU every 16 ms
//! frame) runs beside the same app's bursty background threads, offered
//! 120% of the guest's calibrated capacity, all as an unprivileged user:
//! under the kernel's default scheduler, under it with each knob such a
//! user can apply (a slice request for the render thread; nice 10,
//! SCHED_BATCH or SCHED_IDLE for the background threads), under scx_hinted
//! without and with hints, and under the published sched_ext schedulers.
//! The table compares the render thread's wake-to-run latency, its missed
//! frames and the background work done. Runs on the host if it has
//! sched_ext (as root), else in one sched_ext guest boot. The published
//! schedulers are built from crates.io the first time (several minutes,
//! once; `cargo xtask bench sched` shares them).

use crate::bench;
use crate::util::step;
use anyhow::Result;

pub fn run() -> Result<i32> {
    let start = std::time::Instant::now();
    let pubs = bench::Published::build();
    let outcome = bench::run_suite("demo", &pubs, &[])?;
    step(format!(
        "demo results in {} ({:.0} s in all)",
        outcome.dir.display(),
        start.elapsed().as_secs_f64()
    ));
    let table = bench::report(&outcome, &["--demo"])?;
    println!("\n{table}");
    for (name, why) in &pubs.missing {
        println!("not run: {name}: {why}");
    }
    Ok(if outcome.suite_ok { 0 } else { 1 })
}
