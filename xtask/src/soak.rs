//! `cargo xtask soak [--minutes N]`: the soak test (scx_hinted_tests' `soak`:
//! class churn, fork and exec storms, hinted and unhinted hogs, scheduler
//! restarts by SIGINT, kill -9 and CPU hotplug) for N minutes in a guest of
//! 4 vCPUs (2 sockets of one SMT-2 core). `cargo xtask test` runs its
//! one-minute form with the other guest tests.

use crate::util::{loud, step};
use crate::vm::{self, GuestConfig, GuestJob, Topology};
use anyhow::{bail, Result};
use std::time::Duration;

#[derive(clap::Args)]
#[command(after_help = "\
Passes when the scheduler never stalled or exited on its own, the guest \
kernel printed no oops, the gauges (registered, per-class tasks) returned to \
their baseline and every app that set its hints once at the start is still \
scheduled by them after the last restart. A run of N minutes restarts the \
scheduler 20 times from 10 minutes on (fewer in shorter runs).")]
pub struct SoakArgs {
    /// Length of the soak in minutes (at least 1).
    #[arg(long, default_value_t = 10)]
    pub minutes: u64,
}

pub fn run(args: SoakArgs) -> Result<i32> {
    if args.minutes == 0 {
        bail!("--minutes 0: the soak needs at least one minute");
    }
    let secs = args.minutes * 60;
    let bin = crate::test::build_scheduler()?;
    let mut cfg = GuestConfig::from_env()?.with_topology(Topology::two_sockets_smt(4)?);
    // Restarts under load can keep the console quiet for a while.
    cfg.stall = cfg.stall.max(Duration::from_secs(180));
    let guest = vm::prepare_with(cfg)?;
    let q = |p: &std::path::Path| vm::shell_quote(&p.to_string_lossy());
    let script = format!(
        "set -e\n\
         guest_stage {} {}\n\
         export PATH=\"$GUEST_TMP/bin:$PATH\"\n\
         set +e\n\
         SCX_HINTS_SOAK_SECS={secs} scx_hinted_tests --scheduler \"$GUEST_TMP/bin/scx_hinted\" soak\n",
        q(&bin.join("scx_hinted")),
        q(&bin.join("scx_hinted_tests")),
    );
    step(format!("soak: {} minutes on 4 vCPUs", args.minutes));
    let out = guest.run(&GuestJob::new(
        format!("soak {} min", args.minutes),
        script,
        Duration::from_secs(secs + 600),
    ))?;
    let (passed, failed) = crate::test::parse_guest_results(&out.output);
    if out.exit_code == 0 && passed.iter().any(|p| p.starts_with("soak")) && failed.is_empty() {
        step("soak passed");
        Ok(0)
    } else {
        loud(format!("soak failed (exit status {})", out.exit_code));
        Ok(1)
    }
}
