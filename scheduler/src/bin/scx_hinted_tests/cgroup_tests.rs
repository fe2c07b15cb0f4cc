// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! Guest test of cgroup CPU weights: CPU time splits between sibling cgroups
//! by their cpu.weight, not by how many tasks each one runs, also after a
//! weight change and after tasks move between them; a priority hint moves
//! CPU time within its cgroup's share, never beyond it. The scheduler's
//! per-cgroup bookkeeping stays consistent while a cgroup goes idle and
//! active quickly, and returns to zero when the tasks are gone.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::harness::{nr_cpus, stress_ng, Env, Sched};
use crate::launcher::scx_hint;
use crate::topo_tests::set_affinity;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "scx_hinted_cgw";
/// Under PARENT, parents before children: p holds the siblings a and b, c
/// is p's sibling; d, under p, holds tasks that sleep and wake all the time.
const LAYOUT: &[&str] = &["p", "p/a", "p/b", "p/d", "c"];
const A: &str = "p/a";
const B: &str = "p/b";

/// How far a measured share may be from the weights' share. In ten boots of
/// the emulated guest, on a host busy with other builds, every share was
/// within 0.065 of it, most within 0.03; splitting by task count misses by
/// 0.25 in phases 1 to 3, ignoring the priority hint by 0.25 in phase 4.
const TOLERANCE: f64 = 0.1;
/// Time for the hogs to settle after a change, and to measure.
const SETTLE: Duration = Duration::from_millis(500);
/// The weight of nice -5, that of the priority -5 hog.
const PRIO_MINUS_5_WEIGHT: u32 = 3121;
/// How long the scheduler may take to apply a new hog's hint.
const HINT_TIMEOUT: Duration = Duration::from_secs(15);
const WINDOW: Duration = Duration::from_millis(2500);
/// How often the bookkeeping is checked while the tasks of d churn.
const CHECK_EVERY: Duration = Duration::from_millis(10);

/// The test's cgroups and hogs: killed and removed when dropped.
struct Groups {
    parent: PathBuf,
    hogs: Vec<Child>,
    /// The cpu controller was off at the root: turned off again at the end.
    root_cpu_added: bool,
}

impl Groups {
    fn create() -> Result<Self> {
        let root = Path::new(CGROUP_ROOT);
        if !root.join("cgroup.controllers").exists() {
            mount_cgroup2(root)?;
        }
        let control = root.join("cgroup.subtree_control");
        let had_cpu = std::fs::read_to_string(&control)
            .with_context(|| format!("reading {}", control.display()))?
            .split_whitespace()
            .any(|c| c == "cpu");
        let mut groups = Groups {
            parent: root.join(PARENT),
            hogs: Vec::new(),
            root_cpu_added: false,
        };
        // Left over from an aborted run: its hogs died with that run.
        groups.remove();
        if !had_cpu {
            write(&control, "+cpu")?;
            groups.root_cpu_added = true;
        }
        std::fs::create_dir(&groups.parent)
            .with_context(|| format!("creating {}", groups.parent.display()))?;
        write(&groups.parent.join("cgroup.subtree_control"), "+cpu")?;
        for child in LAYOUT {
            let dir = groups.dir(child);
            std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        write(&groups.dir("p").join("cgroup.subtree_control"), "+cpu")?;
        Ok(groups)
    }

    fn remove(&mut self) {
        for hog in &mut self.hogs {
            let _ = hog.kill();
            let _ = hog.wait();
        }
        for child in LAYOUT.iter().rev() {
            let _ = std::fs::remove_dir(self.dir(child));
        }
        let _ = std::fs::remove_dir(&self.parent);
        if self.root_cpu_added {
            let control = Path::new(CGROUP_ROOT).join("cgroup.subtree_control");
            let _ = std::fs::write(control, "-cpu");
        }
    }

    fn dir(&self, group: &str) -> PathBuf {
        self.parent.join(group)
    }

    fn set_weight(&self, group: &str, weight: u32) -> Result<()> {
        write(&self.dir(group).join("cpu.weight"), &weight.to_string())
    }

    fn place(&self, pid: u32, group: &str) -> Result<()> {
        write(&self.dir(group).join("cgroup.procs"), &pid.to_string())
    }

    /// Starts a CPU hog (this program's `--spin`) on `cpu`, in `group`,
    /// with a priority hint if one is given (through `scx-hint run`).
    fn spawn_hog(
        &mut self,
        env: &Env,
        cpu: usize,
        group: &str,
        priority: Option<i32>,
    ) -> Result<u32> {
        let mut cmd = match priority {
            None => Command::new(&env.self_exe),
            Some(p) => {
                let mut c = Command::new(scx_hint()?);
                c.args(["run", "--require", "--class", "normal", "--priority"])
                    .arg(p.to_string())
                    .arg("--")
                    .arg(&env.self_exe);
                c
            }
        };
        cmd.args(["--spin", "120"]).stdin(Stdio::null());
        // From a thread whose hints are the defaults: a child starts with
        // its spawner's hints, and earlier tests leave some on this one.
        let child = std::thread::scope(|s| {
            s.spawn(|| {
                scx_hints::set_latency_class(scx_hints::LatencyClass::Normal);
                let _ = scx_hints::set_priority(0);
                cmd.spawn()
            })
            .join()
        })
        .map_err(|_| anyhow::anyhow!("the spawning thread panicked"))?
        .context("starting a hog")?;
        let pid = child.id();
        self.hogs.push(child);
        set_affinity(pid as i32, &[cpu])?;
        self.place(pid, group)?;
        Ok(pid)
    }

    fn usage_us(&self, group: &str) -> Result<u64> {
        let path = self.dir(group).join("cpu.stat");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no usage_usec in {}", path.display()))
    }

    /// The CPU time each group used over WINDOW, after `settle`, and that
    /// process `pid` used (if one is given), in microseconds.
    fn usage(&self, groups: &[&str], pid: Option<u32>, settle: Duration) -> Result<Vec<u64>> {
        self.usage_checking(groups, pid, settle, || Ok(()))
    }

    /// usage(), calling `check` every CHECK_EVERY during the window.
    fn usage_checking(
        &self,
        groups: &[&str],
        pid: Option<u32>,
        settle: Duration,
        mut check: impl FnMut() -> Result<()>,
    ) -> Result<Vec<u64>> {
        sleep(settle);
        let read = || -> Result<Vec<u64>> {
            let mut v = groups
                .iter()
                .map(|g| self.usage_us(g))
                .collect::<Result<Vec<_>>>()?;
            v.push(pid.map(runtime_us).transpose()?.unwrap_or(0));
            Ok(v)
        };
        let before = read()?;
        let end = Instant::now() + WINDOW;
        while Instant::now() < end {
            check()?;
            sleep(CHECK_EVERY.min(end.saturating_duration_since(Instant::now())));
        }
        let after = read()?;
        let used: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        ensure!(
            used[..groups.len()].iter().all(|&u| u > 0),
            "a group's hogs used no CPU time: {groups:?} used {used:?} us"
        );
        Ok(used)
    }

    /// Starts `stress-ng --switch` in `group`, unpinned: pairs of processes
    /// that wake each other through a pipe and sleep, on every CPU, so that
    /// the cgroup goes idle and active again many times a second.
    fn spawn_switchers(&mut self, group: &str, secs: u64) -> Result<()> {
        let stress = stress_ng().context("stress-ng is needed and was not found on PATH")?;
        let procs = self.dir(group).join("cgroup.procs");
        // The shell joins the cgroup before stress-ng starts, so that every
        // worker it forks starts there.
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$1" && shift && exec "$@""#)
            .arg("sh")
            .arg(&procs)
            .arg(stress)
            .args(["--switch", &nr_cpus().to_string(), "--timeout"])
            .arg(format!("{secs}s"))
            .arg("--quiet")
            .stdin(Stdio::null())
            .spawn()
            .context("starting stress-ng")?;
        self.hogs.push(child);
        Ok(())
    }

    /// The id of the cgroup, as the scheduler keys it (its kernfs id, the
    /// directory's inode number).
    fn id(&self, group: &str) -> Result<u64> {
        let dir = self.dir(group);
        Ok(std::fs::metadata(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .ino())
    }

    /// Group b's share of the CPU time a and b used.
    fn share_b(&self) -> Result<f64> {
        let u = self.usage(&[A, B], None, SETTLE)?;
        Ok(u[1] as f64 / (u[0] + u[1]) as f64)
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        self.remove();
    }
}

/// CPU time process `pid` (one thread) has used, in microseconds.
fn runtime_us(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no run time in {path}: {text:?}"))?;
    Ok(ns / 1000)
}

/// Waits until `scx-hint show` reports process `pid` (one thread) at base
/// weight `weight`: `scx-hint run` and its hint take a while to start in a
/// slow guest.
fn wait_base_weight(pid: u32, weight: u32) -> Result<()> {
    let want = format!("weight {weight}");
    let start = Instant::now();
    loop {
        let out = Command::new(scx_hint()?)
            .args(["show", &pid.to_string()])
            .output()
            .context("running scx-hint show")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains(&want) {
            return Ok(());
        }
        if start.elapsed() > HINT_TIMEOUT {
            bail!("process {pid} did not reach {want} in {HINT_TIMEOUT:?}: scx-hint show says {text:?}");
        }
        sleep(Duration::from_millis(100));
    }
}

/// One cgroup's bookkeeping in the scheduler (struct cgw_node in
/// bpf/cgroup_weight.bpf.h: its spin lock, then these fields).
#[derive(Debug)]
struct Node {
    nr_active: u32,
    load: i64,
    weight: u64,
    contrib: u64,
}

/// The running scheduler's map of tracked cgroups.
fn nodes_map() -> Result<MapHandle> {
    let info = libbpf_rs::query::MapInfoIter::default()
        .filter(|m| m.name.to_str() == Some("cgw_nodes"))
        .max_by_key(|m| m.id)
        .context("no map cgw_nodes: is scx_hinted running?")?;
    ensure!(
        info.value_size == 40,
        "cgw_nodes values have {} bytes, this test reads 40",
        info.value_size
    );
    MapHandle::from_map_id(info.id).context("opening the map cgw_nodes")
}

/// Reads a cgroup's node under its lock (a consistent copy of what the lock
/// guards: nr_active's 0 <-> 1 transitions, weight and contrib).
fn read_node(map: &MapHandle, id: u64) -> Result<Node> {
    let v = map
        .lookup(&id.to_ne_bytes(), MapFlags::LOCK)
        .context("reading cgw_nodes")?
        .with_context(|| format!("cgroup {id} is not tracked"))?;
    let u64_at = |o: usize| u64::from_ne_bytes(v[o..o + 8].try_into().unwrap());
    Ok(Node {
        nr_active: u32::from_ne_bytes(v[4..8].try_into().unwrap()),
        load: u64_at(8) as i64,
        weight: u64_at(24),
        contrib: u64_at(32),
    })
}

/// An active cgroup has its weight counted in its parent's load, an idle
/// one nothing.
fn check_counted(map: &MapHandle, groups: &Groups, names: &[&str]) -> Result<()> {
    for name in names {
        let n = read_node(map, groups.id(name)?)?;
        let want = if n.nr_active > 0 { n.weight } else { 0 };
        if n.contrib != want {
            bail!(
                "cgroup {name}: {n:?}: its parent's load holds {} for it, not {want}",
                n.contrib
            );
        }
    }
    Ok(())
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

fn mount_cgroup2(at: &Path) -> Result<()> {
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())?;
    // SAFETY: all pointers are valid C strings for the duration of the call.
    let r = unsafe {
        libc::mount(
            c"cgroup2".as_ptr(),
            target.as_ptr(),
            c"cgroup2".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    ensure!(
        r == 0,
        "no cgroup2 at {} and mounting it failed: {}",
        at.display(),
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn check_share(what: &str, who: &str, got: f64, want: f64) -> Result<()> {
    ensure!(
        (got - want).abs() <= TOLERANCE,
        "{what}: {who} got {got:.3} of the CPU time, want {want:.3} +- {TOLERANCE}"
    );
    Ok(())
}

/// Two sibling cgroups a and b, all their hogs on one CPU: b's share of the
/// CPU time follows the weights, not the task counts, (1) with weights 100
/// and 300 and hogs 3 and 1, set up before the scheduler starts (by task
/// count b would get 0.25, as it must with --no-cgroup-weights, checked
/// first), (2) after b's weight drops to 100 at run time (0.5; by count
/// 0.25), (3) after two hogs move from a to b (a 1, b 3: still 0.5; by count
/// 0.75), (4) with a second hog in a that has priority -5 (weight 3121
/// against 1024): it gets 0.75 of a's time, and b still gets 0.5 (by
/// per-thread weight alone 0.43), (5) with a hog in c, the sibling of a and
/// b's parent p (all weights 100): c gets half of the CPU time, p the other
/// half (a split among the busy cgroups a, b and c alone would give c a
/// third), (6) after p's weight rises to 300, while processes in d, beside a
/// and b, wake and sleep on every CPU: p gets 0.75, b still 0.5 of a's and
/// b's time, and every cgroup's weight is counted in its parent exactly
/// while it is active, (7) once every task is gone, every cgroup's load is
/// back to zero.
pub fn cgroup_weight(env: &Env) -> Result<String> {
    let mut groups = Groups::create()?;
    let cpu = nr_cpus() - 1;
    groups.set_weight(A, 100)?;
    groups.set_weight(B, 300)?;
    let mut a_pids = Vec::new();
    for _ in 0..3 {
        a_pids.push(groups.spawn_hog(env, cpu, A, None)?);
    }
    groups.spawn_hog(env, cpu, B, None)?;

    let group_b = "group b";
    let sched = Sched::start(env, &["--no-cgroup-weights"])?;
    let unweighted = groups.share_b()?;
    check_share("--no-cgroup-weights, hogs 3:1", group_b, unweighted, 0.25)?;
    sched.stop()?;

    let mut sched = Sched::start(env, &[])?;
    let weights = groups.share_b()?;
    check_share(
        "weights 100:300, hogs 3:1, attached",
        group_b,
        weights,
        0.75,
    )?;

    groups.set_weight(B, 100)?;
    let changed = groups.share_b()?;
    check_share("weight of b changed to 100", group_b, changed, 0.5)?;

    for &pid in &a_pids[..2] {
        groups.place(pid, B)?;
    }
    let moved = groups.share_b()?;
    check_share("two hogs moved from a to b", group_b, moved, 0.5)?;

    let hinted = groups.spawn_hog(env, cpu, A, Some(-5))?;
    wait_base_weight(hinted, PRIO_MINUS_5_WEIGHT)?;
    let u = groups.usage(&[A, B], Some(hinted), SETTLE)?;
    let hinted_b = u[1] as f64 / (u[0] + u[1]) as f64;
    let within_a = u[2] as f64 / u[0] as f64;
    let what = "a priority -5 hog added to a";
    check_share(what, group_b, hinted_b, 0.5)?;
    check_share(what, "the hinted hog, of group a's,", within_a, 0.75)?;

    groups.spawn_hog(env, cpu, "c", None)?;
    let u = groups.usage(&["p", "c"], None, SETTLE)?;
    let nested_c = u[1] as f64 / (u[0] + u[1]) as f64;
    check_share("a hog in c, the sibling of p", "group c", nested_c, 0.5)?;

    let map = nodes_map()?;
    let tracked = ["p", A, B, "p/d", "c"];
    groups.set_weight("p", 300)?;
    groups.spawn_switchers("p/d", (SETTLE + WINDOW).as_secs_f64().ceil() as u64)?;
    let mut checks = 0u32;
    let u = groups.usage_checking(&[A, B, "p", "c"], None, SETTLE, || {
        checks += 1;
        check_counted(&map, &groups, &tracked)
    })?;
    let churned_b = u[1] as f64 / (u[0] + u[1]) as f64;
    let heavier_p = u[2] as f64 / (u[2] + u[3]) as f64;
    let what = "weight of p changed to 300, processes waking and sleeping in d";
    check_share(what, "group p", heavier_p, 0.75)?;
    check_share(what, group_b, churned_b, 0.5)?;

    // stress-ng (started last) ends its workers at its timeout: killing it
    // would leave them running.
    if let Some(mut switchers) = groups.hogs.pop() {
        switchers.wait().context("waiting for stress-ng")?;
    }
    for hog in &mut groups.hogs {
        let _ = hog.kill();
        let _ = hog.wait();
    }
    groups.hogs.clear();
    for name in tracked {
        let n = read_node(&map, groups.id(name)?)?;
        ensure!(
            n.load == 0 && n.nr_active == 0 && n.contrib == 0,
            "cgroup {name} still counts load once all its tasks are gone: {n:?}"
        );
    }

    drop(groups);
    sched.check()?;
    sched.stop()?;
    Ok(format!(
        "share of b: {unweighted:.3} (--no-cgroup-weights, want 0.25), {weights:.3} \
         (weights 1:3, hogs 3:1, attached to them, want 0.75), {changed:.3} \
         (weight changed to 1:1, want 0.5), {moved:.3} (hogs moved to 1:3, want 0.5), \
         {hinted_b:.3} (priority -5 hog added to a, want 0.5; it got {within_a:.3} of a's, \
         want 0.75), share of c beside p: {nested_c:.3} (want 0.5); while d churns, of p at \
         weight 300: {heavier_p:.3} (want 0.75), of b: {churned_b:.3} (want 0.5; \
         bookkeeping checked {checks} times); loads back to zero"
    ))
}
