//! The contenders, the plans (demo, quick, full) and the loop that runs
//! every scenario under every contender, alternating, inside one boot.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use scx_hints::LatencyClass;
use serde::{Deserialize, Serialize};

use super::calib::{self, Calibration};
use super::scenarios::{self, Level, Measurement, Params, Scenario, Timing};
use super::sched::{self, Running};
use super::workload::{Config, Knob, Treatment};

/// A scheduler plus how the benchmark's threads are treated under it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Contender {
    pub name: String,
    /// The sched_ext scheduler (a key of `--sched`), or None for EEVDF.
    pub sched: Option<String>,
    pub cfg: Config,
    pub about: String,
}

fn contender(
    name: &str,
    sched: Option<&str>,
    fg: Treatment,
    bg: Treatment,
    about: &str,
) -> Contender {
    Contender {
        name: name.into(),
        sched: sched.map(str::to_string),
        cfg: Config { fg, bg },
        about: about.into(),
    }
}

/// Every contender, in the order the tables show them. "fg" is the
/// latency threads' treatment, "bg" the load's: the hogs in the first
/// scenarios, the app's own background threads (or bulk role) in the
/// app-knowledge ones, where other users' hogs are never treated.
pub fn all_contenders() -> Vec<Contender> {
    use LatencyClass::{Background, Batch, Interactive};
    let none = Treatment::NONE;
    vec![
        contender(
            "eevdf",
            None,
            none,
            none,
            "the kernel's default scheduler, no hints, no knobs",
        ),
        contender(
            "eevdf-nice",
            None,
            Treatment::knob(Knob::Nice(-10)),
            none,
            "EEVDF, latency threads at nice -10 (needs root)",
        ),
        contender(
            "eevdf-slice",
            None,
            Treatment::knob(Knob::Slice(500_000)),
            none,
            "EEVDF, latency threads request a 0.5 ms slice (sched_setattr sched_runtime; \
             unprivileged)",
        ),
        contender(
            "eevdf-bg-nice",
            None,
            none,
            Treatment::knob(Knob::Nice(10)),
            "EEVDF, load / background at nice 10 (unprivileged)",
        ),
        contender(
            "eevdf-bg-batch",
            None,
            none,
            Treatment::knob(Knob::Batch),
            "EEVDF, load / background under SCHED_BATCH (unprivileged)",
        ),
        contender(
            "eevdf-bg-idle",
            None,
            none,
            Treatment::knob(Knob::Idle),
            "EEVDF, load / background under SCHED_IDLE (unprivileged)",
        ),
        contender(
            "hinted-nohints",
            Some("hinted"),
            none,
            none,
            "scx_hinted, no thread hinted",
        ),
        contender(
            "hinted-own",
            Some("hinted"),
            Treatment::hint(Interactive),
            none,
            "scx_hinted, latency threads hinted interactive, load unhinted",
        ),
        contender(
            "hinted-both",
            Some("hinted"),
            Treatment::hint(Interactive),
            Treatment::hint(Background),
            "scx_hinted, latency threads interactive, load / background threads background",
        ),
        contender(
            "hinted-batch",
            Some("hinted"),
            Treatment::hint(Interactive),
            Treatment::hint(Batch),
            "scx_hinted, latency threads interactive, the app's other threads batch \
             (app-knowledge scenarios: the hint for bulk work that requests wait on)",
        ),
        contender(
            "bpfland",
            Some("bpfland"),
            none,
            none,
            "scx_bpfland (crates.io), no hints",
        ),
        contender(
            "lavd",
            Some("lavd"),
            none,
            none,
            "scx_lavd (crates.io), no hints",
        ),
        contender(
            "cosmos",
            Some("cosmos"),
            none,
            none,
            "scx_cosmos (crates.io), no hints",
        ),
    ]
}

/// EEVDF's knobs an unprivileged app can apply to its own threads.
pub const UNPRIVILEGED_KNOBS: [&str; 4] = [
    "eevdf-slice",
    "eevdf-bg-nice",
    "eevdf-bg-batch",
    "eevdf-bg-idle",
];

/// The published sched_ext schedulers' contenders.
pub const PUBLISHED: [&str; 3] = ["bpfland", "lavd", "cosmos"];

/// What a plan runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub contenders: Vec<String>,
    pub scenarios: Vec<Scenario>,
    /// Levels to run (each scenario runs those of its own levels that are
    /// listed; a scenario with none of them listed runs its first).
    pub levels: Vec<Level>,
    pub reps: usize,
    /// Seconds measured per frame-paced run / per other run, and warm-up.
    pub render_secs: f64,
    pub other_secs: f64,
    pub warmup: f64,
    /// Seconds of the BPF run-time statistics pass per scheduler (0: none).
    pub bpf_secs: f64,
}

/// The demo's scenario and level: where the app's knowledge matters most.
pub const DEMO: (Scenario, Level) = (Scenario::FrameMix, Level::Over);

impl Plan {
    pub fn named(name: &str) -> Result<Plan> {
        let all: Vec<String> = all_contenders().into_iter().map(|c| c.name).collect();
        let everything = Scenario::ALL.to_vec();
        Ok(match name {
            "demo" => Plan {
                name: name.into(),
                contenders: [
                    "eevdf",
                    "eevdf-slice",
                    "eevdf-bg-nice",
                    "eevdf-bg-batch",
                    "eevdf-bg-idle",
                    "hinted-nohints",
                    "hinted-both",
                    "bpfland",
                    "lavd",
                    "cosmos",
                ]
                .map(String::from)
                .to_vec(),
                scenarios: vec![DEMO.0],
                levels: vec![DEMO.1],
                reps: 3,
                render_secs: 4.0,
                other_secs: 4.0,
                warmup: 0.5,
                bpf_secs: 0.0,
            },
            "quick" => Plan {
                name: name.into(),
                contenders: all,
                scenarios: everything,
                levels: vec![Level::Near, Level::Fixed],
                reps: 1,
                render_secs: 1.0,
                other_secs: 0.8,
                warmup: 0.2,
                bpf_secs: 1.5,
            },
            "full" => Plan {
                name: name.into(),
                contenders: all,
                scenarios: everything,
                levels: Level::ALL.to_vec(),
                reps: 3,
                render_secs: 2.2,
                other_secs: 1.6,
                warmup: 0.3,
                bpf_secs: 6.0,
            },
            _ => bail!("unknown plan {name:?} (demo, quick, full)"),
        })
    }

    pub fn timing(&self, s: Scenario) -> Timing {
        Timing {
            warmup: self.warmup,
            secs: match s {
                Scenario::Render
                | Scenario::RenderIdle
                | Scenario::FrameMix
                | Scenario::FrameMixHogs
                | Scenario::FrameOverShare => self.render_secs,
                _ => self.other_secs,
            },
        }
    }

    /// The levels scenario `s` runs at under this plan.
    pub fn levels_of(&self, s: Scenario) -> Vec<Level> {
        let own = s.levels();
        let v: Vec<Level> = own
            .iter()
            .copied()
            .filter(|l| self.levels.contains(l))
            .collect();
        if v.is_empty() {
            vec![own[0]]
        } else {
            v
        }
    }

    /// Every (scenario, level) this plan runs, in order.
    pub fn cases(&self) -> Vec<(Scenario, Level)> {
        self.scenarios
            .iter()
            .flat_map(|&s| self.levels_of(s).into_iter().map(move |l| (s, l)))
            .collect()
    }
}

/// Whether scenario `s` runs under contender `c`. The idle floor is a
/// property of the machine: measured once per repetition, under EEVDF.
/// Messaging has no hints and no knobs: no-hint contenders only. The
/// app-knowledge scenarios run every unprivileged contender; the first
/// scenarios keep to the contenders their goals compare (and SCHED_BATCH
/// load in `dynamic`, whose switches it times).
pub fn runs_under(s: Scenario, c: &Contender) -> bool {
    let n = c.name.as_str();
    let published = PUBLISHED.contains(&n);
    if n == "hinted-batch" {
        // Elsewhere the load is another user's: the app cannot hint it.
        return s.app_knowledge();
    }
    match s {
        Scenario::RenderIdle => n == "eevdf",
        Scenario::Messaging | Scenario::Hackbench => {
            n == "eevdf" || n == "hinted-nohints" || published
        }
        _ if s.app_knowledge() || s == Scenario::FrameOverShare => n != "eevdf-nice",
        Scenario::Render => !n.starts_with("eevdf-") || n == "eevdf-nice",
        Scenario::Dynamic => !n.starts_with("eevdf-") || n == "eevdf-bg-batch",
        _ => !n.starts_with("eevdf-"),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub rep: usize,
    pub contender: String,
    pub scenario: Scenario,
    #[serde(default = "fixed")]
    pub level: Level,
    pub m: Measurement,
}

fn fixed() -> Level {
    Level::Fixed
}

/// BPF run-time statistics of one scheduler's struct_ops programs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BpfStats {
    pub sched: String,
    /// What ran during the measurement.
    pub workload: String,
    /// Program name -> (invocations, average ns).
    pub progs: BTreeMap<String, (u64, f64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub plan: Plan,
    pub kernel: String,
    pub cpus: usize,
    /// The machine measured before each repetition and after the last
    /// (EEVDF, nothing else running). Work is sized from the first.
    pub calibrations: Vec<Calibration>,
    /// Largest relative change of capacity from the first calibration.
    pub drift: f64,
    pub contenders: Vec<Contender>,
    /// Contender -> why it was not run.
    pub skipped: BTreeMap<String, String>,
    /// Scheduler key -> the ops name it attached as.
    pub ops: BTreeMap<String, String>,
    pub runs: Vec<Run>,
    pub bpf: Vec<BpfStats>,
    pub errors: Vec<String>,
}

/// Runs `plan` with the schedulers in `scheds` (key -> binary and args),
/// writing the results to `out` after every run.
pub fn run(
    plan: Plan,
    scheds: &BTreeMap<String, (PathBuf, Vec<String>)>,
    out: &std::path::Path,
    tmp: &std::path::Path,
) -> Result<Results> {
    if !sched::has_sched_ext() {
        bail!("this kernel has no sched_ext (/sys/kernel/sched_ext/state is missing)");
    }
    if sched::state() != "disabled" {
        bail!("a sched_ext scheduler is already attached: detach it first");
    }
    let cpus = crate::env::cpus();
    let first = calib::measure(cpus)?;
    println!("hintbench: calibration: {}", first.line());
    let mut res = Results {
        plan: plan.clone(),
        kernel: crate::env::kernel(),
        cpus,
        calibrations: vec![first.clone()],
        drift: 0.0,
        contenders: Vec::new(),
        skipped: BTreeMap::new(),
        ops: BTreeMap::new(),
        runs: Vec::new(),
        bpf: Vec::new(),
        errors: Vec::new(),
    };
    for name in &plan.contenders {
        let c = all_contenders()
            .into_iter()
            .find(|c| &c.name == name)
            .with_context(|| format!("unknown contender {name}"))?;
        match &c.sched {
            Some(s) if !scheds.contains_key(s) => {
                res.skipped.insert(
                    c.name.clone(),
                    format!("no {s} binary given (--sched {s}=PATH)"),
                );
            }
            _ => res.contenders.push(c),
        }
    }
    // Groups of contenders sharing a scheduler, in first-seen order.
    let mut groups: Vec<(Option<String>, Vec<Contender>)> = Vec::new();
    for c in &res.contenders {
        match groups.iter_mut().find(|(s, _)| *s == c.sched) {
            Some((_, v)) => v.push(c.clone()),
            None => groups.push((c.sched.clone(), vec![c.clone()])),
        }
    }
    let save = |res: &Results| -> Result<()> {
        let tmp_out = out.with_extension("json.part");
        std::fs::write(&tmp_out, serde_json::to_vec(res)?)?;
        std::fs::rename(&tmp_out, out)?;
        Ok(())
    };
    let cases = plan.cases();
    let total: usize = plan.reps
        * res
            .contenders
            .iter()
            .map(|c| cases.iter().filter(|(s, _)| runs_under(*s, c)).count())
            .sum::<usize>();
    let params = |s: Scenario, level: Level| Params {
        level,
        calib: first.clone(),
        cpus,
        timing: plan.timing(s),
    };
    let mut done = 0;
    // Published schedulers that cannot attach on this kernel are left out
    // (and listed with the reason) rather than failing the suite.
    let mut unusable: BTreeMap<String, String> = BTreeMap::new();
    for rep in 0..plan.reps {
        if rep > 0 {
            recalibrate(&mut res, cpus)?;
        }
        // Alternate: odd repetitions run the groups and their members in
        // reverse order, so that no contender always runs first or last.
        let mut order = groups.clone();
        if rep % 2 == 1 {
            order.reverse();
            for (_, v) in &mut order {
                v.reverse();
            }
        }
        for (sched_key, members) in order {
            if sched_key.as_ref().is_some_and(|k| unusable.contains_key(k)) {
                continue;
            }
            let mut running = match &sched_key {
                None => None,
                Some(k) => {
                    let (bin, args) = &scheds[k];
                    match Running::start(bin, args, &tmp.join(format!("{k}.log"))) {
                        Ok(r) => {
                            res.ops.insert(k.clone(), r.ops.clone());
                            Some(r)
                        }
                        Err(e) => {
                            let msg = format!("rep {rep}: cannot start {k}: {e:#}");
                            println!("hintbench: {msg}");
                            let never_ran = !res
                                .runs
                                .iter()
                                .any(|r| members.iter().any(|m| m.name == r.contender));
                            if !k.starts_with("hinted") && never_ran {
                                let why = format!("{e:#}");
                                let last = why
                                    .lines()
                                    .rev()
                                    .find(|l| !l.trim().is_empty())
                                    .unwrap_or("")
                                    .trim();
                                let first = why.lines().next().unwrap_or("");
                                unusable.insert(
                                    k.clone(),
                                    format!("{first} ... {last} (on kernel {})", res.kernel),
                                );
                            } else {
                                res.errors.push(msg);
                            }
                            continue;
                        }
                    }
                }
            };
            'members: for c in &members {
                for &(s, level) in &cases {
                    if !runs_under(s, c) {
                        continue;
                    }
                    let t0 = std::time::Instant::now();
                    let result = scenarios::run(s, c.cfg, &params(s, level));
                    let took = t0.elapsed().as_secs_f64();
                    done += 1;
                    if let Some(r) = running.as_mut() {
                        if let Err(e) = r.check() {
                            let msg = format!(
                                "rep {rep} {} {} {}: {e:#}",
                                s.name(),
                                level.name(),
                                c.name
                            );
                            println!("hintbench: {msg}");
                            res.errors.push(msg);
                            running = None;
                            break 'members;
                        }
                    }
                    match result {
                        Ok(m) => {
                            println!(
                                "hintbench: [{done}/{total}] rep {} {:<16} {:<5} {:<15} {} \
                                 ({took:.1} s)",
                                rep + 1,
                                s.name(),
                                level.name(),
                                c.name,
                                brief(&m)
                            );
                            res.runs.push(Run {
                                rep,
                                contender: c.name.clone(),
                                scenario: s,
                                level,
                                m,
                            });
                        }
                        Err(e) => {
                            let msg = format!(
                                "rep {rep} {} {} {}: {e:#}",
                                s.name(),
                                level.name(),
                                c.name
                            );
                            println!("hintbench: {msg}");
                            res.errors.push(msg);
                        }
                    }
                    let _ = std::io::stdout().flush();
                    save(&res)?;
                }
            }
            if let Some(r) = running {
                if let Err(e) = r.stop() {
                    let msg = format!(
                        "rep {rep}: stopping {}: {e:#}",
                        sched_key.unwrap_or_default()
                    );
                    println!("hintbench: {msg}");
                    res.errors.push(msg);
                }
            }
        }
    }
    for (k, why) in &unusable {
        for c in res
            .contenders
            .iter()
            .filter(|c| c.sched.as_ref() == Some(k))
        {
            res.skipped
                .insert(c.name.clone(), format!("{k} cannot attach here: {why}"));
        }
        res.contenders.retain(|c| c.sched.as_ref() != Some(k));
    }
    recalibrate(&mut res, cpus)?;
    if plan.bpf_secs > 0.0 {
        let usable: BTreeMap<String, (PathBuf, Vec<String>)> = scheds
            .iter()
            .filter(|(k, _)| !unusable.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        bpf_pass(&plan, &usable, tmp, cpus, &mut res);
    }
    save(&res)?;
    Ok(res)
}

/// Measures the machine again and updates the drift.
fn recalibrate(res: &mut Results, cpus: usize) -> Result<()> {
    let c = calib::measure(cpus)?;
    let d = res.calibrations[0].drift(&c);
    println!(
        "hintbench: calibration again: {} (capacity {:+.1}% from the first)",
        c.line(),
        100.0 * d
    );
    if d.abs() > res.drift.abs() {
        res.drift = d;
    }
    res.calibrations.push(c);
    Ok(())
}

/// Capacity drift beyond which a run is flagged (host noise moved the
/// machine under the benchmark).
pub const DRIFT_LIMIT: f64 = 0.10;

fn brief(m: &Measurement) -> String {
    let g = |k: &str| m.metrics.get(k).copied();
    let mut s = format!(
        "p50 {:>8.0} us  p99 {:>8.0} us",
        g("p50_us").unwrap_or(f64::NAN),
        g("p99_us").unwrap_or(f64::NAN)
    );
    if let (Some(x), Some(n)) = (g("missed"), g("frames")) {
        s += &format!("  missed {x}/{n}");
    }
    if let Some(x) = g("hog_units_per_s") {
        s += &format!("  hogs {x:.0}/s");
    }
    if let (Some(o), Some(a)) = (g("offered_per_s"), g("achieved_per_s")) {
        s += &format!("  offered {o:.0}/s achieved {a:.0}/s");
    }
    if g("behind") == Some(1.0) {
        s += "  BEHIND";
    }
    if let Some(x) = g("refused_per_s").filter(|x| *x > 0.0) {
        s += &format!("  refused {x:.0}/s");
    }
    if let Some(x) = g("switch_ns") {
        s += &format!("  switch {x:.0} ns");
    }
    s
}

/// Reads every struct_ops program's run count and total run time.
fn struct_ops_stats() -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for p in libbpf_rs::query::ProgInfoIter::default() {
        if p.ty == libbpf_rs::ProgramType::StructOps {
            out.insert(
                p.name.to_string_lossy().into_owned(),
                (p.run_cnt, p.run_time_ns),
            );
        }
    }
    out
}

/// With `kernel.bpf_stats_enabled`, runs the render scenario (both
/// annotated, which also exercises the hint reads) under each sched_ext
/// scheduler and records the average run time of each of its callbacks.
/// Each hinted variant ("hinted" with hints, and the same with no thread
/// registering hints) gets its own attach.
fn bpf_pass(
    plan: &Plan,
    scheds: &BTreeMap<String, (PathBuf, Vec<String>)>,
    tmp: &std::path::Path,
    cpus: usize,
    res: &mut Results,
) {
    const KNOB: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let both = all_contenders()
        .into_iter()
        .find(|c| c.name == "hinted-both")
        .expect("listed")
        .cfg;
    let mut passes: Vec<(String, String, Config)> = Vec::new();
    for k in scheds.keys() {
        if k.starts_with("hinted") {
            passes.push((
                k.clone(),
                "render, both annotated (hints read)".into(),
                both,
            ));
            passes.push((k.clone(), "render, no hints".into(), Config::default()));
        } else {
            passes.push((k.clone(), "render, no hints".into(), Config::default()));
        }
    }
    for (k, workload, cfg) in passes {
        let (bin, args) = &scheds[&k];
        let r = (|| -> Result<BpfStats> {
            let running = Running::start(bin, args, &tmp.join(format!("{k}-bpf.log")))?;
            std::fs::write(KNOB, "1").context("enabling kernel.bpf_stats_enabled")?;
            let before = struct_ops_stats();
            let m = scenarios::run(
                Scenario::Render,
                cfg,
                &Params {
                    level: Level::Fixed,
                    calib: res.calibrations[0].clone(),
                    cpus,
                    timing: Timing {
                        warmup: 0.0,
                        secs: plan.bpf_secs,
                    },
                },
            );
            let after = struct_ops_stats();
            let _ = std::fs::write(KNOB, "0");
            running.stop()?;
            m?;
            let mut progs = BTreeMap::new();
            for (name, (cnt, ns)) in after {
                let (c0, n0) = before.get(&name).copied().unwrap_or((0, 0));
                let dc = cnt.saturating_sub(c0);
                if dc > 0 {
                    progs.insert(name, (dc, ns.saturating_sub(n0) as f64 / dc as f64));
                }
            }
            Ok(BpfStats {
                sched: k.clone(),
                workload: workload.clone(),
                progs,
            })
        })();
        match r {
            Ok(s) => {
                println!(
                    "hintbench: bpf {} ({}): {}",
                    s.sched,
                    s.workload,
                    s.progs
                        .iter()
                        .map(|(n, (c, ns))| format!("{n} {ns:.0} ns x{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                res.bpf.push(s);
            }
            Err(e) => {
                let _ = std::fs::write(KNOB, "0");
                let msg = format!("bpf stats under {k}: {e:#}");
                println!("hintbench: {msg}");
                res.errors.push(msg);
            }
        }
    }
}
