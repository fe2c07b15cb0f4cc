// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! Guest test of cgroup CPU weights: CPU time splits between sibling cgroups
//! by their cpu.weight, not by how many tasks each one runs, also after a
//! weight change and after tasks move between them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::harness::{nr_cpus, Env, Sched};
use crate::topo_tests::set_affinity;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "scx_hinted_cgw";

/// How far a measured share may be from the weights' share. Three boots of
/// three phases each gave shares within 0.02 of it (see docs/policy.md,
/// "cgroup weights"); splitting by task count misses by 0.25 or more.
const TOLERANCE: f64 = 0.08;
/// Time for the hogs to settle after a change, and to measure.
const SETTLE: Duration = Duration::from_millis(500);
const WINDOW: Duration = Duration::from_millis(2500);

/// The test's cgroups and hogs: killed and removed when dropped.
struct Groups {
    parent: PathBuf,
    hogs: Vec<Child>,
}

impl Groups {
    fn create() -> Result<Self> {
        let root = Path::new(CGROUP_ROOT);
        if !root.join("cgroup.controllers").exists() {
            mount_cgroup2(root)?;
        }
        write(&root.join("cgroup.subtree_control"), "+cpu")?;
        let parent = root.join(PARENT);
        // Left over from an aborted run: its hogs died with that run.
        if parent.exists() {
            for child in ["a", "b"] {
                let _ = std::fs::remove_dir(parent.join(child));
            }
            let _ = std::fs::remove_dir(&parent);
        }
        std::fs::create_dir(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let groups = Groups {
            parent,
            hogs: Vec::new(),
        };
        write(&groups.parent.join("cgroup.subtree_control"), "+cpu")?;
        for child in ["a", "b"] {
            let dir = groups.dir(child);
            std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(groups)
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

    /// Starts a CPU hog (this program's `--spin`) on `cpu`, in `group`.
    fn spawn_hog(&mut self, env: &Env, cpu: usize, group: &str) -> Result<u32> {
        let child = Command::new(&env.self_exe)
            .args(["--spin", "120"])
            .stdin(Stdio::null())
            .spawn()
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

    /// Group b's share of the CPU time both groups used over WINDOW.
    fn share_b(&self) -> Result<f64> {
        sleep(SETTLE);
        let (a0, b0) = (self.usage_us("a")?, self.usage_us("b")?);
        sleep(WINDOW);
        let (a, b) = (self.usage_us("a")? - a0, self.usage_us("b")? - b0);
        ensure!(a + b > 0, "the hogs used no CPU time");
        Ok(b as f64 / (a + b) as f64)
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        for hog in &mut self.hogs {
            let _ = hog.kill();
            let _ = hog.wait();
        }
        for child in ["a", "b"] {
            let _ = std::fs::remove_dir(self.dir(child));
        }
        let _ = std::fs::remove_dir(&self.parent);
    }
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

fn check_share(what: &str, got: f64, want: f64) -> Result<()> {
    ensure!(
        (got - want).abs() <= TOLERANCE,
        "{what}: group b got {got:.3} of the CPU time, want {want:.3} +- {TOLERANCE}"
    );
    Ok(())
}

/// Two sibling cgroups a and b, all their hogs on one CPU: b's share of the
/// CPU time follows the weights, not the task counts, (1) with weights 100
/// and 300 and hogs 3 and 1 (by task count b would get 0.25), (2) after b's
/// weight drops to 100 at run time (0.5; by count 0.25), (3) after two hogs
/// move from a to b (a 1, b 3: still 0.5; by count 0.75).
pub fn cgroup_weight(env: &Env) -> Result<String> {
    let mut sched = Sched::start(env, &[])?;
    let mut groups = Groups::create()?;
    let cpu = nr_cpus() - 1;
    groups.set_weight("a", 100)?;
    groups.set_weight("b", 300)?;
    let mut a_pids = Vec::new();
    for _ in 0..3 {
        a_pids.push(groups.spawn_hog(env, cpu, "a")?);
    }
    groups.spawn_hog(env, cpu, "b")?;

    let weights = groups.share_b()?;
    check_share("weights 100:300, hogs 3:1", weights, 0.75)?;

    groups.set_weight("b", 100)?;
    let changed = groups.share_b()?;
    check_share("weight of b changed to 100", changed, 0.5)?;

    for &pid in &a_pids[..2] {
        groups.place(pid, "b")?;
    }
    let moved = groups.share_b()?;
    check_share("two hogs moved from a to b", moved, 0.5)?;

    drop(groups);
    sched.check()?;
    sched.stop()?;
    Ok(format!(
        "share of b: {weights:.3} (weights 1:3, hogs 3:1, want 0.75), {changed:.3} \
         (weight changed to 1:1, want 0.5), {moved:.3} (hogs moved to 1:3, want 0.5)"
    ))
}
