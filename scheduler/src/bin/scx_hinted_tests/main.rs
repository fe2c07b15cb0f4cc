// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! scx_hinted_tests: the guest tests of scx_hinted (issue 3, item 5).
//!
//! Run inside a sched_ext guest, as root, with no other sched_ext scheduler
//! attached:
//!
//! ```text
//! scx_hinted_tests [--scheduler PATH] [--stress-secs N] [TEST...]
//! ```
//!
//! Each test starts its own scx_hinted. One line per test, `PASS name: ...`
//! or `FAIL name: ...`, then `N passed, M failed`. Exit status 0 when all
//! passed, 1 when any failed, 2 when the tests could not run at all.
//!
//! Tests that detach a scheduler under load (restart, kill9) must not touch
//! the 9p root meanwhile: stage this program, scx_hinted and stress-ng in
//! tmpfs first (xtask's `guest_stage`) and put their directory first in PATH.

mod cgroup_tests;
mod harness;
mod launcher;
mod policy_tests;
mod restart_tests;
mod rules_tests;
mod scale_tests;
mod security_tests;
mod soak;
mod tests;
mod topo_tests;
mod workers;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

/// The guest tests of scx_hinted.
#[derive(Parser)]
struct Args {
    /// The scheduler binary [default: scx_hinted on PATH].
    #[arg(long, env = "SCX_HINTED_BIN")]
    scheduler: Option<PathBuf>,

    /// Length of the stress test, in seconds.
    #[arg(long, default_value_t = 30)]
    stress_secs: u64,

    /// A tmpfs directory for logs [default: $GUEST_TMP, else /dev/shm].
    #[arg(long)]
    tmp: Option<PathBuf>,

    /// List the tests and exit.
    #[arg(long)]
    list: bool,

    /// Internal: the garbage-writing child of the bad_data test.
    #[arg(long, hide = true)]
    garbage_child: Option<u64>,

    /// Internal: a child that becomes UID:GID and tries to register a hint.
    #[arg(long, hide = true)]
    register_as: Option<String>,

    /// Internal: a child that becomes UID (or stays root without
    /// CAP_SYS_NICE: root-without-sys-nice) and tries OP (register, delete,
    /// freeze, lookup-and-delete, update-batch, delete-batch) on the TLD
    /// entry of thread TID (0: its own): `UID:OP:TID`.
    #[arg(long, hide = true)]
    forge: Option<String>,

    /// Internal: a child that becomes UID and times N registrations of its
    /// own thread: `UID:N`.
    #[arg(long, hide = true)]
    update_loop: Option<String>,

    /// Internal: a child that becomes UID and races the guard's check to
    /// write thread TID's entry for MS milliseconds: `UID:TID:MS`.
    #[arg(long, hide = true)]
    race: Option<String>,

    /// Internal: a hinted app of user UID claiming CLASS: `UID:CLASS`.
    #[arg(long, hide = true)]
    app: Option<String>,

    /// Internal: a child that spins for this many seconds, touching no hint.
    #[arg(long, hide = true)]
    spin: Option<u64>,

    /// Internal: a child that claims critical, runs until the scheduler
    /// read the claim, then execs PATH `--spin 30` (a setuid copy).
    #[arg(long, hide = true, value_name = "PATH")]
    exec_claim: Option<PathBuf>,

    /// Internal: a child that hints background, runs until the scheduler
    /// read it, then execs `--spin N` (a program that publishes no hint).
    #[arg(long, hide = true)]
    exec_spin: Option<u64>,

    /// Internal: an application with one critical and two batch threads,
    /// each hinted once at start, running this many seconds.
    #[arg(long, hide = true)]
    hinted_app: Option<u64>,

    /// Instead of the tests: the scale benchmark's load for SECS seconds
    /// under EEVDF, then under scx_hinted; prints `SCALE ...` lines with the
    /// BPF ns per callback, the frame thread's latency and hog throughput.
    #[arg(long, value_name = "SECS")]
    bench_scale: Option<u64>,

    /// Tests to run [default: all but those --list marks as run only when
    /// named: open problems, and the topology tests that need two LLCs].
    tests: Vec<String>,
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn main() {
    let args = Args::parse();
    if let Some(secs) = args.garbage_child {
        std::process::exit(tests::garbage_child(secs));
    }
    if let Some(spec) = args.register_as {
        std::process::exit(tests::register_as(&spec));
    }
    let pin = PathBuf::from(scx_hints::tld::map_pin_path());
    if let Some(spec) = args.forge {
        std::process::exit(security_tests::forge_child(&spec, &pin));
    }
    if let Some(spec) = args.update_loop {
        std::process::exit(security_tests::update_loop_child(&spec, &pin));
    }
    if let Some(spec) = args.race {
        std::process::exit(security_tests::race_child(&spec, &pin));
    }
    if let Some(spec) = args.app {
        std::process::exit(security_tests::app_child(&spec));
    }
    if let Some(path) = args.exec_claim {
        std::process::exit(tests::exec_claim(&path));
    }
    if let Some(secs) = args.exec_spin {
        std::process::exit(tests::exec_spin(secs));
    }
    if let Some(secs) = args.hinted_app {
        std::process::exit(restart_tests::hinted_app(secs));
    }
    if let Some(secs) = args.spin {
        let end = Instant::now() + std::time::Duration::from_secs(secs);
        while Instant::now() < end {
            std::hint::spin_loop();
        }
        return;
    }
    if args.list {
        for (name, _) in tests::TESTS {
            println!("{name}");
        }
        for (name, _) in tests::OPEN_TESTS {
            println!("{name} (open problem: runs only when named)");
        }
        for (name, _) in topo_tests::TOPO_TESTS {
            println!("{name} (needs two LLCs: runs only when named)");
        }
        return;
    }

    let fatal = |msg: String| -> ! {
        eprintln!("scx_hinted_tests: {msg}");
        println!("0 passed, 1 failed");
        std::process::exit(2);
    };
    // SAFETY: geteuid() has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        fatal("must run as root".into());
    }
    if !std::path::Path::new("/sys/kernel/sched_ext/state").exists() {
        fatal("this kernel has no sched_ext".into());
    }
    let Some(sched_bin) = args.scheduler.or_else(|| find_on_path("scx_hinted")) else {
        fatal("scx_hinted not found: pass --scheduler or put it on PATH".into());
    };
    // A staged program's /proc/self/exe is the ELF loader; argv[0] is the
    // wrapper that starts it again.
    let self_exe = std::env::args()
        .next()
        .filter(|a| a.contains('/'))
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_default();
    let tmp = args
        .tmp
        .or_else(|| std::env::var_os("GUEST_TMP").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    let env = harness::Env {
        sched_bin,
        tmp,
        pin,
        stress_secs: args.stress_secs,
        self_exe,
    };

    if let Some(secs) = args.bench_scale {
        if let Err(e) = scale_tests::bench(&env, secs) {
            fatal(format!("scale benchmark: {e:#}"));
        }
        return;
    }

    let selected: Vec<_> = if args.tests.is_empty() {
        tests::TESTS.iter().collect()
    } else {
        tests::TESTS
            .iter()
            .chain(tests::OPEN_TESTS)
            .chain(topo_tests::TOPO_TESTS)
            .filter(|(name, _)| args.tests.iter().any(|t| t == name))
            .collect()
    };
    if selected.is_empty() {
        fatal(format!("no test named {:?}", args.tests));
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in selected {
        println!("RUN  {name}");
        let start = Instant::now();
        match test(&env) {
            Ok(detail) => {
                passed += 1;
                println!(
                    "PASS {name} ({:.1} s): {detail}",
                    start.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                failed += 1;
                println!(
                    "FAIL {name} ({:.1} s): {e:#}",
                    start.elapsed().as_secs_f64()
                );
                // Leave no scheduler behind for the next test.
                let _ = harness::wait_state("disabled", std::time::Duration::from_secs(10));
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
