// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! The TLD map's ownership guard (bpf/tld_guard.bpf.c, docs/security.md).
//!
//! The guard is a BPF LSM program on the bpf() syscall that refuses an
//! update or deletion of a thread's TLD entry unless it comes from that
//! thread's own process or a privileged caller, plus two tracing programs
//! that count the writes that raced past it and delete what they wrote. Its
//! links are pinned next to the map, so the guard stays attached while no
//! scheduler runs (an open map is never left unguarded); each start replaces
//! them, bound to the current map's id. Only with the guard attached does
//! pin::finish open the map to every user.

use std::fs;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapHandle};
use log::warn;

use crate::tld_guard_skel::*;

/// File names of the guard's pins, in the map pin's directory.
const LSM_PIN: &str = "guard_bpf";
const RECORD_PINS: [&str; 2] = ["guard_record", "guard_undo"];
/// The guard's .bss (struct tld_guard_stats, bpf/tld_guard.h), root only.
const STATS_PIN: &str = "guard_stats";

/// How the guard came up.
pub struct Attached {
    /// False when the fexit programs that count and undo raced writes could
    /// not be loaded on this kernel: the LSM check still holds alone.
    pub record: bool,
}

fn pin_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Replaces the pin at `path` by `link`: pinned under a temporary name, then
/// renamed over the old pin, so that some guard stays pinned at every moment
/// (also if scx_hinted is killed in between); the old link detaches when its
/// pin goes, the new one is attached already.
fn replace_pin(link: &mut Link, path: &Path) -> Result<()> {
    let mut new = path.as_os_str().to_owned();
    new.push("_new"); // bpffs refuses names with a dot
    let new = PathBuf::from(new);
    if new.exists() {
        fs::remove_file(&new).with_context(|| format!("removing {}", new.display()))?;
    }
    link.pin(&new)
        .with_context(|| format!("pinning {}", new.display()))?;
    fs::rename(&new, path)
        .with_context(|| format!("renaming {} to {}", new.display(), path.display()))
}

fn load(map_id: u32, map_pin: &Path, with_record: bool) -> Result<(Link, Vec<Link>, MapHandle)> {
    let mut open_object = MaybeUninit::uninit();
    let builder = TldGuardSkelBuilder::default();
    let mut open = builder
        .open(&mut open_object)
        .context("opening the guard object")?;
    open.maps.rodata_data.as_mut().unwrap().tld_map_id = map_id;
    // Reuse the scheduler's map (it is pinned by now), to undo raced writes.
    open.maps
        .scx_hints_tld
        .set_pin_path(map_pin)
        .context("the guard's TLD map pin")?;
    open.progs.tld_guard_record.set_autoload(with_record);
    open.progs.tld_guard_undo_raced.set_autoload(with_record);
    let skel = open.load().context("loading the guard programs")?;
    let lsm = skel
        .progs
        .tld_guard_bpf
        .attach()
        .context("attaching the LSM program (is `bpf` in the kernel's lsm= list?)")?;
    let mut record = Vec::new();
    if with_record {
        for prog in [
            &skel.progs.tld_guard_record,
            &skel.progs.tld_guard_undo_raced,
        ] {
            record.push(prog.attach().context("attaching the raced-write undo")?);
        }
    }
    let stats = MapHandle::try_from(&skel.maps.bss).context("the guard's counters")?;
    Ok((lsm, record, stats))
}

/// Loads and attaches the guard for the map with id `map_id` and pins it in
/// `dir`. `simulate_failure` makes it fail before loading anything (tests).
pub fn attach(map_id: u32, map_pin: &Path, simulate_failure: bool) -> Result<Attached> {
    if simulate_failure {
        bail!("guard loading disabled for a test (--test-guard-failure)");
    }
    if !map_pin.exists() {
        bail!("the TLD map is not pinned at {}", map_pin.display());
    }
    let dir = map_pin
        .parent()
        .context("the TLD map pin has no directory")?;
    let (mut lsm, record, mut stats) = match load(map_id, map_pin, true) {
        Ok(loaded) => loaded,
        Err(e) => {
            warn!(
                "guard: raced writes cannot be undone on this kernel ({e:#}); the LSM check alone"
            );
            load(map_id, map_pin, false)?
        }
    };
    replace_pin(&mut lsm, &pin_path(dir, LSM_PIN))?;
    let undo = !record.is_empty();
    for (mut link, name) in record.into_iter().zip(RECORD_PINS) {
        replace_pin(&mut link, &pin_path(dir, name))?;
    }
    if !undo {
        for name in RECORD_PINS {
            let old = pin_path(dir, name);
            if old.exists() {
                fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))?;
            }
        }
    }
    let stats_path = pin_path(dir, STATS_PIN);
    if stats_path.exists() {
        fs::remove_file(&stats_path)
            .with_context(|| format!("removing {}", stats_path.display()))?;
    }
    stats
        .pin(&stats_path)
        .with_context(|| format!("pinning {}", stats_path.display()))?;
    Ok(Attached { record: undo })
}
