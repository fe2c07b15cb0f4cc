// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! `scx-hint run`: unmodified programs started with a class are scheduled in
//! it (the class is inherited across exec and fork).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::harness::{self, stats, wait_stats, Env, Sched};

pub fn scx_hint() -> Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("scx-hint"))
                .find(|p| p.is_file())
        })
        .context("scx-hint is not on PATH (cargo xtask test stages it)")
}

/// `scx-hint run --class CLASS -- stress-ng --cpu 1`: a parent and one
/// worker, neither of which publishes a hint.
fn launch(env: &Env, class: &str, secs: u64) -> Result<Child> {
    let stress = harness::stress_ng().context("stress-ng is not on PATH")?;
    Command::new(scx_hint()?)
        .args(["run", "--require", "--class", class, "--"])
        .arg(stress)
        .args(["--cpu", "1", "--timeout", &format!("{secs}s"), "-q"])
        .arg("--temp-path")
        .arg(&env.tmp)
        .current_dir(&env.tmp)
        .stdin(Stdio::null())
        .spawn()
        .context("starting scx-hint run")
}

/// What a launched run is doing, for a failure message: its exit status if
/// it ended, else its threads and its children.
fn describe(child: &mut Child) -> String {
    let pid = child.id();
    match child.try_wait() {
        Ok(Some(status)) => format!("scx-hint run exited: {status}"),
        _ => {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let kids: Vec<String> = children
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .map(threads_of)
                .collect();
            // Forks that took a class over from their parent (stress-ng's
            // workers, once the scheduler handed the class down at exec).
            let inherited = stats().map_or(f64::NAN, |s| s.get("inherited"));
            format!(
                "threads: {}; children: [{}]; forks that inherited a class: {inherited}",
                threads_of(pid),
                kids.join("; ")
            )
        }
    }
}

/// Per thread of a process its tid, comm, state and wait channel, and the
/// process's command line.
fn threads_of(pid: u32) -> String {
    let read = |p: String| std::fs::read_to_string(p).unwrap_or_default();
    let cmdline = read(format!("/proc/{pid}/cmdline")).replace('\0', " ");
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("process {pid} is gone");
    };
    let threads: Vec<String> = dir
        .flatten()
        .map(|t| {
            let tid = t.file_name().to_string_lossy().into_owned();
            let stat = read(format!("/proc/{pid}/task/{tid}/stat"));
            // The state follows the parenthesised comm.
            let state = stat.rsplit(") ").next().and_then(|r| r.split(' ').next());
            format!(
                "{tid} {} {} wchan {}",
                read(format!("/proc/{pid}/task/{tid}/comm")).trim(),
                state.unwrap_or("?"),
                read(format!("/proc/{pid}/task/{tid}/wchan"))
            )
        })
        .collect();
    format!("{}; command: {}", threads.join(", "), cmdline.trim())
}

/// Two unmodified stress-ng runs, one launched as background and one as
/// batch: the scheduler counts each run's tasks (the process that exec'd and
/// its forked worker) in its class. The background run starts first: once
/// the batch worker hogs a CPU, background gets little CPU to fork with.
/// `scx-hint show` lists the threads of one run (by tid: a staged program's
/// comm is the ELF loader's).
pub fn launcher(env: &Env) -> Result<String> {
    let mut sched = Sched::start(env, &[])?;
    let s0 = stats()?;
    let (bg0, batch0) = (s0.class("background", "tasks"), s0.class("batch", "tasks"));
    let mut children = Vec::new();
    let result = (|| -> Result<String> {
        children.push(launch(env, "background", 40)?);
        let bg = wait_stats(Duration::from_secs(15), |s| {
            s.class("background", "tasks") >= bg0 + 2.0
        })
        .with_context(|| {
            format!(
                "the background run's two tasks were not counted as background ({})",
                describe(&mut children[0])
            )
        })?;
        children.push(launch(env, "batch", 40)?);
        let both = wait_stats(Duration::from_secs(15), |s| {
            s.class("batch", "tasks") >= batch0 + 2.0 && s.class("background", "tasks") >= bg0 + 2.0
        })
        .with_context(|| {
            format!(
                "the batch run's two tasks were not counted as batch ({})",
                describe(&mut children[1])
            )
        })?;
        let bg_pid = children[0].id();
        let show = Command::new(scx_hint()?)
            .args(["show", &bg_pid.to_string()])
            .stdin(Stdio::null())
            .output()
            .context("running scx-hint show")?;
        let listing = String::from_utf8_lossy(&show.stdout);
        ensure!(
            show.status.success()
                && listing
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(&bg_pid.to_string())),
            "scx-hint show did not list the main thread of stress-ng ({bg_pid}): {}{}",
            listing,
            String::from_utf8_lossy(&show.stderr)
        );
        Ok(format!(
            "background tasks {bg0} -> {}, then batch tasks {batch0} -> {}",
            bg.class("background", "tasks"),
            both.class("batch", "tasks")
        ))
    })();
    // SIGTERM, not SIGKILL: stress-ng then stops its worker too.
    for child in &mut children {
        // SAFETY: signals our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
    }
    let summary = result?;
    sched.check()?;
    sched.stop()?;
    Ok(summary)
}
