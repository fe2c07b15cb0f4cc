//! `cargo xtask bench scale`: per guest vCPU count (2, 4, 8, 16; 4 and
//! more as two sockets of SMT-2 cores), one boot that runs the same load
//! under EEVDF and then under scx_hinted (`scx_hinted_tests --bench-scale`),
//! and reports the BPF time per scheduler callback (the kernel's bpf_stats),
//! the hinted frame thread's wake-to-run latency and the hogs' throughput.
//! Not part of `cargo xtask test`: each point boots a guest, and 16 emulated
//! vCPUs on one host thread take minutes.

use crate::util::{self, loud, step};
use crate::vm::{self, GuestConfig, GuestJob, Topology};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// The callbacks in table order (as scx_hinted_tests names them).
const CALLBACKS: [&str; 5] = ["enqueue", "dispatch", "select_cpu", "running", "stopping"];

/// One `SCALE key=value ...` line.
type Row = BTreeMap<String, String>;

fn parse_line(line: &str) -> Option<Row> {
    let rest = line.trim().strip_prefix("SCALE ")?;
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The vCPU counts: SCX_HINTS_SCALE_CPUS (e.g. `2,8`) or 2, 4, 8, 16.
fn cpu_counts(quick: bool) -> Result<Vec<u32>> {
    match std::env::var("SCX_HINTS_SCALE_CPUS") {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|c| match c.trim().parse::<u32>() {
                Ok(n) if n == 2 || (n >= 4 && n.is_multiple_of(4)) => Ok(n),
                _ => bail!("SCX_HINTS_SCALE_CPUS={v}: use 2 or multiples of 4, comma-separated"),
            })
            .collect(),
        _ if quick => Ok(vec![2, 4]),
        _ => Ok(vec![2, 4, 8, 16]),
    }
}

fn guest_config(cpus: u32) -> Result<GuestConfig> {
    let cfg = GuestConfig::from_env()?;
    Ok(if cpus == 2 {
        GuestConfig { cpus, ..cfg }
    } else {
        cfg.with_topology(Topology::two_sockets_smt(cpus)?)
    })
}

pub fn run(quick: bool) -> Result<i32> {
    let secs = if quick { 3 } else { 10 };
    let counts = cpu_counts(quick)?;
    let bin = crate::test::build_scheduler()?;
    let q = |p: &std::path::Path| vm::shell_quote(&p.to_string_lossy());
    let script = format!(
        "set -e\n\
         guest_stage {} {}\n\
         export PATH=\"$GUEST_TMP/bin:$PATH\"\n\
         scx_hinted_tests --scheduler \"$GUEST_TMP/bin/scx_hinted\" --bench-scale {secs}\n",
        q(&bin.join("scx_hinted")),
        q(&bin.join("scx_hinted_tests")),
    );
    let mut rows: Vec<(u32, String, Row, Row)> = Vec::new();
    let mut failed = 0;
    for &cpus in &counts {
        let cfg = guest_config(cpus)?;
        let topo = cfg
            .topology
            .map_or_else(|| "1 socket".to_string(), |t| t.to_string());
        let guest = vm::prepare_with(cfg)?;
        step(format!("scale: {cpus} vCPUs ({topo})"));
        let job = GuestJob::new(
            format!("bench scale {cpus} vCPUs"),
            script.clone(),
            Duration::from_secs(600),
        );
        let out = match guest.run(&job) {
            Ok(o) if o.exit_code == 0 => o,
            Ok(o) => {
                loud(format!(
                    "scale: {cpus} vCPUs: exit status {}:\n{}",
                    o.exit_code, o.output
                ));
                failed += 1;
                continue;
            }
            Err(e) => {
                loud(format!("scale: {cpus} vCPUs: {e:#}"));
                failed += 1;
                continue;
            }
        };
        let lines: Vec<Row> = out.output.lines().filter_map(parse_line).collect();
        let pick = |s: &str| {
            lines
                .iter()
                .find(|r| r.get("sched").map(String::as_str) == Some(s))
        };
        match (pick("eevdf"), pick("scx_hinted")) {
            (Some(e), Some(h)) => rows.push((cpus, topo, e.clone(), h.clone())),
            _ => {
                loud(format!(
                    "scale: {cpus} vCPUs: no SCALE lines in:\n{}",
                    out.output
                ));
                failed += 1;
            }
        }
    }
    let table = table(&rows, secs);
    println!("{table}");
    let dir = util::cache_dir()
        .parent()
        .expect("target dir")
        .join("bench/scale");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(if quick {
        "report-quick.md"
    } else {
        "report.md"
    });
    std::fs::write(&file, &table).with_context(|| format!("writing {}", file.display()))?;
    step(format!("scale: table written to {}", file.display()));
    Ok(if failed == 0 { 0 } else { 1 })
}

fn num(r: &Row, k: &str) -> f64 {
    r.get(k).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

fn table(rows: &[(u32, String, Row, Row)], secs: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "BPF ns per call (scx_hinted, bpf_stats over {secs} s) | frame p99 wake-to-run, \
         hinted / EEVDF | hog throughput scx_hinted / EEVDF\n"
    );
    let _ = writeln!(
        s,
        "| vCPUs | topology | {} | calls/s (enq) | frame p99 ms (hinted / EEVDF) | missed (hinted / EEVDF) | hog throughput ratio |",
        CALLBACKS.join(" | ")
    );
    let _ = writeln!(s, "|{}", "---|".repeat(CALLBACKS.len() + 6));
    for (cpus, topo, e, h) in rows {
        let costs: Vec<String> = CALLBACKS
            .iter()
            .map(|c| format!("{:.0}", num(h, &format!("{c}_ns"))))
            .collect();
        let _ = writeln!(
            s,
            "| {cpus} | {topo} | {} | {:.0} | {:.1} / {:.1} | {} / {} | {:.2} |",
            costs.join(" | "),
            num(h, "enqueue_calls") / secs as f64,
            num(h, "frame_p99_us") / 1000.0,
            num(e, "frame_p99_us") / 1000.0,
            h.get("frame_missed").map_or("?", String::as_str),
            e.get("frame_missed").map_or("?", String::as_str),
            num(h, "hog_iters_per_s") / num(e, "hog_iters_per_s"),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scale_lines() {
        let r =
            parse_line("SCALE cpus=8 sched=scx_hinted enqueue_ns=412 enqueue_calls=9000").unwrap();
        assert_eq!(r["cpus"], "8");
        assert_eq!(num(&r, "enqueue_ns"), 412.0);
        assert!(parse_line("PASS x").is_none());
        let e =
            parse_line("SCALE cpus=8 sched=eevdf frame_p99_us=2000 hog_iters_per_s=10").unwrap();
        let mut h = r.clone();
        h.insert("hog_iters_per_s".into(), "5".into());
        h.insert("frame_p99_us".into(), "1000".into());
        let t = table(&[(8, "2s2c2t".into(), e, h)], 10);
        assert!(t.contains("| 8 | 2s2c2t | 412 |"), "{t}");
        assert!(t.contains("| 0.50 |"), "{t}");
    }
}
