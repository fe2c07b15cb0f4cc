//! The contenders, the plans (demo, quick, full) and the loop that runs
//! every scenario under every contender, alternating, inside one boot.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use scx_hints::LatencyClass;
use serde::{Deserialize, Serialize};

use super::scenarios::{self, Measurement, Scenario, Timing};
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

/// Every contender, in the order the tables show them.
pub fn all_contenders() -> Vec<Contender> {
    use LatencyClass::{Background, Interactive};
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
            "EEVDF, latency threads at nice -10 (root)",
        ),
        contender(
            "eevdf-slice",
            None,
            Treatment::knob(Knob::Slice(500_000)),
            none,
            "EEVDF, latency threads request a 0.5 ms slice (sched_setattr sched_runtime)",
        ),
        contender(
            "eevdf-hogs-idle",
            None,
            none,
            Treatment::knob(Knob::Idle),
            "EEVDF, load threads under SCHED_IDLE",
        ),
        contender(
            "eevdf-hogs-batch",
            None,
            none,
            Treatment::knob(Knob::Batch),
            "EEVDF, load threads under SCHED_BATCH",
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
            "scx_hinted, latency threads hinted interactive, load unhinted (own thread only)",
        ),
        contender(
            "hinted-both",
            Some("hinted"),
            Treatment::hint(Interactive),
            Treatment::hint(Background),
            "scx_hinted, latency threads interactive, load background (both annotated)",
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
    ]
}

/// What a plan runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub contenders: Vec<String>,
    pub scenarios: Vec<Scenario>,
    pub reps: usize,
    /// Seconds measured per render run / per other run, and warm-up.
    pub render_secs: f64,
    pub other_secs: f64,
    pub warmup: f64,
    /// Seconds of the BPF run-time statistics pass per scheduler (0: none).
    pub bpf_secs: f64,
}

impl Plan {
    pub fn named(name: &str) -> Result<Plan> {
        let all: Vec<String> = all_contenders().into_iter().map(|c| c.name).collect();
        let everything = Scenario::ALL.to_vec();
        Ok(match name {
            "demo" => Plan {
                name: name.into(),
                contenders: ["eevdf", "hinted-nohints", "hinted-both"]
                    .map(String::from)
                    .to_vec(),
                scenarios: vec![Scenario::Render, Scenario::RenderIdle],
                reps: 3,
                render_secs: 5.0,
                other_secs: 0.0,
                warmup: 0.5,
                bpf_secs: 0.0,
            },
            "quick" => Plan {
                name: name.into(),
                contenders: all,
                scenarios: everything,
                reps: 1,
                render_secs: 2.0,
                other_secs: 1.5,
                warmup: 0.3,
                bpf_secs: 2.0,
            },
            "full" => Plan {
                name: name.into(),
                contenders: all,
                scenarios: everything,
                reps: 3,
                render_secs: 12.0,
                other_secs: 5.0,
                warmup: 0.5,
                bpf_secs: 8.0,
            },
            _ => bail!("unknown plan {name:?} (demo, quick, full)"),
        })
    }

    fn timing(&self, s: Scenario) -> Timing {
        Timing {
            warmup: self.warmup,
            secs: match s {
                Scenario::Render | Scenario::RenderIdle => self.render_secs,
                _ => self.other_secs,
            },
        }
    }
}

/// Whether scenario `s` runs under contender `c`. The idle floor is a
/// property of the machine: measured once per repetition, under EEVDF.
pub fn runs_under(s: Scenario, c: &Contender) -> bool {
    match s {
        Scenario::RenderIdle => c.name == "eevdf",
        _ => true,
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub rep: usize,
    pub contender: String,
    pub scenario: Scenario,
    pub m: Measurement,
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
    let mut res = Results {
        plan: plan.clone(),
        kernel: crate::env::kernel(),
        cpus,
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
    let total: usize = plan.reps
        * res
            .contenders
            .iter()
            .map(|c| plan.scenarios.iter().filter(|s| runs_under(**s, c)).count())
            .sum::<usize>();
    let mut done = 0;
    // Published schedulers that cannot attach on this kernel are left out
    // (and listed with the reason) rather than failing the suite.
    let mut unusable: BTreeMap<String, String> = BTreeMap::new();
    for rep in 0..plan.reps {
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
                for &s in &plan.scenarios {
                    if !runs_under(s, c) {
                        continue;
                    }
                    let result = scenarios::run(s, c.cfg, plan.timing(s), cpus);
                    done += 1;
                    if let Some(r) = running.as_mut() {
                        if let Err(e) = r.check() {
                            let msg = format!("rep {rep} {} {}: {e:#}", s.name(), c.name);
                            println!("hintbench: {msg}");
                            res.errors.push(msg);
                            running = None;
                            break 'members;
                        }
                    }
                    match result {
                        Ok(m) => {
                            println!(
                                "hintbench: [{done}/{total}] rep {} {:<12} {:<17} {}",
                                rep + 1,
                                s.name(),
                                c.name,
                                brief(&m)
                            );
                            res.runs.push(Run {
                                rep,
                                contender: c.name.clone(),
                                scenario: s,
                                m,
                            });
                        }
                        Err(e) => {
                            let msg = format!("rep {rep} {} {}: {e:#}", s.name(), c.name);
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
                Timing {
                    warmup: 0.0,
                    secs: plan.bpf_secs,
                },
                cpus,
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
