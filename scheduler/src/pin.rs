// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! The pinned TLD map: where applications find it, and who may open it.
//!
//! scx_hinted pins its task-storage map `scx_hints_tld` in bpffs, by default
//! at `/sys/fs/bpf/scx_hints/tld` (the path the scx_hints crate looks at,
//! overridable with `SCX_HINTS_TLD_MAP` on both sides). If a pin is already
//! there, libbpf reuses that map instead of creating one, so the threads that
//! registered with a previous instance keep their registrations across a
//! restart. The pin is left in place at exit for the same reason.
//!
//! Permissions: the pin directory is owned by root and the map file is mode
//! 0600 (only root can register hints), unless `--hint-group` names a group:
//! then the directory is `root:GROUP 0750` and the file `root:GROUP 0660`, so
//! that members of GROUP can open the map and register their threads.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use log::info;

/// Default pin path (TLD_MAP_PIN_PATH in bpf/tld_abi.h).
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/scx_hints/tld";
/// bpffs mount point used when nothing is mounted yet.
const BPFFS_ROOT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

pub struct PinPlan {
    pub path: PathBuf,
    pub group: Option<libc::gid_t>,
    /// An existing pin was found: the map (and its registrations) is reused.
    pub reuse: bool,
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs() writes into the zeroed struct we pass; c is a valid C string.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Makes sure bpffs is mounted at /sys/fs/bpf when the pin lives below it.
fn ensure_bpffs(path: &Path) -> Result<()> {
    let root = Path::new(BPFFS_ROOT);
    if !path.starts_with(root) || is_bpffs(root) {
        return Ok(());
    }
    info!("mounting bpffs at {BPFFS_ROOT}");
    let src = CString::new("bpf")?;
    let dst = CString::new(BPFFS_ROOT)?;
    // SAFETY: all pointers are valid C strings or NULL data.
    let ret = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        bail!(
            "bpffs is not mounted at {BPFFS_ROOT} and mounting it failed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn chown(path: &Path, gid: libc::gid_t) -> Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: c is a valid C string; uid 0 = root.
    if unsafe { libc::chown(c.as_ptr(), 0, gid) } != 0 {
        bail!(
            "chown {} to root:{gid}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Prepares the pin directory; returns what load should do.
pub fn prepare(path: &Path, group: Option<libc::gid_t>) -> Result<PinPlan> {
    if !path.is_absolute() {
        bail!("the TLD map pin path must be absolute: {}", path.display());
    }
    ensure_bpffs(path)?;
    let dir = path
        .parent()
        .context("the TLD map pin path has no directory")?;
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if !is_bpffs(dir) {
        bail!("{} is not on a bpffs mount", dir.display());
    }
    // The mount root keeps its own permissions; a directory of ours gets ours.
    if dir != Path::new(BPFFS_ROOT) {
        let mode = if group.is_some() { 0o750 } else { 0o700 };
        chown(dir, group.unwrap_or(0))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", dir.display()))?;
    }
    let reuse = path.exists();
    Ok(PinPlan {
        path: path.to_path_buf(),
        group,
        reuse,
    })
}

/// After load: the pin exists; give it the documented owner and mode.
pub fn finish(plan: &PinPlan) -> Result<()> {
    let mode = if plan.group.is_some() { 0o660 } else { 0o600 };
    chown(&plan.path, plan.group.unwrap_or(0))?;
    fs::set_permissions(&plan.path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", plan.path.display()))?;
    if plan.reuse {
        info!(
            "TLD map: reusing the pinned map at {} (existing registrations kept)",
            plan.path.display()
        );
    } else {
        info!("TLD map: created and pinned at {}", plan.path.display());
    }
    Ok(())
}
