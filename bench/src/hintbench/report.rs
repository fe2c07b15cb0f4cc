//! Turning [`Results`] into the demo's table, the benchmark's markdown,
//! JSON summary, latency CDF plots (SVG) and goal lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Result};
use serde::Serialize;

use super::scenarios::{Level, Scenario, REQ_WORK_MS};
use super::suite::{runs_under, Results, Run, DEMO, DRIFT_LIMIT, PUBLISHED, UNPRIVILEGED_KNOBS};
use crate::stats::quantile;

/// Median, minimum and maximum of one metric over repetitions.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Agg {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Agg {
    fn of(v: &[f64]) -> Option<Agg> {
        if v.is_empty() {
            return None;
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        Some(Agg {
            median: quantile(&s, 0.5),
            min: s[0],
            max: s[s.len() - 1],
            n: s.len(),
        })
    }
}

/// Results grouped by scenario, level and contender.
pub struct View<'a> {
    pub res: &'a Results,
}

impl<'a> View<'a> {
    pub fn new(res: &'a Results) -> Self {
        View { res }
    }

    fn all_runs(&self, s: Scenario, l: Level, c: &str) -> impl Iterator<Item = &'a Run> + 'a {
        let c = c.to_string();
        self.res
            .runs
            .iter()
            .filter(move |r| r.scenario == s && r.level == l && r.contender == c)
    }

    /// (runs that fell behind, runs) of (scenario, level, contender).
    pub fn behind(&self, s: Scenario, l: Level, c: &str) -> (usize, usize) {
        let all: Vec<&Run> = self.all_runs(s, l, c).collect();
        let b = all.iter().filter(|r| r.m.get("behind") == 1.0).count();
        (b, all.len())
    }

    /// The runs a median is taken over: below overload, the runs that kept
    /// up (a saturated run never enters a light-load median) unless none
    /// did; at overload, all.
    fn runs(&self, s: Scenario, l: Level, c: &str) -> Vec<&'a Run> {
        let all: Vec<&Run> = self.all_runs(s, l, c).collect();
        if l == Level::Over {
            return all;
        }
        let kept: Vec<&Run> = all
            .iter()
            .copied()
            .filter(|r| r.m.get("behind") != 1.0)
            .collect();
        if kept.is_empty() {
            all
        } else {
            kept
        }
    }

    /// `metric` of every counted repetition of (scenario, level, contender).
    pub fn values(&self, s: Scenario, l: Level, c: &str, metric: &str) -> Vec<f64> {
        self.runs(s, l, c)
            .iter()
            .filter_map(|r| r.m.metrics.get(metric).copied())
            .collect()
    }

    pub fn agg(&self, s: Scenario, l: Level, c: &str, metric: &str) -> Option<Agg> {
        Agg::of(&self.values(s, l, c, metric))
    }

    pub fn med(&self, s: Scenario, l: Level, c: &str, metric: &str) -> Option<f64> {
        self.agg(s, l, c, metric).map(|a| a.median)
    }

    /// The contenders that ran (scenario, level), in table order.
    fn contenders(&self, s: Scenario, l: Level) -> Vec<&'a str> {
        self.res
            .contenders
            .iter()
            .filter(|c| runs_under(s, c) && self.res.plan.cases().contains(&(s, l)))
            .map(|c| c.name.as_str())
            .collect()
    }

    /// "runs behind left out: C b/n, ...; every run behind: D n/n, ..."
    /// for the contenders of (s, l) whose medians leave out some of their
    /// runs, or (below overload) could leave out none because every run
    /// fell behind: a ratio with such a median is not a light-load figure.
    /// Empty if none.
    pub fn left_out(&self, s: Scenario, l: Level) -> String {
        let (mut some, mut every) = (Vec::new(), Vec::new());
        for c in &self.res.contenders {
            let (b, n) = self.behind(s, l, &c.name);
            let kept = self.runs(s, l, &c.name).len();
            if kept < n {
                some.push(format!("{} {b}/{n}", c.name));
            } else if l != Level::Over && n > 0 && b == n {
                every.push(format!("{} {b}/{n}", c.name));
            }
        }
        let mut parts = Vec::new();
        if !some.is_empty() {
            parts.push(format!("runs behind left out: {}", some.join(", ")));
        }
        if !every.is_empty() {
            parts.push(format!(
                "every run behind (median over them): {}",
                every.join(", ")
            ));
        }
        parts.join("; ")
    }

    /// The best of `names` that ran (s, l), and its median p99: the fewest
    /// missed periods (in whole percent), then the lowest p99. Missed
    /// periods come first because wake-to-run counts only the wait at a
    /// frame's start, not the preemptions inside its work that make it
    /// miss: a contender can show a low p99 and miss nearly every frame.
    pub fn best_of(&self, s: Scenario, l: Level, names: &[&str]) -> Option<(String, f64)> {
        names
            .iter()
            .filter_map(|n| {
                let p99 = self.med(s, l, n, "p99_us")?;
                let missed = self.med(s, l, n, "missed_pct").unwrap_or(0.0).round();
                Some((n.to_string(), missed, p99))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)))
            .map(|(n, _, p99)| (n, p99))
    }
}

fn ms(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.0}", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.1}", us / 1000.0)
    } else {
        format!("{:.2}", us / 1000.0)
    }
}

fn ratio(r: f64) -> String {
    if !r.is_finite() {
        "n/a".into()
    } else if r >= 10.0 {
        format!("{r:.0}x")
    } else {
        format!("{r:.2}x")
    }
}

fn pretty(c: &str) -> &str {
    match c {
        "eevdf" => "EEVDF (kernel default)",
        "eevdf-slice" => "EEVDF, render 0.5 ms slice",
        "eevdf-bg-nice" => "EEVDF, background nice 10",
        "eevdf-bg-batch" => "EEVDF, background BATCH",
        "eevdf-bg-idle" => "EEVDF, background IDLE",
        "hinted-nohints" => "scx_hinted, no hints",
        "hinted-both" => "scx_hinted, hints",
        "hinted-own" => "scx_hinted, fg hinted only",
        "hinted-batch" => "scx_hinted, hints, background batch",
        "bpfland" => "scx_bpfland",
        "lavd" => "scx_lavd",
        "cosmos" => "scx_cosmos",
        other => other,
    }
}

fn pct(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.0}%", 100.0 * a / b),
        _ => "-".into(),
    }
}

/// The demo's table: the demo scenario at its level under each contender.
pub fn demo_table(res: &Results) -> String {
    let v = View::new(res);
    let (s, l) = DEMO;
    let mut out = String::new();
    let p = &res.plan;
    let cal = res.calibrations.first().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "A game on {} vCPUs (kernel {}): a render thread needing 60% of a CPU every 16 ms \
         frame, beside the same app's bursty background threads (1 CPU-ms bursts and \
         naps),\nall as an unprivileged user. Offered load: the {} level, {:.0}% of the \
         guest's measured capacity ({:.0} work units per CPU-ms, wakeup round trip \
         {:.0} us).\n{} alternated repetitions of {} s each; medians over repetitions, \
         [min-max]; missed frames summed. 'hints': render interactive, background threads \
         background.\n",
        res.cpus,
        res.kernel,
        l.name(),
        100.0 * l.frac(),
        cal.units_per_cpu_ms,
        cal.wake_rtt_us,
        p.reps,
        p.render_secs
    );
    let _ = writeln!(
        out,
        "{:<28} {:>10} {:>22} {:>17} {:>16} {:>12}",
        "scheduler",
        "p50 ms",
        "p99 ms [min-max]",
        "missed frames",
        "background work",
        "p99 vs EEVDF"
    );
    let eevdf_p99 = v.med(s, l, "eevdf", "p99_us");
    let bg_offered = v.med(s, l, "eevdf", "bg_offered_units_per_s");
    for c in v.contenders(s, l) {
        let (Some(p50), Some(p99)) = (v.agg(s, l, c, "p50_us"), v.agg(s, l, c, "p99_us")) else {
            continue;
        };
        let missed: f64 = v.values(s, l, c, "missed").iter().sum();
        let frames: f64 = v.values(s, l, c, "frames").iter().sum();
        let _ = writeln!(
            out,
            "{:<28} {:>10} {:>22} {:>17} {:>16} {:>12}",
            pretty(c),
            ms(p50.median),
            format!("{} [{}-{}]", ms(p99.median), ms(p99.min), ms(p99.max)),
            format!(
                "{missed:.0}/{frames:.0} ({:.0}%)",
                100.0 * missed / frames.max(1.0)
            ),
            format!(
                "{} of offered",
                pct(v.med(s, l, c, "bg_units_per_s"), bg_offered)
            ),
            div(Some(p99.median), eevdf_p99).map_or("-".into(), ratio)
        );
    }
    out.push('\n');
    let hinted = v.med(s, l, "hinted-both", "p99_us");
    let knob = v.best_of(s, l, &UNPRIVILEGED_KNOBS);
    let publ = v.best_of(s, l, &PUBLISHED);
    // Missed frames first: wake-to-run sees only the wait at a frame's
    // start, not the preemptions inside it that make it miss.
    let missed = |c: &str| -> Option<f64> {
        let m: f64 = v.values(s, l, c, "missed").iter().sum();
        let f: f64 = v.values(s, l, c, "frames").iter().sum();
        (f > 0.0).then(|| 100.0 * m / f)
    };
    let mut parts = vec![format!(
        "scx_hinted with hints {}",
        missed("hinted-both").map_or("-".into(), |x| format!("{x:.0}%"))
    )];
    for (what, c) in [
        ("EEVDF", Some("eevdf".to_string())),
        ("best knob", knob.as_ref().map(|k| k.0.clone())),
        ("no hints", Some("hinted-nohints".to_string())),
        ("best published", publ.as_ref().map(|k| k.0.clone())),
    ] {
        if let Some(x) = c.as_deref().and_then(missed) {
            parts.push(format!("{what} ({}) {x:.0}%", c.unwrap_or_default()));
        }
    }
    let _ = writeln!(out, "missed frames: {}", parts.join(", "));
    let mut line = |what: &str, other: Option<f64>| {
        if let (Some(o), Some(h)) = (other, hinted) {
            let _ = writeln!(
                out,
                "ratio p99 {what} / scx_hinted with hints: {}",
                ratio(o / h)
            );
        }
    };
    line("EEVDF", eevdf_p99);
    if let Some((k, p)) = &knob {
        line(&format!("EEVDF's best unprivileged knob ({k})"), Some(*p));
    }
    line(
        "scx_hinted without hints",
        v.med(s, l, "hinted-nohints", "p99_us"),
    );
    if let Some((k, p)) = &publ {
        line(&format!("best published scheduler ({k})"), Some(*p));
    }
    if let Some((k, _)) = &knob {
        let _ = writeln!(
            out,
            "background work, scx_hinted with hints / {k}: {}",
            pct(
                v.med(s, l, "hinted-both", "bg_units_per_s"),
                v.med(s, l, k, "bg_units_per_s")
            )
        );
    }
    for (c, why) in &res.skipped {
        let _ = writeln!(out, "not run: {c}: {why}");
    }
    for e in &res.errors {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

/// One goal: a measured ratio against a target.
#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub name: String,
    pub measured: Option<f64>,
    /// "<=" or ">=".
    pub op: &'static str,
    pub target: f64,
    pub note: String,
    /// Contenders of this scenario and level whose runs that fell behind
    /// were left out of their medians (a median over the runs that kept
    /// up flatters a contender that mostly did not): empty if none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub caveat: String,
}

impl Goal {
    pub fn met(&self) -> bool {
        match self.measured {
            Some(m) if self.op == "<=" => m <= self.target,
            Some(m) => m >= self.target,
            None => false,
        }
    }

    pub fn line(&self) -> String {
        let m = match self.measured {
            Some(m) => format!("{m:.3}"),
            None => "not-measured".into(),
        };
        let mut line = format!(
            "goal {}: {m} (target {} {}) {}",
            self.name,
            self.op,
            self.target,
            if self.met() { "met" } else { "missed" }
        );
        if !self.caveat.is_empty() {
            let _ = write!(line, " [{}]", self.caveat);
        }
        line
    }
}

fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn min_of(v: &[Option<f64>]) -> Option<f64> {
    v.iter().flatten().copied().reduce(f64::min)
}

fn max_of(v: &[Option<f64>]) -> Option<f64> {
    v.iter().flatten().copied().reduce(f64::max)
}

fn key(s: Scenario, l: Level) -> String {
    let n = s.name().replace('-', "_");
    if l == Level::Fixed {
        n
    } else {
        format!("{n}_{}", l.name())
    }
}

/// Throughput metrics of a scenario's thread groups.
fn groups(s: Scenario) -> &'static [&'static str] {
    match s {
        Scenario::Render | Scenario::FrameOverShare => &["fg_achieved_per_s", "hog_units_per_s"],
        Scenario::RenderIdle => &[],
        Scenario::Dynamic => &["requests_per_s", "batch_chunks_per_s", "hog_units_per_s"],
        Scenario::ReqResp => &["requests_per_s", "hog_units_per_s"],
        Scenario::Wakeup => &["achieved_per_s", "hog_units_per_s"],
        Scenario::FrameMix => &["fg_achieved_per_s", "bg_units_per_s"],
        Scenario::FrameMixHogs => &["fg_achieved_per_s", "bg_units_per_s", "hog_units_per_s"],
        Scenario::Roles => &["requests_per_s", "bg_units_per_s"],
        Scenario::RolesHogs => &["requests_per_s", "bg_units_per_s", "hog_units_per_s"],
        Scenario::Messaging | Scenario::Hackbench => &["messages_per_s"],
    }
}

/// The goals, on medians over repetitions.
pub fn goals(res: &Results) -> Vec<Goal> {
    let v = View::new(res);
    let mut g = Vec::new();
    let caveat = std::cell::RefCell::new(String::new());
    let mut goal =
        |name: String, measured: Option<f64>, op: &'static str, target: f64, note: String| {
            g.push(Goal {
                name,
                measured,
                op,
                target,
                note,
                caveat: caveat.borrow().clone(),
            })
        };
    let has = |c: &str| res.contenders.iter().any(|x| x.name == c);
    for (s, l) in res.plan.cases() {
        let k = key(s, l);
        *caveat.borrow_mut() = v.left_out(s, l);
        let p99 = |c: &str| v.med(s, l, c, "p99_us");
        if s.app_knowledge() {
            // The app's hint for its other threads, set per scenario in
            // advance (results from before hinted-batch existed: both).
            let chosen = match s.hinted_contender() {
                c if has(c) => c,
                _ => "hinted-both",
            };
            let hinted = p99(chosen);
            goal(
                format!("{k}_hinted_missed_pct"),
                v.med(s, l, chosen, "missed_pct"),
                "<=",
                1.0,
                format!(
                    "hinted ({chosen}): percent of periods missed (frames) / requests not \
                     started within their period"
                ),
            );
            if l == Level::Light {
                goal(
                    format!("{k}_p99_vs_eevdf"),
                    div(hinted, p99("eevdf")),
                    "<=",
                    1.05,
                    format!(
                        "at light load nobody must wait: hinted ({chosen}) p99 / EEVDF p99, \
                         no worse"
                    ),
                );
            } else {
                let mut vs = vec!["eevdf", "hinted-nohints", "bpfland", "lavd"];
                if has("cosmos") {
                    vs.push("cosmos");
                }
                for c in vs {
                    goal(
                        format!("{k}_p99_vs_{}", c.replace('-', "_")),
                        div(hinted, p99(c)),
                        "<=",
                        1.0 / 3.0,
                        format!("hinted ({chosen}) p99 / {c} p99"),
                    );
                }
                let knob = v.best_of(s, l, &UNPRIVILEGED_KNOBS);
                goal(
                    format!("{k}_p99_vs_best_unprivileged_knob"),
                    div(hinted, knob.as_ref().map(|x| x.1)),
                    "<=",
                    0.8,
                    format!(
                        "hinted ({chosen}) p99 / EEVDF with the app's best unprivileged knob ({})",
                        knob.as_ref().map_or("none ran", |x| x.0.as_str())
                    ),
                );
                goal(
                    format!("{k}_background_work_vs_best_knob"),
                    div(
                        v.med(s, l, chosen, "bg_units_per_s"),
                        knob.as_ref()
                            .and_then(|x| v.med(s, l, &x.0, "bg_units_per_s")),
                    ),
                    ">=",
                    0.9,
                    format!(
                        "the app's background work per second, hinted ({chosen}) / under that knob"
                    ),
                );
            }
        }
        // A hint never backfires.
        if has("hinted-nohints") && (has("hinted-own") || has("hinted-both")) {
            let worst = max_of(&[p99("hinted-own"), p99("hinted-both"), p99("hinted-batch")]);
            if worst.is_some() {
                goal(
                    format!("never_backfire_{k}"),
                    div(worst, p99("hinted-nohints")),
                    "<=",
                    1.05,
                    "worst of hinted-own / hinted-both / hinted-batch p99 over scx_hinted \
                     without hints"
                        .into(),
                );
            }
        }
        // No hints: on par with EEVDF, latency and every group's throughput.
        if s != Scenario::RenderIdle && s != Scenario::Hackbench && has("hinted-nohints") {
            goal(
                format!("nohints_{k}_p99_vs_eevdf"),
                div(p99("hinted-nohints"), p99("eevdf")),
                "<=",
                1.05,
                "scx_hinted without hints p99 / EEVDF p99".into(),
            );
        }
        if s != Scenario::RenderIdle && has("hinted-nohints") {
            let worst = groups(s)
                .iter()
                .filter_map(|m| div(v.med(s, l, "hinted-nohints", m), v.med(s, l, "eevdf", m)))
                .reduce(f64::min);
            goal(
                format!("nohints_{k}_throughput_vs_eevdf"),
                worst,
                ">=",
                0.95,
                format!(
                    "lowest over the thread groups ({}) of scx_hinted without hints / EEVDF",
                    groups(s).join(", ")
                ),
            );
        }
    }
    caveat.borrow_mut().clear();
    // The limit case: a hint buys latency, never more than the fair share.
    let (s, l) = (Scenario::FrameOverShare, Level::Fixed);
    if res.plan.cases().contains(&(s, l)) {
        goal(
            "frame_over_share_hinted_cpu_vs_fair_share".into(),
            div(
                v.med(s, l, "hinted-both", "fg_cpu_share"),
                v.med(s, l, "hinted-both", "fg_fair_share_cpu"),
            ),
            "<=",
            1.1,
            "the render thread's CPU share, hinted, over its fair share (it needs twice that: \
             it must miss)"
                .into(),
        );
    }
    // Previous goals: what a hint switch costs, the BPF reads.
    let d = Scenario::Dynamic;
    let dl = res
        .plan
        .levels_of(d)
        .into_iter()
        .find(|&l| l != Level::Over)
        .unwrap_or(Level::Near);
    let store_cost = min_of(&[
        v.med(d, dl, "hinted-own", "switch_cost_pct_at_10k"),
        v.med(d, dl, "hinted-both", "switch_cost_pct_at_10k"),
    ]);
    goal(
        "dynamic_switch_cost_pct_at_10k_per_s".into(),
        store_cost,
        "<=",
        1.0,
        "percent of CPU time a hint switch costs at 10,000 switches/s (in-situ TSC timing)".into(),
    );
    let store_ns = min_of(&[
        v.med(d, dl, "hinted-own", "switch_ns"),
        v.med(d, dl, "hinted-both", "switch_ns"),
    ]);
    goal(
        "dynamic_sched_setattr_vs_hint_switch".into(),
        div(v.med(d, dl, "eevdf-bg-batch", "switch_ns"), store_ns),
        ">=",
        1.0,
        "reported ratio (no target in the issue): sched_setattr switch ns / hint switch ns".into(),
    );
    let enq = |workload_has_hints: bool| {
        res.bpf
            .iter()
            .find(|b| b.sched == "hinted" && b.workload.contains("both") == workload_has_hints)
            .and_then(|b| b.progs.iter().find(|(n, _)| n.contains("enqueue")))
            .map(|(_, (_, ns))| *ns)
    };
    let noreads = res
        .bpf
        .iter()
        .find(|b| b.sched == "hinted-noreads" && b.workload.contains("both"))
        .and_then(|b| b.progs.iter().find(|(n, _)| n.contains("enqueue")))
        .map(|(_, (_, ns))| *ns);
    let (added, note) = match noreads {
        Some(n) => (
            enq(true).map(|h| h - n),
            "enqueue ns: hint reads minus the same build with hint reads compiled out",
        ),
        None => (
            match (enq(true), enq(false)) {
                (Some(h), Some(u)) => Some(h - u),
                _ => None,
            },
            "PROXY (no build without hint reads): enqueue ns with registered hinted threads \
             minus with no thread registered",
        ),
    };
    if res.plan.bpf_secs > 0.0 {
        goal(
            "bpf_hint_read_ns_per_enqueue".into(),
            added,
            "<=",
            30.0,
            note.into(),
        );
    }
    goal(
        "calibration_drift_pct".into(),
        (res.calibrations.len() > 1).then(|| 100.0 * res.drift.abs()),
        "<=",
        100.0 * DRIFT_LIMIT,
        "largest change of measured capacity from the first calibration, percent (more: \
         the host moved under the run; compare with care)"
            .into(),
    );
    g
}

const COLORS: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#ff7f0e", "#17becf",
    "#7f7f7f", "#bcbd22", "#000000", "#aec7e8",
];

/// p99 (log axis) against offered load, one line per contender, for one
/// scenario. A fixed-shape scenario has one point per contender.
pub fn load_svg(res: &Results, s: Scenario) -> String {
    let v = View::new(res);
    let levels = res.plan.levels_of(s);
    let names: Vec<&str> = res
        .contenders
        .iter()
        .filter(|c| runs_under(s, c))
        .map(|c| c.name.as_str())
        .collect();
    // Per contender: (offered load %, p99 us, fell behind) per level.
    type Point = (f64, f64, bool);
    let mut series: Vec<(&str, Vec<Point>)> = Vec::new();
    for &c in &names {
        let pts: Vec<(f64, f64, bool)> = levels
            .iter()
            .filter_map(|&l| {
                let p99 = v.med(s, l, c, "p99_us")?;
                let load = v
                    .med(s, l, c, "offered_load_pct")
                    .unwrap_or(100.0 * l.frac());
                let (b, _) = v.behind(s, l, c);
                Some((load, p99.max(1.0), b > 0))
            })
            .collect();
        if !pts.is_empty() {
            series.push((c, pts));
        }
    }
    let (w, h, l, r, t, b) = (760.0, 440.0, 70.0, 210.0, 30.0, 45.0);
    let (pw, ph) = (w - l - r, h - t - b);
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let (mut xlo, mut xhi, mut ylo, mut yhi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y, _) in all {
        xlo = xlo.min(x);
        xhi = xhi.max(x);
        ylo = ylo.min(y);
        yhi = yhi.max(y);
    }
    if series.is_empty() {
        (xlo, xhi, ylo, yhi) = (0.0, 100.0, 1.0, 10.0);
    }
    if xhi - xlo < 1.0 {
        xlo -= 10.0;
        xhi += 10.0;
    }
    let (xlo, xhi) = (xlo - 0.08 * (xhi - xlo), xhi + 0.08 * (xhi - xlo));
    let (llo, lhi) = (
        ylo.log10().floor(),
        yhi.log10().ceil().max(ylo.log10().floor() + 1.0),
    );
    let x = |v: f64| l + pw * (v - xlo) / (xhi - xlo);
    let y = |us: f64| t + ph * (1.0 - (us.log10() - llo) / (lhi - llo));
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">{}: p99 {} against offered load (median of repetitions; hollow: fell behind)</text>"#,
        l + pw / 2.0,
        s.name(),
        s.latency_name()
    );
    let mut e = llo;
    while e <= lhi + 1e-9 {
        let yv = y(10f64.powf(e));
        let label = match e as i32 {
            0 => "1 us".to_string(),
            1 => "10 us".to_string(),
            2 => "100 us".to_string(),
            3 => "1 ms".to_string(),
            4 => "10 ms".to_string(),
            5 => "100 ms".to_string(),
            6 => "1 s".to_string(),
            n => format!("1e{n} us"),
        };
        let _ = writeln!(
            o,
            r##"<line x1="{l}" y1="{yv:.1}" x2="{}" y2="{yv:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            l + pw,
            l - 6.0,
            yv + 4.0
        );
        e += 1.0;
    }
    let mut ticks: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0.round()))
        .collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for tv in ticks {
        let xv = x(tv);
        let _ = writeln!(
            o,
            r##"<line x1="{xv:.1}" y1="{t}" x2="{xv:.1}" y2="{}" stroke="#eee"/><text x="{xv:.1}" y="{}" text-anchor="middle">{tv:.0}%</text>"##,
            t + ph,
            t + ph + 16.0
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">offered load, % of the capacity the app's threads can have (calibrated)</text>"#,
        l + pw / 2.0,
        h - 8.0
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let line: Vec<String> = pts
            .iter()
            .map(|&(a, b, _)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        let _ = writeln!(
            o,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"/>"#,
            line.join(" ")
        );
        for &(a, b, behind) in pts {
            let fill = if behind { "white" } else { color };
            let _ = writeln!(
                o,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{fill}" stroke="{color}"/>"#,
                x(a),
                y(b)
            );
        }
        let ly = t + 14.0 + 18.0 * i as f64;
        let _ = writeln!(
            o,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{name}</text>"#,
            l + pw + 12.0,
            l + pw + 36.0,
            l + pw + 42.0,
            ly + 4.0
        );
    }
    o.push_str("</svg>\n");
    o
}

fn cell(a: Option<Agg>, f: impl Fn(f64) -> String, spread: bool) -> String {
    match a {
        None => "-".into(),
        Some(a) if spread && a.n > 1 => format!("{} ({}–{})", f(a.median), f(a.min), f(a.max)),
        Some(a) => f(a.median),
    }
}

/// Extra columns of a scenario's table: (header, metric).
fn extra(s: Scenario) -> Vec<(&'static str, &'static str)> {
    match s {
        Scenario::Render => vec![
            ("missed %", "missed_pct"),
            ("hog work/s", "hog_units_per_s"),
        ],
        Scenario::Dynamic => vec![
            ("switch ns", "switch_ns"),
            ("cost % at 10k/s", "switch_cost_pct_at_10k"),
            ("switches/s", "switches_per_s"),
            ("batch chunks/s", "batch_chunks_per_s"),
            ("hog work/s", "hog_units_per_s"),
        ],
        Scenario::ReqResp => vec![
            ("req/s", "requests_per_s"),
            ("hog work/s", "hog_units_per_s"),
        ],
        Scenario::Wakeup => vec![
            ("rounds/s", "rounds_per_s"),
            ("hog work/s", "hog_units_per_s"),
        ],
        Scenario::FrameMix => vec![
            ("missed %", "missed_pct"),
            ("render CPU share", "fg_cpu_share"),
            ("background work/s", "bg_units_per_s"),
        ],
        Scenario::FrameMixHogs | Scenario::FrameOverShare => vec![
            ("missed %", "missed_pct"),
            ("render CPU share", "fg_cpu_share"),
            ("background work/s", "bg_units_per_s"),
            ("other user's hog work/s", "hog_units_per_s"),
        ],
        Scenario::Roles | Scenario::RolesHogs => vec![
            ("missed %", "missed_pct"),
            ("switches/s", "switches_per_s"),
            ("refused/s", "refused_per_s"),
            ("bulk work/s", "bg_units_per_s"),
            ("other user's hog work/s", "hog_units_per_s"),
        ],
        Scenario::Messaging => vec![("messages/s", "messages_per_s")],
        Scenario::Hackbench => vec![
            ("hackbench s", "hackbench_secs"),
            ("messages/s", "messages_per_s"),
        ],
        Scenario::RenderIdle => vec![],
    }
}

/// The markdown report: calibration, one table per scenario and level,
/// the BPF table, the goals.
pub fn markdown(res: &Results) -> String {
    let v = View::new(res);
    let mut o = String::new();
    let p = &res.plan;
    let _ = writeln!(
        o,
        "Plan `{}`: {} repetition(s), frame-paced runs {} s, other runs {} s (after {} s \
         warm-up); {} vCPUs, guest kernel {}. Medians over repetitions, (min–max) over \
         repetitions; below overload, runs that fell behind are left out of the medians \
         (the `behind` column counts them).\n",
        p.name, p.reps, p.render_secs, p.other_secs, p.warmup, res.cpus, res.kernel
    );
    let _ = writeln!(o, "Calibration (work sized from the first):\n");
    for (i, c) in res.calibrations.iter().enumerate() {
        let _ = writeln!(
            o,
            "- {}: {}",
            if i == 0 { "start" } else { "later" },
            c.line()
        );
    }
    let flag = if res.drift.abs() > DRIFT_LIMIT {
        " **FLAGGED: the host's speed changed during the run**"
    } else {
        ""
    };
    let _ = writeln!(
        o,
        "- largest capacity drift: {:+.1}%{flag}\n",
        100.0 * res.drift
    );
    let _ = writeln!(o, "| contender | what |\n|---|---|");
    for c in &res.contenders {
        let ops = c
            .sched
            .as_ref()
            .and_then(|s| res.ops.get(s))
            .map(|o| format!(" (ops `{o}`)"))
            .unwrap_or_default();
        let _ = writeln!(o, "| {} | {}{} |", c.name, c.about, ops);
    }
    for (c, why) in &res.skipped {
        let _ = writeln!(o, "| {c} | **not run**: {why} |");
    }
    o.push('\n');
    for &s in &p.scenarios {
        if s == Scenario::RenderIdle {
            continue;
        }
        let _ = writeln!(o, "### {} ({})\n", s.name(), s.latency_name());
        for l in p.levels_of(s) {
            let base_p99 = v.med(s, l, "eevdf", "p99_us");
            let load = v
                .med(s, l, "eevdf", "offered_load_pct")
                .unwrap_or(100.0 * l.frac());
            let guest = v
                .med(s, l, "eevdf", "offered_guest_pct")
                .map(|g| format!(" ({g:.0}% of the guest)"))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "Level **{}**: offered load {load:.0}% of the capacity the scenario's own \
                 threads can have{guest}.\n",
                l.name()
            );
            let ex = extra(s);
            let _ = write!(
                o,
                "| contender | p50 ms | p99 ms | p99.9 ms | offered/s | achieved/s | behind |"
            );
            for (h, _) in &ex {
                let _ = write!(o, " {h} |");
            }
            let _ = writeln!(o, " p99 / EEVDF |");
            let _ = write!(o, "|---|--:|--:|--:|--:|--:|--:|");
            for _ in &ex {
                o.push_str("--:|");
            }
            o.push_str("--:|\n");
            let mut rows: Vec<(Scenario, Level, &str, String)> = Vec::new();
            if s == Scenario::Render {
                rows.push((
                    Scenario::RenderIdle,
                    Level::Fixed,
                    "eevdf",
                    "idle floor (EEVDF, no hogs)".into(),
                ));
            }
            for c in v.contenders(s, l) {
                rows.push((s, l, c, c.to_string()));
            }
            for (sc, lv, c, label) in rows {
                let (b, n) = v.behind(sc, lv, c);
                let _ = write!(
                    o,
                    "| {label} | {} | {} | {} | {} | {} | {b}/{n} |",
                    cell(v.agg(sc, lv, c, "p50_us"), ms, false),
                    cell(v.agg(sc, lv, c, "p99_us"), ms, true),
                    cell(v.agg(sc, lv, c, "p999_us"), ms, false),
                    cell(
                        v.agg(sc, lv, c, "offered_per_s"),
                        |x| format!("{x:.0}"),
                        false
                    ),
                    cell(
                        v.agg(sc, lv, c, "achieved_per_s"),
                        |x| format!("{x:.0}"),
                        false
                    ),
                );
                for (_, k) in &ex {
                    let f = |x: f64| {
                        if x.abs() < 10.0 {
                            format!("{x:.2}")
                        } else {
                            format!("{x:.0}")
                        }
                    };
                    let _ = write!(o, " {} |", cell(v.agg(sc, lv, c, k), f, false));
                }
                let rr = div(v.med(sc, lv, c, "p99_us"), base_p99).filter(|_| sc == s);
                let _ = writeln!(o, " {} |", rr.map_or("-".into(), ratio));
            }
            o.push('\n');
        }
        if s != Scenario::Hackbench {
            let _ = writeln!(
                o,
                "![{} p99 against load](load-{}.svg)\n",
                s.name(),
                s.name()
            );
        }
    }
    if !res.bpf.is_empty() {
        let _ = writeln!(
            o,
            "### BPF run time per callback (kernel.bpf_stats_enabled)\n\n\
             | scheduler | workload | callback | calls | avg ns |\n|---|---|---|--:|--:|"
        );
        for b in &res.bpf {
            for (n, (c, ns)) in &b.progs {
                let _ = writeln!(o, "| {} | {} | {n} | {c} | {ns:.0} |", b.sched, b.workload);
            }
        }
        o.push('\n');
    }
    let gs = goals(res);
    let met = gs.iter().filter(|g| g.met()).count();
    let _ = writeln!(o, "### Goals (medians): {met} of {} met\n\n```", gs.len());
    for g in &gs {
        let _ = writeln!(o, "{}", g.line());
    }
    let _ = writeln!(o, "```\n");
    let mut notes: Vec<(String, String)> = Vec::new();
    for g in &gs {
        // One note per kind of goal (the part after scenario and level).
        let kind = g.note.clone();
        if !notes.iter().any(|(_, n)| *n == kind) {
            notes.push((g.name.clone(), kind));
        }
    }
    for (name, note) in notes {
        let _ = writeln!(o, "- `{name}` (and alike): {note}");
    }
    if !res.errors.is_empty() {
        let _ = writeln!(o, "\n### Errors\n");
        for e in &res.errors {
            let _ = writeln!(o, "- {e}");
        }
    }
    o
}

/// Whether scenario `s` runs other users' or load hogs.
fn has_hogs(s: Scenario) -> bool {
    !matches!(
        s,
        Scenario::RenderIdle
            | Scenario::FrameMix
            | Scenario::Roles
            | Scenario::Messaging
            | Scenario::Hackbench
    )
}

/// Checks that a report is complete and sane (what a CI smoke test
/// asserts; the goals are not checked). Returns the problems found.
pub fn check(res: &Results) -> Vec<String> {
    let v = View::new(res);
    let mut bad = Vec::new();
    if !res.errors.is_empty() {
        bad.push(format!("errors: {}", res.errors.join("; ")));
    }
    match res.calibrations.first() {
        Some(c) if c.units_per_cpu_ms > 0.0 && c.wake_rtt_us > 0.0 && c.wake_cpu_us > 0.0 => {
            let e = c.sizing_error(REQ_WORK_MS);
            if e > 0.1 {
                bad.push(format!(
                    "calibration too coarse: {:.1} work units per CPU-ms size the smallest \
                     work ({REQ_WORK_MS} CPU-ms) {:.0}% off",
                    c.units_per_cpu_ms,
                    100.0 * e
                ));
            }
        }
        c => bad.push(format!("implausible or missing calibration: {c:?}")),
    }
    if res.calibrations.len() < 2 {
        bad.push("no calibration at the end of the run".into());
    }
    for c in &res.contenders {
        for (s, l) in res.plan.cases() {
            if !runs_under(s, c) {
                continue;
            }
            let what = format!("{} {} {}", s.name(), l.name(), c.name);
            let n = v.all_runs(s, l, &c.name).count();
            if n != res.plan.reps {
                bad.push(format!("{what}: {n} of {} runs", res.plan.reps));
                continue;
            }
            if s == Scenario::Hackbench {
                // No latency samples: its run time is the measure.
                if v.med(s, l, &c.name, "hackbench_secs").unwrap_or(0.0) <= 0.0 {
                    bad.push(format!("{what}: no hackbench time"));
                }
                continue;
            }
            if v.med(s, l, &c.name, "offered_per_s").is_none() && s != Scenario::RenderIdle {
                bad.push(format!("{what}: no offered rate"));
            }
            // A queue starved outright (an unprivileged worker stuck under
            // SCHED_IDLE beside hogs) may serve nothing: that is its result,
            // marked behind, not a broken run.
            let (b, n) = v.behind(s, l, &c.name);
            if b == n && v.med(s, l, &c.name, "achieved_per_s").is_some() {
                continue;
            }
            let p50 = v.med(s, l, &c.name, "p50_us");
            let p99 = v.med(s, l, &c.name, "p99_us");
            match (p50, p99) {
                (Some(a), Some(b)) if a >= 0.0 && b >= a && b < 60e6 => {}
                _ => bad.push(format!(
                    "{what}: implausible latency p50 {p50:?} p99 {p99:?}"
                )),
            }
            // A frame thread that misses every period has few samples; its
            // periods are what must be there.
            let counted = if v.med(s, l, &c.name, "frames").is_some() {
                "frames"
            } else {
                "samples"
            };
            if v.med(s, l, &c.name, counted).unwrap_or(0.0) < 20.0 {
                bad.push(format!("{what}: fewer than 20 {counted}"));
            }
            if has_hogs(s) && v.med(s, l, &c.name, "hog_units_per_s").unwrap_or(0.0) <= 0.0 {
                bad.push(format!("{what}: the hogs did no work"));
            }
            for g in groups(s) {
                if v.med(s, l, &c.name, g).is_none() {
                    bad.push(format!("{what}: no {g}"));
                }
            }
        }
    }
    if res.plan.bpf_secs > 0.0
        && !res
            .bpf
            .iter()
            .any(|b| b.sched == "hinted" && !b.progs.is_empty())
    {
        bad.push("no BPF run-time statistics for scx_hinted".into());
    }
    for g in goals(res) {
        if g.measured.is_none() && !res.skipped.is_empty() {
            continue;
        }
        if g.measured.is_none_or(|m| !m.is_finite()) {
            bad.push(format!("goal {} not measured", g.name));
        }
    }
    bad
}

/// Writes results.json, summary.json, report.md and the SVGs into `dir`.
pub fn write_all(res: &Results, dir: &std::path::Path) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("results.json"), serde_json::to_vec(res)?)?;
    let v = View::new(res);
    let mut summary = BTreeMap::new();
    for (s, l) in res.plan.cases() {
        for c in &res.contenders {
            let mut metrics = BTreeMap::new();
            let keys: std::collections::BTreeSet<&String> = v
                .all_runs(s, l, &c.name)
                .flat_map(|r| r.m.metrics.keys())
                .collect();
            for k in keys {
                if let Some(a) = v.agg(s, l, &c.name, k) {
                    metrics.insert(k.clone(), a);
                }
            }
            if !metrics.is_empty() {
                summary.insert(format!("{}/{}/{}", s.name(), l.name(), c.name), metrics);
            }
        }
    }
    let goals = goals(res);
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "plan": res.plan,
            "kernel": res.kernel,
            "cpus": res.cpus,
            "calibrations": res.calibrations,
            "drift": res.drift,
            "skipped": res.skipped,
            "errors": res.errors,
            "bpf": res.bpf,
            "medians": summary,
            "goals": goals,
        }))?,
    )?;
    for &s in &res.plan.scenarios {
        if s != Scenario::RenderIdle && s != Scenario::Hackbench {
            std::fs::write(dir.join(format!("load-{}.svg", s.name())), load_svg(res, s))?;
        }
    }
    let md = markdown(res);
    std::fs::write(dir.join("report.md"), &md)?;
    if res.runs.is_empty() {
        bail!("the results hold no run");
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hintbench::calib::Calibration;
    use crate::hintbench::scenarios::Measurement;
    use crate::hintbench::suite::{all_contenders, Plan};

    fn run(rep: usize, c: &str, s: Scenario, l: Level, p99: f64, behind: bool) -> Run {
        let mut m = Measurement::default();
        m.set("p50_us", p99 / 2.0);
        m.set("p99_us", p99);
        m.set("behind", if behind { 1.0 } else { 0.0 });
        Run {
            rep,
            contender: c.into(),
            scenario: s,
            level: l,
            m,
        }
    }

    fn results(runs: Vec<Run>) -> Results {
        let mut plan = Plan::named("quick").expect("a plan");
        plan.scenarios = vec![Scenario::Roles];
        plan.levels = vec![Level::Light, Level::Over];
        plan.reps = 3;
        Results {
            plan,
            kernel: "test".into(),
            cpus: 2,
            calibrations: vec![Calibration::default()],
            drift: 0.0,
            contenders: all_contenders()
                .into_iter()
                .filter(|c| c.name == "eevdf")
                .collect(),
            skipped: BTreeMap::new(),
            ops: BTreeMap::new(),
            runs,
            bpf: Vec::new(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn a_run_that_fell_behind_stays_out_of_a_light_median_but_counts_at_overload() {
        let mut runs = Vec::new();
        for l in [Level::Light, Level::Over] {
            runs.push(run(0, "eevdf", Scenario::Roles, l, 100.0, false));
            runs.push(run(1, "eevdf", Scenario::Roles, l, 200.0, false));
            runs.push(run(2, "eevdf", Scenario::Roles, l, 90_000.0, true));
        }
        let res = results(runs);
        let v = View::new(&res);
        assert_eq!(
            v.med(Scenario::Roles, Level::Light, "eevdf", "p99_us"),
            Some(150.0)
        );
        assert_eq!(
            v.med(Scenario::Roles, Level::Over, "eevdf", "p99_us"),
            Some(200.0)
        );
        assert_eq!(v.behind(Scenario::Roles, Level::Light, "eevdf"), (1, 3));
    }

    #[test]
    fn a_goal_says_when_a_median_left_runs_out() {
        let mut runs = Vec::new();
        for l in [Level::Light, Level::Over] {
            runs.push(run(0, "eevdf", Scenario::Roles, l, 100.0, false));
            runs.push(run(1, "eevdf", Scenario::Roles, l, 90_000.0, true));
            runs.push(run(2, "eevdf", Scenario::Roles, l, 90_000.0, true));
        }
        let res = results(runs);
        let gs = goals(&res);
        let light = gs
            .iter()
            .find(|g| g.name == "roles_light_hinted_missed_pct")
            .expect("a light goal");
        assert!(
            light.line().ends_with("[runs behind left out: eevdf 2/3]"),
            "{}",
            light.line()
        );
        // At overload every run counts: nothing left out.
        let over = gs
            .iter()
            .find(|g| g.name == "roles_over_hinted_missed_pct")
            .expect("an over goal");
        assert!(over.caveat.is_empty(), "{}", over.line());
    }

    #[test]
    fn check_flags_a_calibration_too_coarse_for_the_smallest_work() {
        let mut res = results(Vec::new());
        let cal = |units_per_cpu_ms| Calibration {
            units_per_cpu_ms,
            wake_rtt_us: 100.0,
            wake_cpu_us: 100.0,
            ..Calibration::default()
        };
        // 13 units per CPU-ms: 0.05 CPU-ms is 0.65 units, done as 1.
        res.calibrations = vec![cal(13.1)];
        assert!(check(&res).join("\n").contains("too coarse"));
        res.calibrations = vec![cal(840.0)];
        assert!(!check(&res).join("\n").contains("too coarse"));
    }

    #[test]
    fn check_reports_missing_runs_and_calibration() {
        let res = results(vec![run(
            0,
            "eevdf",
            Scenario::Roles,
            Level::Light,
            100.0,
            false,
        )]);
        let bad = check(&res).join("\n");
        assert!(bad.contains("roles light eevdf: 1 of 3 runs"), "{bad}");
        assert!(bad.contains("roles over eevdf: 0 of 3 runs"), "{bad}");
        assert!(bad.contains("calibration"), "{bad}");
    }

    #[test]
    fn a_starved_queue_is_a_result_not_a_broken_run() {
        let mut runs = Vec::new();
        for rep in 0..3 {
            for l in [Level::Light, Level::Over] {
                let mut r = run(rep, "eevdf", Scenario::Roles, l, 100.0, l == Level::Over);
                for k in [
                    "offered_per_s",
                    "achieved_per_s",
                    "requests_per_s",
                    "bg_units_per_s",
                ] {
                    r.m.set(k, 1.0);
                }
                r.m.set("samples", 50.0);
                if l == Level::Over {
                    // Nothing served: no latency at all.
                    r.m.metrics.retain(|k, _| !k.ends_with("_us"));
                    r.m.set("samples", 0.0);
                    r.m.set("achieved_per_s", 0.0);
                }
                runs.push(r);
            }
        }
        let mut res = results(runs);
        res.calibrations = vec![
            Calibration {
                units_per_cpu_ms: 10.0,
                wake_rtt_us: 100.0,
                wake_cpu_us: 50.0,
                ..Calibration::default()
            };
            2
        ];
        let bad = check(&res);
        // Goals are not measured here (one contender); the runs are fine.
        assert!(bad.iter().all(|b| !b.starts_with("roles ")), "{bad:?}");
    }

    #[test]
    fn every_scenario_gets_a_load_plot() {
        let res = results(vec![run(
            0,
            "eevdf",
            Scenario::Roles,
            Level::Light,
            100.0,
            false,
        )]);
        let svg = load_svg(&res, Scenario::Roles);
        assert!(svg.starts_with("<svg") && svg.contains("eevdf") && svg.contains("50%"));
    }
}
