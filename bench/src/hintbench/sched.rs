//! Attaching and detaching a sched_ext scheduler for a contender.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const STATE: &str = "/sys/kernel/sched_ext/state";
const OPS: &str = "/sys/kernel/sched_ext/root/ops";

/// `enabled`, `disabled`, ... or why it cannot be read.
pub fn state() -> String {
    std::fs::read_to_string(STATE)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}

pub fn has_sched_ext() -> bool {
    Path::new(STATE).exists()
}

fn wait_state(want: &str, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while state() != want {
        if start.elapsed() > limit {
            bail!("sched_ext state is {:?}, not {want:?}", state());
        }
        sleep(Duration::from_millis(25));
    }
    Ok(())
}

/// A running sched_ext scheduler process.
pub struct Running {
    child: Option<Child>,
    log: PathBuf,
    pub ops: String,
}

impl Running {
    /// Starts `bin args...` (log in `log`) and waits until sched_ext is
    /// enabled.
    pub fn start(bin: &Path, args: &[String], log: &Path) -> Result<Running> {
        if state() != "disabled" {
            bail!("another sched_ext scheduler is attached ({})", state());
        }
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut r = Running {
            child: Some(child),
            log: log.to_path_buf(),
            ops: String::new(),
        };
        let start = Instant::now();
        while state() != "enabled" {
            if let Some(st) = r.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                r.child = None;
                bail!(
                    "{} exited ({st}) before attaching:\n{}",
                    bin.display(),
                    r.log_tail()
                );
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "{} did not attach in 60 s:\n{}",
                    bin.display(),
                    r.log_tail()
                );
            }
            sleep(Duration::from_millis(25));
        }
        r.ops = std::fs::read_to_string(OPS)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        // Let it settle (stats servers, first timers) before measuring.
        sleep(Duration::from_millis(500));
        Ok(r)
    }

    /// Still attached and alive?
    pub fn check(&mut self) -> Result<()> {
        let alive = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if !alive || state() != "enabled" {
            bail!(
                "the scheduler {} exited or detached during the run (state {}):\n{}",
                self.ops,
                state(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// SIGINT, then waits for the exit and the detach (SIGKILL after 20 s).
    pub fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let start = Instant::now();
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not exit on SIGINT within 20 s; killed", self.ops);
            }
            sleep(Duration::from_millis(20));
        }
        wait_state("disabled", Duration::from_secs(10))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = wait_state("disabled", Duration::from_secs(10));
        }
    }
}
