//! The sched_ext guest harness: boots a Debian kernel that has sched_ext
//! under qemu (TCG, through virtme-ng) and runs a bash script in it.
//!
//! # Use from other xtask modules
//!
//! ```ignore
//! let guest = vm::prepare()?;                 // kernel + virtme-ng, prints progress
//! let out = guest.run(&vm::GuestJob::new(
//!     "scheduler attach",                      // label, for messages and the run dir
//!     "cat /sys/kernel/sched_ext/state",       // bash, cwd = workspace root
//!     Duration::from_secs(120),                // the script's own time limit
//! ))?;
//! assert_eq!(out.exit_code, 0);
//! ```
//!
//! [`Guest::run`] returns `Ok` whenever the script ran to its end, whatever
//! its exit status, and `Err` (with a console excerpt) when the guest
//! kernel crashed (oops, panic, BUG, WARNING, lockup, RCU stall, hung task:
//! even if the script then passed), when the guest stalled (no console
//! output and no progress for [`GuestConfig::stall`]), when the script
//! exceeded its timeout, and when the guest did not boot. Each boot costs
//! 10 to 20 s, so put many checks into one script.
//!
//! # Inside the guest
//!
//! The host's root filesystem is visible read-only (9p), the workspace at
//! the same path; the script runs as root with the workspace root as its
//! cwd (read-only: `stress-ng` needs `--temp-path "$GUEST_TMP"`), stdin
//! from /dev/null. Other writes land in a throw-away overlay. Host
//! environment variables do not reach the guest: put what the script needs
//! into the script. The script sees:
//!
//! - `GUEST_OUT`: a directory shared with the host (9p, writable) for result
//!   files; the host finds it as [`GuestOutcome::run_dir`]. Writing a line
//!   to `$GUEST_OUT/progress` also feeds the stall watchdog.
//! - `GUEST_TMP`: a tmpfs directory (`/dev/shm/scx-hints`) with a static
//!   busybox in `$GUEST_TMP/bin`. **Detaching a sched_ext scheduler while
//!   CPU hogs run stalls user space when the programs involved live on the
//!   9p root** (seen in every such run on 7.2 and 7.3). Tests that restart, kill or detach
//!   a scheduler under load must copy the scheduler, stress-ng and their
//!   libraries into `$GUEST_TMP` first and touch no 9p file (not
//!   `$GUEST_OUT` either) while detaching. The helper
//!   `guest_stage PROGRAM...` (from `xtask/guest/lib.sh`, sourced before the
//!   script) does the copying: afterwards run `$GUEST_TMP/bin/PROGRAM`.
//!   `guest_progress MSG` writes MSG to the kernel log (the console) without
//!   touching 9p: use it for progress during such tests.
//!
//! The script's stdout and stderr are collected in tmpfs and handed back as
//! [`GuestOutcome::output`]; they are also shown live on the host (through
//! the serial console, so a C program's fully buffered stdout arrives in
//! chunks; kernel messages printed meanwhile go to the host's stderr). When
//! the guest kernel crashes, the last lines the script printed may be lost
//! (they were still in the pipe); write markers to the kernel log with
//! `guest_progress` where that matters: a panic flushes the kernel log.
//!
//! # Configuration
//!
//! Environment variables (command-line options of `cargo xtask vm` win):
//! `SCX_HINTS_GUEST_KERNEL` (a Debian kernel ABI such as
//! `7.3.4+deb13-amd64`, or the path of a vmlinuz or of an unpacked kernel
//! directory), `SCX_HINTS_GUEST_SUITE` (`trixie-backports`, the default, or
//! `sid`), `SCX_HINTS_GUEST_TCG` (`single`, the default, or `multi`: qemu's
//! multi-threaded TCG, faster but it sometimes crashes the guest kernel while
//! static keys are switched), `SCX_HINTS_GUEST_STALL` (seconds).
//!
//! [`GuestConfig::topology`] (`cargo xtask vm --topology 2s2c2t`) boots
//! sockets of SMT cores, each socket its own LLC, optionally one NUMA node
//! per socket (see `vm/topology.rs`).
//!
//! Kernels, the virtme-ng venv and the last runs (job script, console log,
//! output) live under `target/xtask/guest/`.

mod console;
mod kernel;
mod proc;
mod topology;

pub use kernel::KernelChoice;
pub use topology::Topology;

use crate::util::{self, loud, step};
use anyhow::{anyhow, bail, Context, Result};
use console::Marker;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The virtme-ng release installed into the venv (known to work).
const VNG_VERSION: &str = "1.42";
/// Longest wait for the guest to reach the script.
const BOOT_LIMIT: Duration = Duration::from_secs(300);
/// How long the console is still read after a crash report (for the trace).
const CRASH_GRACE: Duration = Duration::from_secs(5);
/// Runs kept under target/xtask/guest/runs.
const KEEP_RUNS: usize = 20;

/// `target/xtask/guest/`.
pub fn guest_dir() -> PathBuf {
    util::cache_dir().join("guest")
}

/// qemu's TCG threading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tcg {
    /// `-accel tcg,thread=single`: both vCPUs on one host thread. No guest
    /// kernel crashes seen while static keys are switched.
    Single,
    /// qemu's default multi-threaded TCG: up to one host thread per vCPU;
    /// sometimes oopses the guest (int3 while static keys are switched).
    Multi,
}

impl Tcg {
    fn name(self) -> &'static str {
        match self {
            Tcg::Single => "thread=single",
            Tcg::Multi => "multi-threaded",
        }
    }
}

/// How guests are booted. [`GuestConfig::from_env`] gives the defaults.
#[derive(Clone, Debug)]
pub struct GuestConfig {
    pub kernel: KernelChoice,
    pub tcg: Tcg,
    /// vCPUs. With [`GuestConfig::topology`] set, its CPU count wins.
    pub cpus: u32,
    /// Sockets, cores, SMT threads (and NUMA nodes); `None`: `cpus`
    /// sockets of one single-threaded core each (qemu's default).
    pub topology: Option<Topology>,
    /// qemu's `-m` syntax, e.g. `2G`.
    pub memory: String,
    /// Kill the guest and fail if neither the console nor
    /// `$GUEST_OUT/progress` changed for this long.
    pub stall: Duration,
    /// Show the script's output live on the host.
    pub stream: bool,
    /// Show the whole console (the boot too).
    pub verbose: bool,
}

impl GuestConfig {
    /// Sets `cpus` and `topology` together.
    pub fn with_topology(mut self, topology: Topology) -> GuestConfig {
        self.cpus = topology.cpus();
        self.topology = Some(topology);
        self
    }

    /// The CPU count the guest boots with.
    pub fn vcpus(&self) -> u32 {
        self.topology.map_or(self.cpus, |t| t.cpus())
    }

    /// Defaults, with the `SCX_HINTS_GUEST_*` environment variables applied.
    pub fn from_env() -> Result<GuestConfig> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let kernel = match (var("SCX_HINTS_GUEST_KERNEL"), var("SCX_HINTS_GUEST_SUITE")) {
            (Some(k), _) => KernelChoice::parse_override(k.trim()),
            (None, Some(s)) => KernelChoice::Suite(s.trim().to_string()),
            (None, None) => KernelChoice::Suite(kernel::DEFAULT_SUITE.to_string()),
        };
        let tcg = match var("SCX_HINTS_GUEST_TCG").as_deref().map(str::trim) {
            None | Some("single") => Tcg::Single,
            Some("multi") => Tcg::Multi,
            Some(other) => bail!("SCX_HINTS_GUEST_TCG={other}: use `single` or `multi`"),
        };
        let stall = match var("SCX_HINTS_GUEST_STALL") {
            None => Duration::from_secs(120),
            Some(s) => Duration::from_secs(
                s.trim()
                    .parse()
                    .map_err(|_| anyhow!("SCX_HINTS_GUEST_STALL={s}: seconds expected"))?,
            ),
        };
        Ok(GuestConfig {
            kernel,
            tcg,
            cpus: 2,
            topology: None,
            memory: "2G".into(),
            stall,
            stream: true,
            verbose: false,
        })
    }
}

/// A script to run in the guest.
#[derive(Clone, Debug)]
pub struct GuestJob {
    /// A bash script; cwd = workspace root. See the module docs for its
    /// environment.
    pub script: String,
    /// How long the script may run (the boot not included).
    pub timeout: Duration,
    /// Names the job in messages and in the run directory's name.
    pub label: String,
}

impl GuestJob {
    pub fn new(label: impl Into<String>, script: impl Into<String>, timeout: Duration) -> Self {
        GuestJob {
            script: script.into(),
            timeout,
            label: label.into(),
        }
    }
}

/// What a script that ran to its end left behind.
#[derive(Clone, Debug)]
#[allow(dead_code)] // API for `cargo xtask test` and the demo
pub struct GuestOutcome {
    /// The script's exit status.
    pub exit_code: i32,
    /// The script's stdout and stderr, interleaved.
    pub output: String,
    /// The guest kernel release (`uname -r`).
    pub kernel: String,
    /// The last lines of the serial console (kernel messages included).
    pub console_tail: String,
    /// From starting qemu to the script's start.
    pub boot_time: Duration,
    /// From starting qemu to its exit.
    pub total_time: Duration,
    /// The host side of `$GUEST_OUT`: result files, `console.log`, `job.sh`.
    pub run_dir: PathBuf,
}

/// A guest kernel and virtme-ng, ready to boot.
pub struct Guest {
    cfg: GuestConfig,
    kernel: kernel::Kernel,
    vng_bin: PathBuf,
}

/// Makes sure the host packages, the guest kernel and virtme-ng are there
/// (installing or downloading what is missing, with progress lines), using
/// [`GuestConfig::from_env`].
#[allow(dead_code)] // API for `cargo xtask test` and the demo
pub fn prepare() -> Result<Guest> {
    prepare_with(GuestConfig::from_env()?)
}

/// [`prepare`] with an explicit configuration.
pub fn prepare_with(cfg: GuestConfig) -> Result<Guest> {
    crate::setup::host()?;
    std::fs::create_dir_all(guest_dir())?;
    let _lock = lock(&guest_dir().join(".lock"))?;
    let kernel = kernel::ensure(&cfg.kernel).context("no sched_ext guest kernel")?;
    kernel::check_config(&kernel);
    let vng_bin = ensure_vng()?;
    Ok(Guest {
        cfg,
        kernel,
        vng_bin,
    })
}

/// Serializes downloads between concurrent xtask runs (flock; released when
/// the file is closed).
fn lock(path: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        step(format!(
            "waiting for another xtask ({} is locked)",
            path.display()
        ));
        // SAFETY: as above.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context("flock");
        }
    }
    Ok(file)
}

/// Runs a command whose chatter belongs on stderr (stdout carries the
/// guest's output).
fn run_to_stderr(cmd: &mut Command) -> Result<()> {
    use std::os::fd::AsFd;
    let err = std::io::stderr().as_fd().try_clone_to_owned()?;
    cmd.stdout(Stdio::from(err));
    util::run(cmd)
}

/// A Python venv with virtme-ng under target/xtask/guest/venv (bookworm's
/// pip refuses system-wide installs). Returns its bin directory.
fn ensure_vng() -> Result<PathBuf> {
    let venv = guest_dir().join("venv");
    let bin = venv.join("bin");
    let marker = venv.join("scx-hints-vng");
    let ok = bin.join("vng").is_file()
        && bin.join("python3").exists()
        && std::fs::read_to_string(&marker).is_ok_and(|v| v.trim() == VNG_VERSION);
    if ok {
        return Ok(bin);
    }
    step(format!(
        "creating a Python venv with virtme-ng {VNG_VERSION} in {}",
        venv.display()
    ));
    if venv.exists() {
        std::fs::remove_dir_all(&venv)?;
    }
    // Debian's interpreter is the one python3-venv completes.
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| !p.starts_with('/') || Path::new(p).exists())
        .expect("a fallback is always there");
    util::run(Command::new(python).args(["-m", "venv"]).arg(&venv))
        .context("cannot create the venv (is python3-venv installed?)")?;
    run_to_stderr(
        Command::new(bin.join("pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .arg(format!("virtme-ng=={VNG_VERSION}")),
    )
    .context("cannot install virtme-ng from PyPI")?;
    std::fs::write(&marker, VNG_VERSION)?;
    Ok(bin)
}

/// Quotes a word for sh.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The pid in a run directory's name (`<ms>-<pid>-<label>`).
fn run_dir_pid(name: &str) -> Option<u32> {
    name.split('-').nth(1)?.parse().ok()
}

/// A fresh directory under target/xtask/guest/runs. The oldest ones are
/// pruned, except those of xtask processes still alive (a long run of
/// another xtask must keep its directory).
fn new_run_dir(label: &str) -> Result<PathBuf> {
    let runs = guest_dir().join("runs");
    std::fs::create_dir_all(&runs)?;
    let mut old: Vec<PathBuf> = std::fs::read_dir(&runs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    old.sort();
    let excess = (old.len() + 1).saturating_sub(KEEP_RUNS);
    for d in old.iter().take(excess) {
        let name = d.file_name().unwrap_or_default().to_string_lossy();
        let alive =
            run_dir_pid(&name).is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    let slug: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let dir = runs.join(format!("{ms:013}-{}-{slug}", std::process::id()));
    std::fs::create_dir_all(dir.join(".host-tmp"))?;
    Ok(dir)
}

/// Why the supervision loop ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// qemu exited (or closed the console).
    Exited,
    Crash,
    Stall,
    BootTimeout,
    JobTimeout,
    Signal(i32),
}

/// What the host learns from the console while the guest runs.
struct Watch<'a> {
    nonce: String,
    cfg: &'a GuestConfig,
    log: std::fs::File,
    tail: VecDeque<String>,
    start: Option<Instant>,
    exit: Option<(i32, Instant)>,
    crash: Option<(&'static str, Instant, String)>,
    crash_excerpt: Vec<String>,
    job_console: String,
}

impl Watch<'_> {
    fn line(&mut self, line: String) {
        let _ = writeln!(self.log, "{line}");
        if let Some(kind) = console::crash_kind(&line) {
            if self.crash.is_none() {
                let text = console::printk_text(&line).unwrap_or(&line).to_string();
                self.crash = Some((kind, Instant::now(), text));
                self.crash_excerpt = self.tail.iter().rev().take(10).rev().cloned().collect();
            }
        }
        if self.crash.is_some() && self.crash_excerpt.len() < 120 {
            self.crash_excerpt.push(line.clone());
        }
        match console::marker(&line, &self.nonce) {
            Some(Marker::Start) => {
                self.start.get_or_insert_with(Instant::now);
                self.push_tail(line);
                return;
            }
            Some(Marker::Exit(code)) => {
                self.exit.get_or_insert((code, Instant::now()));
                self.push_tail(line);
                return;
            }
            None => {}
        }
        let in_job = self.start.is_some() && self.exit.is_none();
        let kernel_line = console::printk_text(&line).is_some();
        if in_job && !kernel_line && self.job_console.len() < 1 << 20 {
            self.job_console.push_str(&line);
            self.job_console.push('\n');
        }
        if self.cfg.verbose || (in_job && self.cfg.stream) {
            // Ignore write errors (a closed pipe must not stop the watch).
            if in_job && !kernel_line {
                let _ = writeln!(std::io::stdout(), "{line}");
            } else {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
        self.push_tail(line);
    }

    fn push_tail(&mut self, line: String) {
        if self.tail.len() == 200 {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    fn tail(&self, n: usize) -> String {
        let skip = self.tail.len().saturating_sub(n);
        self.tail
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Reads the console pipe on a thread: sends lines (without `\r`), and
/// stamps `activity` (ms since `t0`) on every read, partial lines included.
fn spawn_reader(
    mut pipe: std::fs::File,
    t0: Instant,
    activity: Arc<AtomicU64>,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut pending: Vec<u8> = Vec::new();
        let send = |bytes: &[u8]| {
            let s = String::from_utf8_lossy(bytes);
            tx.send(s.trim_end_matches('\r').to_string()).is_ok()
        };
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            activity.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
            pending.extend_from_slice(&buf[..n]);
            while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                if !send(&pending[..pos]) {
                    return;
                }
                pending.drain(..=pos);
            }
        }
        if !pending.is_empty() {
            send(&pending);
        }
    });
    rx
}

/// The modification time and size of a file, if it exists.
fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[allow(dead_code)] // API for `cargo xtask test` and the demo
impl Guest {
    /// The guest kernel release, e.g. `7.3.4+deb13-amd64`.
    pub fn kernel(&self) -> &str {
        &self.kernel.release
    }

    /// The kernel's full version banner.
    pub fn kernel_banner(&self) -> &str {
        &self.kernel.banner
    }

    pub fn config(&self) -> &GuestConfig {
        &self.cfg
    }

    /// Changes how later runs boot and report: `tcg`, `cpus`, `memory`,
    /// `stall`, `stream` and `verbose` take effect; `kernel` does not (it
    /// was chosen by [`prepare`]).
    pub fn config_mut(&mut self) -> &mut GuestConfig {
        &mut self.cfg
    }

    /// Boots the guest, runs `job.script` in it and powers it off. See the
    /// module docs for what counts as an error. No qemu outlives this call,
    /// whatever happens; SIGINT, SIGTERM and SIGHUP stop the guest and then
    /// end xtask by the same signal.
    pub fn run(&self, job: &GuestJob) -> Result<GuestOutcome> {
        let dir = new_run_dir(&job.label)?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
        let nonce = format!("{}-{nanos}", std::process::id());
        let root = util::root();
        std::fs::write(
            dir.join("job.sh"),
            format!(
                "# scx-hints guest job \"{}\", written by xtask/src/vm.rs\n. {}\n{}\n",
                job.label.replace('\n', " "),
                shell_quote(&root.join("xtask/guest/lib.sh").to_string_lossy()),
                job.script
            ),
        )?;
        let secs = job.timeout.as_secs().max(1);
        let exec = format!(
            "bash {} {} {secs} {nonce}",
            shell_quote(&root.join("xtask/guest/run.sh").to_string_lossy()),
            shell_quote(&dir.to_string_lossy()),
        );
        // A backstop for the case that xtask itself is killed with SIGKILL.
        let backstop = BOOT_LIMIT.as_secs() + secs + 120;
        let mut cmd = Command::new("timeout");
        cmd.args([
            "-k",
            "10",
            &backstop.to_string(),
            "vng",
            "--verbose",
            "--run",
        ])
        .arg(&self.kernel.vmlinuz)
        .args(["--disable-kvm", "--force-9p", "--disable-microvm"])
        .args(["--memory", &self.cfg.memory]);
        match self.cfg.topology {
            Some(t) => {
                cmd.args(["--cpus", &t.smp_arg()]);
                for node in t.numa_args(topology::memory_mib(&self.cfg.memory)?)? {
                    cmd.args(["--numa", &node]);
                }
            }
            None => {
                cmd.args(["--cpus", &self.cfg.cpus.to_string()]);
            }
        }
        cmd.arg(format!("--rwdir={}", dir.display()));
        // The boot-time check that the timer interrupt arrives gives up
        // when the emulated CPUs run slowly on a loaded host ("IO-APIC +
        // timer doesn't work!" panics, seen at 4 and 16 vCPUs).
        cmd.args(["--append", "no_timer_check"]);
        let mut qemu_opts = Vec::new();
        if self.cfg.tcg == Tcg::Single {
            qemu_opts.push("-accel tcg,thread=single");
        }
        if self.cfg.topology.is_some() {
            qemu_opts.push(topology::CPU_MODEL);
        }
        if !qemu_opts.is_empty() {
            // vng joins its --qemu-opts values with spaces anyway.
            cmd.arg(format!("--qemu-opts={}", qemu_opts.join(" ")));
        }
        cmd.arg("--exec").arg(&exec).current_dir(&root);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.vng_bin.clone()];
        paths.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(paths)?)
            .env("TMPDIR", dir.join(".host-tmp"));

        step(format!(
            "guest `{}`: kernel {} [{}], TCG {}, {} vCPUs{}, {}; timeout {secs} s, stall {} s",
            job.label,
            self.kernel.banner,
            self.kernel.origin,
            self.cfg.tcg.name(),
            self.cfg.vcpus(),
            self.cfg
                .topology
                .map_or(String::new(), |t| format!(" ({t})")),
            self.cfg.memory,
            self.cfg.stall.as_secs(),
        ));
        let signals = proc::SignalGuard::install();
        let t0 = Instant::now();
        let (mut group, pipe) = proc::spawn(&mut cmd)?;
        let activity = Arc::new(AtomicU64::new(0));
        let rx = spawn_reader(pipe, t0, activity.clone());
        let mut w = Watch {
            nonce,
            cfg: &self.cfg,
            log: std::fs::File::create(dir.join("console.log"))?,
            tail: VecDeque::new(),
            start: None,
            exit: None,
            crash: None,
            crash_excerpt: Vec::new(),
            job_console: String::new(),
        };
        let progress = dir.join("progress");
        let mut progress_stamp = file_stamp(&progress);
        let mut last_progress = Duration::ZERO;
        let end = loop {
            let mut eof = false;
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let was_started = w.start.is_some();
                    w.line(line);
                    if !was_started && w.start.is_some() && w.cfg.stream && !w.cfg.verbose {
                        step(format!(
                            "guest booted in {:.1} s; `{}` runs",
                            t0.elapsed().as_secs_f64(),
                            job.label
                        ));
                    }
                    // Drain what is queued before the checks.
                    while let Ok(line) = rx.try_recv() {
                        w.line(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => eof = true,
            }
            let now = Instant::now();
            if let Some(sig) = proc::pending() {
                break End::Signal(sig);
            }
            if let Some((_, at, _)) = w.crash {
                if now >= at + CRASH_GRACE || eof {
                    break End::Crash;
                }
            }
            if eof || group.try_wait()?.is_some() {
                break End::Exited;
            }
            let stamp = file_stamp(&progress);
            if stamp != progress_stamp {
                progress_stamp = stamp;
                last_progress = t0.elapsed();
            }
            let last = last_progress.max(Duration::from_millis(activity.load(Ordering::Relaxed)));
            if t0.elapsed().saturating_sub(last) > self.cfg.stall {
                break End::Stall;
            }
            match (w.start, w.exit) {
                (None, _) if t0.elapsed() > BOOT_LIMIT => break End::BootTimeout,
                (Some(s), None) if now > s + job.timeout + Duration::from_secs(30) => {
                    break End::JobTimeout
                }
                // The guest powers off right after the script; give it time.
                (_, Some((_, at))) if now > at + Duration::from_secs(30) => break End::Exited,
                _ => {}
            }
        };
        let pgid_left = if end == End::Exited {
            // Normally empty already; cleans up stragglers.
            group.wait_for(Duration::from_secs(2));
            group.kill(Duration::from_secs(1))
        } else {
            group.kill(Duration::from_secs(3))
        };
        // The console up to the kill.
        let drain_until = Instant::now() + Duration::from_secs(1);
        while let Ok(line) = rx.recv_timeout(drain_until.saturating_duration_since(Instant::now()))
        {
            w.line(line);
        }
        let total_time = t0.elapsed();
        drop(signals);
        if pgid_left > 0 && end == End::Exited {
            loud(format!(
                "{pgid_left} leftover process(es) of the guest needed SIGKILL"
            ));
        }

        let label = &job.label;
        let where_ = format!(
            "kernel {}, TCG {}; console log: {}",
            self.kernel.release,
            self.cfg.tcg.name(),
            dir.join("console.log").display()
        );
        let boot_time = w.start.map_or(total_time, |s| s.duration_since(t0));
        match end {
            End::Signal(sig) => {
                loud(format!("signal {sig}: guest `{label}` stopped"));
                proc::die_by(sig);
                bail!("interrupted by signal {sig}; guest `{label}` stopped");
            }
            End::Crash | End::Exited if w.crash.is_some() => {
                let (kind, _, text) = w.crash.as_ref().expect("checked");
                bail!(
                    "guest kernel crash ({kind}: {text}) during `{label}` ({where_})\n\
                     --- console excerpt ---\n{}\n--- end of excerpt ---",
                    w.crash_excerpt.join("\n")
                );
            }
            End::Stall => bail!(
                "guest stalled during `{label}`: no console output and no \
                 $GUEST_OUT/progress change for {} s ({}; {where_})\n\
                 --- last console lines ---\n{}\n--- end ---",
                self.cfg.stall.as_secs(),
                if w.start.is_some() {
                    "the script was running"
                } else {
                    "still booting"
                },
                w.tail(40)
            ),
            End::BootTimeout => bail!(
                "guest did not reach the script of `{label}` within {} s ({where_})\n\
                 --- last console lines ---\n{}\n--- end ---",
                BOOT_LIMIT.as_secs(),
                w.tail(40)
            ),
            End::JobTimeout => bail!(
                "`{label}` timed out after {secs} s and the guest did not stop by itself \
                 ({where_})\n--- last console lines ---\n{}\n--- end ---",
                w.tail(40)
            ),
            End::Crash | End::Exited => {}
        }
        let output = std::fs::read(dir.join("output"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|_| w.job_console.clone());
        let status = std::fs::read_to_string(dir.join("status"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .or(w.exit.map(|(code, _)| code));
        let Some(exit_code) = status else {
            bail!(
                "guest ended without reporting the status of `{label}` ({}; {where_})\n\
                 --- last console lines ---\n{}\n--- end ---",
                if w.start.is_some() {
                    "the script started"
                } else {
                    "the script never started"
                },
                w.tail(40)
            );
        };
        if dir.join("timed-out").exists() {
            let tail: Vec<&str> = output.lines().rev().take(30).collect();
            bail!(
                "`{label}` timed out after {secs} s ({where_})\n--- last output lines ---\n{}\n--- end ---",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(GuestOutcome {
            exit_code,
            output,
            kernel: self.kernel.release.clone(),
            console_tail: w.tail(40),
            boot_time,
            total_time,
            run_dir: dir,
        })
    }
}

/// `cargo xtask vm [OPTIONS] -- CMD...`
#[derive(clap::Args)]
#[command(after_help = "\
Boots the Debian sched_ext kernel under qemu (TCG, through virtme-ng) and \
runs CMD in it, as root, in the workspace root (the host's filesystem is \
visible read-only). The exit status is CMD's. A guest kernel crash (oops, \
panic, BUG, WARNING, lockup, RCU stall), a stall and a timeout are errors \
(exit status 1).

Examples:
  cargo xtask vm -- uname -r
  cargo xtask vm -- sh -c 'cat /sys/kernel/sched_ext/state; exit 3'
  cargo xtask vm --tcg multi --kernel 7.2.13+deb14-amd64 -- ./run-tests.sh
  cargo xtask vm --topology 2s2c2t -- lscpu -e

In the guest, $GUEST_OUT is a directory shared with the host (kept with the \
run) and $GUEST_TMP a tmpfs one; the shell functions guest_stage and \
guest_progress are defined (see xtask/guest/lib.sh and xtask/src/vm.rs).

Environment (the options win): SCX_HINTS_GUEST_KERNEL, SCX_HINTS_GUEST_SUITE, \
SCX_HINTS_GUEST_TCG, SCX_HINTS_GUEST_STALL. Kernels, the virtme-ng venv and \
the last runs (console.log, output) are kept in target/xtask/guest/.")]
pub struct VmArgs {
    /// Time limit for CMD in seconds (the boot, 10 to 20 s, comes on top).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub timeout: u64,
    /// Fail if the guest prints nothing (console, $GUEST_OUT/progress) for
    /// this long [default: 120, env SCX_HINTS_GUEST_STALL].
    #[arg(long, value_name = "SECS")]
    pub stall: Option<u64>,
    /// Guest kernel: a Debian kernel ABI (e.g. 7.3.4+deb13-amd64), or a path
    /// to a vmlinuz or an unpacked kernel directory [env
    /// SCX_HINTS_GUEST_KERNEL; default: the newest of --suite].
    #[arg(long, value_name = "ABI|PATH")]
    pub kernel: Option<String>,
    /// Debian suite whose newest kernel boots: trixie-backports or sid [env
    /// SCX_HINTS_GUEST_SUITE; default: trixie-backports].
    #[arg(long, value_name = "SUITE", conflicts_with = "kernel")]
    pub suite: Option<String>,
    /// qemu TCG threading [env SCX_HINTS_GUEST_TCG; default: single].
    #[arg(long, value_enum)]
    pub tcg: Option<Tcg>,
    /// Number of guest CPUs [default: 2, or the count of --topology].
    #[arg(long)]
    pub cpus: Option<u32>,
    /// CPU topology: <sockets>s<cores>c<threads>t, with a trailing n for
    /// one NUMA node per socket (e.g. 2s2c2t: 8 vCPUs in 2 sockets, i.e.
    /// 2 LLCs, of 2 SMT-2 cores; 2s4c2tn: 16 vCPUs, 2 NUMA nodes), or
    /// `auto`: 2 sockets of SMT-2 cores for --cpus (a multiple of 4).
    #[arg(long, value_name = "SPEC")]
    pub topology: Option<String>,
    /// Guest memory (qemu syntax).
    #[arg(long, default_value = "2G")]
    pub memory: String,
    /// Show the whole console, the boot included.
    #[arg(short, long)]
    pub verbose: bool,
    /// The command to run inside the guest.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

pub fn cmd(args: VmArgs) -> Result<i32> {
    let mut cfg = GuestConfig::from_env()?;
    if let Some(k) = &args.kernel {
        cfg.kernel = KernelChoice::parse_override(k);
    } else if let Some(s) = &args.suite {
        cfg.kernel = KernelChoice::Suite(s.clone());
    }
    if let Some(t) = args.tcg {
        cfg.tcg = t;
    }
    if let Some(s) = args.stall {
        cfg.stall = Duration::from_secs(s);
    }
    cfg.cpus = args.cpus.unwrap_or(2);
    match args.topology.as_deref() {
        None => {}
        Some("auto") => {
            let t = Topology::two_sockets_smt(cfg.cpus)?;
            cfg = cfg.with_topology(t);
        }
        Some(spec) => {
            let t: Topology = spec.parse()?;
            if let Some(n) = args.cpus.filter(|&n| n != t.cpus()) {
                bail!(
                    "--cpus {n} disagrees with --topology {spec} ({} CPUs)",
                    t.cpus()
                );
            }
            cfg = cfg.with_topology(t);
        }
    }
    if cfg.cpus == 0 {
        bail!("--cpus 0: the guest needs at least one CPU");
    }
    cfg.memory = args.memory.clone();
    cfg.verbose = args.verbose;
    let guest = prepare_with(cfg)?;
    let script: Vec<String> = args.cmd.iter().map(|a| shell_quote(a)).collect();
    let script = script.join(" ");
    let job = GuestJob::new(script.clone(), script, Duration::from_secs(args.timeout));
    let out = guest.run(&job)?;
    step(format!(
        "guest exit status {} (kernel {}, boot {:.1} s, total {:.1} s)",
        out.exit_code,
        out.kernel,
        out.boot_time.as_secs_f64(),
        out.total_time.as_secs_f64()
    ));
    Ok(out.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("uname"), "uname");
        assert_eq!(shell_quote("-r"), "-r");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("cat /x; exit 3"), "'cat /x; exit 3'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn run_dir_names() {
        assert_eq!(run_dir_pid("1795621136176-12372-uname--r"), Some(12372));
        assert_eq!(run_dir_pid("garbage"), None);
    }

    /// Boots the guest twice through the public API (root, about 30 s):
    /// `cargo test -p xtask -- --ignored guest_api` (run by `cargo xtask
    /// test` in its guest step; ignored in plain unit-test runs).
    #[test]
    #[ignore]
    fn guest_api_round_trip() {
        let guest = prepare().unwrap();
        let out = guest
            .run(&GuestJob::new(
                "api: state",
                "cat /sys/kernel/sched_ext/state; echo err >&2; exit 3",
                Duration::from_secs(60),
            ))
            .unwrap();
        assert_eq!(out.exit_code, 3);
        assert_eq!(out.output, "disabled\nerr\n");
        assert_eq!(out.kernel, guest.kernel());
        let out = guest
            .run(&GuestJob::new(
                "api: files",
                "uname -r > \"$GUEST_OUT/release\"; test -d \"$GUEST_TMP\"",
                Duration::from_secs(60),
            ))
            .unwrap();
        assert_eq!(out.exit_code, 0);
        let release = std::fs::read_to_string(out.run_dir.join("release")).unwrap();
        assert_eq!(release.trim(), guest.kernel());
        let err = guest
            .run(&GuestJob::new(
                "api: timeout",
                "sleep 30",
                Duration::from_secs(2),
            ))
            .unwrap_err();
        assert!(format!("{err:#}").contains("timed out"), "{err:#}");
    }
}
