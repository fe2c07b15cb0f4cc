//! Finding the scheduler's task-storage map, and noticing when it appears,
//! disappears, is replaced, or becomes openable.
//!
//! The map is opened from its bpffs pin. A watcher thread sees changes of the
//! pin's directory through inotify (and checks every few seconds what inotify
//! cannot see, e.g. bpffs mounted later). When the open map changes (a map
//! appears, goes, is replaced, or a pin that could not be opened now can:
//! its mode changed), the map's generation and a global epoch are bumped,
//! and the watcher registers every thread of the process in the new map
//! (`thread::sync_all`): threads need not touch a hint for that. Each thread
//! also compares its epoch with the global one on every hint access (one
//! relaxed load) and catches up in its slow path, so the steady state never
//! makes a syscall. A fork bumps the epoch in the child.

use super::abi;
use super::sys;
use std::os::fd::OwnedFd;
#[cfg(target_os = "linux")]
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
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
    /// Why there is no fd: `None` if nothing is pinned, else the errno of
    /// the failed open.
    open_errno: Option<i32>,
    opened: bool,
    /// Bumped whenever `fd` or `open_errno` changes.
    generation: u32,
}

static LOCK: AtomicBool = AtomicBool::new(false);
static mut STATE: MapState = MapState {
    fd: None,
    identity: None,
    open_errno: None,
    opened: false,
    generation: 1,
};

/// What a thread registers against: the map, or why there is none.
#[derive(Clone)]
pub struct View {
    pub fd: Option<Arc<OwnedFd>>,
    /// The errno of a failed open of an existing pin (no map otherwise).
    pub open_errno: Option<i32>,
    pub generation: u32,
}

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

/// What an open of the pin found.
enum Opened {
    Map(OwnedFd),
    /// No pin (or it vanished while being opened).
    Nothing,
    Failed(std::io::Error),
    KeepsChanging,
}

/// Opens the map at `path`, making sure the pin did not change meanwhile.
/// Called without the lock held (it makes system calls).
fn open_pin(path: &str) -> (Opened, Option<(u64, u64)>) {
    for _ in 0..3 {
        let before = match sys::file_identity(path) {
            Ok(id) => id,
            Err(libc::ENOENT | libc::ENOTDIR) => return (Opened::Nothing, None),
            // A directory on the way may not be searched: a pin may be
            // there, but not for us.
            Err(e) => return (Opened::Failed(std::io::Error::from_raw_os_error(e)), None),
        };
        match sys::obj_get(path) {
            Ok(fd) if sys::file_identity(path) == Ok(before) => {
                return (Opened::Map(fd), Some(before))
            }
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return (Opened::Failed(e), Some(before)),
        }
    }
    (Opened::KeepsChanging, sys::file_identity(path).ok())
}

/// Whether the state must be opened (again): never opened, the pin appeared,
/// went or was replaced, or the last open failed (the pin's mode, its
/// directories' or our credentials may have changed since: trying costs
/// one system call per check, and only while the map is unusable).
fn needs_open(st: &MapState, now: Option<(u64, u64)>) -> bool {
    !st.opened || now != st.identity || (st.fd.is_none() && st.open_errno.is_some())
}

/// Opens the pin and installs the result; returns what to log (after the
/// lock is released) and whether the usable map changed.
fn reopen(path: &str) -> (Option<String>, bool) {
    let (opened, identity) = open_pin(path);
    let (fd, errno, msg) = match opened {
        Opened::Map(fd) => (
            Some(Arc::new(fd)),
            None,
            format!("scx_hints: using the TLD map pinned at {path}"),
        ),
        Opened::Nothing => (
            None,
            None,
            format!("scx_hints: no TLD map pinned at {path}"),
        ),
        Opened::Failed(e) => (
            None,
            Some(e.raw_os_error().unwrap_or(libc::EIO)),
            format!("scx_hints: cannot open the TLD map at {path}: {e}"),
        ),
        Opened::KeepsChanging => (
            None,
            Some(libc::EAGAIN),
            format!("scx_hints: the TLD map pin at {path} keeps changing"),
        ),
    };
    with_state(|st| {
        let first = !st.opened;
        // A racing open installed this very pin already.
        if !first && fd.is_some() && st.fd.is_some() && st.identity == identity {
            return (None, false);
        }
        st.opened = true;
        st.identity = identity;
        // A failed open that fails the same way again changes nothing.
        if !first && fd.is_none() && st.fd.is_none() && errno == st.open_errno {
            return (None, false);
        }
        st.fd = fd;
        st.open_errno = errno;
        st.generation = st.generation.wrapping_add(1).max(1);
        (Some(msg), !first)
    })
}

/// The current map (opened on first use), or why there is none. The lock
/// is held only to read the state: system calls happen outside it.
pub fn current() -> View {
    start_watcher();
    if with_state(|st| !st.opened) {
        let (msg, _) = reopen(&pin_path());
        if let Some(msg) = msg {
            log::debug!("{msg}");
        }
    }
    snapshot()
}

/// The state as it is, without opening anything.
pub fn snapshot() -> View {
    with_state(|st| View {
        fd: st.fd.clone(),
        open_errno: st.open_errno,
        generation: st.generation,
    })
}

/// Checks the pin now; if the usable map changed, bumps the epoch and
/// registers every thread again (in the new map, or nowhere). Also retries
/// the registrations whose backoff is over. Returns true if the map changed.
/// Applications never need this (the watcher calls it), unless the watcher
/// is disabled.
pub fn recheck() -> bool {
    let path = pin_path();
    let now = sys::file_identity(&path).ok();
    let changed = if with_state(|st| needs_open(st, now)) {
        let (msg, changed) = reopen(&path);
        if let Some(msg) = msg {
            log::debug!("{msg}");
        }
        changed
    } else {
        false
    };
    if changed {
        EPOCH.fetch_add(1, Ordering::Release);
    }
    super::thread::sync_all();
    changed
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

/// An eventfd that wakes the watcher early (a registration retry is due
/// sooner than its next check); -1 before the watcher runs.
static KICK: AtomicI32 = AtomicI32::new(-1);

/// Wakes the watcher so that it recomputes its next deadline.
pub fn kick() {
    let fd = KICK.load(Ordering::Acquire);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local to our eventfd.
        unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
    }
}

/// Waits for changes of the pin's directory (or its nearest existing
/// ancestor) and rechecks the pin after each, and for due registration
/// retries.
#[cfg(target_os = "linux")]
fn watch() {
    let mut ino = -1;
    let mut kick_fd = -1;
    let mut buf = [0u8; 4096];
    loop {
        // Made (again) here: at start the file table may have been full.
        if ino < 0 {
            // SAFETY: plain syscall; the fd is checked.
            ino = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        }
        if kick_fd < 0 {
            // SAFETY: plain syscall; the fd is checked.
            kick_fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if kick_fd >= 0 {
                KICK.store(kick_fd, Ordering::Release);
            }
        }
        // Watch first, then look: a change between the two is still seen.
        if ino >= 0 {
            add_watch(ino);
        }
        recheck();
        let wait = super::thread::next_retry_in()
            .map_or(RECHECK_PERIOD, |d| d.min(RECHECK_PERIOD))
            // Round up: waking before the deadline would spin.
            .max(Duration::from_millis(1));
        let mut pfds = [
            libc::pollfd {
                fd: ino,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: kick_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: valid pollfds (poll ignores negative fds).
        if unsafe { libc::poll(pfds.as_mut_ptr(), 2, wait.as_millis() as i32 + 1) } > 0 {
            // Drain the events; which one does not matter.
            for p in pfds.iter().filter(|p| p.revents != 0) {
                // SAFETY: reads into a local buffer.
                unsafe { libc::read(p.fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            }
        }
    }
}

/// Whether the watcher runs and can be woken (for tests).
pub fn watcher_ready() -> bool {
    KICK.load(Ordering::Acquire) >= 0
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
    super::thread::before_fork();
    lock();
}

extern "C" fn after_fork_parent() {
    unlock();
    super::thread::after_fork_parent();
    super::meta::after_fork_parent();
}

extern "C" fn after_fork_child() {
    unlock();
    super::thread::after_fork_child();
    super::meta::after_fork_child();
    // The child's threads are new to the kernel: register again. Its watcher
    // did not survive the fork, nor did its wake-up eventfd's reader.
    EPOCH.fetch_add(1, Ordering::Release);
    WATCHER_STARTED.store(false, Ordering::Release);
    KICK.store(-1, Ordering::Release);
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
