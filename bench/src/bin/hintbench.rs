//! `hintbench`: scheduler comparisons with and without hints. Run it through
//! `cargo xtask demo` or `cargo xtask bench` (they boot a sched_ext guest).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use scx_hints_bench::hintbench::{calib, compare, report, scenarios, suite};

#[derive(Parser)]
#[command(about = "Scheduler comparisons with and without scx-hints hints")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a plan under every contender (root, sched_ext kernel, no
    /// scheduler attached) and write the results as JSON.
    Suite {
        /// demo, quick or full.
        #[arg(long, default_value = "quick")]
        plan: String,
        /// A sched_ext scheduler: KEY=PATH[,ARG...] (keys: hinted, bpfland,
        /// lavd, cosmos, hinted-noreads). Contenders whose scheduler is not given
        /// are skipped and listed as such.
        #[arg(long = "sched", value_name = "KEY=PATH")]
        scheds: Vec<String>,
        /// Where to write the results.
        #[arg(long)]
        out: PathBuf,
        /// A directory for scheduler logs (tmpfs in the guest).
        #[arg(long, default_value = "/dev/shm")]
        tmp: PathBuf,
        /// Repetitions (default: the plan's).
        #[arg(long)]
        reps: Option<usize>,
        /// Only these scenarios of the plan (comma-separated names, as
        /// `once` takes them), at the plan's levels and repetitions.
        #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
        scenarios: Vec<String>,
    },
    /// Calibrate (work-loop rate per vCPU, wakeup round trip), then run
    /// one scenario once under whatever scheduler is attached and print its
    /// metrics.
    Once {
        /// render, render-idle, dynamic, req-resp, wakeup, frame-mix,
        /// frame-mix-hogs, frame-over-share, roles, roles-hogs, messaging or
        /// hackbench.
        scenario: String,
        /// Offered load: light (50% of capacity), near (90%), over (120%),
        /// or fixed (the scenario's one shape). Default: near, or fixed for
        /// the scenarios that have one shape (render, render-idle,
        /// frame-over-share, messaging, hackbench).
        #[arg(long)]
        level: Option<String>,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// A contender's treatment of the threads (e.g. hinted-both,
        /// eevdf-bg-nice).
        #[arg(long, default_value = "eevdf")]
        config: String,
    },
    /// Measure and print the calibration only.
    Calibrate,
    /// How closely two full runs agree: their calibrations, how many goal
    /// lines get the same verdict, how far apart the values are, and every
    /// goal line side by side (markdown).
    Compare {
        /// summary.json of the first run (`target/bench/sched/summary.json`
        /// of a full `cargo xtask bench sched`, kept aside).
        a: PathBuf,
        /// summary.json of the second run.
        b: PathBuf,
    },
    /// Turn results into tables, plots and goal lines.
    Report {
        /// The results JSON of `hintbench suite`.
        #[arg(long = "in")]
        input: PathBuf,
        /// Write results.json, summary.json, report.md and SVGs here.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Print the demo's table instead.
        #[arg(long)]
        demo: bool,
        /// Fail (exit 1) unless the report is complete and sane.
        #[arg(long)]
        check: bool,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("hintbench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Suite {
            plan,
            scheds,
            out,
            tmp,
            reps,
            scenarios,
        } => {
            let mut plan = suite::Plan::named(&plan)?;
            if let Some(r) = reps {
                plan.reps = r.max(1);
            }
            if !scenarios.is_empty() {
                let mut seen = std::collections::BTreeSet::new();
                plan.scenarios = scenarios
                    .iter()
                    .filter(|n| seen.insert(n.as_str()))
                    .map(|n| {
                        scenarios::Scenario::by_name(n).with_context(|| {
                            let all: Vec<_> =
                                scenarios::Scenario::ALL.iter().map(|s| s.name()).collect();
                            format!("unknown scenario {n:?} (one of {})", all.join(", "))
                        })
                    })
                    .collect::<Result<_>>()?;
            }
            let mut map = BTreeMap::new();
            for s in scheds {
                let (key, rest) = s.split_once('=').context("--sched KEY=PATH[,ARG...]")?;
                let mut parts = rest.split(',');
                let bin = PathBuf::from(parts.next().unwrap_or_default());
                map.insert(key.to_string(), (bin, parts.map(String::from).collect()));
            }
            let res = suite::run(plan, &map, &out, &tmp)?;
            println!(
                "hintbench: {} runs, {} errors, results in {}",
                res.runs.len(),
                res.errors.len(),
                out.display()
            );
            Ok(())
        }
        Cmd::Once {
            scenario,
            level,
            secs,
            config,
        } => {
            let s = scenarios::Scenario::by_name(&scenario).with_context(|| {
                format!(
                    "unknown scenario {scenario:?} (one of: {})",
                    scenarios::Scenario::ALL.map(|s| s.name()).join(", ")
                )
            })?;
            let level = level.unwrap_or_else(|| {
                let own = s.levels();
                let l = if own.contains(&scenarios::Level::Near) {
                    scenarios::Level::Near
                } else {
                    own[0]
                };
                l.name().to_string()
            });
            let level = scenarios::Level::ALL
                .into_iter()
                .find(|l| l.name() == level)
                .with_context(|| format!("unknown level {level:?} (light, near, over, fixed)"))?;
            if !s.levels().contains(&level) {
                bail!(
                    "{scenario} runs at {} only",
                    s.levels()
                        .iter()
                        .map(|l| l.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let c = suite::all_contenders()
                .into_iter()
                .find(|c| c.name == config)
                .with_context(|| format!("unknown contender {config}"))?;
            let cpus = scx_hints_bench::env::cpus();
            let calib = calib::measure(cpus)?;
            println!("calibration: {}", calib.line());
            let m = scenarios::run(
                s,
                c.cfg,
                &scenarios::Params {
                    level,
                    calib,
                    cpus,
                    timing: scenarios::Timing { warmup: 0.5, secs },
                },
            )?;
            println!("{}", serde_json::to_string_pretty(&m.metrics)?);
            Ok(())
        }
        Cmd::Calibrate => {
            let c = calib::measure(scx_hints_bench::env::cpus())?;
            println!("{}", c.line());
            Ok(())
        }
        Cmd::Compare { a, b } => {
            print!("{}", compare::compare(&a, &b)?);
            Ok(())
        }
        Cmd::Report {
            input,
            out_dir,
            demo,
            check,
        } => {
            let text =
                std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let res: suite::Results = serde_json::from_slice(&text)
                .with_context(|| format!("parsing {}", input.display()))?;
            if demo {
                print!("{}", report::demo_table(&res));
            }
            if let Some(dir) = out_dir {
                let md = report::write_all(&res, &dir)?;
                if !demo {
                    // The markdown ends with the goal lines.
                    print!("{md}");
                }
            }
            if check {
                let bad = report::check(&res);
                if !bad.is_empty() {
                    bail!(
                        "the report is incomplete or implausible:\n  {}",
                        bad.join("\n  ")
                    );
                }
                println!("report check: complete and sane");
            }
            Ok(())
        }
    }
}
