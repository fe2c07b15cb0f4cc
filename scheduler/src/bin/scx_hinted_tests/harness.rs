// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! Running scx_hinted under test: start, watch, stop, kill, and read its
//! statistics through scx_stats (a fresh connection per read, so every read
//! returns totals since the scheduler loaded).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use scx_stats::prelude::*;

const STATE: &str = "/sys/kernel/sched_ext/state";
const OPS: &str = "/sys/kernel/sched_ext/root/ops";

/// Where things are.
pub struct Env {
    /// The scx_hinted binary.
    pub sched_bin: PathBuf,
    /// A tmpfs directory for logs and stress-ng's scratch files.
    pub tmp: PathBuf,
    /// The TLD map's pin path.
    pub pin: PathBuf,
    /// Seconds of the stress test.
    pub stress_secs: u64,
    /// This program, for child processes (argv[0] when it is a path).
    pub self_exe: PathBuf,
}

pub fn sched_state() -> String {
    std::fs::read_to_string(STATE)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}

pub fn ops_name() -> String {
    std::fs::read_to_string(OPS)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn wait_state(want: &str, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let state = sched_state();
        if state == want {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("sched_ext state is {state:?}, not {want:?}, after {timeout:?}");
        }
        sleep(Duration::from_millis(50));
    }
}

/// How long an attach may take: loading and verifying scx_hinted's BPF in the
/// emulated guest took about 30 s on two busy vCPUs, and more than 60 s on one
/// (soak, CPU 1 offline, hogs running).
pub const ATTACH_WAIT: Duration = Duration::from_secs(120);

pub struct Sched {
    child: Option<Child>,
    log: PathBuf,
}

impl Sched {
    /// Starts scx_hinted with `args` and waits until it is attached and its
    /// stats server answers.
    pub fn start(env: &Env, args: &[&str]) -> Result<Self> {
        Self::start_within(env, args, ATTACH_WAIT)
    }

    /// [`Sched::start`] with a longer wait for the attach (loading under
    /// heavy load in the emulated guest).
    pub fn start_within(env: &Env, args: &[&str], attach: Duration) -> Result<Self> {
        if sched_state() != "disabled" {
            bail!("a sched_ext scheduler is already attached ({})", ops_name());
        }
        let log = env.tmp.join("scx_hinted.log");
        let out = File::create(&log).context("creating the scheduler log")?;
        let child = Command::new(&env.sched_bin)
            .args(args)
            .env("SCX_HINTS_TLD_MAP", &env.pin)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", env.sched_bin.display()))?;
        let mut sched = Self {
            child: Some(child),
            log,
        };
        let start = Instant::now();
        while sched_state() != "enabled" {
            if !sched.alive() {
                bail!(
                    "scx_hinted exited before attaching:\n{}",
                    sched.log_tail(20)
                );
            }
            if start.elapsed() > attach {
                bail!(
                    "scx_hinted did not attach in {} s:\n{}",
                    attach.as_secs(),
                    sched.log_tail(20)
                );
            }
            sleep(Duration::from_millis(50));
        }
        let ops = ops_name();
        if !ops.starts_with("hinted") {
            bail!("the attached scheduler is {ops:?}, not hinted");
        }
        // The stats server starts right after the attach.
        let start = Instant::now();
        while stats().is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("the stats server did not answer:\n{}", sched.log_tail(20));
            }
            sleep(Duration::from_millis(100));
        }
        Ok(sched)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The scheduler must still run and be attached.
    pub fn check(&mut self) -> Result<()> {
        if !self.alive() {
            bail!("scx_hinted exited:\n{}", self.log_tail(30));
        }
        let state = sched_state();
        if state != "enabled" {
            bail!("sched_ext state is {state}:\n{}", self.log_tail(30));
        }
        Ok(())
    }

    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().ok_or_else(|| anyhow!("not running"))?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                bail!("scx_hinted did not exit within {timeout:?}; killed");
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Ctrl-C: it must exit with status 0 and leave sched_ext disabled.
    pub fn stop(mut self) -> Result<()> {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.pid(), libc::SIGINT) };
        let status = self.wait_exit(Duration::from_secs(20))?;
        if !status.success() {
            bail!(
                "scx_hinted exited with {status} after SIGINT:\n{}",
                self.log_tail(30)
            );
        }
        wait_state("disabled", Duration::from_secs(10))
    }

    /// SIGKILL, no clean-up of its own: the kernel must detach it.
    pub fn kill9(mut self) -> Result<()> {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        let status = self.wait_exit(Duration::from_secs(10))?;
        if status.signal() != Some(libc::SIGKILL) {
            bail!("scx_hinted ended with {status}, not by SIGKILL");
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(16384)));
            let _ = f.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Sched {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = wait_state("disabled", Duration::from_secs(10));
        }
    }
}

/// One read of scx_hinted's statistics (totals since it loaded).
pub struct Stats(serde_json::Value);

impl Stats {
    pub fn get(&self, field: &str) -> f64 {
        self.0[field].as_f64().unwrap_or(0.0)
    }

    /// Whether the scheduler exports this top-level field.
    pub fn has(&self, field: &str) -> bool {
        self.0[field].is_number()
    }

    pub fn class(&self, class: &str, field: &str) -> f64 {
        self.0["classes"][class][field].as_f64().unwrap_or(0.0)
    }

    /// All error counters added up.
    pub fn errors(&self) -> f64 {
        [
            "err_tld_bad_magic",
            "err_tld_bad_meta",
            "err_tld_bad_offset",
            "err_bad_class",
            "err_bad_prio",
            "err_no_task_ctx",
        ]
        .iter()
        .map(|f| self.get(f))
        .sum()
    }

    pub fn summary(&self) -> String {
        let mut s = format!("registered {}", self.get("registered"));
        for c in ["critical", "interactive", "normal", "batch", "background"] {
            s += &format!(
                " | {c}: tasks {} disp {} p99 {}us",
                self.class(c, "tasks"),
                self.class(c, "dispatches"),
                self.class(c, "lat_p99_us")
            );
        }
        s
    }
}

/// A connection to the stats server: each read covers the time since the
/// previous one (the server keeps one baseline per connection).
pub struct Interval(StatsClient);

impl Interval {
    pub fn start() -> Result<Self> {
        let mut client = StatsClient::new().connect(Some(2000))?;
        client.request::<serde_json::Value>("stats", vec![])?;
        Ok(Self(client))
    }

    pub fn read(&mut self) -> Result<Stats> {
        Ok(Stats(self.0.request::<serde_json::Value>("stats", vec![])?))
    }
}

pub fn stats() -> Result<Stats> {
    let mut client = StatsClient::new().connect(Some(2000))?;
    Ok(Stats(client.request::<serde_json::Value>("stats", vec![])?))
}

/// Polls the statistics until `cond` holds.
pub fn wait_stats(timeout: Duration, cond: impl Fn(&Stats) -> bool) -> Result<Stats> {
    let start = Instant::now();
    loop {
        let s = stats()?;
        if cond(&s) {
            return Ok(s);
        }
        if start.elapsed() > timeout {
            bail!(
                "condition not met within {timeout:?}; stats: {}",
                s.summary()
            );
        }
        sleep(Duration::from_millis(100));
    }
}

/// stress-ng, if it can be found.
pub fn stress_ng() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("stress-ng"))
            .find(|p| p.is_file())
    })
}

pub fn file_inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

pub fn nr_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
