//! Turning [`Results`] into the demo's table, the benchmark's markdown,
//! JSON summary, latency CDF plots (SVG) and goal lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Result};
use serde::Serialize;

use super::scenarios::Scenario;
use super::suite::{runs_under, Results};
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

/// Results grouped by scenario and contender.
pub struct View<'a> {
    pub res: &'a Results,
}

impl<'a> View<'a> {
    pub fn new(res: &'a Results) -> Self {
        View { res }
    }

    /// `metric` of every repetition of (scenario, contender).
    pub fn values(&self, s: Scenario, c: &str, metric: &str) -> Vec<f64> {
        self.res
            .runs
            .iter()
            .filter(|r| r.scenario == s && r.contender == c)
            .filter_map(|r| r.m.metrics.get(metric).copied())
            .collect()
    }

    pub fn agg(&self, s: Scenario, c: &str, metric: &str) -> Option<Agg> {
        Agg::of(&self.values(s, c, metric))
    }

    pub fn med(&self, s: Scenario, c: &str, metric: &str) -> Option<f64> {
        self.agg(s, c, metric).map(|a| a.median)
    }

    /// All latency samples of (scenario, contender), pooled and sorted.
    pub fn pooled(&self, s: Scenario, c: &str) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .res
            .runs
            .iter()
            .filter(|r| r.scenario == s && r.contender == c)
            .flat_map(|r| r.m.lat_us.iter().map(|&x| x as f64))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn contenders(&self, s: Scenario) -> Vec<&'a str> {
        self.res
            .contenders
            .iter()
            .filter(|c| runs_under(s, c) && self.res.plan.scenarios.contains(&s))
            .map(|c| c.name.as_str())
            .collect()
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
        "hinted-nohints" => "scx_hinted, no hints",
        "hinted-both" => "scx_hinted, hints",
        "hinted-own" => "scx_hinted, frame hinted only",
        other => other,
    }
}

/// The demo's table: the frame thread under each contender.
pub fn demo_table(res: &Results) -> String {
    let v = View::new(res);
    let mut out = String::new();
    let p = &res.plan;
    let _ = writeln!(
        out,
        "Frame thread: 4 ms of CPU every 16 ms (absolute-time wakeups), beside {} CPU hogs \
         ({} vCPUs, kernel {}).\n{} alternated repetitions of {} s each; medians over \
         repetitions, [min-max] in brackets; missed frames summed.\n\
         'hints': the frame thread is hinted interactive, the hogs background.\n",
        2 * res.cpus,
        res.cpus,
        res.kernel,
        p.reps,
        p.render_secs
    );
    let _ = writeln!(
        out,
        "{:<26} {:>18} {:>24} {:>15} {:>11} {:>12}",
        "scheduler",
        "wake-to-run p50 ms",
        "p99 ms [min-max]",
        "missed frames",
        "hog work",
        "p99 vs EEVDF"
    );
    let eevdf_p99 = v.med(Scenario::Render, "eevdf", "p99_us");
    let eevdf_hogs = v.med(Scenario::Render, "eevdf", "hog_units_per_s");
    let mut rows: Vec<(Scenario, &str, String)> =
        vec![(Scenario::RenderIdle, "eevdf", "idle floor (no hogs)".into())];
    for c in v.contenders(Scenario::Render) {
        rows.push((Scenario::Render, c, pretty(c).to_string()));
    }
    for (s, c, label) in rows {
        let (Some(p50), Some(p99)) = (v.agg(s, c, "p50_us"), v.agg(s, c, "p99_us")) else {
            let _ = writeln!(out, "{label:<26} {:>18}", "not measured");
            continue;
        };
        let missed: f64 = v.values(s, c, "missed").iter().sum();
        let frames: f64 = v.values(s, c, "frames").iter().sum();
        let hogs = match (v.med(s, c, "hog_units_per_s"), eevdf_hogs) {
            (Some(h), Some(e)) if e > 0.0 => format!("{:.0}%", 100.0 * h / e),
            _ => "-".into(),
        };
        let vs = match (s, eevdf_p99) {
            (Scenario::Render, Some(e)) => ratio(p99.median / e),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{label:<26} {:>18} {:>24} {:>15} {:>11} {:>12}",
            ms(p50.median),
            format!("{} [{}-{}]", ms(p99.median), ms(p99.min), ms(p99.max)),
            format!(
                "{missed:.0}/{frames:.0} ({:.0}%)",
                100.0 * missed / frames.max(1.0)
            ),
            hogs,
            vs
        );
    }
    let floor = v.med(Scenario::RenderIdle, "eevdf", "p99_us");
    let hinted = v.med(Scenario::Render, "hinted-both", "p99_us");
    let nohints = v.med(Scenario::Render, "hinted-nohints", "p99_us");
    out.push('\n');
    if let (Some(h), Some(e)) = (hinted, eevdf_p99) {
        let _ = writeln!(
            out,
            "ratio p99 EEVDF / scx_hinted with hints: {}",
            ratio(e / h)
        );
    }
    if let (Some(h), Some(n)) = (hinted, nohints) {
        let _ = writeln!(
            out,
            "ratio p99 scx_hinted without / with hints: {}",
            ratio(n / h)
        );
    }
    let missed = |c: &str| -> f64 { v.values(Scenario::Render, c, "missed").iter().sum() };
    if v.med(Scenario::Render, "hinted-both", "missed").is_some() {
        let _ = writeln!(
            out,
            "missed frames EEVDF / scx_hinted with hints: {:.0} / {:.0}",
            missed("eevdf"),
            missed("hinted-both")
        );
    }
    if let (Some(h), Some(f)) = (hinted, floor) {
        let _ = writeln!(
            out,
            "ratio p99 scx_hinted with hints / idle floor: {}",
            ratio(h / f)
        );
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
        format!(
            "goal {}: {m} (target {} {}) {}",
            self.name,
            self.op,
            self.target,
            if self.met() { "met" } else { "missed" }
        )
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

/// The issue's goals, on medians over repetitions.
pub fn goals(res: &Results) -> Vec<Goal> {
    let v = View::new(res);
    let p99 = |s: Scenario, c: &str| v.med(s, c, "p99_us");
    let r = Scenario::Render;
    let floor = p99(Scenario::RenderIdle, "eevdf");
    let own = p99(r, "hinted-own");
    let both = p99(r, "hinted-both");
    let mut g = Vec::new();
    let mut goal =
        |name: &str, measured: Option<f64>, op: &'static str, target: f64, note: &str| {
            g.push(Goal {
                name: name.into(),
                measured,
                op,
                target,
                note: note.into(),
            })
        };
    goal(
        "render_own_p99_vs_floor",
        div(own, floor),
        "<=",
        2.0,
        "hinted-own p99 / idle floor p99",
    );
    goal(
        "render_own_p99_vs_eevdf",
        div(own, p99(r, "eevdf")),
        "<=",
        0.2,
        "hinted-own p99 / EEVDF p99",
    );
    goal(
        "render_own_p99_vs_best_knob",
        div(own, min_of(&[p99(r, "eevdf-nice"), p99(r, "eevdf-slice")])),
        "<=",
        1.0,
        "hinted-own p99 / best of EEVDF nice -10 and slice request",
    );
    goal(
        "render_own_p99_vs_best_published",
        div(own, min_of(&[p99(r, "bpfland"), p99(r, "lavd")])),
        "<=",
        1.0,
        "hinted-own p99 / best of scx_bpfland and scx_lavd",
    );
    goal(
        "render_own_hog_throughput_vs_eevdf",
        div(
            v.med(r, "hinted-own", "hog_units_per_s"),
            v.med(r, "eevdf", "hog_units_per_s"),
        ),
        ">=",
        0.95,
        "hog work per second, hinted-own / EEVDF",
    );
    goal(
        "render_both_p99_vs_floor",
        div(both, floor),
        "<=",
        2.0,
        "hinted-both p99 / idle floor p99",
    );
    goal(
        "render_both_p99_vs_eevdf_idle_or_batch_hogs",
        div(
            both,
            min_of(&[p99(r, "eevdf-hogs-idle"), p99(r, "eevdf-hogs-batch")]),
        ),
        "<=",
        1.0,
        "hinted-both p99 / best of EEVDF with SCHED_IDLE or SCHED_BATCH hogs",
    );
    let d = Scenario::Dynamic;
    let store_cost = min_of(&[
        v.med(d, "hinted-own", "switch_cost_pct_at_10k"),
        v.med(d, "hinted-both", "switch_cost_pct_at_10k"),
    ]);
    goal(
        "dynamic_switch_cost_pct_at_10k_per_s",
        store_cost,
        "<=",
        1.0,
        "percent of CPU time a hint switch costs at 10,000 switches/s (in-situ TSC timing)",
    );
    let store_ns = min_of(&[
        v.med(d, "hinted-own", "switch_ns"),
        v.med(d, "hinted-both", "switch_ns"),
    ]);
    let syscall_ns = v.med(d, "eevdf-hogs-batch", "switch_ns");
    goal(
        "dynamic_sched_setattr_vs_hint_switch",
        div(syscall_ns, store_ns),
        ">=",
        1.0,
        "reported ratio (no target in the issue): sched_setattr switch ns / hint switch ns",
    );
    for s in [Scenario::Render, Scenario::ReqResp, Scenario::Wakeup] {
        let name = s.name().replace('-', "_");
        goal(
            &format!("nohints_{name}_p99_vs_eevdf"),
            div(p99(s, "hinted-nohints"), p99(s, "eevdf")),
            "<=",
            1.05,
            "scx_hinted without hints p99 / EEVDF p99",
        );
        let tput = match s {
            Scenario::ReqResp => "requests_per_s",
            _ => "hog_units_per_s",
        };
        goal(
            &format!("nohints_{name}_throughput_vs_eevdf"),
            div(v.med(s, "hinted-nohints", tput), v.med(s, "eevdf", tput)),
            ">=",
            0.95,
            "scx_hinted without hints / EEVDF throughput",
        );
    }
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
    goal("bpf_hint_read_ns_per_enqueue", added, "<=", 30.0, note);
    g
}

const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#ff7f0e", "#17becf",
    "#7f7f7f", "#bcbd22",
];

/// A latency CDF per contender for one scenario (log-scaled time axis).
pub fn cdf_svg(res: &Results, s: Scenario) -> String {
    let v = View::new(res);
    let mut series: Vec<(String, Vec<f64>)> = Vec::new();
    let mut cs = v.contenders(s);
    if s == Scenario::Render {
        cs.insert(0, "idle floor");
    }
    for c in cs {
        let data = if c == "idle floor" {
            v.pooled(Scenario::RenderIdle, "eevdf")
        } else {
            v.pooled(s, c)
        };
        if !data.is_empty() {
            series.push((c.to_string(), data));
        }
    }
    let (w, h, l, r, t, b) = (760.0, 440.0, 60.0, 200.0, 30.0, 45.0);
    let (pw, ph) = (w - l - r, h - t - b);
    let lo = series
        .iter()
        .map(|(_, d)| d[0].max(1.0))
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let hi = series
        .iter()
        .map(|(_, d)| d[d.len() - 1].max(1.0))
        .fold(1.0, f64::max);
    let (llo, lhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let x = |us: f64| l + pw * ((us.max(1.0).log10() - llo) / (lhi - llo));
    let y = |q: f64| t + ph * (1.0 - q);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">{}: {} latency CDF (pooled over repetitions)</text>"#,
        l + pw / 2.0,
        s.name(),
        s.latency_name()
    );
    let mut e = llo;
    while e <= lhi + 1e-9 {
        let xv = x(10f64.powf(e));
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
            r##"<line x1="{xv:.1}" y1="{t}" x2="{xv:.1}" y2="{}" stroke="#ddd"/><text x="{xv:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            t + ph,
            t + ph + 16.0
        );
        e += 1.0;
    }
    for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
        let yv = y(q);
        let _ = writeln!(
            o,
            r##"<line x1="{l}" y1="{yv:.1}" x2="{}" y2="{yv:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{q}</text>"##,
            l + pw,
            l - 6.0,
            yv + 4.0
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">latency (log scale)</text>"#,
        l + pw / 2.0,
        h - 8.0
    );
    for (i, (name, d)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // At most ~400 points per line.
        let step = (d.len() / 400).max(1);
        let mut pts = String::new();
        for (j, &us) in d.iter().enumerate().step_by(step) {
            let _ = write!(
                pts,
                "{:.1},{:.1} ",
                x(us),
                y((j + 1) as f64 / d.len() as f64)
            );
        }
        let _ = write!(pts, "{:.1},{:.1}", x(d[d.len() - 1]), y(1.0));
        let _ = writeln!(
            o,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{pts}"/>"#
        );
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

/// The markdown report: one table per scenario, the BPF table, the goals.
pub fn markdown(res: &Results) -> String {
    let v = View::new(res);
    let mut o = String::new();
    let p = &res.plan;
    let _ = writeln!(
        o,
        "Plan `{}`: {} repetition(s), render runs {} s, other runs {} s (after {} s warm-up); \
         {} vCPUs, guest kernel {}. Medians over repetitions, (min–max) over repetitions.\n",
        p.name, p.reps, p.render_secs, p.other_secs, p.warmup, res.cpus, res.kernel
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
        let base_p99 = v.med(s, "eevdf", "p99_us");
        let _ = writeln!(o, "### {} ({})\n", s.name(), s.latency_name());
        let extra: Vec<(&str, &str)> = match s {
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
            Scenario::RenderIdle => vec![],
        };
        let _ = write!(o, "| contender | p50 ms | p99 ms | p99.9 ms |");
        for (h, _) in &extra {
            let _ = write!(o, " {h} |");
        }
        let _ = writeln!(o, " p99 / EEVDF |");
        let _ = write!(o, "|---|--:|--:|--:|");
        for _ in &extra {
            o.push_str("--:|");
        }
        o.push_str("--:|\n");
        let mut rows: Vec<(Scenario, &str, String)> = Vec::new();
        if s == Scenario::Render {
            rows.push((
                Scenario::RenderIdle,
                "eevdf",
                "idle floor (EEVDF, no hogs)".into(),
            ));
        }
        for c in v.contenders(s) {
            rows.push((s, c, c.to_string()));
        }
        for (sc, c, label) in rows {
            let _ = write!(
                o,
                "| {label} | {} | {} | {} |",
                cell(v.agg(sc, c, "p50_us"), ms, false),
                cell(v.agg(sc, c, "p99_us"), ms, true),
                cell(v.agg(sc, c, "p999_us"), ms, false)
            );
            for (_, k) in &extra {
                let _ = write!(
                    o,
                    " {} |",
                    cell(v.agg(sc, c, k), |x| format!("{x:.1}"), false)
                );
            }
            let rr = div(v.med(sc, c, "p99_us"), base_p99).filter(|_| sc == s);
            let _ = writeln!(o, " {} |", rr.map_or("-".into(), ratio));
        }
        let _ = writeln!(o, "\n![{} CDF](cdf-{}.svg)\n", s.name(), s.name());
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
    let _ = writeln!(o, "### Goals (medians)\n\n```");
    for g in goals(res) {
        let _ = writeln!(o, "{}", g.line());
    }
    let _ = writeln!(o, "```\n");
    for g in goals(res) {
        let _ = writeln!(o, "- `{}`: {}", g.name, g.note);
    }
    if !res.errors.is_empty() {
        let _ = writeln!(o, "\n### Errors\n");
        for e in &res.errors {
            let _ = writeln!(o, "- {e}");
        }
    }
    o
}

/// Checks that a report is complete and sane (what a CI smoke test
/// asserts; the goals are not checked). Returns the problems found.
pub fn check(res: &Results) -> Vec<String> {
    let v = View::new(res);
    let mut bad = Vec::new();
    if !res.errors.is_empty() {
        bad.push(format!("errors: {}", res.errors.join("; ")));
    }
    for c in &res.contenders {
        for &s in &res.plan.scenarios {
            if !runs_under(s, c) {
                continue;
            }
            let n = res
                .runs
                .iter()
                .filter(|r| r.scenario == s && r.contender == c.name)
                .count();
            if n != res.plan.reps {
                bad.push(format!(
                    "{} {}: {n} of {} runs",
                    s.name(),
                    c.name,
                    res.plan.reps
                ));
                continue;
            }
            let p50 = v.med(s, &c.name, "p50_us");
            let p99 = v.med(s, &c.name, "p99_us");
            match (p50, p99) {
                (Some(a), Some(b)) if a >= 0.0 && b >= a && b < 10e6 => {}
                _ => bad.push(format!(
                    "{} {}: implausible latency p50 {p50:?} p99 {p99:?}",
                    s.name(),
                    c.name
                )),
            }
            if v.med(s, &c.name, "samples").unwrap_or(0.0) < 20.0 {
                bad.push(format!("{} {}: fewer than 20 samples", s.name(), c.name));
            }
            if s != Scenario::RenderIdle
                && v.med(s, &c.name, "hog_units_per_s").unwrap_or(0.0) <= 0.0
            {
                bad.push(format!("{} {}: the hogs did no work", s.name(), c.name));
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
    for &s in &res.plan.scenarios {
        for c in &res.contenders {
            let mut metrics = BTreeMap::new();
            let keys: std::collections::BTreeSet<&String> = res
                .runs
                .iter()
                .filter(|r| r.scenario == s && r.contender == c.name)
                .flat_map(|r| r.m.metrics.keys())
                .collect();
            for k in keys {
                if let Some(a) = v.agg(s, &c.name, k) {
                    metrics.insert(k.clone(), a);
                }
            }
            if !metrics.is_empty() {
                summary.insert(format!("{}/{}", s.name(), c.name), metrics);
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
            "skipped": res.skipped,
            "errors": res.errors,
            "bpf": res.bpf,
            "medians": summary,
            "goals": goals,
        }))?,
    )?;
    for &s in &res.plan.scenarios {
        if s != Scenario::RenderIdle {
            std::fs::write(dir.join(format!("cdf-{}.svg", s.name())), cdf_svg(res, s))?;
        }
    }
    let md = markdown(res);
    std::fs::write(dir.join("report.md"), &md)?;
    if res.runs.is_empty() {
        bail!("the results hold no run");
    }
    Ok(md)
}
