//! `cargo xtask demo`: what hints buy, shown. A frame thread (4 ms of CPU
//! every 16 ms) runs beside two CPU hogs per CPU under the kernel's default
//! scheduler, under scx_hinted with no thread hinted, and under scx_hinted
//! with the frame thread hinted interactive and the hogs background; the
//! table compares its wake-to-run latency and missed frames. Runs on the
//! host if it has sched_ext (as root), else in one sched_ext guest boot.

use crate::bench;
use crate::util::step;
use anyhow::Result;

pub fn run() -> Result<i32> {
    let start = std::time::Instant::now();
    let outcome = bench::run_suite("demo", &bench::Published::none())?;
    step(format!(
        "demo results in {} ({:.0} s in all)",
        outcome.dir.display(),
        start.elapsed().as_secs_f64()
    ));
    let table = bench::report(&outcome, &["--demo"])?;
    println!("\n{table}");
    Ok(if outcome.suite_ok { 0 } else { 1 })
}
