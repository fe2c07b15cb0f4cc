//! `hint-cost`: what setting a hint costs next to the system calls it
//! replaces. Run it through `cargo xtask bench hint-cost` (root).

use anyhow::{bail, Context, Result};
use scx_hints_bench::hint_cost::{self, Options};

const USAGE: &str = "\
usage: hint-cost [--quick] [--cpu N | --no-pin]

Measures, in one run: a hint set (registered in a pinned task-storage map,
and with no map), sched_setattr and setpriority on the calling thread, a
task-storage map update through a cached pidfd, pidfd_open, and a fresh
thread's first hint set. Prints a table of medians and spread, then
`ratio sched_setattr/hint_set: X` and `ratio map_update/hint_set: Y`.
Needs root (loads a BPF program on the host kernel).

  --quick    a few seconds, rougher figures (smoke tests)
  --cpu N    pin every benchmark thread to CPU N (default: the last CPU)
  --no-pin   do not pin";

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("hint-cost: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<()> {
    let mut quick = false;
    let mut cpu = Some(scx_hints_bench::env::cpus() - 1);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--no-pin" => cpu = None,
            "--cpu" => {
                let v = args.next().context("--cpu needs a CPU number")?;
                cpu = Some(v.parse().with_context(|| format!("--cpu {v}"))?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    if let Some(c) = cpu {
        let n = scx_hints_bench::env::cpus();
        if c >= n {
            bail!("--cpu {c}: this machine has CPUs 0 to {}", n - 1);
        }
    }
    let opts = if quick {
        Options::quick(cpu)
    } else {
        Options::full(cpu)
    };
    let report = hint_cost::run(&opts)?;
    report.print(&mut std::io::stdout().lock())?;
    Ok(())
}
