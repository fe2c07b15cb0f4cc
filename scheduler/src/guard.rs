// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! The TLD map's ownership guard (bpf/tld_guard.bpf.c, docs/security.md).
//!
//! The guard is a BPF LSM program on the bpf() syscall that refuses an
//! update or deletion of a thread's TLD entry unless it comes from that
//! thread's own process or a privileged caller, plus a tracing program that
//! counts the writes that raced past it. Its links are pinned next to the
//! map, so the guard stays attached while no scheduler runs (an open map is
//! never left unguarded); each start replaces them, bound to the current
//! map's id. Only with the guard attached does pin::finish open the map to
//! every user.

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
const RECORD_PIN: &str = "guard_record";
/// The guard's .bss (struct tld_guard_stats, bpf/tld_guard.h), root only.
const STATS_PIN: &str = "guard_stats";

/// How the guard came up.
pub struct Attached {
    /// False when the race-counting fexit program could not be loaded on this
    /// kernel: the LSM check still holds, raced writes go uncounted.
    pub record: bool,
}

fn pin_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Replaces the pin at `path` by `link` (the old link detaches when its pin
/// goes; the new one is attached already, so there is no unguarded gap).
fn replace_pin(link: &mut Link, path: &Path) -> Result<()> {
    if path.exists() {
        fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    link.pin(path)
        .with_context(|| format!("pinning {}", path.display()))
}

fn load(map_id: u32, with_record: bool) -> Result<(Link, Option<Link>, MapHandle)> {
    let mut open_object = MaybeUninit::uninit();
    let builder = TldGuardSkelBuilder::default();
    let mut open = builder
        .open(&mut open_object)
        .context("opening the guard object")?;
    open.maps.rodata_data.as_mut().unwrap().tld_map_id = map_id;
    open.progs.tld_guard_record.set_autoload(with_record);
    let skel = open.load().context("loading the guard programs")?;
    let lsm = skel
        .progs
        .tld_guard_bpf
        .attach()
        .context("attaching the LSM program (is `bpf` in the kernel's lsm= list?)")?;
    let record = if with_record {
        Some(
            skel.progs
                .tld_guard_record
                .attach()
                .context("attaching fexit/bpf_local_storage_update")?,
        )
    } else {
        None
    };
    let stats = MapHandle::try_from(&skel.maps.bss).context("the guard's counters")?;
    Ok((lsm, record, stats))
}

/// Loads and attaches the guard for the map with id `map_id` and pins it in
/// `dir`. `simulate_failure` makes it fail before loading anything (tests).
pub fn attach(map_id: u32, dir: &Path, simulate_failure: bool) -> Result<Attached> {
    if simulate_failure {
        bail!("guard loading disabled for a test (--test-guard-failure)");
    }
    let (mut lsm, record, mut stats) = match load(map_id, true) {
        Ok(loaded) => loaded,
        Err(e) => {
            warn!("guard: the race counter does not load ({e:#}); the LSM check alone");
            load(map_id, false)?
        }
    };
    replace_pin(&mut lsm, &pin_path(dir, LSM_PIN))?;
    let counted = record.is_some();
    match record {
        Some(mut link) => replace_pin(&mut link, &pin_path(dir, RECORD_PIN))?,
        None => {
            let old = pin_path(dir, RECORD_PIN);
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
    Ok(Attached { record: counted })
}
