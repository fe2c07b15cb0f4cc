//! Each thread's data block and its registration with the kernel.
//!
//! The block is allocated on the thread's first hint access (or taken over
//! from another TLD writer of the process that made it, see shared.rs),
//! sized by the frozen capacity and aligned to its own power-of-two size so that it never
//! crosses a page (the kernel refuses uptrs that do). It is registered in the
//! task-storage map with the thread's pidfd; after that, accesses are plain
//! loads and stores into it. At thread exit the map entry is deleted before
//! the block is freed (by the last writer using it), so the kernel never
//! keeps reading reused memory.
//!
//! Every block is also listed in a process-wide registry, so that the map
//! watcher can register threads that never touch a hint again: when the map
//! appears, is replaced, or becomes openable, and when a failed registration
//! is due for a retry (with backoff). All registrations and deletions of an
//! entry happen under the registry's lock, so a block is never registered
//! after its thread deleted it.

use super::abi::{self, DataHdr, MapValue};
use super::{map, meta, shared, sys};
use std::cell::Cell;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether a thread's hints reach a scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// The thread has not touched a hint yet.
    None,
    /// No scheduler: no map is pinned. Hints stay in the thread's block and
    /// are registered by themselves when a map is pinned.
    NoMap,
    /// A map is pinned but this process may not use it: opening it or
    /// registering in it failed with `EACCES` or `EPERM` (the errno). Tried
    /// again whenever the pin changes (its mode, say).
    NotAllowed(i32),
    /// Opening the map or registering failed for another reason (the errno).
    /// Transient failures (`EAGAIN`, `ENOMEM`, `EMFILE`, `ENFILE`, `EBUSY`,
    /// `EINTR`, `ENOBUFS`) are retried with a growing delay (by the map
    /// watcher thread, never on the hint path); others when the pin changes.
    Failed(i32),
    /// The thread's block is in the map: a scheduler can read its hints.
    Registered,
}

impl Registration {
    /// The errno of a failure, if this is one.
    pub fn errno(self) -> Option<i32> {
        match self {
            Registration::NotAllowed(e) | Registration::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// True when a scheduler can read this thread's hints.
    pub fn is_registered(self) -> bool {
        self == Registration::Registered
    }

    /// The outcome of a failed open or update with `errno`.
    fn from_errno(errno: i32) -> Self {
        match errno {
            libc::EACCES | libc::EPERM => Registration::NotAllowed(errno),
            // The pin vanished while being opened.
            libc::ENOENT => Registration::NoMap,
            _ => Registration::Failed(errno),
        }
    }

    /// Whether a failure is worth retrying by itself (not only when the pin
    /// changes).
    fn transient(self) -> bool {
        matches!(
            self,
            Registration::Failed(
                libc::EAGAIN
                    | libc::ENOMEM
                    | libc::EMFILE
                    | libc::ENFILE
                    | libc::EBUSY
                    | libc::EINTR
                    | libc::ENOBUFS
            )
        )
    }
}

impl fmt::Display for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Registration::None => f.write_str("no hint touched yet"),
            Registration::NoMap => f.write_str("no scheduler (no TLD map pinned)"),
            Registration::NotAllowed(e) => write!(
                f,
                "not allowed to use the TLD map: {}",
                std::io::Error::from_raw_os_error(e)
            ),
            Registration::Failed(e) => write!(
                f,
                "registration failed: {}",
                std::io::Error::from_raw_os_error(e)
            ),
            Registration::Registered => f.write_str("registered"),
        }
    }
}

/// First delay before retrying a transient failure; doubled per failure.
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// The longest delay between retries.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// The delay before retry number `failures` (1 for the first).
pub fn retry_delay(failures: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

/// One thread's registration, in the registry. Guarded by `REG`.
struct Entry {
    /// The thread's id (updated in a forked child).
    tid: libc::pid_t,
    /// The block's address.
    base: usize,
    state: Registration,
    /// The map the block is registered in (kept open: the entry must be
    /// deleted from it, even if the pin has moved on since).
    map: Option<Arc<OwnedFd>>,
    /// The map generation `state` is for (0: none yet).
    generation: u32,
    /// Transient failures in a row, and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
    /// An entry could not be deleted: the kernel may still read the block,
    /// which must then never be freed.
    stuck: bool,
}

/// The registry's lock: a spin lock, so that the fork handlers can hold it
/// across fork() and release it in both processes. Order: `REG` before the
/// map's lock. Held across the registration system calls, never while
/// logging (a logger might set a hint).
static REG: AtomicBool = AtomicBool::new(false);
/// Every thread's entry (owned: created by `allocate`, freed by `release`).
static mut ENTRIES: Vec<*mut Entry> = Vec::new();

fn reg_lock() {
    while REG
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

fn reg_unlock() {
    REG.store(false, Ordering::Release);
}

/// Runs `f` with the registry locked.
fn with_registry<R>(f: impl FnOnce(&mut Vec<*mut Entry>) -> R) -> R {
    reg_lock();
    // SAFETY: REG gives exclusive access to ENTRIES and to every entry.
    let r = f(unsafe { &mut *ptr::addr_of_mut!(ENTRIES) });
    reg_unlock();
    r
}

/// Set once a failure other than "no map" was reported at warn level.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Logs a registration failure: the first one in the process at warn level
/// (an application should hear that its hints go nowhere), later ones at
/// debug level. Never called with `REG` held.
fn report(tid: libc::pid_t, outcome: Registration) {
    if matches!(
        outcome,
        Registration::None | Registration::NoMap | Registration::Registered
    ) {
        return;
    }
    let path = map::pin_path();
    if !WARNED.swap(true, Ordering::Relaxed) {
        log::warn!(
            "scx_hints: thread {tid}: hints do not reach the scheduler ({outcome}; map {path}); \
             retried when the pin changes{}",
            if outcome.transient() {
                " and after a delay"
            } else {
                ""
            }
        );
    } else {
        log::debug!("scx_hints: thread {tid}: {outcome} (map {path})");
    }
}

/// Registers `e` according to `view`. Called with `REG` held; returns the
/// outcome if it is worth reporting.
fn register(e: &mut Entry, view: &map::View, meta: &abi::MetaPage) -> Option<Registration> {
    let base = e.base;
    let value = MapValue {
        data: (base & !(abi::PAGE_SIZE - 1)) as u64,
        meta: meta as *const _ as u64,
        start: (base & (abi::PAGE_SIZE - 1)) as u16,
        reserved: [0; 3],
    };
    // Leave the map the block was registered in, if that is not the
    // current one: its entry would keep pointing at this block.
    if let Some(old) = e.map.take() {
        if view.fd.as_ref().is_some_and(|c| Arc::ptr_eq(c, &old)) {
            e.map = Some(old);
        } else if !delete_entry(&old, e.tid) {
            e.stuck = true;
        }
    }
    let before = e.state;
    e.generation = view.generation;
    let outcome = match (&view.fd, &e.map) {
        (None, _) => view
            .open_errno
            .map_or(Registration::NoMap, Registration::from_errno),
        (Some(_), Some(_)) => Registration::Registered,
        (Some(fd), None) => {
            let r = sys::pidfd_of_thread(e.tid)
                .and_then(|pidfd| sys::map_update(fd.as_raw_fd(), &pidfd, &value));
            match r {
                Ok(()) => {
                    e.map = Some(fd.clone());
                    Registration::Registered
                }
                Err(err) => Registration::from_errno(err.raw_os_error().unwrap_or(libc::EIO)),
            }
        }
    };
    e.state = outcome;
    if outcome.transient() {
        e.failures = e.failures.saturating_add(1);
        e.retry_at = Some(Instant::now() + retry_delay(e.failures));
    } else {
        e.failures = 0;
        e.retry_at = None;
    }
    (outcome != before).then_some(outcome)
}

/// Whether `e` must be registered (again) now.
fn stale(e: &Entry, view: &map::View, now: Instant) -> bool {
    e.generation != view.generation || e.retry_at.is_some_and(|t| t <= now)
}

/// Registers every thread whose registration is stale: made for another map
/// generation, or with a retry due. Run by the map watcher after each check;
/// the threads need not touch a hint.
pub fn sync_all() {
    let Some(meta) = meta::existing_page() else {
        return;
    };
    let now = Instant::now();
    let mut reports: Vec<(libc::pid_t, Registration)> = Vec::new();
    with_registry(|entries| {
        let view = map::snapshot();
        for &p in entries.iter() {
            // SAFETY: entries stay valid while listed; REG is held.
            let e = unsafe { &mut *p };
            if stale(e, &view, now) {
                if let Some(r) = register(e, &view, meta) {
                    reports.push((e.tid, r));
                }
            }
        }
    });
    for (tid, r) in reports {
        report(tid, r);
    }
}

/// How long until the earliest retry is due, if one is pending.
#[cfg(target_os = "linux")]
pub fn next_retry_in() -> Option<Duration> {
    let now = Instant::now();
    with_registry(|entries| {
        entries
            .iter()
            // SAFETY: as in sync_all.
            .filter_map(|&p| unsafe { (*p).retry_at })
            .min()
            .map(|t| t.saturating_duration_since(now))
    })
}

/// Fork: hold the registry so that the child gets it consistent.
pub fn before_fork() {
    reg_lock();
}

pub fn after_fork_parent() {
    reg_unlock();
}

/// In the child only the forking thread lives on: keep its entry, as a
/// thread the kernel has never seen (the others' blocks are left alone:
/// their threads are gone, and so is every map entry of this process).
pub fn after_fork_child() {
    let mine = BLOCK.try_with(|b| b.entry.get()).unwrap_or(ptr::null_mut());
    // SAFETY: REG is held since before_fork(); this is the only thread.
    let entries = unsafe { &mut *ptr::addr_of_mut!(ENTRIES) };
    entries.retain(|&p| p == mine);
    if !mine.is_null() {
        // SAFETY: our own entry, REG held.
        let e = unsafe { &mut *mine };
        e.tid = sys::gettid();
        e.map = None;
        e.state = Registration::None;
        e.generation = 0;
        e.failures = 0;
        e.retry_at = None;
    }
    reg_unlock();
}

pub struct ThreadBlock {
    /// The block (header + key data), or null before first use.
    base: Cell<*mut u8>,
    /// Block-relative end of key data (header + capacity).
    end: Cell<usize>,
    /// The map epoch this thread last synced with (0: never).
    epoch: Cell<u32>,
    /// This thread's registry entry (null without a block).
    entry: Cell<*mut Entry>,
    /// The block's record shared with the process's other TLD users
    /// (null: the block is this copy's alone). Kept here, not looked up
    /// at exit: see shared::release_block.
    record: Cell<*mut shared::ThreadRecord>,
}

thread_local! {
    static BLOCK: ThreadBlock = const {
        ThreadBlock {
            base: Cell::new(ptr::null_mut()),
            end: Cell::new(0),
            epoch: Cell::new(0),
            entry: Cell::new(ptr::null_mut()),
            record: Cell::new(ptr::null_mut()),
        }
    };
}

impl ThreadBlock {
    /// Returns a pointer to `size` bytes at block offset `offset`, setting the
    /// thread up first if needed. None if the block cannot be had or the key
    /// lies beyond it.
    #[inline(always)]
    fn ptr(&self, offset: usize, size: usize) -> Option<*mut u8> {
        let base = self.base.get();
        if base.is_null() || self.epoch.get() != map::EPOCH.load(Ordering::Relaxed) {
            return self.slow_ptr(offset, size);
        }
        (offset + size <= self.end.get()).then(|| base.wrapping_add(offset))
    }

    #[cold]
    #[inline(never)]
    fn slow_ptr(&self, offset: usize, size: usize) -> Option<*mut u8> {
        if self.base.get().is_null() && !self.allocate() {
            return None;
        }
        self.sync();
        (offset + size <= self.end.get()).then(|| self.base.get().wrapping_add(offset))
    }

    /// Finds the block another TLD user of the process made for this
    /// thread, or allocates it, and lists it in the registry.
    fn allocate(&self) -> bool {
        let Ok(capacity) = meta::freeze_capacity() else {
            return false;
        };
        let (p, record) = match shared::adopt_block() {
            Some(found) => found,
            None => {
                let size = abi::DATA_HDR_SIZE + capacity as usize;
                let mut p: *mut libc::c_void = ptr::null_mut();
                // SAFETY: size is a power of two and a multiple of the pointer size.
                if unsafe { libc::posix_memalign(&mut p, size, size) } != 0 {
                    return false;
                }
                // SAFETY: p points to `size` fresh bytes.
                unsafe {
                    ptr::write_bytes(p as *mut u8, 0, size);
                    (*(p as *mut DataHdr)).capacity = capacity;
                }
                // Without a record the block stays this copy's alone.
                (p as *mut u8, shared::publish_block(p as *mut u8))
            }
        };
        // SAFETY: the block starts with its header; its capacity is the
        // process-wide frozen one, whoever allocated it.
        let size = abi::DATA_HDR_SIZE + unsafe { (*(p as *const DataHdr)).capacity } as usize;
        let entry = Box::into_raw(Box::new(Entry {
            tid: sys::gettid(),
            base: p as usize,
            state: Registration::None,
            map: None,
            generation: 0,
            failures: 0,
            retry_at: None,
            stuck: false,
        }));
        with_registry(|entries| entries.push(entry));
        self.entry.set(entry);
        self.record.set(record);
        self.base.set(p);
        self.end.set(size);
        true
    }

    /// Registers the block in the current map (or notes that there is none)
    /// unless that is done already (by the watcher, say).
    fn sync(&self) {
        // Recorded first: an access made while registering (a logger that
        // sets a hint, say) takes the fast path instead of recursing.
        self.epoch.set(map::EPOCH.load(Ordering::Acquire));
        let Ok(meta) = meta::page() else { return };
        // Opens the map on first use and starts the watcher (outside REG).
        map::current();
        let entry = self.entry.get();
        let now = Instant::now();
        let reported = with_registry(|_| {
            // The state as of now, under REG: the watcher may be ahead of
            // what map::current() returned.
            let view = map::snapshot();
            // SAFETY: our own entry, listed until release(); REG is held.
            let e = unsafe { &mut *entry };
            if !stale(e, &view, now) {
                return None;
            }
            let r = register(e, &view, meta);
            Some((e.tid, r, e.retry_at.is_some()))
        });
        if let Some((tid, r, retry)) = reported {
            if retry {
                map::kick();
            }
            if let Some(r) = r {
                report(tid, r);
            }
        }
    }

    /// Deletes the map entry, then frees the block; the next access starts
    /// over. If the entry cannot be deleted, the block is kept: the kernel
    /// may still read it, so it must never be reused.
    fn release(&self) {
        let base = self.base.get();
        if base.is_null() {
            return;
        }
        let entry = self.entry.replace(ptr::null_mut());
        let stuck = with_registry(|entries| {
            entries.retain(|&p| p != entry);
            // SAFETY: created by allocate() and now unlisted: ours alone.
            let e = unsafe { Box::from_raw(entry) };
            let mut stuck = e.stuck;
            if let Some(m) = &e.map {
                stuck |= !delete_entry(m, sys::gettid());
            }
            stuck
        });
        if stuck {
            log::debug!(
                "scx_hints: thread {}: entry not deleted, block kept",
                sys::gettid()
            );
        }
        // Other TLD users of the process may still use the block: the last
        // one frees it.
        let record = self.record.replace(ptr::null_mut());
        if shared::release_block(base, record, stuck) {
            // SAFETY: allocated by posix_memalign (here or by another TLD
            // user of the process, from the same libc), registered nowhere,
            // used by nobody.
            unsafe { libc::free(base as *mut libc::c_void) };
        }
        self.base.set(ptr::null_mut());
        self.epoch.set(0);
    }
}

/// Deletes thread `tid`'s entry from `map`; true if it is gone.
fn delete_entry(map: &OwnedFd, tid: libc::pid_t) -> bool {
    let r = sys::pidfd_of_thread(tid).and_then(|pidfd| sys::map_delete(map.as_raw_fd(), &pidfd));
    // ENOENT: the entry is gone already.
    r.is_ok() || r.is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT))
}

impl Drop for ThreadBlock {
    fn drop(&mut self) {
        self.release();
    }
}

/// Unregisters and frees this thread's block now (what thread exit does).
pub fn release() {
    let _ = BLOCK.try_with(|b| b.release());
}

/// As [`with_ptr`], but a thread that has no block yet gets `absent()`
/// instead of one: for reads that must not register the thread.
#[inline(always)]
pub fn with_existing_ptr<R>(
    offset: usize,
    size: usize,
    f: impl FnOnce(*mut u8) -> R,
    absent: impl FnOnce() -> R,
) -> Option<R> {
    BLOCK
        .try_with(|b| {
            if b.base.get().is_null() {
                Some(absent())
            } else {
                b.ptr(offset, size).map(f)
            }
        })
        .ok()
        .flatten()
}

/// Runs `f` with a pointer to this thread's `size` bytes at `offset`; does
/// nothing (returns None) during thread teardown or without memory.
#[inline(always)]
pub fn with_ptr<R>(offset: usize, size: usize, f: impl FnOnce(*mut u8) -> R) -> Option<R> {
    BLOCK
        .try_with(|b| b.ptr(offset, size).map(f))
        .ok()
        .flatten()
}

/// This thread's registration state.
pub fn registration() -> Registration {
    BLOCK
        .try_with(|b| {
            let entry = b.entry.get();
            if entry.is_null() {
                return Registration::None;
            }
            // SAFETY: our own entry, listed until release(); REG is held.
            with_registry(|_| unsafe { (*entry).state })
        })
        .unwrap_or(Registration::None)
}

/// Sets the thread up now (allocation and registration) instead of at its
/// first hint access; returns the outcome.
pub fn register_now() -> Registration {
    let _ = BLOCK.try_with(|b| b.ptr(abi::DATA_HDR_SIZE, 0));
    registration()
}

/// The address of this thread's block (tests compare it with what BPF sees).
pub fn block_address() -> Option<usize> {
    BLOCK
        .try_with(|b| b.base.get() as usize)
        .ok()
        .filter(|&a| a != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_told_apart_by_errno() {
        assert_eq!(
            Registration::from_errno(libc::EACCES),
            Registration::NotAllowed(libc::EACCES)
        );
        assert_eq!(
            Registration::from_errno(libc::EPERM),
            Registration::NotAllowed(libc::EPERM)
        );
        assert_eq!(Registration::from_errno(libc::ENOENT), Registration::NoMap);
        assert_eq!(
            Registration::from_errno(libc::EMFILE),
            Registration::Failed(libc::EMFILE)
        );
        assert_eq!(
            Registration::NotAllowed(libc::EACCES).errno(),
            Some(libc::EACCES)
        );
        assert_eq!(Registration::NoMap.errno(), None);
        assert!(Registration::Registered.is_registered());
        assert!(!Registration::Failed(libc::ENOMEM).is_registered());
    }

    #[test]
    fn only_transient_failures_retry_by_themselves() {
        for e in [libc::EAGAIN, libc::ENOMEM, libc::EMFILE, libc::ENFILE] {
            assert!(Registration::Failed(e).transient(), "errno {e}");
        }
        for r in [
            Registration::Failed(libc::EINVAL),
            Registration::Failed(libc::EOPNOTSUPP),
            Registration::NotAllowed(libc::EACCES),
            Registration::NoMap,
            Registration::Registered,
        ] {
            assert!(!r.transient(), "{r:?}");
        }
    }

    #[test]
    fn retry_delays_double_up_to_a_cap() {
        assert_eq!(retry_delay(1), RETRY_FIRST);
        assert_eq!(retry_delay(2), RETRY_FIRST * 2);
        assert_eq!(retry_delay(3), RETRY_FIRST * 4);
        assert_eq!(retry_delay(40), RETRY_MAX);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
        let mut last = Duration::ZERO;
        for n in 1..64 {
            assert!(retry_delay(n) >= last);
            last = retry_delay(n);
        }
    }

    #[test]
    fn outcomes_say_what_happened() {
        assert!(Registration::NoMap.to_string().contains("no scheduler"));
        let s = Registration::NotAllowed(libc::EACCES).to_string();
        assert!(s.contains("not allowed") && s.contains("ermission"), "{s}");
        let s = Registration::Failed(libc::EMFILE).to_string();
        assert!(s.contains("failed") && s.contains("files"), "{s}");
    }
}
