//! One TLD state per process, however many copies of this code the process
//! holds (the Rust crate, the C library, two versions of the crate): they
//! share one metadata page and one block per thread, because the kernel
//! keeps one registration per thread and the last one written wins.
//!
//! Copies share no symbols, so they meet at an address: every copy derives
//! the same one from the process's `AT_RANDOM` bytes (random per process,
//! new at exec, inherited by fork). The first copy maps the *hub* there with
//! `MAP_FIXED_NOREPLACE`, which the kernel grants to one caller only; the
//! hub's contents come from a memfd written beforehand, so the mapping is
//! complete the moment it exists. A copy that finds the address taken reads
//! what is there without trusting it (through a pipe: the kernel fails
//! with `EFAULT` instead of faulting) and joins the hub if its magic and
//! version are the ones it knows. The hub is
//! the metadata page followed by a header naming a pthread key: every copy
//! uses libc's one slot per thread under that key to find the thread's
//! block (a record counting the copies that use it; the last one frees it).
//!
//! docs/tld-abi.md ("One state per process") is the protocol for other
//! writers. Where the hub cannot be had (the address is taken by something
//! else, another layout version is there, memfd or the read is refused),
//! this copy keeps a state of its own, as before sharing existed.

// Elsewhere there is nothing to share (no BPF): the rendezvous is unused.
#![cfg_attr(
    not(all(target_os = "linux", target_pointer_width = "64")),
    allow(dead_code)
)]

use super::abi::{self, MetaPage};
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
use super::sys;
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

/// Marks a hub header: `"TLDSHARE"` read as a little-endian u64.
pub const HUB_MAGIC: u64 = u64::from_le_bytes(*b"TLDSHARE");
/// Layout version of the hub: its two pages, the thread record, the
/// address rule. A copy joins only a hub of a version it implements.
pub const HUB_VERSION: u32 = 1;
/// The hub: the metadata page, then one page starting with [`HubHeader`].
pub const HUB_SIZE: usize = 2 * abi::PAGE_SIZE;
/// The hub's address is `HUB_BASE + n * HUB_STRIDE`, `n` < `HUB_SLOTS`
/// (64 GiB to 192 GiB: below the 39-bit address spaces of some arm64
/// kernels, and far from where x86-64 puts programs, heaps and mappings).
pub const HUB_BASE: u64 = 1 << 36;
/// Distance between possible hub addresses (the largest page size in use).
pub const HUB_STRIDE: u64 = 1 << 16;
/// Number of possible hub addresses.
pub const HUB_SLOTS: u64 = 1 << 21;
/// The memfd's name (shown as `/memfd:scx_hints_tld (deleted)` in maps).
pub const HUB_MEMFD_NAME: &str = "scx_hints_tld";

/// The header at the start of the hub's second page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubHeader {
    /// [`HUB_MAGIC`].
    pub magic: u64,
    /// [`HUB_VERSION`].
    pub version: u32,
    /// [`HUB_SIZE`].
    pub size: u32,
    /// The `pthread_key_t` whose per-thread value is the thread's
    /// [`ThreadRecord`] (null while the thread has no block).
    pub thread_key: u32,
    /// `size_of::<ThreadRecord>()`.
    pub record_size: u32,
}

/// One per thread that has a block, allocated with libc's `malloc` (every
/// copy frees with libc's `free`) and reached through the hub's pthread
/// key. Only its own thread touches it.
#[repr(C)]
#[derive(Debug)]
pub struct ThreadRecord {
    /// The thread's block.
    pub block: u64,
    /// Copies that use the block (each counted once, until it releases it).
    pub users: u32,
    /// [`RECORD_KEEP`].
    pub flags: u32,
}

/// A copy could not delete a map entry pointing at the block: the kernel
/// may still read it, so it must never be freed.
pub const RECORD_KEEP: u32 = 1;

/// This copy's pthread key for thread records once it joined a hub;
/// `NO_KEY` with a state of its own.
static THREAD_KEY: AtomicU32 = AtomicU32::new(NO_KEY);
const NO_KEY: u32 = u32::MAX;
/// The hub's address `THREAD_KEY` belongs to (0: none); see [`key`].
static HUB_META: AtomicUsize = AtomicUsize::new(0);

/// Why this copy keeps a state of its own.
#[derive(Debug)]
enum Alone {
    /// Another layout version holds the address.
    OtherVersion(u32),
    /// Something that is not a hub holds the address.
    Taken,
    /// No address, or a system call failed (its errno).
    Unsupported(&'static str, i32),
    /// Not a 64-bit Linux address space: nothing to share.
    #[cfg_attr(
        all(target_os = "linux", target_pointer_width = "64"),
        allow(dead_code)
    )]
    Platform,
}

/// Set once a reason to keep a state of its own was logged at warn level.
static WARNED: AtomicBool = AtomicBool::new(false);

/// The process's metadata page: the hub's first page, joined or created,
/// else a page of this copy's own. Called until one is published in
/// `meta::META`; racing callers get the same hub.
pub fn meta_page() -> Result<(*mut MetaPage, bool), super::KeyError> {
    match hub() {
        Ok((meta, key)) => {
            // Both before the page is published; used only if the page
            // that wins publication in this copy is this hub (see key()).
            THREAD_KEY.store(key, Ordering::Release);
            HUB_META.store(meta as usize, Ordering::Release);
            Ok((meta, true))
        }
        Err(why) => {
            let msg = match why {
                Alone::OtherVersion(v) => format!(
                    "another TLD user in this process has layout version {v} (this one: \
                     {HUB_VERSION}): not sharing its state; the thread registrations of \
                     one of the two are lost"
                ),
                Alone::Taken => "the TLD rendezvous address is taken: not sharing the TLD \
                                 state with other TLD users of this process"
                    .into(),
                Alone::Unsupported(what, e) => format!(
                    "cannot share the TLD state ({what}: {}): other TLD users of this \
                     process keep their own",
                    std::io::Error::from_raw_os_error(e)
                ),
                Alone::Platform => "no TLD state sharing on this platform".into(),
            };
            // Said once, loudly: the process's hints may not all reach the
            // scheduler. Not on platforms where nothing is shared anyway.
            if !matches!(why, Alone::Platform) && !WARNED.swap(true, Ordering::Relaxed) {
                log::warn!("scx_hints: {msg}");
            } else {
                log::debug!("scx_hints: {msg}");
            }
            super::meta::page_new().map(|p| (p, false))
        }
    }
}

/// FNV-1a, 64 bits: the address rule must be simple to write in C.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The hub's address for these 16 `AT_RANDOM` bytes: FNV-1a of the memfd
/// name followed by them; its top 21 bits pick the slot.
pub fn hub_address_for(random: &[u8; 16]) -> u64 {
    let h = fnv1a(HUB_MEMFD_NAME.bytes().chain(random.iter().copied()));
    HUB_BASE + (h >> (64 - HUB_SLOTS.trailing_zeros())) * HUB_STRIDE
}

/// The page after the metadata page holds the header.
fn header_of(base: usize) -> *mut HubHeader {
    (base + abi::PAGE_SIZE) as *mut HubHeader
}

/// This process's hub address.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub fn address() -> Option<u64> {
    // SAFETY: getauxval has no preconditions; AT_RANDOM points to 16 bytes
    // that live as long as the process.
    let random = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const [u8; 16];
    // SAFETY: see above.
    (!random.is_null()).then(|| hub_address_for(unsafe { &*random }))
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
pub fn address() -> Option<u64> {
    None
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn hub() -> Result<(*mut MetaPage, u32), Alone> {
    Err(Alone::Platform)
}

/// Creates the hub, or joins it. Creating first: `MAP_FIXED_NOREPLACE`
/// tells whether anything is at the address without touching it.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn hub() -> Result<(*mut MetaPage, u32), Alone> {
    let addr = address().ok_or(Alone::Unsupported("AT_RANDOM", libc::ENOENT))? as usize;
    let found = match create(addr) {
        Ok(Some(created)) => created,
        // Something is there: a hub made by another copy (or thread), or not.
        Ok(None) => existing(addr)?.ok_or(Alone::Taken)?,
        // Creating failed (no memfd, say): joining may not need it.
        Err(e) => match existing(addr) {
            Ok(Some(joined)) => joined,
            Ok(None) => return Err(e),
            Err(other) => return Err(other),
        },
    };
    make_private_copy(addr);
    Ok(found)
}

/// Writes once to the metadata page of the hub: a private file mapping is
/// copied on its first write, and the process must keep using the page
/// the kernel pins at registration (it pins for writing, which makes the
/// copy itself; this makes it explicit). Every copy does this before its
/// first registration, whoever created the hub. The header page is never
/// registered, so it stays as created: never written, read without races.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn make_private_copy(addr: usize) {
    // SAFETY: the page is mapped read-write for the life of the process;
    // an aligned atomic add of 0 changes no value.
    unsafe {
        (*(addr as *const MetaPage))
            .state
            .fetch_add(0, Ordering::AcqRel);
    }
}

/// What is mapped at `addr`: a hub of this version (joined), nothing
/// readable, or something else.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn existing(addr: usize) -> Result<Option<(*mut MetaPage, u32)>, Alone> {
    let mut h = HubHeader::default();
    match sys::read_own_memory(header_of(addr) as usize, &mut h) {
        Ok(()) => {}
        // Nothing (readable) mapped there.
        Err(libc::EFAULT) => return Ok(None),
        // No pipe (out of fds, say): ask /proc what is there.
        Err(e) => {
            let maps = std::fs::read_to_string("/proc/self/maps")
                .map_err(|_| Alone::Unsupported("reading the TLD rendezvous", e))?;
            match mapping_at(&maps, addr) {
                Mapped::Nothing => return Ok(None),
                Mapped::Other => return Err(Alone::Taken),
                // SAFETY: our memfd's mapping, readable, at least HUB_SIZE;
                // the header is never written after the hub is mapped.
                Mapped::Hub => h = unsafe { header_of(addr).read() },
            }
        }
    }
    if h.magic != HUB_MAGIC {
        return Err(Alone::Taken);
    }
    if h.version != HUB_VERSION {
        return Err(Alone::OtherVersion(h.version));
    }
    if h.size as usize != HUB_SIZE || h.record_size as usize != size_of::<ThreadRecord>() {
        return Err(Alone::Taken);
    }
    Ok(Some((addr as *mut MetaPage, h.thread_key)))
}

/// What `/proc/self/maps` shows at an address.
#[derive(Debug, PartialEq, Eq)]
enum Mapped {
    Nothing,
    /// A mapping of the hub's memfd, starting there and large enough.
    Hub,
    Other,
}

/// Finds what covers `addr` in the text of `/proc/self/maps`.
fn mapping_at(maps: &str, addr: usize) -> Mapped {
    for line in maps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some((start, end)) = fields.next().and_then(|r| r.split_once('-')) else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        if !(start..end).contains(&addr) {
            continue;
        }
        // perms, offset, device, inode, then the path.
        let perms = fields.next().unwrap_or("");
        let path = fields.nth(3).unwrap_or("");
        let ours = path == format!("/memfd:{HUB_MEMFD_NAME}");
        return if ours && start == addr && end - start >= HUB_SIZE && perms.starts_with("rw") {
            Mapped::Hub
        } else {
            Mapped::Other
        };
    }
    Mapped::Nothing
}

/// Maps a new hub at `addr` with a new thread key; `Ok(None)` if
/// something is there already.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn create(addr: usize) -> Result<Option<(*mut MetaPage, u32)>, Alone> {
    let key = thread_key_create().map_err(|e| Alone::Unsupported("pthread_key_create", e))?;
    let mut image = vec![0u8; HUB_SIZE];
    let meta = image.as_mut_ptr() as *mut MetaPage;
    // SAFETY: image is HUB_SIZE zeroed bytes; writes of plain fields at
    // their offsets (unaligned: a Vec<u8> promises no alignment).
    unsafe {
        std::ptr::addr_of_mut!((*meta).magic).write_unaligned(abi::MAGIC);
        std::ptr::addr_of_mut!((*meta).version).write_unaligned(abi::VERSION);
        std::ptr::addr_of_mut!((*meta).hdr_size).write_unaligned(abi::META_HDR_SIZE as u16);
        std::ptr::addr_of_mut!((*meta).cookie).write_unaligned(sys::random_u32());
        header_of(image.as_mut_ptr() as usize).write_unaligned(HubHeader {
            magic: HUB_MAGIC,
            version: HUB_VERSION,
            size: HUB_SIZE as u32,
            thread_key: key,
            record_size: size_of::<ThreadRecord>() as u32,
        });
    }
    match sys::map_image_at(addr, &image, HUB_MEMFD_NAME) {
        Ok(true) => Ok(Some((addr as *mut MetaPage, key))),
        Ok(false) => {
            thread_key_delete(key);
            Ok(None)
        }
        Err(e) => {
            thread_key_delete(key);
            Err(Alone::Unsupported("mapping the hub", e))
        }
    }
}

/// A new pthread key without destructor (each copy releases the thread's
/// record from its own thread-exit code), or the errno.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_key_create() -> Result<u32, i32> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: key is a valid out-pointer; no destructor.
    match unsafe { libc::pthread_key_create(&mut key, None) } {
        0 => Ok(key as u32),
        e => Err(e),
    }
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_key_delete(key: u32) {
    // SAFETY: a key this copy created and never published.
    unsafe { libc::pthread_key_delete(key as libc::pthread_key_t) };
}

fn thread_key_get(key: u32) -> *mut libc::c_void {
    // SAFETY: the hub's key, never deleted.
    unsafe { libc::pthread_getspecific(key as libc::pthread_key_t) }
}

fn thread_key_set(key: u32, value: *mut libc::c_void) -> bool {
    // SAFETY: as above.
    unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, value) == 0 }
}

/// The hub's thread key, if this copy's published metadata page is the
/// hub. `THREAD_KEY` alone is not enough: it is stored before the page is
/// published, and another thread of this copy may have published a page
/// of its own first (its hub lookup failed, say): blocks shared through
/// the hub would then carry this copy's keys at offsets of another page.
fn key() -> Option<u32> {
    let key = THREAD_KEY.load(Ordering::Acquire);
    if key == NO_KEY {
        return None;
    }
    let meta = super::meta::existing_page()? as *const MetaPage as usize;
    (meta == HUB_META.load(Ordering::Acquire)).then_some(key)
}

/// The thread's block made by another copy (or by this one before a
/// release), now used by this copy too, with its record: this copy's
/// thread state keeps the record and releases through it.
pub fn adopt_block() -> Option<(*mut u8, *mut ThreadRecord)> {
    let rec = thread_key_get(key()?) as *mut ThreadRecord;
    if rec.is_null() {
        return None;
    }
    // SAFETY: a record is only ever touched by its own thread (this one).
    unsafe {
        (*rec).users += 1;
        Some(((*rec).block as usize as *mut u8, rec))
    }
}

/// Makes `block`, just allocated by this copy, the thread's block for
/// every copy, and returns its record (for this copy's thread state to
/// keep). Null if this copy does not share or the record cannot be made:
/// the block is then this copy's alone.
pub fn publish_block(block: *mut u8) -> *mut ThreadRecord {
    let Some(key) = key() else {
        return std::ptr::null_mut();
    };
    // SAFETY: malloc of a plain struct; checked below.
    let rec = unsafe { libc::malloc(size_of::<ThreadRecord>()) } as *mut ThreadRecord;
    if rec.is_null() {
        return rec;
    }
    // SAFETY: fresh memory of the right size.
    unsafe {
        rec.write(ThreadRecord {
            block: block as usize as u64,
            users: 1,
            flags: 0,
        })
    };
    if !thread_key_set(key, rec as *mut libc::c_void) {
        // SAFETY: ours, never published.
        unsafe { libc::free(rec as *mut libc::c_void) };
        return std::ptr::null_mut();
    }
    rec
}

/// This copy no longer uses `block`, reached through `rec` (what
/// [`adopt_block`] or [`publish_block`] returned; null: the block is this
/// copy's alone). `keep`: it could not delete its map entry. True if the
/// caller must free the block: it was its last user and no copy asked to
/// keep it.
///
/// The key is not read to find the record: at thread exit libc may have
/// cleared its value already (musl clears every value before running
/// later destructors; a writer cleaning up from its own key's destructor
/// runs after that on glibc too). Every copy would then take the block
/// for its own and free it.
pub fn release_block(block: *mut u8, rec: *mut ThreadRecord, keep: bool) -> bool {
    if rec.is_null() {
        return !keep;
    }
    // SAFETY: our thread's record, touched by this thread only, alive
    // while it has users (this copy is one).
    unsafe {
        debug_assert_eq!((*rec).block, block as usize as u64);
        if keep {
            (*rec).flags |= RECORD_KEEP;
        }
        (*rec).users = (*rec).users.saturating_sub(1);
        if (*rec).users > 0 {
            return false;
        }
        let free = (*rec).flags & RECORD_KEEP == 0;
        // Only if it still names this record: it may be cleared already,
        // or name a newer block (made after a clear).
        let key = THREAD_KEY.load(Ordering::Acquire);
        if key != NO_KEY && thread_key_get(key) == rec as *mut libc::c_void {
            thread_key_set(key, std::ptr::null_mut());
        }
        libc::free(rec as *mut libc::c_void);
        free
    }
}

/// Whether this copy shares the process's hub.
pub fn sharing() -> bool {
    key().is_some()
}

/// The hub's thread key, if this copy shares the hub (tests clear its
/// value to play a libc that did so before the thread's cleanup).
pub fn thread_key() -> Option<u32> {
    key()
}

/// Test only: forgets the hub in this copy, so that the next use looks
/// for it again. The caller must make sure no thread of this copy has a
/// block or a key.
pub fn forget_for_test() {
    THREAD_KEY.store(NO_KEY, Ordering::Release);
    HUB_META.store(0, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn layout_is_what_the_doc_says() {
        assert_eq!(size_of::<HubHeader>(), 24);
        assert_eq!(offset_of!(HubHeader, thread_key), 16);
        assert_eq!(size_of::<ThreadRecord>(), 16);
        assert_eq!(offset_of!(ThreadRecord, users), 8);
        assert_eq!(HUB_MAGIC, 0x4552_4148_5344_4c54);
    }

    #[test]
    fn addresses_stay_in_their_range() {
        for seed in 0..1000u32 {
            let mut r = [0u8; 16];
            r[..4].copy_from_slice(&seed.to_le_bytes());
            let a = hub_address_for(&r);
            assert!(a >= HUB_BASE && a + HUB_SIZE as u64 <= HUB_BASE + HUB_SLOTS * HUB_STRIDE);
            assert_eq!(a % HUB_STRIDE, 0);
        }
        // A fixed vector, for writers in other languages (docs/tld-abi.md).
        assert_eq!(hub_address_for(&[0; 16]), 0x27_344a_0000);
    }

    #[test]
    fn maps_tell_a_hub_from_anything_else() {
        let maps =
            "7f0000000000-7f0000002000 rw-p 00000000 00:01 1234   /memfd:scx_hints_tld (deleted)\n\
                    7f0000010000-7f0000011000 rw-p 00000000 00:00 0 \n\
                    7f0000020000-7f0000022000 rw-p 00000000 00:01 77   /memfd:other (deleted)\n";
        assert_eq!(mapping_at(maps, 0x7f00_0000_0000), Mapped::Hub);
        assert_eq!(
            mapping_at(maps, 0x7f00_0000_1000),
            Mapped::Other,
            "not its start"
        );
        assert_eq!(
            mapping_at(maps, 0x7f00_0001_0000),
            Mapped::Other,
            "anonymous"
        );
        assert_eq!(
            mapping_at(maps, 0x7f00_0002_0000),
            Mapped::Other,
            "another memfd"
        );
        assert_eq!(mapping_at(maps, 0x7f00_0003_0000), Mapped::Nothing);
    }

    /// The process's own hub (made by the crate's static keys before main)
    /// is what /proc/self/maps shows at its address.
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    #[test]
    fn the_live_hub_is_found_in_maps() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let addr = address().unwrap() as usize;
        assert_eq!(mapping_at(&maps, addr), Mapped::Hub, "{maps}");
        assert_eq!(mapping_at(&maps, addr + HUB_SIZE), Mapped::Nothing);
    }

    /// The hub is looked at without faulting and without
    /// process_vm_readv: what is mapped reads back, what is not is EFAULT.
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    #[test]
    fn memory_is_read_without_faulting() {
        let value: u64 = 0x0123_4567_89ab_cdef;
        let mut out = 0u64;
        sys::read_own_memory(&value as *const u64 as usize, &mut out).unwrap();
        assert_eq!(out, value);
        // Page 0 is never mapped (vm.mmap_min_addr).
        assert_eq!(sys::read_own_memory(8, &mut out), Err(libc::EFAULT));
        let mut h = HubHeader::default();
        sys::read_own_memory(address().unwrap() as usize + abi::PAGE_SIZE, &mut h).unwrap();
        assert_eq!((h.magic, h.version), (HUB_MAGIC, HUB_VERSION));
    }

    #[test]
    fn this_process_shares() {
        // The crate's own static keys created the hub before main.
        assert!(sharing(), "the hub was not created or joined");
    }
}
