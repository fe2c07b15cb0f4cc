// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! scx-hint: scheduler hints for programs that publish none.
//!
//! `scx-hint run --class background -- make -j8` sets the class on its own
//! thread, makes sure the scheduler has read it, and replaces itself with
//! the command. scx_hinted keeps a task's effective hints across exec and
//! fork as inherited values (docs/policy.md, "Forks" and "exec"), so the
//! command and everything it starts run in that class until a thread
//! publishes its own hint.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use scx_hints::view::{TaskView, Views};
use scx_hints::{LatencyClass, Registration};

/// Scheduler hints for programs that do not publish their own.
///
/// Works with scx_hinted (a sched_ext scheduler) running; without it the
/// command still runs, unhinted. Giving the critical class or a negative
/// priority needs root or a user scx_hinted allows (--allow-uid,
/// --allow-gid); others are clamped to interactive and 0.
#[derive(Debug, Parser)]
#[command(name = "scx-hint", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a command with a latency class (and priority). The command and
    /// its children, threads and execs keep them until they publish their own.
    #[command(
        arg_required_else_help = true,
        after_help = "Example: scx-hint run --class background -- make -j8\n\n\
                      Exit status: the command's; 127 if it is not found; 126 if it \
                      cannot be run (not executable, permission); 1 if --require and \
                      the hint cannot reach a scheduler."
    )]
    Run {
        /// critical, interactive, normal, batch or background.
        #[arg(long, short)]
        class: LatencyClass,

        /// Nice-like priority, -20 (most CPU) to 19 (least), added to the
        /// command's nice value by scx_hinted.
        #[arg(long, short, allow_negative_numbers = true,
              value_parser = clap::value_parser!(i32).range(-20..=19))]
        priority: Option<i32>,

        /// Fail (exit 1) instead of running the command unhinted when the
        /// hint cannot reach a scheduler (none pinned its map, or no access).
        #[arg(long)]
        require: bool,

        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Show what scx_hinted applies to each thread of a process: its class
    /// and priority, where each comes from (own hint, rule, inherited,
    /// SCHED_IDLE/SCHED_BATCH policy, default), and whether it registered.
    #[command(after_help = "Example: scx-hint show $(pidof make)\n\n\
                      Sources, in order of precedence: own (the thread's hint), rule \
                      (scx_hinted --rules), inherited (from the parent at fork, or \
                      across exec, e.g. scx-hint run), policy (SCHED_BATCH; SCHED_IDLE \
                      wins over all), default. Exit status 1 if the process does not exist.")]
    Show {
        /// The process id.
        pid: u32,
    },
}

/// Exit status when the command is not found (as env(1) and shells do).
const NOT_FOUND: i32 = 127;
/// Exit status when the command is found but cannot be run (env(1), shells).
const CANNOT_RUN: i32 = 126;

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run {
            class,
            priority,
            require,
            command,
        } => run(class, priority, require, &command),
        Cmd::Show { pid } => show(pid),
    };
    if let Err(e) = result {
        eprintln!("scx-hint: {e:#}");
        std::process::exit(match e.downcast_ref::<Exec>() {
            Some(exec) => exec.status(),
            None => 1,
        });
    }
}

/// The command could not be executed.
#[derive(Debug)]
struct Exec {
    program: String,
    error: std::io::Error,
}

impl Exec {
    /// The exit status a shell would give: 127 for a command not found,
    /// 126 for one found but not runnable.
    fn status(&self) -> i32 {
        match self.error.kind() {
            std::io::ErrorKind::NotFound => NOT_FOUND,
            _ => CANNOT_RUN,
        }
    }
}

impl std::fmt::Display for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot run {}: {}", self.program, self.error)
    }
}

impl std::error::Error for Exec {}

fn run(
    class: LatencyClass,
    priority: Option<i32>,
    require: bool,
    command: &[OsString],
) -> Result<()> {
    scx_hints::set_latency_class(class);
    if let Some(p) = priority {
        scx_hints::set_priority(p)?;
    }
    match scx_hints::tld::register_thread() {
        // scx_hinted reads the hints at exec and hands them down.
        Registration::Registered => {}
        other => {
            let why = match other {
                Registration::Failed(errno) => format!(
                    "registering with the map at {} failed: {}",
                    scx_hints::tld::map_pin_path(),
                    std::io::Error::from_raw_os_error(errno)
                ),
                _ => format!(
                    "no scheduler map at {} (is scx_hinted running?)",
                    scx_hints::tld::map_pin_path()
                ),
            };
            if require {
                bail!("{why}");
            }
            eprintln!("scx-hint: {why}; running the command unhinted");
        }
    }
    let (program, args) = command.split_first().expect("clap requires a command");
    let error = Command::new(program).args(args).exec();
    Err(Exec {
        program: program.to_string_lossy().into_owned(),
        error,
    }
    .into())
}

/// Scheduling policy names as in sched(7).
fn policy_name(policy: i64) -> String {
    match policy {
        0 => "SCHED_OTHER".into(),
        1 => "SCHED_FIFO".into(),
        2 => "SCHED_RR".into(),
        3 => "SCHED_BATCH".into(),
        5 => "SCHED_IDLE".into(),
        6 => "SCHED_DEADLINE".into(),
        7 => "SCHED_EXT".into(),
        n => format!("policy {n}"),
    }
}

/// Fields of /proc/PID/task/TID/stat: (comm, nice, policy).
fn thread_stat(pid: u32, tid: &str) -> Result<(String, i64, i64)> {
    let path = format!("/proc/{pid}/task/{tid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // comm is in parentheses and may contain anything, even ") ".
    let (head, rest) = stat
        .rsplit_once(')')
        .with_context(|| format!("{path}: unexpected format"))?;
    let comm = head.split_once('(').map_or("", |(_, c)| c).to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After comm, field 3 (state) is fields[0]: nice is field 19, policy 41.
    let field = |n: usize| -> Result<i64> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{path}: no field {n}"))
    };
    Ok((comm, field(19)?, field(41)?))
}

/// Whether scx_hinted is the sched_ext scheduler running now, and if not,
/// what runs instead (for the message when no view can be read).
fn scheduler_running() -> Result<(), String> {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
    match read("/sys/kernel/sched_ext/state") {
        Err(_) => Err("this kernel has no sched_ext".into()),
        Ok(state) if state != "enabled" => Err(format!("no sched_ext scheduler runs ({state})")),
        Ok(_) => match read("/sys/kernel/sched_ext/root/ops") {
            // scx_utils names the ops "hinted_<version>_<target>".
            Ok(ops) if ops == "hinted" || ops.starts_with("hinted_") => Ok(()),
            Ok(ops) => Err(format!(
                "the sched_ext scheduler running is {ops:?}, not scx_hinted"
            )),
            Err(e) => Err(format!("cannot tell which scheduler runs: {e}")),
        },
    }
}

/// The scheduler's view map, or why it cannot be read.
fn open_views() -> Result<Views, String> {
    let path = scx_hints::view::pin_path();
    let running = scheduler_running();
    match Views::open_at(&path) {
        Ok(views) => match running {
            Ok(()) => Ok(views),
            Err(why) => Err(format!("{why}; the view at {path} is stale")),
        },
        Err(e) => Err(match (running, e.kind()) {
            (Err(why), _) => why,
            (Ok(()), std::io::ErrorKind::NotFound) => format!(
                "scx_hinted runs but {path} is missing (a version without the task view, \
                 or another --tld-pin directory: set SCX_HINTS_TLD_MAP)"
            ),
            (Ok(()), std::io::ErrorKind::PermissionDenied) => {
                format!("cannot open {path}: permission denied (see docs/operators.md)")
            }
            (Ok(()), _) => format!("cannot read {path}: {e}"),
        }),
    }
}

/// The CLASS, PRIORITY and NOTES cells of a thread the scheduler has seen.
fn view_cells(v: &TaskView) -> (String, String, String) {
    let class = format!("{} ({})", v.class.name(), v.class_source.name());
    let priority = format!("{} ({})", v.priority, v.priority_source.name());
    let mut notes = Vec::new();
    if let Some(rule) = v.rule {
        notes.push(format!("rule at line {rule}"));
    }
    if v.clamped {
        notes.push("claim clamped (critical or negative priority not allowed)".into());
    }
    match v.own_class {
        Some(c) if !(0..scx_hints::vocab::NR_CLASSES).contains(&c) => {
            notes.push(format!("publishes invalid class {c} (ignored)"))
        }
        _ => {}
    }
    notes.push(format!("weight {}", v.weight));
    (class, priority, notes.join(", "))
}

fn show(pid: u32) -> Result<()> {
    let dir = format!("/proc/{pid}/task");
    let mut tids: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("no process {pid} (reading {dir})"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    tids.sort_by_key(|t| t.parse::<u64>().unwrap_or(u64::MAX));
    let views = open_views();
    println!(
        "{:>8}  {:<16} {:<12} {:>4}  {:<24} {:<16} {:<10} NOTES",
        "TID", "COMM", "POLICY", "NICE", "CLASS (SOURCE)", "PRIORITY", "REGISTERED"
    );
    for tid in &tids {
        let Ok((comm, nice, policy)) = thread_stat(pid, tid) else {
            continue; // the thread exited meanwhile
        };
        let Ok(tid_num) = tid.parse::<i32>() else {
            continue;
        };
        let (class, priority, registered, notes) = match &views {
            Ok(views) => match views.get(tid_num) {
                Ok(Some(v)) => {
                    let (c, p, n) = view_cells(&v);
                    (c, p, if v.registered { "yes" } else { "no" }.to_string(), n)
                }
                Ok(None) => (
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "not seen by scx_hinted (not a sched_ext task?)".into(),
                ),
                Err(e) => ("?".into(), "?".into(), "?".into(), e.to_string()),
            },
            Err(_) => ("?".into(), "?".into(), "?".into(), String::new()),
        };
        println!(
            "{tid:>8}  {comm:<16} {:<12} {nice:>4}  {class:<24} {priority:<16} {registered:<10} {notes}",
            policy_name(policy)
        );
    }
    if let Err(why) = views {
        eprintln!("scx-hint: cannot show what the scheduler applies: {why}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_run_with_the_command_untouched() {
        let cli = Cli::try_parse_from([
            "scx-hint",
            "run",
            "--class",
            "background",
            "-p",
            "-5",
            "--",
            "make",
            "-j8",
            "--class",
        ])
        .unwrap();
        let Cmd::Run {
            class,
            priority,
            command,
            require,
        } = cli.cmd
        else {
            panic!("not run");
        };
        assert_eq!(class, LatencyClass::Background);
        assert_eq!(priority, Some(-5));
        assert!(!require);
        assert_eq!(command, ["make", "-j8", "--class"]);
    }

    #[test]
    fn refuses_bad_input_with_an_error() {
        for args in [
            &["scx-hint", "run", "--class", "urgent", "--", "true"][..],
            &[
                "scx-hint",
                "run",
                "--class",
                "batch",
                "--priority",
                "20",
                "--",
                "true",
            ],
            &["scx-hint", "run", "--class", "batch"],
            &["scx-hint", "show", "abc"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    /// A thread made SCHED_BATCH at nice 7 (both allowed unprivileged) is
    /// read back as such: a wrong field index fails here.
    #[test]
    fn reads_a_thread_s_policy_and_nice() {
        let me = std::process::id();
        let (comm, nice, policy) = std::thread::Builder::new()
            .name("stat) (test".into())
            .spawn(move || {
                // SAFETY: plain syscalls on the calling thread.
                let tid = unsafe { libc::gettid() };
                let param = libc::sched_param { sched_priority: 0 };
                // SAFETY: as above; param is valid.
                assert_eq!(
                    unsafe { libc::sched_setscheduler(tid, libc::SCHED_BATCH, &param) },
                    0
                );
                // SAFETY: as above.
                assert_eq!(
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 7) },
                    0
                );
                thread_stat(me, &tid.to_string()).unwrap()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(comm, "stat) (test");
        assert_eq!(nice, 7);
        assert_eq!(policy_name(policy), "SCHED_BATCH");
    }
}
