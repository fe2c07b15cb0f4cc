//! Finding the scheduler's task-storage map, and noticing when it appears,
//! disappears or is replaced.
//!
//! The map is opened from its bpffs pin. Every change of the pinned file
//! (seen by a watcher thread through inotify, or by a slow periodic check
//! where inotify cannot see it, e.g. bpffs mounted later) bumps a global
//! epoch. Each thread compares its registration epoch with the global one on
//! every hint access (one relaxed load) and re-registers when they differ, so
//! the steady state never makes a syscall. A fork bumps the epoch in the child.

use super::abi;
use super::sys;
use std::os::fd::OwnedFd;
#[cfg(target_os = "linux")]
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::sync::Once;
#[cfg(target_os = "linux")]
use std::time::Duration;

/// Bumped whenever threads must register again.
pub static EPOCH: AtomicU32 = AtomicU32::new(1);

/// The open map and the pinned file it came from. Guarded by `LOCK`, a spin
/// lock rather than a Mutex so that the fork handlers can hold it across
/// fork() and release it in both processes.
struct MapState {
    /// Shared with every thread registered in this map, so that a thread
    /// can always delete its own entry from the map it registered in, even
    /// after the pin moved on.
    fd: Option<Arc<OwnedFd>>,
    identity: Option<(u64, u64)>,
    opened: bool,
}

static LOCK: AtomicBool = AtomicBool::new(false);
static mut STATE: MapState = MapState {
    fd: None,
    identity: None,
    opened: false,
};

fn lock() {
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

fn unlock() {
    LOCK.store(false, Ordering::Release);
}

/// Runs `f` with the map state locked.
fn with_state<R>(f: impl FnOnce(&mut MapState) -> R) -> R {
    lock();
    // SAFETY: LOCK gives exclusive access to STATE.
    let r = f(unsafe { &mut *std::ptr::addr_of_mut!(STATE) });
    unlock();
    r
}

/// The pin path: `SCX_HINTS_TLD_MAP` or the default.
pub fn pin_path() -> String {
    std::env::var(abi::MAP_PIN_ENV).unwrap_or_else(|_| abi::MAP_PIN_PATH.to_string())
}

/// Opens the map at the pin; returns what to log once the lock is released.
fn open(state: &mut MapState) -> String {
    let path = pin_path();
    state.fd = None;
    state.identity = None;
    state.opened = true;
    for _ in 0..3 {
        let before = sys::file_identity(&path);
        if before.is_none() {
            return format!("scx_hints: no TLD map pinned at {path}");
        }
        match sys::obj_get(&path) {
            // The pin did not change while we opened it.
            Ok(fd) if sys::file_identity(&path) == before => {
                state.fd = Some(Arc::new(fd));
                state.identity = before;
                return format!("scx_hints: using the TLD map pinned at {path}");
            }
            Ok(_) => continue,
            Err(e) => {
                state.identity = before;
                return format!("scx_hints: cannot open the TLD map at {path}: {e}");
            }
        }
    }
    format!("scx_hints: the TLD map pin at {path} keeps changing")
}

/// The current map (opened on first use), or None without one. The lock is
/// held only to read the state: system calls on the map happen outside it.
pub fn current() -> Option<Arc<OwnedFd>> {
    start_watcher();
    let (fd, msg) = with_state(|st| {
        let msg = (!st.opened).then(|| open(st));
        (st.fd.clone(), msg)
    });
    if let Some(msg) = msg {
        log::debug!("{msg}");
    }
    fd
}

/// Checks the pin now; if it changed, reopens the map and bumps the epoch.
/// Returns true if it changed. Applications never need this (the watcher
/// calls it); it is public for tests and for callers that know better.
pub fn recheck() -> bool {
    let path = pin_path();
    let msg = with_state(|st| {
        let now = sys::file_identity(&path);
        if st.opened && now == st.identity {
            return None;
        }
        Some(open(st))
    });
    let Some(msg) = msg else { return false };
    log::debug!("{msg}");
    EPOCH.fetch_add(1, Ordering::Release);
    true
}

static WATCHER_STARTED: AtomicBool = AtomicBool::new(false);

fn watcher_enabled() -> bool {
    std::env::var("SCX_HINTS_WATCH").map_or(true, |v| v != "0")
}

fn start_watcher() {
    if WATCHER_STARTED.load(Ordering::Relaxed) || WATCHER_STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    install_fork_handler();
    if watcher_enabled() {
        spawn_watcher();
    }
}

#[cfg(not(target_os = "linux"))]
fn spawn_watcher() {
    // No BPF map outside Linux: nothing to watch for.
}

#[cfg(target_os = "linux")]
fn spawn_watcher() {
    let spawned = std::thread::Builder::new()
        .name("scx-hints-watch".into())
        .stack_size(64 * 1024)
        .spawn(watch);
    if let Err(e) = spawned {
        log::debug!("scx_hints: no map watcher ({e}); the map is checked at registration only");
    }
}

/// The fallback period of the watcher, for changes inotify cannot report.
#[cfg(target_os = "linux")]
const RECHECK_PERIOD: Duration = Duration::from_secs(5);

/// Waits for changes of the pin's directory (or its nearest existing
/// ancestor) and rechecks the pin after each.
#[cfg(target_os = "linux")]
fn watch() {
    // SAFETY: plain syscall; the fd is checked.
    let ino = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    let mut buf = [0u8; 4096];
    loop {
        // Watch first, then look: a change between the two is still seen.
        if ino >= 0 {
            add_watch(ino);
        }
        recheck();
        if ino < 0 {
            std::thread::sleep(RECHECK_PERIOD);
            continue;
        }
        let mut pfd = libc::pollfd {
            fd: ino,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, RECHECK_PERIOD.as_millis() as i32) } > 0 {
            // Drain the events; which one does not matter.
            // SAFETY: reads into a local buffer.
            unsafe { libc::read(ino, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        }
    }
}

/// Watches the directory of the pin, or the nearest ancestor that exists.
#[cfg(target_os = "linux")]
fn add_watch(ino: RawFd) -> bool {
    let path = pin_path();
    let mut dir = std::path::Path::new(&path).parent();
    while let Some(d) = dir {
        if let Ok(c) = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()) {
            let mask = libc::IN_CREATE
                | libc::IN_DELETE
                | libc::IN_MOVED_TO
                | libc::IN_MOVED_FROM
                | libc::IN_DELETE_SELF
                | libc::IN_ATTRIB;
            // SAFETY: c is a valid path; re-adding a watch only updates it.
            if unsafe { libc::inotify_add_watch(ino, c.as_ptr(), mask) } >= 0 {
                return true;
            }
        }
        dir = d.parent();
    }
    false
}

static FORK_HANDLER: Once = Once::new();

extern "C" fn before_fork() {
    super::meta::before_fork();
    lock();
}

extern "C" fn after_fork_parent() {
    unlock();
    super::meta::after_fork_parent();
}

extern "C" fn after_fork_child() {
    unlock();
    super::meta::after_fork_child();
    // The child's threads are new to the kernel: register again. Its watcher
    // did not survive the fork.
    EPOCH.fetch_add(1, Ordering::Release);
    WATCHER_STARTED.store(false, Ordering::Release);
}

pub fn install_fork_handler() {
    FORK_HANDLER.call_once(|| {
        // SAFETY: the handlers only touch atomics and yield.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_parent),
                Some(after_fork_child),
            );
        }
    });
}

/// Current epoch (for tests and diagnostics).
pub fn epoch() -> u32 {
    EPOCH.load(Ordering::Acquire)
}
