// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! scx_hinted: the user-space side. It parses the command line, fills the BPF
//! program's tunables, pins the TLD map, loads and attaches the scheduler,
//! serves statistics, and detaches on Ctrl-C or restarts when the BPF side
//! asks. Every scheduling decision is made in BPF (bpf/scx_hinted.bpf.c).

mod bpf_intf;
mod bpf_skel;
mod guard;
mod pin;
mod rules;
mod stats;
mod tld_guard_skel;
mod topology;
mod view;

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bpf_skel::*;
use clap::Parser;
use crossbeam::channel::RecvTimeoutError;
use libbpf_rs::{MapCore, MapFlags, OpenObject};
use log::{info, warn};
use scx_stats::prelude::*;
use scx_utils::libbpf_clap_opts::LibbpfOpts;
use scx_utils::{build_id, scx_ops_attach, scx_ops_load, scx_ops_open, uei_exited, uei_report};
use scx_utils::{compat, try_set_rlimit_infinity, UserExitInfo};

use stats::Snapshot;

pub const SCHEDULER_NAME: &str = "scx_hinted";

const MAX_ALLOW_IDS: usize = bpf_intf::hinted_consts_HINTED_MAX_ALLOW_IDS as usize;

/// scx_hinted: a sched_ext scheduler steered by per-thread hints.
///
/// Applications publish, per thread, a latency class (critical, interactive,
/// normal, batch, background) and a nice-like priority with the scx_hints
/// crate: a store into the thread's own memory (task local data), no syscall.
/// scx_hinted reads them in BPF whenever it places, queues or re-slices a task.
/// Threads without hints are scheduled by weighted virtual time, weight from
/// nice, scaled so that cgroups share CPU by their cpu.weight. See
/// docs/policy.md for the policy and the bounds it guarantees.
///
/// Needs a kernel with sched_ext (CONFIG_SCHED_CLASS_EXT) and root. Hints
/// from other users' applications also need BPF LSM (`bpf` in the kernel's
/// active LSM list) for the ownership guard; see docs/security.md.
#[derive(Debug, Parser)]
struct Opts {
    /// Time slice of normal tasks, in microseconds. The slice of a class is
    /// also its request: a task's virtual deadline is its vruntime plus its
    /// slice scaled by its weight, so shorter slices mean earlier deadlines.
    #[arg(long, default_value_t = 3000, value_name = "US")]
    slice_us: u64,

    /// Time slice of critical tasks, in microseconds.
    #[arg(long, default_value_t = 750, value_name = "US")]
    critical_slice_us: u64,

    /// Time slice of interactive tasks, in microseconds.
    #[arg(long, default_value_t = 1500, value_name = "US")]
    interactive_slice_us: u64,

    /// Time slice of batch tasks, in microseconds.
    #[arg(long, default_value_t = 12000, value_name = "US")]
    batch_slice_us: u64,

    /// Time slice of background tasks, in microseconds. It is also the length
    /// of the guaranteed background slice (see --bg-share-pct).
    #[arg(long, default_value_t = 3000, value_name = "US")]
    background_slice_us: u64,

    /// Wakeup credit of normal and background tasks, in microseconds: a
    /// waking task starts no further than this behind the current virtual
    /// time, so sleeping earns at most this much head start. Batch tasks get
    /// no wakeup credit.
    #[arg(long, default_value_t = 20000, value_name = "US")]
    lag_us: u64,

    /// Wakeup credit of critical and interactive tasks, in microseconds.
    #[arg(long, default_value_t = 40000, value_name = "US")]
    elevated_lag_us: u64,

    /// Burst budget of critical threads, in microseconds: CPU time a thread
    /// hinted critical may use without sleeping before it is scheduled as
    /// normal for the rest of that burst (enforced within one tick).
    /// 0 disables the budget.
    #[arg(long, default_value_t = 5000, value_name = "US")]
    critical_budget_us: u64,

    /// Burst budget of interactive threads, in microseconds (as above).
    #[arg(long, default_value_t = 20000, value_name = "US")]
    interactive_budget_us: u64,

    /// Minimum CPU share of background tasks while they are runnable, in
    /// percent of each CPU (1 to 50). Background runs only when nothing else
    /// is queued, except that every CPU runs one background slice after at
    /// most background-slice * (100 - PCT) / PCT of other work.
    #[arg(long, default_value_t = 5, value_name = "PCT",
          value_parser = clap::value_parser!(u32).range(1..=50))]
    bg_share_pct: u32,

    /// Let a waking normal task preempt a running normal one it is behind by
    /// more than a slice of virtual time (EEVDF also preempts on wakeup,
    /// within the limits of its RUN_TO_PARITY). Off by default: an unhinted
    /// waker then waits in the queue for the running task's slice to end at
    /// a tick, and threads that need less should be hinted interactive. Each
    /// such preemption interrupts the victim's CPU and moves the waker
    /// there; in the measured guests that cost CPU hogs beside request
    /// serving 0.50 to 0.86x of their EEVDF throughput.
    #[arg(long)]
    peer_preemption: bool,

    /// With --peer-preemption: how long a normal task runs before a waking
    /// normal task may preempt it, in microseconds [default: 1000]. Without
    /// it, tasks that wake each other (message passing) preempt one another
    /// at nearly every wakeup.
    #[arg(long, value_name = "US", requires = "peer_preemption")]
    peer_min_run_us: Option<u64>,

    /// Starvation limit, in milliseconds: a task that has waited this long
    /// in the shared queue runs next, whatever its deadline (checked by one
    /// CPU every 100 ms). Low-weight tasks beside many CPU hogs would
    /// otherwise wait N/CPUs x 0.3 s at nice 19, up to the 20 s watchdog.
    /// 0 turns the guard off.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    starve_ms: u64,

    /// Also allow this user (name or uid) to claim the critical class and
    /// negative priorities. Root (uid 0) is always allowed; claims by other
    /// threads are clamped (critical to interactive, priority to 0) and
    /// counted. Checked against the thread's effective uid when its hints
    /// change. Repeatable, up to 15 times.
    #[arg(long, value_name = "USER")]
    allow_uid: Vec<String>,

    /// Also allow this group (name or gid) to claim the critical class and
    /// negative priorities: checked against the thread's effective gid and its
    /// first 32 supplementary groups. Repeatable, up to 16 times.
    #[arg(long, value_name = "GROUP")]
    allow_gid: Vec<String>,

    /// Allow every thread to claim the critical class and negative
    /// priorities (no clamping).
    #[arg(long)]
    allow_all: bool,

    /// Do not let a forked task start with its parent's effective hints
    /// (by default it keeps them until it publishes its own).
    #[arg(long)]
    no_fork_inherit: bool,

    /// Ignore cgroup CPU weights (cpu.weight). By default a task's weight is
    /// scaled by its cgroup's share among the runnable siblings at each
    /// level, so that CPU time splits between cgroups by their weights, not
    /// by how many tasks each one runs; priority hints then move a thread
    /// within its cgroup's share. See docs/policy.md, "cgroup weights".
    #[arg(long)]
    no_cgroup_weights: bool,

    /// bpffs path where the TLD map is pinned, and where applications look
    /// for it. An existing pin is reused, so registrations survive a restart
    /// of the scheduler; the pin is left in place at exit.
    #[arg(long, env = "SCX_HINTS_TLD_MAP", default_value = pin::DEFAULT_PIN_PATH,
          value_name = "PATH")]
    tld_pin: PathBuf,

    /// Restrict hints to this group (name or gid): the pin directory becomes
    /// root:GROUP 0750 and the map root:GROUP 0660. Without it every user may
    /// register hints for the threads of their own processes (directory 0755,
    /// map 0666). Either way a kernel-side guard refuses writes to another
    /// process's threads; if the guard cannot be attached, the map stays
    /// root-only (0700 and 0600) and a warning says why. See docs/security.md.
    #[arg(long, value_name = "GROUP")]
    hint_group: Option<String>,

    /// Give hints to programs that publish none, by executable, thread or
    /// process name, cgroup, user or group: one rule per line, such as
    /// `comm=stress-ng* class=background` or `user=builder exe=/usr/bin/*
    /// class=batch priority=5`; the first matching rule applies. A thread's
    /// own hint beats a rule, a rule beats an inherited class, and children
    /// inherit what a rule gives. Only rules that match on user and group
    /// alone give the critical class or a negative priority to unprivileged
    /// threads (names, cgroups and paths can be faked): others are clamped
    /// like the thread's own claims. SIGHUP reloads the file (a bad file then
    /// keeps the rules loaded before). See docs/operators.md, "Rules".
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,

    /// How often the rules are matched against all threads, in
    /// milliseconds, at least 100 (also right after a reload). A thread that starts or
    /// changes its name between two scans gets its rule at the next one.
    #[arg(long, default_value_t = 1000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(100..))]
    rules_interval_ms: u64,

    /// Length of the debug dump written when the scheduler exits with an
    /// error; 0 means the kernel's default.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    exit_dump_len: u32,

    /// Run the scheduler and print statistics every SECS seconds.
    #[arg(long, value_name = "SECS")]
    stats: Option<f64>,

    /// Do not run a scheduler: print the statistics of the running
    /// scx_hinted every SECS seconds.
    #[arg(long, value_name = "SECS")]
    monitor: Option<f64>,

    /// Describe every statistic and exit.
    #[arg(long)]
    help_stats: bool,

    /// Verbose output, including libbpf's messages.
    #[arg(short, long)]
    verbose: bool,

    /// Print the version and build id (version, git commit, target) and exit.
    #[arg(short = 'V', long)]
    version: bool,

    #[command(flatten, next_help_heading = "Libbpf Options")]
    libbpf: LibbpfOpts,

    /// Testing: behave as if the ownership guard failed to load.
    #[arg(long, hide = true)]
    test_guard_failure: bool,
}

/// The build id printed by -V and logged at start, as scx schedulers do:
/// version, git commit of this tree (with -dirty), target (/debug).
fn build_id() -> String {
    let full = build_id::full_version(env!("CARGO_PKG_VERSION"));
    match option_env!("SCX_HINTED_GIT") {
        Some(git) if !git.is_empty() => full.replacen(
            env!("CARGO_PKG_VERSION"),
            &format!("{}-{git}", env!("CARGO_PKG_VERSION")),
            1,
        ),
        _ => full,
    }
}

/// A uid or gid given by number or by name.
fn resolve_id(spec: &str, group: bool) -> Result<u32> {
    if let Ok(id) = spec.parse::<u32>() {
        return Ok(id);
    }
    let name = CString::new(spec)?;
    // SAFETY: name is a valid C string; the returned entry is only read
    // before any other call that could reuse its static storage.
    let id = unsafe {
        if group {
            let gr = libc::getgrnam(name.as_ptr());
            (!gr.is_null()).then(|| (*gr).gr_gid)
        } else {
            let pw = libc::getpwnam(name.as_ptr());
            (!pw.is_null()).then(|| (*pw).pw_uid)
        }
    };
    id.with_context(|| format!("no {} named {spec:?}", if group { "group" } else { "user" }))
}

fn resolve_ids(specs: &[String], group: bool, always: &[u32]) -> Result<Vec<u32>> {
    let mut ids = always.to_vec();
    for spec in specs {
        let id = resolve_id(spec, group)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.len() > MAX_ALLOW_IDS {
        bail!(
            "at most {MAX_ALLOW_IDS} allowed {}s",
            if group { "group" } else { "user" }
        );
    }
    Ok(ids)
}

struct Scheduler<'a> {
    skel: BpfSkel<'a>,
    struct_ops: Option<libbpf_rs::Link>,
    stats_server: StatsServer<(), Snapshot>,
    _view_pin: view::ViewPin,
    rules: Option<rules::Rules>,
}

impl<'a> Scheduler<'a> {
    fn init(opts: &'a Opts, open_object: &'a mut MaybeUninit<OpenObject>) -> Result<Self> {
        try_set_rlimit_infinity();

        let uids = resolve_ids(&opts.allow_uid, false, &[0])?;
        let gids = resolve_ids(&opts.allow_gid, true, &[])?;
        let hint_group = opts
            .hint_group
            .as_deref()
            .map(|g| resolve_id(g, true))
            .transpose()?;

        info!("{SCHEDULER_NAME} {}", build_id());
        let rules = opts
            .rules
            .as_deref()
            .map(|path| rules::Rules::new(path, Duration::from_millis(opts.rules_interval_ms)))
            .transpose()?;

        let mut skel_builder = BpfSkelBuilder::default();
        skel_builder.obj_builder.debug(opts.verbose);
        let open_opts = opts.libbpf.clone().into_bpf_open_opts();
        let mut skel = scx_ops_open!(skel_builder, open_object, hinted_ops, open_opts)?;
        skel.struct_ops.hinted_ops_mut().exit_dump_len = opts.exit_dump_len;
        // As the scx schedulers do: exiting and migration-disabled tasks go
        // through ops.enqueue() too (instead of the kernel's default slice
        // on their CPU), and wakeups may be queued to the target CPU. Each
        // flag is 0 on a kernel that lacks it.
        skel.struct_ops.hinted_ops_mut().flags = *compat::SCX_OPS_ENQ_EXITING
            | *compat::SCX_OPS_ENQ_MIGRATION_DISABLED
            | *compat::SCX_OPS_ALLOW_QUEUED_WAKEUP;
        // Where the local queue can be re-enqueued from anywhere (6.19 on),
        // ops.cpu_release is deprecated: a sched_switch hook does its work.
        if compat::ksym_exists("scx_bpf_dsq_reenq")?
            || compat::ksym_exists("scx_bpf_reenqueue_local___v2")?
        {
            skel.struct_ops.hinted_ops_mut().cpu_release = std::ptr::null_mut();
            skel.progs.hinted_rt_switch.set_autoload(true);
        }

        let us = |v: u64| v.saturating_mul(1000);
        let rodata = skel.maps.rodata_data.as_mut().unwrap();
        let classes = [
            (
                bpf_intf::SCX_HINT_CLASS_NORMAL,
                opts.slice_us,
                opts.lag_us,
                0,
            ),
            (
                bpf_intf::SCX_HINT_CLASS_CRITICAL,
                opts.critical_slice_us,
                opts.elevated_lag_us,
                opts.critical_budget_us,
            ),
            (
                bpf_intf::SCX_HINT_CLASS_INTERACTIVE,
                opts.interactive_slice_us,
                opts.elevated_lag_us,
                opts.interactive_budget_us,
            ),
            (bpf_intf::SCX_HINT_CLASS_BATCH, opts.batch_slice_us, 0, 0),
            (
                bpf_intf::SCX_HINT_CLASS_BACKGROUND,
                opts.background_slice_us,
                opts.lag_us,
                0,
            ),
        ];
        for (cls, slice, lag, budget) in classes {
            if slice == 0 {
                bail!("slices must be at least 1 us");
            }
            rodata.slice_ns[cls as usize] = us(slice);
            rodata.lag_ns[cls as usize] = us(lag);
            rodata.budget_ns[cls as usize] = us(budget);
        }
        let pct = u64::from(opts.bg_share_pct);
        rodata.bg_period_ns = us(opts.background_slice_us) * (100 - pct) / pct;
        rodata.peer_preemption = opts.peer_preemption;
        rodata.peer_min_run_ns = us(opts.peer_min_run_us.unwrap_or(1000));
        rodata.starve_ns = opts.starve_ms * 1_000_000;
        rodata.inherit_on_fork = !opts.no_fork_inherit;
        rodata.cgroup_weights = !opts.no_cgroup_weights;
        rodata.allow_all = opts.allow_all;
        rodata.nr_allow_uids = uids.len() as u32;
        rodata.allow_uids[..uids.len()].copy_from_slice(&uids);
        rodata.nr_allow_gids = gids.len() as u32;
        rodata.allow_gids[..gids.len()].copy_from_slice(&gids);

        // Read at every (re)start: a CPU going on- or offline makes the
        // kernel ask for one.
        let layout = topology::LlcLayout::from_system()?;
        info!("topology: {layout}");
        rodata.nr_llcs = layout.nr_llcs() as u32;
        rodata.nr_listed_cpus = layout.cpus.len() as u32;
        rodata.llc_cpus[..layout.cpus.len()].copy_from_slice(&layout.cpus);
        rodata.cpu_llc[..layout.cpu_llc.len()].copy_from_slice(&layout.cpu_llc);
        rodata.cpu_llc_pos[..layout.cpu_pos.len()].copy_from_slice(&layout.cpu_pos);
        rodata.llc_first[..layout.nr_llcs()].copy_from_slice(&layout.llc_first);
        rodata.llc_nr[..layout.nr_llcs()].copy_from_slice(&layout.llc_nr);
        info!(
            "privileged hints: {}",
            if opts.allow_all {
                "everyone".to_string()
            } else {
                format!("uids {uids:?}, gids {gids:?}")
            }
        );

        let plan = pin::prepare(&opts.tld_pin, hint_group)?;
        skel.maps
            .scx_hints_tld
            .set_pin_path(&plan.path)
            .context("setting the TLD map's pin path")?;

        let mut skel = scx_ops_load!(skel, hinted_ops, uei).with_context(|| {
            if plan.reuse {
                format!(
                    "an existing pin at {} could not be reused (made by another version?); \
                     remove it and start again (threads re-register on their next hint)",
                    plan.path.display()
                )
            } else {
                "loading the BPF scheduler".to_string()
            }
        })?;
        let map_id = skel
            .maps
            .scx_hints_tld
            .info()
            .context("reading the TLD map's id")?
            .info
            .id;
        let guarded = match guard::attach(map_id, &plan.path, opts.test_guard_failure) {
            Ok(attached) => {
                info!(
                    "ownership guard attached{}",
                    if attached.record {
                        ""
                    } else {
                        " (raced writes not undone)"
                    }
                );
                true
            }
            Err(e) => {
                warn!(
                    "the ownership guard could not be attached: {e:#}. The TLD map stays \
                     root-only: only root's threads can publish hints (docs/security.md)"
                );
                false
            }
        };
        pin::finish(&plan, guarded)?;

        let struct_ops = Some(scx_ops_attach!(skel, hinted_ops)?);
        // Pinned once attached: an instance that fails to attach (another
        // scheduler runs) must not replace, and at exit remove, the view of
        // the running one.
        let view_pin = view::pin(&skel.maps.task_views, plan.dir())?;
        let stats_server = StatsServer::new(stats::server_data()).launch()?;
        info!("{SCHEDULER_NAME} attached");

        Ok(Self {
            skel,
            struct_ops,
            stats_server,
            _view_pin: view_pin,
            rules,
        })
    }

    fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        let key = 0u32.to_ne_bytes();
        match self.skel.maps.stats.lookup_percpu(&key, MapFlags::ANY) {
            Ok(Some(cpus)) => {
                for bytes in cpus {
                    if bytes.len() < std::mem::size_of::<bpf_intf::hinted_stats>() {
                        continue;
                    }
                    // SAFETY: the value is a struct hinted_stats (plain integers)
                    // of the size just checked; it may be unaligned in the Vec.
                    let s = unsafe {
                        std::ptr::read_unaligned(bytes.as_ptr() as *const bpf_intf::hinted_stats)
                    };
                    snap.add_cpu(&s);
                }
            }
            Ok(None) => {}
            Err(e) => warn!("reading the stats map: {e}"),
        }
        let tld = &self.skel.maps.bss_data.as_ref().unwrap().tld_stats;
        snap.tld_bad_magic = tld.bad_magic;
        snap.tld_bad_meta = tld.bad_meta;
        snap.tld_bad_offset = tld.bad_offset;
        snap.tld_throttled = tld.throttled;
        snap
    }

    fn exited(&mut self) -> bool {
        uei_exited!(&self.skel, uei)
    }

    fn run(&mut self, shutdown: Arc<AtomicBool>) -> Result<UserExitInfo> {
        let (res_ch, req_ch) = self.stats_server.channels();
        let mut warned_untracked = false;
        while !shutdown.load(Ordering::Relaxed) && !self.exited() {
            let wait = self
                .rules
                .as_ref()
                .map_or(Duration::MAX, |r| r.due_in())
                .min(Duration::from_millis(250));
            match req_ch.recv_timeout(wait) {
                Ok(()) => res_ch.send(self.snapshot())?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(e) => Err(e)?,
            }
            if !warned_untracked {
                let untracked = self.snapshot().cgroups_untracked;
                if untracked > 0 {
                    warn!(
                        "{untracked} cgroup(s) not tracked for cpu.weight (more than the map's \
                         {} entries): their tasks, and their descendants', keep their base weight",
                        self.skel
                            .maps
                            .cgw_nodes
                            .info()
                            .map_or(0, |i| i.info.max_entries)
                    );
                    warned_untracked = true;
                }
            }
            if let Some(rules) = self.rules.as_mut() {
                let gen = &mut self.skel.maps.bss_data.as_mut().unwrap().rules_gen as *mut u64;
                rules.tick(&self.skel.maps.rule_hints, gen);
            }
        }
        // Dropping the link detaches the scheduler.
        let _ = self.struct_ops.take();
        info!("{SCHEDULER_NAME} detached");
        uei_report!(&self.skel, uei)
    }
}

fn init_log(verbose: bool) -> Result<()> {
    let level = if verbose {
        simplelog::LevelFilter::Debug
    } else {
        simplelog::LevelFilter::Info
    };
    let mut cfg = simplelog::ConfigBuilder::new();
    cfg.set_time_level(simplelog::LevelFilter::Error)
        .set_location_level(simplelog::LevelFilter::Off)
        .set_target_level(simplelog::LevelFilter::Off)
        .set_thread_level(simplelog::LevelFilter::Off);
    simplelog::TermLogger::init(
        level,
        cfg.build(),
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Auto,
    )?;
    Ok(())
}

fn main() -> Result<()> {
    let opts = Opts::parse();

    if opts.version {
        println!("{SCHEDULER_NAME} {}", build_id());
        return Ok(());
    }

    if opts.help_stats {
        stats::server_data().describe_meta(&mut std::io::stdout(), None)?;
        return Ok(());
    }

    init_log(opts.verbose)?;

    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = shutdown.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    // Always: without --rules, SIGHUP (systemctl reload) would otherwise
    // end the scheduler.
    rules::reload_on_sighup()?;

    if let Some(intv) = opts.monitor.or(opts.stats) {
        let flag = shutdown.clone();
        let monitor = std::thread::spawn(move || {
            if let Err(e) = stats::monitor(Duration::from_secs_f64(intv), flag) {
                warn!("stats monitor stopped: {e}");
            }
        });
        if opts.monitor.is_some() {
            let _ = monitor.join();
            return Ok(());
        }
    }

    let mut open_object = MaybeUninit::uninit();
    loop {
        let mut sched = Scheduler::init(&opts, &mut open_object)?;
        if !sched.run(shutdown.clone())?.should_restart() {
            break;
        }
        info!("restarting on the kernel's request");
    }
    Ok(())
}
