//! Task local data (TLD), user side: named, typed per-thread values that a
//! BPF program can read for any thread, with no syscall per access.
//!
//! A process has one metadata page naming its keys; each thread has one
//! data block holding its values, registered once with the kernel in a
//! task-storage map (through UPTR: the kernel pins the pages). After that,
//! [`Key::set`] is a plain store into the thread's own memory. Every TLD
//! writer in the process (this crate, the C library, another version of
//! either) shares that one page and each thread's one block: the kernel
//! keeps one registration per thread.
//!
//! Keys are declared statically ([`declare_key!`](crate::declare_key!), created before `main`, so
//! that they size every thread's block) or created at run time
//! ([`create_key`], sharing a fixed extra budget of at least
//! [`abi::DYN_BUDGET`] bytes per thread). Without a pinned map (no
//! scheduler) nothing fails: values stay in the thread's block and setting
//! one still costs a store.
//!
//! The byte layout is documented in docs/tld-abi.md and defined in
//! bpf/tld_abi.h.

pub mod abi;
mod map;
mod meta;
mod shared;
// Outside Linux there is no BPF: the same calls, always failing (no map).
#[cfg_attr(not(target_os = "linux"), path = "sys_other.rs")]
pub(crate) mod sys;
mod thread;
mod words;

pub use thread::Registration;

use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;
use std::sync::atomic::{AtomicU32, Ordering};

/// Why a key could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// A key of that name exists (`EEXIST`).
    Exists,
    /// The key does not fit: larger than a block, or beyond the space left
    /// (`E2BIG`).
    TooBig,
    /// All 63 slots of the metadata page are taken (`ENOSPC`).
    NoSlot,
    /// The metadata page could not be allocated (`ENOMEM`).
    NoMemory,
    /// Empty, longer than 61 bytes, or containing NUL (`EINVAL`).
    InvalidName,
    /// A zero-sized type (`EINVAL`).
    InvalidSize,
}

impl KeyError {
    /// The errno upstream's C library returns for this error.
    pub fn errno(self) -> i32 {
        match self {
            KeyError::Exists => libc::EEXIST,
            KeyError::TooBig => libc::E2BIG,
            KeyError::NoSlot => libc::ENOSPC,
            KeyError::NoMemory => libc::ENOMEM,
            KeyError::InvalidName | KeyError::InvalidSize => libc::EINVAL,
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyError::Exists => "a TLD key of that name exists",
            KeyError::TooBig => "the TLD key does not fit in the per-thread block",
            KeyError::NoSlot => "no TLD key slot left (63 per process)",
            KeyError::NoMemory => "cannot allocate the TLD metadata page",
            KeyError::InvalidName => "TLD key names are 1 to 61 bytes without NUL",
            KeyError::InvalidSize => "TLD keys cannot be zero-sized",
        })
    }
}

impl std::error::Error for KeyError {}

/// Plain old data that can live in a TLD block: any bit pattern is a valid
/// value (the block starts zeroed, and BPF or another library may write it).
///
/// # Tearing
/// [`Key::set`] and [`Key::get`] move a value one aligned 8-byte word at a
/// time, each with one single-copy atomic access. A value of at most 8 bytes
/// (any type: an integer, `[u16; 4]`, a two-field struct) is therefore
/// always seen whole, by BPF and by other threads. A larger value is not: a
/// reader may see some words of one `set` and some of the next. Whatever
/// must be read consistently belongs in one value of at most 8 bytes (or in
/// one word of a larger value); no lock or sequence count protects more.
///
/// # Safety
/// Implement only for types without padding, pointers or invalid bit
/// patterns, with alignment at most 8.
pub unsafe trait Pod: Copy + Send + Sync + 'static {}

macro_rules! pod {
    ($($t:ty),*) => { $(unsafe impl Pod for $t {})* };
}
pod!(u8, i8, u16, i16, u32, i32, u64, i64, usize, isize, f32, f64);
// SAFETY: arrays of Pod are Pod.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// A typed key. Only a successfully created key exists, so a key can never
/// yield an error offset.
pub struct Key<T: Pod> {
    offset: u16,
    _t: PhantomData<fn() -> T>,
}

impl<T: Pod> Clone for Key<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Pod> Copy for Key<T> {}

impl<T: Pod> fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key<{}>@{}", std::any::type_name::<T>(), self.offset)
    }
}

impl<T: Pod> Key<T> {
    const CHECK: () = assert!(
        std::mem::align_of::<T>() <= abi::ALIGN && std::mem::size_of::<T>() > 0,
        "TLD values are non-empty and at most 8-byte aligned"
    );

    fn from_slot(slot: meta::Slot) -> Result<Self, KeyError> {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        if slot.size != std::mem::size_of::<T>() {
            return Err(KeyError::Exists);
        }
        Ok(Key {
            offset: slot.offset as u16,
            _t: PhantomData,
        })
    }

    /// The key's offset in a thread's block (what BPF resolves by name).
    pub fn offset(&self) -> usize {
        self.offset as usize
    }

    /// Stores this thread's value, one aligned 8-byte word at a time (see
    /// [`Pod`]): a value of at most 8 bytes is one store and never tears.
    #[inline(always)]
    pub fn set(&self, value: T) {
        thread::with_ptr(self.offset(), abi::round_up(size_of::<T>()), |p| {
            // SAFETY: p is 8-byte aligned and the key's rounded size is
            // inside this thread's block.
            unsafe { words::store(p, value) }
        });
    }

    /// Loads this thread's value (zeroed until first set; `None` only if no
    /// block could be allocated), one aligned 8-byte word at a time.
    #[inline(always)]
    pub fn get(&self) -> Option<T> {
        thread::with_ptr(self.offset(), abi::round_up(size_of::<T>()), |p| {
            // SAFETY: as in set().
            unsafe { words::load(p) }
        })
    }

    /// A pointer to this thread's value, valid until the thread exits. For
    /// callers that want to update it themselves (for example atomically).
    pub fn as_ptr(&self) -> Option<*mut T> {
        thread::with_ptr(self.offset(), size_of::<T>(), |p| p as *mut T)
    }
}

/// Creates a key at run time. Keys created after the first thread touched
/// its block share the run-time budget of every block.
pub fn create_key<T: Pod>(name: &str) -> Result<Key<T>, KeyError> {
    let slot = meta::create(name, std::mem::size_of::<T>())?;
    Key::from_slot(slot)
}

/// Finds an existing key; `Err(Exists)` if its size is not `T`'s.
pub fn find_key<T: Pod>(name: &str) -> Option<Result<Key<T>, KeyError>> {
    meta::find(name).map(Key::from_slot)
}

/// Creates the key, or returns it if a key of that name and size exists.
pub fn get_or_create_key<T: Pod>(name: &str) -> Result<Key<T>, KeyError> {
    match create_key(name) {
        Err(KeyError::Exists) => find_key(name).unwrap_or(Err(KeyError::Exists)),
        r => r,
    }
}

/// A key known only by its size, for bindings to other languages (the C
/// library): the caller keeps to the size. Rust code uses [`Key`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawKey {
    /// Offset of the value in a thread's block.
    pub offset: u16,
    /// Size of the value in bytes.
    pub size: u16,
}

impl RawKey {
    /// A pointer to the calling thread's value (`size` bytes, 8-byte
    /// aligned), valid until the thread exits; None without a block.
    pub fn as_ptr(&self) -> Option<*mut u8> {
        thread::with_ptr(self.offset as usize, self.size as usize, |p| p)
    }
}

/// Creates a key of `size` bytes (see [`create_key`]).
pub fn create_raw_key(name: &str, size: usize) -> Result<RawKey, KeyError> {
    if size == 0 {
        return Err(KeyError::InvalidSize);
    }
    let slot = meta::create(name, size)?;
    Ok(RawKey {
        offset: slot.offset as u16,
        size: slot.size as u16,
    })
}

/// Finds an existing key of any size.
pub fn find_raw_key(name: &str) -> Option<RawKey> {
    meta::find(name).map(|slot| RawKey {
        offset: slot.offset as u16,
        size: slot.size as u16,
    })
}

const UNRESOLVED: u32 = 0;
const ERROR_BIT: u32 = 1 << 31;

/// A key declared in a `static`, resolved once (by [`declare_key!`](crate::declare_key!)'s
/// constructor before `main`, or at first use).
pub struct StaticKey<T: Pod> {
    name: &'static str,
    /// UNRESOLVED, the offset, or ERROR_BIT | errno-like code.
    state: AtomicU32,
    _t: PhantomData<fn() -> T>,
}

impl<T: Pod> StaticKey<T> {
    /// A key named `name`, created at first use (or before `main` by
    /// [`declare_key!`](crate::declare_key!)).
    pub const fn new(name: &'static str) -> Self {
        StaticKey {
            name,
            state: AtomicU32::new(UNRESOLVED),
            _t: PhantomData,
        }
    }

    /// The key's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The key, creating it on first call. If another part of the process
    /// created a key of the same name and size, that key is shared.
    pub fn key(&self) -> Result<Key<T>, KeyError> {
        match self.state.load(Ordering::Acquire) {
            UNRESOLVED => self.resolve(),
            s if s & ERROR_BIT != 0 => Err(decode_error(s)),
            off => Ok(Key {
                offset: off as u16,
                _t: PhantomData,
            }),
        }
    }

    #[cold]
    fn resolve(&self) -> Result<Key<T>, KeyError> {
        let r = get_or_create_key::<T>(self.name);
        let s = match &r {
            Ok(k) => k.offset as u32,
            Err(e) => ERROR_BIT | encode_error(*e),
        };
        // Racing resolvers compute the same result.
        self.state.store(s, Ordering::Release);
        if let Err(e) = &r {
            log::warn!("scx_hints: TLD key {:?}: {e}", self.name);
        }
        r
    }

    /// Stores this thread's value; a no-op if the key could not be created.
    #[inline(always)]
    pub fn set(&self, value: T) {
        if let Ok(k) = self.key() {
            k.set(value)
        }
    }

    /// Loads this thread's value; None if the key could not be created.
    #[inline(always)]
    pub fn get(&self) -> Option<T> {
        self.key().ok()?.get()
    }

    /// Loads this thread's value if the thread has its block; otherwise
    /// returns `absent()` without allocating (and so registering) one.
    #[inline(always)]
    pub(crate) fn get_existing(&self, absent: impl FnOnce() -> Option<T>) -> Option<T> {
        let k = self.key().ok()?;
        thread::with_existing_ptr(
            k.offset(),
            abi::round_up(size_of::<T>()),
            // SAFETY: as in Key::get().
            |p| Some(unsafe { words::load(p) }),
            absent,
        )
        .flatten()
    }
}

fn encode_error(e: KeyError) -> u32 {
    e as u32
}

fn decode_error(s: u32) -> KeyError {
    match s & !ERROR_BIT {
        0 => KeyError::Exists,
        1 => KeyError::TooBig,
        2 => KeyError::NoSlot,
        3 => KeyError::NoMemory,
        4 => KeyError::InvalidName,
        _ => KeyError::InvalidSize,
    }
}

/// Declares a [`StaticKey`] in a `static` and creates it before `main`, so
/// that it sizes every thread's block:
///
/// ```
/// scx_hints::declare_key!(pub static REQUESTS: u64 = "myapp.requests");
/// REQUESTS.set(3);
/// assert_eq!(REQUESTS.get(), Some(3));
/// ```
#[macro_export]
macro_rules! declare_key {
    ($(#[$attr:meta])* $vis:vis static $id:ident : $t:ty = $name:expr $(;)?) => {
        $(#[$attr])*
        $vis static $id: $crate::tld::StaticKey<$t> = $crate::tld::StaticKey::new($name);
        const _: () = {
            extern "C" fn create() {
                let _ = $id.key();
            }
            // The constructor section: Mach-O names it differently.
            #[used]
            #[cfg_attr(target_vendor = "apple", link_section = "__DATA,__mod_init_func")]
            #[cfg_attr(not(target_vendor = "apple"), link_section = ".init_array")]
            static CREATE: extern "C" fn() = create;
        };
    };
}

/// This thread's registration state.
pub fn registration() -> Registration {
    thread::registration()
}

/// Allocates and registers this thread's block now rather than at its first
/// hint access (for threads that want the one-time cost paid up front).
pub fn register_thread() -> Registration {
    thread::register_now()
}

/// Checks the map's pin now: if the usable map changed (pinned, replaced,
/// removed, or openable after a mode change), registers every thread of the
/// process in it; also runs the registration retries that are due. Returns
/// true if the map changed. A watcher thread does this by itself; call it
/// (periodically) only if that watcher is disabled (`SCX_HINTS_WATCH=0`).
pub fn recheck_map() -> bool {
    map::recheck()
}

/// Whether thread `tid` (of any process) has a registration in the map
/// pinned at [`map_pin_path`]: for tools that inspect other programs
/// (`scx-hint show`). Needs read access to the pin.
pub fn thread_registered(tid: i32) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let map = sys::obj_get_read_only(&map_pin_path())?;
    let pidfd = sys::pidfd_of_thread(tid)?;
    sys::map_contains::<abi::MapValue>(map.as_raw_fd(), &pidfd)
}

/// The bpffs path where the map is looked for.
pub fn map_pin_path() -> String {
    map::pin_path()
}

/// Internals exposed for the project's own kernel tests. Not a stable API.
#[doc(hidden)]
pub mod testing {
    pub use super::map::{epoch, watcher_ready};
    pub use super::meta::fork_waiting;

    /// Starts the process over with an empty metadata page (the old one is
    /// leaked) and makes every thread register again on its next access.
    /// Only for a test process that owns every key: existing keys, static
    /// ones included, are not carried over, and threads that touched their
    /// block before keep its old size.
    pub fn replace_meta_page() {
        super::meta::replace_page_for_test().expect("mapping a metadata page");
    }
    pub use super::thread::{block_address, release as release_thread};

    /// The number of keys the process has created.
    pub fn key_count() -> usize {
        super::meta::existing_page().map_or(0, |m| super::meta::state(m).cnt as usize)
    }

    /// Whether this copy of the crate shares the process's TLD state (one
    /// metadata page, one block per thread) with the other TLD users of
    /// the process.
    pub fn shares_process_state() -> bool {
        super::shared::sharing()
    }

    /// The pthread key of the shared thread records, if this copy shares
    /// the process's TLD state.
    pub fn shared_thread_key() -> Option<u32> {
        super::shared::thread_key()
    }

    /// Forgets the process's TLD state in this copy of the crate, so that
    /// its next use finds or creates it again, and returns the metadata
    /// page's address. Only for a forked child whose one thread never
    /// touched a block; then [`unmap_process_state`] lets every copy race
    /// to create the state anew.
    pub fn forget_process_state() -> Option<usize> {
        super::shared::forget_for_test();
        let p = super::meta::forget_for_test();
        (!p.is_null()).then_some(p as usize)
    }

    /// Unmaps the shared state at `addr` (what [`forget_process_state`]
    /// returned) once every copy forgot it.
    ///
    /// # Safety
    /// No copy of the crate (nor any other TLD user) in the process may
    /// use the state any more: every one forgot it, and no thread has a
    /// block or a key of it.
    pub unsafe fn unmap_process_state(addr: usize) {
        // SAFETY: the caller promises that nothing uses it any more.
        unsafe { libc::munmap(addr as *mut libc::c_void, super::shared::HUB_SIZE) };
    }

    /// Where this process's shared state is (or would be) mapped; None
    /// where nothing is shared.
    pub fn process_state_address() -> Option<usize> {
        super::shared::address().map(|a| a as usize)
    }

    /// The metadata page's address, if it exists.
    pub fn meta_address() -> Option<usize> {
        super::meta::existing_page().map(|p| p as *const _ as usize)
    }

    /// Claims a key slot and writes its name, but leaves its size
    /// unpublished until the returned closure runs: the window in which a
    /// reader sees a slot "being written".
    pub fn create_key_in_two_steps(
        name: &str,
        size: usize,
    ) -> Result<(usize, impl FnOnce() -> usize), super::KeyError> {
        let claim = super::meta::claim(name, size)?;
        let offset = claim.slot().offset;
        Ok((offset, move || claim.publish().offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip() {
        for e in [
            KeyError::Exists,
            KeyError::TooBig,
            KeyError::NoSlot,
            KeyError::NoMemory,
            KeyError::InvalidName,
            KeyError::InvalidSize,
        ] {
            assert_eq!(decode_error(ERROR_BIT | encode_error(e)), e);
            assert!(e.errno() > 0);
        }
    }

    declare_key!(static BEFORE_MAIN: u32 = "test.before_main");

    #[test]
    fn declared_keys_exist_before_first_use() {
        // The constructor created it: it is found by name without touching it.
        assert!(find_key::<u32>("test.before_main").is_some());
        BEFORE_MAIN.set(7);
        assert_eq!(BEFORE_MAIN.get(), Some(7));
    }

    #[test]
    fn values_are_per_thread() {
        let k = create_key::<u64>("test.per_thread").unwrap();
        k.set(1);
        let other = std::thread::spawn(move || {
            let before = k.get();
            k.set(2);
            (before, k.get())
        })
        .join()
        .unwrap();
        assert_eq!(other, (Some(0), Some(2)));
        assert_eq!(k.get(), Some(1));
    }

    #[test]
    fn typed_lookup_checks_the_size() {
        create_key::<u16>("test.sized").unwrap();
        assert!(find_key::<u16>("test.sized").unwrap().is_ok());
        assert_eq!(
            find_key::<u64>("test.sized").unwrap().err(),
            Some(KeyError::Exists)
        );
        assert!(get_or_create_key::<u16>("test.sized").is_ok());
        assert_eq!(
            create_key::<u16>("test.sized").err(),
            Some(KeyError::Exists)
        );
    }

    #[test]
    fn keys_created_late_fit_the_budget_or_fail() {
        // Make sure this thread's block exists (capacity frozen).
        let k = get_or_create_key::<u8>("test.early").unwrap();
        k.set(1);
        let r = create_key::<[u8; 4000]>("test.too_late");
        assert_eq!(r.err(), Some(KeyError::TooBig));
    }

    /// Nothing in this test process pins a map, and every test that sets
    /// the pin path sets the same nonexistent one.
    fn no_map_here() {
        std::env::set_var(abi::MAP_PIN_ENV, "/nonexistent/scx_hints/tld");
    }

    #[test]
    fn no_map_means_no_failure() {
        no_map_here();
        let k = get_or_create_key::<i32>("test.no_map").unwrap();
        std::thread::spawn(move || {
            assert_eq!(
                registration(),
                Registration::None,
                "nothing before first use"
            );
            k.set(-5);
            assert_eq!(k.get(), Some(-5));
            assert_eq!(registration(), Registration::NoMap);
        })
        .join()
        .unwrap();
    }

    /// Two u32 halves that a writer always sets equal.
    #[derive(Clone, Copy)]
    #[repr(C)]
    struct Pair(u32, u32);
    // SAFETY: two u32s, no padding.
    unsafe impl Pod for Pair {}

    /// Reads the `words` 8-byte words at `addr` while `set` stores values
    /// whose 4-byte halves are all equal, in rounds until the reader saw the
    /// value change often enough (both threads on a CPU at once: a writer
    /// preempted mid-value is rare), for up to a minute: on a loaded host a
    /// round can pass without the two ever running together. Returns the
    /// words seen torn (halves unequal) and the reads.
    fn torn_words(addr: usize, words: usize, mut set: impl FnMut(u32)) -> (u64, u64) {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        const READS: u64 = 2_000_000;
        const CHANGES: u64 = 2_000;
        let (mut torn, mut reads, mut changes) = (0, 0, 0);
        let mut i = 0u32;
        let begin = std::time::Instant::now();
        while changes < CHANGES && begin.elapsed() < std::time::Duration::from_secs(60) {
            let (started, done) = (AtomicBool::new(false), AtomicBool::new(false));
            let (t, c) = std::thread::scope(|s| {
                let reader = s.spawn(|| {
                    while !started.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                    let (mut torn, mut changes, mut last) = (0, 0, 0);
                    for r in 0..READS {
                        let w = r as usize % words;
                        // SAFETY: the writer's block outlives the scope; an
                        // atomic load of an aligned word of it.
                        let v = unsafe { AtomicU64::from_ptr((addr + 8 * w) as *mut u64) }
                            .load(Ordering::Relaxed);
                        torn += u64::from(v as u32 != (v >> 32) as u32);
                        if w == 0 {
                            changes += u64::from(v != last);
                            last = v;
                        }
                    }
                    done.store(true, Ordering::Relaxed);
                    (torn, changes)
                });
                set(i);
                started.store(true, Ordering::Relaxed);
                while !done.load(Ordering::Relaxed) {
                    i = i.wrapping_add(1);
                    set(i);
                }
                reader.join().unwrap()
            });
            (torn, reads, changes) = (torn + t, reads + READS, changes + c);
        }
        assert!(
            changes >= CHANGES,
            "the reader saw only {changes} changes: the two threads never ran at once"
        );
        (torn, reads)
    }

    /// A value of 8 bytes or less is one store, whatever its type: a reader
    /// never sees half of one set() and half of another.
    #[test]
    fn small_values_never_tear() {
        let pair = create_key::<Pair>("test.pair").unwrap();
        let (torn, reads) =
            torn_words(pair.as_ptr().unwrap() as usize, 1, |i| pair.set(Pair(i, i)));
        assert_eq!(torn, 0, "{torn} of {reads} reads saw a torn Pair");
    }

    /// A larger value is stored one aligned 8-byte word at a time: each
    /// word is whole (words may come from different set()s).
    #[test]
    fn large_values_are_whole_per_word() {
        let quad = create_key::<[u32; 6]>("test.words").unwrap();
        let (torn, reads) = torn_words(quad.as_ptr().unwrap() as usize, 3, |i| quad.set([i; 6]));
        assert_eq!(torn, 0, "{torn} of {reads} word reads saw a torn word");
    }

    /// Threads fork at once while others keep passing through the claim
    /// gate: every child must be able to fork and create a key in turn.
    /// Each fork's gate must be its own (a shared "forking" flag cleared by
    /// the first parent let claims start under the second fork, and its
    /// child inherited a claim count no thread of its would ever drop).
    #[test]
    fn concurrent_forks_leave_usable_children() {
        use std::sync::atomic::AtomicBool;
        no_map_here();
        get_or_create_key::<u32>("test.fork_storm").unwrap();
        const FORKERS: usize = 4;
        const FORKS: usize = 40;
        let stop = AtomicBool::new(false);
        let start = std::sync::Barrier::new(FORKERS);
        let failures: Vec<String> = std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    // Each call enters and leaves the claim gate (the name exists).
                    while !stop.load(Ordering::Relaxed) {
                        let _ = create_key::<u32>("test.fork_storm");
                    }
                });
            }
            let forkers: Vec<_> = (0..FORKERS)
                .map(|_| {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        let mut failures = Vec::new();
                        for _ in 0..FORKS {
                            // SAFETY: the child forks, creates a key and
                            // leaves with _exit; a watchdog ends it if it hangs.
                            let pid = unsafe { libc::fork() };
                            if pid == 0 {
                                // SAFETY: alarm is async-signal-safe.
                                unsafe { libc::alarm(5) };
                                // SAFETY: the grandchild exits at once.
                                let grandchild = unsafe { libc::fork() };
                                if grandchild == 0 {
                                    unsafe { libc::_exit(0) };
                                }
                                let mut st = 0;
                                // SAFETY: waits for our own child.
                                unsafe { libc::waitpid(grandchild, &mut st, 0) };
                                let ok = grandchild > 0
                                    && create_key::<u8>("test.fork_storm_child").is_ok();
                                // SAFETY: ends the child without the harness.
                                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
                            }
                            let mut status = 0;
                            // SAFETY: waits for our own child.
                            unsafe { libc::waitpid(pid, &mut status, 0) };
                            if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                                failures.push(if libc::WIFSIGNALED(status) {
                                    format!("child hung (signal {})", libc::WTERMSIG(status))
                                } else {
                                    format!("child failed (status {status:#x})")
                                });
                            }
                        }
                        failures
                    })
                })
                .collect();
            let failures = forkers
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            stop.store(true, Ordering::Relaxed);
            failures
        });
        assert!(
            failures.is_empty(),
            "{} of {} children could not fork or create a key: {:?}",
            failures.len(),
            FORKERS * FORKS,
            &failures[..failures.len().min(5)]
        );
    }

    #[test]
    fn a_fork_waits_for_claims_in_flight() {
        no_map_here();
        let (offset, publish) = testing::create_key_in_two_steps("test.fork_claim", 8).unwrap();
        let forker = std::thread::spawn(|| {
            // SAFETY: the child only creates a key and exits with _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // A slot inherited half-written would hang this forever.
                // SAFETY: alarm and _exit are async-signal-safe.
                unsafe { libc::alarm(10) };
                let ok = create_key::<u8>("test.in_child").is_ok()
                    && find_key::<u64>("test.fork_claim").is_some_and(|k| k.is_ok());
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let mut status = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            status
        });
        // The fork is blocked in its prepare handler until the claim is
        // published (the bounded wait only keeps a broken gate from hanging).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !testing::fork_waiting() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(
            testing::fork_waiting(),
            "fork() did not wait for the claim in flight"
        );
        assert_eq!(publish(), offset);
        let status = forker.join().unwrap();
        assert!(
            libc::WIFEXITED(status),
            "child killed (hung on a half-written slot?)"
        );
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
