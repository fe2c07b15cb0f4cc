//! `cargo xtask bench`: builds a benchmark in release mode and runs it on
//! this machine. Results, commands and environments: docs/benchmarks.md.

use crate::util;
use anyhow::{bail, Result};

/// The benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// What setting a hint costs next to sched_setattr, setpriority, a
    /// task-storage map update through a cached pidfd, and a fresh thread's
    /// first hint (bench/src/hint_cost.rs).
    HintCost,
}

impl Which {
    fn bin(self) -> &'static str {
        match self {
            Which::HintCost => "hint-cost",
        }
    }

    fn needs_root(self) -> &'static str {
        match self {
            Which::HintCost => "it loads a BPF program on the host kernel and pins its map",
        }
    }
}

#[derive(clap::Args)]
#[command(after_long_help = "\
hint-cost measures, in one run on the host kernel (root): a hint set \
(scx_hints::set_latency_class and set_priority, on a thread registered in a \
real pinned task-storage map, and with no map), sched_setattr and setpriority \
on the calling thread, a task-storage map update through a cached pidfd \
(scx_layered's hint path), pidfd_open, and a fresh thread's first hint set. \
It prints a table of medians with their spread (p10, p90, min, max over \
samples), whether the issue's targets are met (hint set <= 2 ns median, >= 300x \
cheaper than sched_setattr), and ends with two lines for scripts:

  ratio sched_setattr/hint_set: <number>
  ratio map_update/hint_set: <number>

(ratios of medians). A full run takes about 10 s after the build; --quick \
takes about a second, with rougher figures.")]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[arg(value_enum, default_value = "hint-cost")]
    pub which: Which,
    /// Fewer, shorter samples (about a second): for smoke tests, not for
    /// figures to publish.
    #[arg(long)]
    pub quick: bool,
    /// Pin every benchmark thread to this CPU (default: the last CPU).
    #[arg(long, value_name = "N", conflicts_with = "no_pin")]
    pub cpu: Option<usize>,
    /// Do not pin the benchmark threads.
    #[arg(long)]
    pub no_pin: bool,
}

pub fn run(args: BenchArgs) -> Result<i32> {
    let name = args.which.bin();
    if !util::is_root() {
        bail!(
            "`cargo xtask bench {name}` needs root: {}. Run it as root, for example \
             `sudo -E env \"PATH=$PATH\" cargo xtask bench {name}`",
            args.which.needs_root()
        );
    }
    crate::setup::host()?;
    util::step(format!(
        "building and running the {name} benchmark (release){}",
        if args.quick { ", --quick" } else { "" }
    ));
    let mut cmd = util::cargo();
    cmd.args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "scx_hints_bench",
        "--bin",
        name,
        "--",
    ]);
    if args.quick {
        cmd.arg("--quick");
    }
    if args.no_pin {
        cmd.arg("--no-pin");
    } else if let Some(cpu) = args.cpu {
        cmd.args(["--cpu", &cpu.to_string()]);
    }
    let status = cmd
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| anyhow::anyhow!("cannot start `{}`: {e}", util::show(&cmd)))?;
    Ok(status.code().unwrap_or(1))
}
