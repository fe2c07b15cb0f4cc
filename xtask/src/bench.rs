//! `cargo xtask bench`: the benchmarks. Results, commands and environments:
//! docs/benchmarks.md.
//!
//! - `hint-cost` builds and runs a microbenchmark on the host kernel.
//! - `sched` runs `hintbench` (bench/src/hintbench): it calibrates the
//!   machine, then runs every scenario at every load level under every
//!   contender (EEVDF, its knobs, scx_hinted with and without hints,
//!   scx_bpfland, scx_lavd and scx_cosmos built from crates.io), alternated
//!   and repeated inside one boot of the sched_ext guest (or on the host if
//!   it has sched_ext), then writes JSON, markdown, SVG plots and goal lines
//!   under target/bench/.
//! - without a name, both.

use crate::util::{self, loud, step};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// hint-cost, then sched.
    All,
    /// What setting a hint costs next to sched_setattr, setpriority, a
    /// task-storage map update through a cached pidfd, and a fresh thread's
    /// first hint (bench/src/hint_cost.rs).
    HintCost,
    /// Scheduling latency and throughput with and without hints, against
    /// EEVDF, its knobs and published sched_ext schedulers, in the sched_ext
    /// guest (bench/src/hintbench).
    Sched,
    /// BPF ns per scheduler callback, latency and throughput at 2, 4, 8 and
    /// 16 guest vCPUs (xtask/src/scale.rs; not part of `all`).
    Scale,
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
takes about a second, with rougher figures.

sched boots the sched_ext guest once (unless the host has sched_ext). \
hintbench first calibrates the guest (work-loop units per CPU-ms on each vCPU, \
a wakeup round trip) and sizes every scenario's work and rates from that, so \
that a load level means the same on a fast and a slow host; it calibrates \
again between repetitions and at the end and flags a drift over 10%. Then it \
runs each scenario at each of its load levels (light ~50%, near ~90%, over \
~120% of the capacity the app's threads can have; fixed-shape scenarios once) \
under every contender, alternating the order between repetitions. Scenarios: \
render (with an idle floor), dynamic, req-resp, wakeup, the app-knowledge \
ones (frame-mix, frame-mix-hogs, roles, roles-hogs: the app's threads run as \
an unprivileged user, other users' hogs as another), the limit case \
frame-over-share, and 160-thread messaging. scx_bpfland, scx_lavd and \
scx_cosmos are built once from crates.io with `cargo install` into \
target/xtask/scx-published (a crate that cannot be built is reported and left \
out). Output under target/bench/sched (sched-quick; with --scenarios \
sched-NAME-...): results.json (with the \
calibrations), summary.json, report.md, load-*.svg (p99 against offered load \
per scenario), and lines `goal <name>: <ratio> (target <op> <target>) \
met|missed`. The full run takes about 35 minutes; --quick (one level per \
scenario, one repetition) about 4, as a smoke test.")]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[arg(value_enum, default_value = "all")]
    pub which: Which,
    /// Fewer, shorter samples: for smoke tests, not for figures to publish.
    #[arg(long)]
    pub quick: bool,
    /// hint-cost: pin every benchmark thread to this CPU (default: the last CPU).
    #[arg(long, value_name = "N", conflicts_with = "no_pin")]
    pub cpu: Option<usize>,
    /// hint-cost: do not pin the benchmark threads.
    #[arg(long)]
    pub no_pin: bool,
    /// sched: leave out scx_bpfland, scx_lavd and scx_cosmos (no crates.io
    /// build).
    #[arg(long)]
    pub no_published: bool,
    /// sched: only these scenarios (comma-separated, e.g. roles,roles-hogs),
    /// at every level and repetition of the plan; the report then holds
    /// only their tables and goal lines.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub scenarios: Vec<String>,
}

pub fn run(args: BenchArgs) -> Result<i32> {
    let mut rc = 0;
    if matches!(args.which, Which::All | Which::HintCost) {
        if util::is_root() {
            rc = rc.max(hint_cost(&args)?);
        } else if args.which == Which::HintCost {
            bail!(
                "`cargo xtask bench hint-cost` needs root: it loads a BPF program on the host \
                 kernel and pins its map. Run it as root, for example \
                 `sudo -E env \"PATH=$PATH\" cargo xtask bench hint-cost`"
            );
        } else {
            loud("SKIPPED: hint-cost needs root (it loads a BPF program on the host kernel)");
        }
    }
    if matches!(args.which, Which::All | Which::Sched) {
        rc = rc.max(sched(args.quick, !args.no_published, &args.scenarios)?);
    }
    if args.which == Which::Scale {
        rc = rc.max(crate::scale::run(args.quick)?);
    }
    Ok(rc)
}

fn hint_cost(args: &BenchArgs) -> Result<i32> {
    crate::setup::host()?;
    step(format!(
        "building and running the hint-cost benchmark (release){}",
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
        "hint-cost",
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
        .stdin(Stdio::null())
        .status()
        .map_err(|e| anyhow::anyhow!("cannot start `{}`: {e}", util::show(&cmd)))?;
    Ok(status.code().unwrap_or(1))
}

/// `cargo xtask bench sched [--quick]`: returns 0 if the suite ran and the
/// report is complete (goals missed do not fail it; they are printed).
fn sched(quick: bool, published: bool, scenarios: &[String]) -> Result<i32> {
    let pubs = if published {
        Published::build()
    } else {
        Published::none()
    };
    let outcome = run_suite(if quick { "quick" } else { "full" }, &pubs, scenarios)?;
    let out_dir = outcome.dir.clone();
    let text = report(&outcome, &["--out-dir", &out_dir.to_string_lossy()])?;
    println!("{text}");
    for (name, why) in &pubs.missing {
        println!("not run: {name}: {why}");
    }
    step(format!("report in {}", out_dir.display()));
    Ok(if outcome.suite_ok { 0 } else { 1 })
}

/// Runs `cargo xtask bench sched --quick` and checks that its report is
/// complete and sane (every contender that could be built ran every
/// scenario, latencies and throughputs are plausible, every goal has a
/// measured value, BPF statistics were read). The goals themselves are not
/// asserted. For `cargo xtask test`, which leaves out the published
/// schedulers (their crates.io build alone takes about ten minutes on two
/// cores); `cargo xtask bench sched` includes them.
pub fn smoke(with_published: bool) -> Result<()> {
    let pubs = if with_published {
        Published::build()
    } else {
        Published::none()
    };
    let outcome = run_suite("quick", &pubs, &[])?;
    let out_dir = outcome.dir.clone();
    let text = report(
        &outcome,
        &["--out-dir", &out_dir.to_string_lossy(), "--check"],
    )?;
    println!("{text}");
    if !outcome.suite_ok {
        bail!(
            "hintbench suite exited with an error (report in {})",
            out_dir.display()
        );
    }
    let goals = text.lines().filter(|l| l.starts_with("goal ")).count();
    if goals < 10 {
        bail!("the report has {goals} goal lines, expected at least 10");
    }
    Ok(())
}

/// scx_bpfland, scx_lavd and scx_cosmos from crates.io, installed with
/// `cargo install` under target/xtask/scx-published (once; later runs reuse
/// them).
pub struct Published {
    /// Key for hintbench's --sched -> binary.
    pub bins: Vec<(String, PathBuf)>,
    /// Crate -> why it is not there.
    pub missing: Vec<(String, String)>,
}

/// The crates and versions (the same scx release as the scx_utils the
/// scheduler builds against).
const PUBLISHED: [(&str, &str, &str); 3] = [
    ("bpfland", "scx_bpfland", "1.1.4"),
    ("lavd", "scx_lavd", "1.1.4"),
    ("cosmos", "scx_cosmos", "1.1.4"),
];

impl Published {
    pub fn none() -> Published {
        Published {
            bins: Vec::new(),
            missing: Vec::new(),
        }
    }

    pub fn build() -> Published {
        let root = util::cache_dir().join("scx-published");
        let mut p = Published::none();
        for (key, krate, version) in PUBLISHED {
            let bin = root.join("bin").join(krate);
            let stamp = root.join(format!("{krate}.version"));
            let have =
                bin.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|v| v.trim() == version);
            if !have {
                step(format!(
                    "building {krate} {version} from crates.io into {} (once; several minutes)",
                    root.display()
                ));
                let log = root.join(format!("{krate}.log"));
                let r = std::fs::create_dir_all(&root)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| install(krate, version, &root, &log));
                if let Err(e) = r {
                    loud(format!("{krate} cannot be built here, left out: {e:#}"));
                    p.missing.push((krate.to_string(), format!("{e:#}")));
                    continue;
                }
                let _ = std::fs::write(&stamp, version);
            }
            p.bins.push((key.to_string(), bin));
        }
        p
    }
}

fn install(krate: &str, version: &str, root: &Path, log: &Path) -> Result<()> {
    let out = std::fs::File::create(log)?;
    let status = util::cargo()
        .args(["install", "--locked", "--root"])
        .arg(root)
        .args([krate, "--version", version])
        .env("CARGO_TARGET_DIR", root.join("build"))
        // scx_utils' build script runs plain `clang` unless told otherwise;
        // the project's BPF clang (.cargo/config.toml) is clang-19.
        .env(
            "BPF_CLANG",
            std::env::var("BPF_CLANG").unwrap_or_else(|_| "clang-19".into()),
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("error"))
            .take(5)
            .collect();
        bail!(
            "cargo install {krate} --version {version} failed ({status}); log {}:\n{}",
            log.display(),
            errors.join("\n")
        );
    }
    Ok(())
}

/// scx_hinted with its BPF hint reads compiled out
/// (`-DSCX_HINTED_NO_HINT_READS`), for the BPF overhead comparison, copied to
/// target/xtask/hinted-noreads/scx_hinted_noreads. Built in the workspace's
/// own target directory (only scx_hinted recompiles, not its dependencies):
/// call it before the normal build, which then recompiles scx_hinted back.
fn build_noreads() -> Result<PathBuf> {
    let dir = util::cache_dir().join("hinted-noreads");
    step("building scx_hinted with hint reads compiled out (release)");
    util::run(
        util::cargo()
            .args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "scx_hinted",
                "--bin",
                "scx_hinted",
            ])
            .env("BPF_EXTRA_CFLAGS_POST_INCL", "-DSCX_HINTED_NO_HINT_READS"),
    )?;
    std::fs::create_dir_all(&dir)?;
    let bin = dir.join("scx_hinted_noreads");
    std::fs::copy(target_dir().join("release/scx_hinted"), &bin)?;
    Ok(bin)
}

/// Where a suite's results are.
pub struct SuiteOutcome {
    /// target/bench/<plan dir>: results.json is there.
    pub dir: PathBuf,
    /// hintbench exited 0.
    pub suite_ok: bool,
    /// The host's hintbench, for the report.
    hintbench: PathBuf,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"))
}

/// Builds scx_hinted and hintbench (release), then runs `hintbench suite
/// --plan PLAN` on the host if it has sched_ext and we are root, else in
/// one guest boot from tmpfs; the results land in target/bench/<dir>.
pub fn run_suite(plan: &str, pubs: &Published, scenarios: &[String]) -> Result<SuiteOutcome> {
    crate::setup::host()?;
    let noreads = (plan != "demo").then(build_noreads);
    let rel = crate::test::build_scheduler()?;
    step("building hintbench (release)");
    util::run(util::cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "scx_hints_bench",
        "--bin",
        "hintbench",
    ]))?;
    let mut name = match plan {
        "full" => "sched".to_string(),
        "quick" => "sched-quick".to_string(),
        other => other.to_string(),
    };
    if !scenarios.is_empty() {
        // A partial run must not overwrite the full run's results.
        name = format!("{name}-{}", scenarios.join("-"));
    }
    let dir = target_dir().join("bench").join(name);
    std::fs::create_dir_all(&dir)?;
    let results = dir.join("results.json");
    let _ = std::fs::remove_file(&results);
    let mut scheds: Vec<(String, PathBuf)> = vec![("hinted".into(), rel.join("scx_hinted"))];
    scheds.extend(pubs.bins.iter().cloned());
    match noreads {
        Some(Ok(bin)) => scheds.push(("hinted-noreads".into(), bin)),
        Some(Err(e)) => loud(format!(
            "scx_hinted without hint reads cannot be built, the BPF overhead goal is \
             measured by proxy: {e:#}"
        )),
        None => {}
    }
    let hintbench = rel.join("hintbench");
    let host_ok = Path::new("/sys/kernel/sched_ext/state").exists() && util::is_root();
    let suite_ok = if host_ok {
        step(format!(
            "running hintbench ({plan}) on the host: it has sched_ext"
        ));
        let mut cmd = Command::new(&hintbench);
        cmd.args(["suite", "--plan", plan, "--out"]).arg(&results);
        if !scenarios.is_empty() {
            cmd.arg("--scenarios").arg(scenarios.join(","));
        }
        for (k, bin) in &scheds {
            cmd.arg("--sched")
                .arg(format!("{k}={}", bin.to_string_lossy()));
        }
        cmd.stdin(Stdio::null()).status()?.success()
    } else {
        let guest = crate::vm::prepare()?;
        step(format!(
            "running hintbench ({plan}) in the sched_ext guest (kernel {}): the host kernel \
             has no sched_ext",
            guest.kernel()
        ));
        let timeout = match plan {
            "full" => Duration::from_secs(60 * 60),
            _ => Duration::from_secs(15 * 60),
        };
        let job = crate::vm::GuestJob::new(
            format!("hintbench {plan}"),
            guest_script(plan, &hintbench, &scheds, scenarios),
            timeout,
        );
        let out = guest.run(&job)?;
        let got = out.run_dir.join("results.json");
        if got.is_file() {
            std::fs::copy(&got, &results).context("copying the guest's results")?;
        }
        out.exit_code == 0
    };
    if !results.is_file() {
        bail!("hintbench wrote no results (see its output above)");
    }
    Ok(SuiteOutcome {
        dir,
        suite_ok,
        hintbench,
    })
}

/// The guest job: stages the binaries in tmpfs (a scheduler detached while
/// programs run from the 9p root can stall the guest), runs the suite with
/// its results in tmpfs, and copies them to $GUEST_OUT once every scheduler
/// is detached.
fn guest_script(
    plan: &str,
    hintbench: &Path,
    scheds: &[(String, PathBuf)],
    scenarios: &[String],
) -> String {
    let q = |p: &Path| crate::vm::shell_quote(&p.to_string_lossy());
    let mut stage = vec![q(hintbench)];
    let mut args = String::new();
    if !scenarios.is_empty() {
        args += &format!(
            " --scenarios {}",
            crate::vm::shell_quote(&scenarios.join(","))
        );
    }
    for (k, bin) in scheds {
        stage.push(q(bin));
        let name = bin.file_name().unwrap_or_default().to_string_lossy();
        args += &format!(" --sched {k}=\"$GUEST_TMP/bin/{name}\"");
    }
    format!(
        "set -e\n\
         guest_stage {}\n\
         if command -v hackbench >/dev/null; then guest_stage hackbench; \
         export HINTBENCH_HACKBENCH=\"$GUEST_TMP/bin/hackbench\"; fi\n\
         set +e\n\
         \"$GUEST_TMP/bin/hintbench\" suite --plan {plan} --out \"$GUEST_TMP/results.json\" \
         --tmp \"$GUEST_TMP\"{args}\n\
         rc=$?\n\
         [ \"$(cat /sys/kernel/sched_ext/state)\" = disabled ] || \
         echo \"hintbench: a scheduler is still attached\"\n\
         cp \"$GUEST_TMP/results.json\" \"$GUEST_OUT/\" 2>/dev/null\n\
         for f in \"$GUEST_TMP\"/*.log; do cp \"$f\" \"$GUEST_OUT/\" 2>/dev/null; done\n\
         exit $rc\n",
        stage.join(" ")
    )
}

/// Runs `hintbench report --in results.json EXTRA...` on the host and
/// returns its output.
pub fn report(o: &SuiteOutcome, extra: &[&str]) -> Result<String> {
    let mut cmd = Command::new(&o.hintbench);
    cmd.arg("report")
        .arg("--in")
        .arg(o.dir.join("results.json"))
        .args(extra);
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::inherit()).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("`{}` failed:\n{text}", util::show(&cmd));
    }
    Ok(text)
}
