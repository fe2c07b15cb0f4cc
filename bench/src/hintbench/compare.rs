//! `hintbench compare A B`: how closely two full runs agree, goal line by
//! goal line, with the calibration each run measured (docs/benchmarks.md,
//! "Reproducibility").
//!
//! A goal line is a ratio of medians (or a percentage); two runs agree on
//! it when both meet or both miss its target. How far apart the two values
//! are is given as B/A for ratios and as B - A points for percentages,
//! where a ratio of two numbers near zero says nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::calib::Calibration;

#[derive(Deserialize)]
struct Summary {
    calibrations: Vec<Calibration>,
    drift: f64,
    goals: Vec<GoalLine>,
    #[serde(default)]
    kernel: String,
}

#[derive(Deserialize)]
struct GoalLine {
    name: String,
    measured: Option<f64>,
    op: String,
    target: f64,
    /// Runs that fell behind, left out of (or making up) a median.
    #[serde(default)]
    caveat: String,
}

/// Goal lines that measure the run, not the scheduling: left out of the
/// tolerance figures (they are in the table).
const NOT_OUTCOMES: [&str; 2] = ["calibration_drift_pct", "bpf_hint_read_ns_per_enqueue"];

impl GoalLine {
    fn met(&self) -> Option<bool> {
        let m = self.measured?;
        Some(if self.op == ">=" {
            m >= self.target
        } else {
            m <= self.target
        })
    }

    /// Percentages are compared by difference, ratios by quotient.
    fn is_percent(&self) -> bool {
        self.name.ends_with("_pct")
    }
}

fn load(path: &Path) -> Result<Summary> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let s: Summary = serde_json::from_slice(&text).with_context(|| {
        format!(
            "parsing {} (the summary.json a full `cargo xtask bench sched` writes)",
            path.display()
        )
    })?;
    let mut names = std::collections::BTreeSet::new();
    for g in &s.goals {
        if g.op != "<=" && g.op != ">=" {
            bail!(
                "{}: goal {} has operator {:?}",
                path.display(),
                g.name,
                g.op
            );
        }
        if !names.insert(g.name.as_str()) {
            bail!("{}: goal {} appears twice", path.display(), g.name);
        }
    }
    if s.calibrations.is_empty() {
        bail!("{}: no calibration", path.display());
    }
    Ok(s)
}

/// `x / y`, or "-" when it means nothing.
fn quotient(x: f64, y: f64) -> String {
    if x > 0.0 && y > 0.0 {
        format!("{:.2}x", x / y)
    } else {
        "-".into()
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "missed",
        None => "-",
    }
}

fn value(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3}"))
}

/// Value at quantile `q` of sorted `v` (nearest rank).
fn at(v: &[f64], q: f64) -> f64 {
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The comparison as markdown: calibrations, agreement, then every goal.
pub fn compare(a_path: &Path, b_path: &Path) -> Result<String> {
    let (a, b) = (load(a_path)?, load(b_path)?);
    let b_goals: BTreeMap<&str, &GoalLine> = b.goals.iter().map(|g| (g.name.as_str(), g)).collect();
    let a_names: std::collections::BTreeSet<&str> =
        a.goals.iter().map(|g| g.name.as_str()).collect();
    let mut out = String::new();
    for (label, s) in [("A", &a), ("B", &b)] {
        let first = &s.calibrations[0];
        let _ = writeln!(
            out,
            "- run {label} (kernel {}): {}; drift over the run {:+.1}%",
            if s.kernel.is_empty() { "?" } else { &s.kernel },
            first.line(),
            100.0 * s.drift
        );
    }
    let (ca, cb) = (&a.calibrations[0], &b.calibrations[0]);
    let _ = writeln!(
        out,
        "- capacity B/A {}, wakeup round trip B/A {}\n",
        quotient(cb.units_per_cpu_ms, ca.units_per_cpu_ms),
        quotient(cb.wake_rtt_us, ca.wake_rtt_us)
    );

    let mut rows = String::new();
    let (mut both, mut agree, mut only_a) = (0, 0, 0);
    let only_b = b_goals.keys().filter(|n| !a_names.contains(*n)).count();
    let mut caveats = 0;
    let (mut ratios, mut points) = (Vec::new(), Vec::new());
    let mut flips = Vec::new();
    for ga in &a.goals {
        let Some(gb) = b_goals.get(ga.name.as_str()) else {
            only_a += 1;
            continue;
        };
        let (va, vb) = (ga.met(), gb.met());
        let outcome = !NOT_OUTCOMES.contains(&ga.name.as_str());
        let spread = match (ga.measured, gb.measured) {
            (Some(x), Some(y)) if ga.is_percent() => {
                if outcome {
                    points.push((y - x).abs());
                }
                format!("{:+.1} pts", y - x)
            }
            (Some(x), Some(y)) if x > 0.0 && y > 0.0 => {
                if outcome {
                    ratios.push((y / x).max(x / y));
                }
                format!("{:.2}x", y / x)
            }
            _ => "-".into(),
        };
        let marked = !ga.caveat.is_empty() || !gb.caveat.is_empty();
        caveats += marked as usize;
        if va.is_some() && vb.is_some() {
            both += 1;
            if va == vb {
                agree += 1;
            } else {
                flips.push(ga.name.as_str());
            }
        }
        let _ = writeln!(
            rows,
            "| {}{} | {} {} | {} | {} | {} | {} {} |",
            ga.name,
            if marked { " *" } else { "" },
            ga.op,
            ga.target,
            value(ga.measured),
            value(gb.measured),
            spread,
            verdict(va),
            if va == vb { "=" } else { "≠" },
        );
    }
    ratios.sort_by(f64::total_cmp);
    points.sort_by(f64::total_cmp);
    let _ = writeln!(
        out,
        "{agree} of {both} goal lines measured in both runs get the same verdict \
         (met or missed); {} change it: {}.",
        both - agree,
        if flips.is_empty() {
            "none".into()
        } else {
            flips.join(", ")
        }
    );
    if !ratios.is_empty() {
        let _ = writeln!(
            out,
            "Ratio goals ({}): the larger over the smaller of the two values is at most \
             {:.2}x for half of them, {:.2}x for 80%, {:.2}x for 90%, {:.2}x at worst.",
            ratios.len(),
            at(&ratios, 0.5),
            at(&ratios, 0.8),
            at(&ratios, 0.9),
            ratios[ratios.len() - 1]
        );
    }
    if !points.is_empty() {
        let _ = writeln!(
            out,
            "Percentage goals ({}): the two runs differ by at most {:.1} points for half \
             of them, {:.1} for 90%, {:.1} at worst.",
            points.len(),
            at(&points, 0.5),
            at(&points, 0.9),
            points[points.len() - 1]
        );
    }
    let _ = writeln!(
        out,
        "(The spread leaves out {}: they measure the run, not the scheduling.)",
        NOT_OUTCOMES.join(" and ")
    );
    if caveats > 0 {
        let _ = writeln!(
            out,
            "{caveats} goal lines marked * have, in one run or both, medians that left \
             out runs that fell behind or are made of such runs only (see each run's report)."
        );
    }
    if only_a + only_b > 0 {
        let _ = writeln!(
            out,
            "Goal lines in one run only: {only_a} in A, {only_b} in B (left out)."
        );
    }
    let _ = writeln!(
        out,
        "\n| goal | target | run A | run B | B vs A | verdict A (= or ≠ B) |\n|---|---|--:|--:|--:|---|"
    );
    out.push_str(&rows);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::compare;

    fn summary(goals: &str, units: f64) -> String {
        format!(
            r#"{{"calibrations":[{{"units_per_cpu_ms":{units},"per_cpu":[{units}],
            "alone_units_per_cpu_ms":1000,"wake_rtt_us":100,"wake_cpu_us":80}}],
            "drift":0.01,"kernel":"k","goals":[{goals}]}}"#
        )
    }

    #[test]
    fn counts_agreement_and_spread() {
        let dir = std::env::temp_dir().join(format!("hintbench-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.json");
        let b = dir.join("b.json");
        std::fs::write(
            &a,
            summary(
                r#"{"name":"x_p99","measured":0.5,"op":"<=","target":1.0},
                   {"name":"y_p99","measured":0.9,"op":"<=","target":1.0},
                   {"name":"z_missed_pct","measured":2.0,"op":"<=","target":1.0},
                   {"name":"gone","measured":1.0,"op":"<=","target":1.0}"#,
                800.0,
            ),
        )
        .unwrap();
        std::fs::write(
            &b,
            summary(
                r#"{"name":"x_p99","measured":1.0,"op":"<=","target":1.0},
                   {"name":"y_p99","measured":1.8,"op":"<=","target":1.0},
                   {"name":"z_missed_pct","measured":5.0,"op":"<=","target":1.0}"#,
                1000.0,
            ),
        )
        .unwrap();
        let md = compare(&a, &b).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(md.contains("capacity B/A 1.25x"), "{md}");
        assert!(md.contains("2 of 3 goal lines"), "{md}");
        assert!(md.contains("1 change it: y_p99"), "{md}");
        assert!(md.contains("at most 2.00x for half"), "{md}");
        assert!(md.contains("+3.0 pts"), "{md}");
        assert!(md.contains("1 in A, 0 in B"), "{md}");
    }

    #[test]
    fn duplicate_goal_names_are_an_error() {
        let dir = std::env::temp_dir().join(format!("hintbench-dup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.json");
        std::fs::write(
            &a,
            summary(
                r#"{"name":"x_p99","measured":0.5,"op":"<=","target":1.0},
                   {"name":"x_p99","measured":0.6,"op":"<=","target":1.0}"#,
                800.0,
            ),
        )
        .unwrap();
        let err = compare(&a, &a).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(format!("{err:#}").contains("appears twice"), "{err:#}");
    }

    #[test]
    fn a_bad_file_is_an_error_not_a_panic() {
        let missing = std::path::Path::new("/nonexistent/summary.json");
        let err = compare(missing, missing).unwrap_err();
        assert!(format!("{err:#}").contains("reading"), "{err:#}");
    }
}
