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
//! Permissions (docs/security.md): while scx_hinted loads, the pin directory
//! is root-only (0700). Once the ownership guard (guard.rs) is attached, the
//! directory becomes 0755 and the map 0666, so that every user can register
//! the threads of their own processes; with `--hint-group` they are
//! `root:GROUP 0750` and `root:GROUP 0660`, restricting hints to that group.
//! Without the guard the map stays root-only (0700 and 0600): fail closed.

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
    // Closed until the guard is known to be attached (finish opens it).
    set_dir_mode(dir, 0, 0o700)?;
    let reuse = path.exists();
    Ok(PinPlan {
        path: path.to_path_buf(),
        group,
        reuse,
    })
}

/// The mount root keeps its own permissions; a directory of ours gets ours.
fn set_dir_mode(dir: &Path, gid: libc::gid_t, mode: u32) -> Result<()> {
    if dir == Path::new(BPFFS_ROOT) {
        return Ok(());
    }
    chown(dir, gid)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dir.display()))
}

impl PinPlan {
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new(BPFFS_ROOT))
    }
}

/// After load: the pin exists; give it and its directory the documented
/// owner and modes: open (to everyone, or to the hint group) only when the
/// ownership guard is attached.
pub fn finish(plan: &PinPlan, guarded: bool) -> Result<()> {
    let (gid, dir_mode, mode) = match (guarded, plan.group) {
        (false, _) => (0, 0o700, 0o600),
        (true, None) => (0, 0o755, 0o666),
        (true, Some(gid)) => (gid, 0o750, 0o660),
    };
    chown(&plan.path, gid)?;
    fs::set_permissions(&plan.path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", plan.path.display()))?;
    set_dir_mode(plan.dir(), gid, dir_mode)?;
    info!(
        "TLD map: mode {mode:o}{}",
        match (guarded, plan.group) {
            (false, _) => " (root only: no ownership guard)".to_string(),
            (true, None) => " (every user may hint their own threads)".to_string(),
            (true, Some(g)) => format!(" (group {g} may hint its own threads)"),
        }
    );
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
