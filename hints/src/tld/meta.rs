//! The process's metadata page and lock-free key creation.
//!
//! A key is claimed by one compare-and-swap on the page's state word (slot
//! count and data size move together, and fail once the per-thread block
//! size is frozen and the key would not fit); then its name is written and
//! its size published last with release order. Readers treat size 0 as
//! "being written" and wait for it, so two threads can never both create the
//! same name.

use super::abi::{self, MetaPage, State};
use super::sys;
use super::KeyError;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

static META: AtomicPtr<MetaPage> = AtomicPtr::new(ptr::null_mut());

/// The claim gate: key claims in flight, plus `FORKING` while one fork()
/// holds the gate. A child must never inherit a slot claimed by a thread
/// that does not exist in it (it would stay "being written" forever), nor a
/// count of claims that no thread of its will ever drop. `FORKING` is owned
/// by one fork at a time, from its prepare handler to its parent and child
/// handlers: a second fork waits for it, so no fork's parent handler can
/// open the gate under another fork in progress.
static CLAIMS: AtomicU32 = AtomicU32::new(0);
const FORKING: u32 = 1 << 31;

fn enter_claim() {
    loop {
        let v = CLAIMS.load(Ordering::Acquire);
        if v & FORKING != 0 {
            std::thread::yield_now();
        } else if CLAIMS
            .compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return;
        }
    }
}

fn leave_claim() {
    CLAIMS.fetch_sub(1, Ordering::Release);
}

/// pthread_atfork prepare: takes the gate from other forks, blocks new
/// claims and waits for those in flight.
pub fn before_fork() {
    loop {
        let v = CLAIMS.load(Ordering::Acquire);
        if v & FORKING != 0 {
            std::thread::yield_now();
        } else if CLAIMS
            .compare_exchange_weak(v, v | FORKING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            break;
        }
    }
    while CLAIMS.load(Ordering::Acquire) & !FORKING != 0 {
        std::thread::yield_now();
    }
}

/// pthread_atfork parent: the fork is done, claims and other forks may go on.
pub fn after_fork_parent() {
    CLAIMS.fetch_and(!FORKING, Ordering::Release);
}

/// pthread_atfork child: the forking thread is the child's only thread and
/// held no claim, so the gate starts empty.
pub fn after_fork_child() {
    CLAIMS.store(0, Ordering::Release);
}

/// True while a fork waits for claims in flight (for tests).
pub fn fork_waiting() -> bool {
    CLAIMS.load(Ordering::Acquire) & FORKING != 0
}

/// The process's metadata page, created on first use.
pub fn page() -> Result<&'static MetaPage, KeyError> {
    let p = META.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: once published, the page lives until the process exits.
        return Ok(unsafe { &*p });
    }
    // The hub shared with the other TLD users of the process, or a page of
    // this copy's own (see shared.rs).
    let (new, shared) = super::shared::meta_page()?;
    match META.compare_exchange(ptr::null_mut(), new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            super::map::install_fork_handler();
            // SAFETY: just published; never unmapped.
            Ok(unsafe { &*new })
        }
        Err(winner) => {
            // A racing thread of this copy published first: the same hub,
            // or a private page to give back.
            if !shared && new != winner {
                // SAFETY: `new` was never published.
                unsafe { libc::munmap(new as *mut libc::c_void, abi::PAGE_SIZE) };
            }
            // SAFETY: as above, the winner's page lives forever.
            Ok(unsafe { &*winner })
        }
    }
}

/// Replaces the process's metadata page with a new, empty one of this
/// copy's own (the old one is leaked, the hub left to other copies) and
/// makes every thread register again. This copy stops sharing blocks
/// through the hub (shared.rs shares only while the published page is the
/// hub); the hub's key stays known so that records made before are
/// still released properly. Only for a test
/// process that owns all keys: keys of the old page are not carried over.
pub fn replace_page_for_test() -> Result<&'static MetaPage, KeyError> {
    let old = META.load(Ordering::Acquire);
    let new = page_new()?;
    if META
        .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // SAFETY: `new` was never published.
        unsafe { libc::munmap(new as *mut libc::c_void, abi::PAGE_SIZE) };
    }
    super::map::install_fork_handler();
    super::map::EPOCH.fetch_add(1, Ordering::Release);
    page()
}

/// A new metadata page of this copy's own, not yet published.
pub fn page_new() -> Result<*mut MetaPage, KeyError> {
    // SAFETY: an anonymous private mapping; the result is checked.
    let new = unsafe {
        libc::mmap(
            ptr::null_mut(),
            abi::PAGE_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if new == libc::MAP_FAILED {
        return Err(KeyError::NoMemory);
    }
    let new = new as *mut MetaPage;
    // SAFETY: the mapping is zeroed, page-aligned and ours alone until published.
    unsafe {
        (*new).magic = abi::MAGIC;
        (*new).version = abi::VERSION;
        (*new).hdr_size = abi::META_HDR_SIZE as u16;
        (*new).cookie = sys::random_u32();
    }
    Ok(new)
}

/// Test only: forgets the process's page in this copy (see
/// `testing::forget_process_state`); returns it.
pub fn forget_for_test() -> *mut MetaPage {
    META.swap(ptr::null_mut(), Ordering::AcqRel)
}

/// The page if it exists, without creating it.
pub fn existing_page() -> Option<&'static MetaPage> {
    let p = META.load(Ordering::Acquire);
    // SAFETY: see page().
    (!p.is_null()).then(|| unsafe { &*p })
}

pub fn state(meta: &MetaPage) -> State {
    State::unpack(meta.state.load(Ordering::Acquire))
}

/// Checks a key name: 1 to NAME_LEN - 1 bytes, no NUL.
pub fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() || name.len() >= abi::NAME_LEN || name.as_bytes().contains(&0) {
        return Err(KeyError::InvalidName);
    }
    Ok(())
}

/// Waits until slot `i` is published and returns its size.
fn published_size(meta: &MetaPage, i: usize) -> u16 {
    let mut spins = 0u32;
    loop {
        let size = meta.entries[i].size.load(Ordering::Acquire);
        if size != 0 {
            return size;
        }
        // The claimer writes the name right after claiming; it can only be
        // slow if it was preempted in between.
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// The name of a published entry (call only after its size was seen).
fn name_of(meta: &MetaPage, i: usize) -> &[u8] {
    // SAFETY: the entry is published: its name is never written again.
    let raw = unsafe { &*meta.entries[i].name.get() };
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    &raw[..len]
}

/// A key found or created: its offset in the thread block and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub index: usize,
    pub offset: usize,
    pub size: usize,
}

/// Finds `name` among the published entries, searching from entry `from`
/// with `offset` being entry `from`'s offset. Returns the slot or where the
/// search ended (index, offset).
fn find_from(
    meta: &MetaPage,
    name: &[u8],
    mut i: usize,
    mut offset: usize,
    cnt: usize,
) -> Result<Slot, (usize, usize)> {
    while i < cnt {
        let size = published_size(meta, i) as usize;
        if name_of(meta, i) == name {
            return Ok(Slot {
                index: i,
                offset,
                size,
            });
        }
        offset += abi::round_up(size);
        i += 1;
    }
    Err((i, offset))
}

/// Finds an existing key by name.
pub fn find(name: &str) -> Option<Slot> {
    find_in(existing_page()?, name)
}

/// [`find`] on a given page.
pub fn find_in(meta: &MetaPage, name: &str) -> Option<Slot> {
    let cnt = state(meta).cnt as usize;
    find_from(
        meta,
        name.as_bytes(),
        0,
        abi::DATA_HDR_SIZE,
        cnt.min(abi::MAX_KEYS),
    )
    .ok()
}

/// A slot claimed but not yet published: readers see it as "being written".
/// Dropping it publishes it: a slot left unpublished would stall every
/// later key creation and BPF search.
pub struct Claim {
    meta: &'static MetaPage,
    slot: Slot,
}

impl Claim {
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// Makes the key visible to readers.
    pub fn publish(self) -> Slot {
        self.slot
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.meta.entries[self.slot.index]
            .size
            .store(self.slot.size as u16, Ordering::Release);
        leave_claim();
    }
}

/// Claims a slot for a new key and writes its name; the size is published
/// by [`Claim::publish`].
pub fn claim(name: &str, size: usize) -> Result<Claim, KeyError> {
    check_name(name)?;
    claim_in(page()?, name, size)
}

/// [`claim`] on a given page.
pub fn claim_in(meta: &'static MetaPage, name: &str, size: usize) -> Result<Claim, KeyError> {
    check_name(name)?;
    if size == 0 {
        return Err(KeyError::InvalidSize);
    }
    if size > abi::MAX_KEY_SIZE {
        return Err(KeyError::TooBig);
    }
    enter_claim();
    let r = claim_slot(meta, name, size);
    if r.is_err() {
        leave_claim();
    }
    r
}

/// The claim itself; the caller has entered the claim gate.
fn claim_slot(meta: &'static MetaPage, name: &str, size: usize) -> Result<Claim, KeyError> {
    let rounded = abi::round_up(size);
    let (mut checked, mut checked_off) = (0, abi::DATA_HDR_SIZE);
    let mut word = meta.state.load(Ordering::Acquire);
    loop {
        let st = State::unpack(word);
        let cnt = (st.cnt as usize).min(abi::MAX_KEYS);
        // Compare with the entries claimed since the last look.
        match find_from(meta, name.as_bytes(), checked, checked_off, cnt) {
            Ok(_) => return Err(KeyError::Exists),
            Err((i, off)) => (checked, checked_off) = (i, off),
        }
        if cnt >= abi::MAX_KEYS {
            return Err(KeyError::NoSlot);
        }
        let limit = if st.capacity != 0 {
            st.capacity as usize
        } else {
            abi::MAX_KEY_SIZE
        };
        let new_size = st.data_size as usize + rounded;
        if new_size > limit {
            return Err(KeyError::TooBig);
        }
        let next = State {
            cnt: st.cnt + 1,
            data_size: new_size as u16,
            capacity: st.capacity,
        };
        match meta.state.compare_exchange_weak(
            word,
            next.pack(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                let index = st.cnt as usize;
                // SAFETY: slot `index` is ours alone until its size is
                // published; nobody reads its name before that.
                unsafe {
                    let dst = meta.entries[index].name.get() as *mut u8;
                    ptr::copy_nonoverlapping(name.as_ptr(), dst, name.len());
                }
                let slot = Slot {
                    index,
                    offset: abi::DATA_HDR_SIZE + st.data_size as usize,
                    size,
                };
                return Ok(Claim { meta, slot });
            }
            Err(now) => word = now,
        }
    }
}

/// Creates a key: claim and publish.
pub fn create(name: &str, size: usize) -> Result<Slot, KeyError> {
    claim(name, size).map(Claim::publish)
}

/// Freezes the per-thread key data size (on the first block) and returns it.
/// Keys created before this sized it; later keys share the slack, at least
/// [`abi::DYN_BUDGET`] bytes (the block is a power of two, so it can never
/// cross a page).
pub fn freeze_capacity() -> Result<u16, KeyError> {
    Ok(freeze_capacity_in(page()?))
}

/// [`freeze_capacity`] on a given page.
pub fn freeze_capacity_in(meta: &MetaPage) -> u16 {
    let mut word = meta.state.load(Ordering::Acquire);
    loop {
        let st = State::unpack(word);
        if st.capacity != 0 {
            return st.capacity;
        }
        let capacity = capacity_for(st.data_size as usize) as u16;
        let next = State { capacity, ..st };
        match meta.state.compare_exchange_weak(
            word,
            next.pack(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return capacity,
            Err(now) => word = now,
        }
    }
}

/// The key data capacity of a block that holds `data_size` bytes of keys
/// plus the run-time budget, using all of its power-of-two allocation.
pub fn capacity_for(data_size: usize) -> usize {
    let need = abi::DATA_HDR_SIZE + data_size + abi::DYN_BUDGET;
    need.next_power_of_two().min(abi::PAGE_SIZE) - abi::DATA_HDR_SIZE
}

/// A fresh, leaked metadata page for tests that must not share the
/// process's page.
#[cfg(test)]
pub fn test_page() -> &'static MetaPage {
    // SAFETY: MetaPage is plain data; all-zero is a valid empty page.
    let page: Box<MetaPage> = unsafe { Box::new_zeroed().assume_init() };
    Box::leak(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Barrier;

    #[test]
    fn offsets_are_prefix_sums_of_rounded_sizes() {
        let m = test_page();
        let a = claim_in(m, "a", 1).unwrap().publish();
        let b = claim_in(m, "b", 8).unwrap().publish();
        let c = claim_in(m, "c", 9).unwrap().publish();
        let d = claim_in(m, "d", 2).unwrap().publish();
        assert_eq!(
            [a.offset, b.offset, c.offset, d.offset],
            [8, 16, 24, 40],
            "every key starts 8-byte aligned after the 8-byte block header"
        );
        assert_eq!(state(m).data_size, 40);
        assert_eq!(state(m).cnt, 4);
        assert_eq!(find_in(m, "c"), Some(c));
        assert_eq!(find_in(m, "nope"), None);
    }

    #[test]
    fn errors() {
        let m = test_page();
        assert_eq!(claim_in(m, "", 4).err(), Some(KeyError::InvalidName));
        assert_eq!(
            claim_in(m, &"x".repeat(62), 4).err(),
            Some(KeyError::InvalidName)
        );
        assert!(claim_in(m, &"x".repeat(61), 4).is_ok());
        assert_eq!(claim_in(m, "nul\0", 4).err(), Some(KeyError::InvalidName));
        assert_eq!(claim_in(m, "zero", 0).err(), Some(KeyError::InvalidSize));
        assert_eq!(claim_in(m, "huge", 4089).err(), Some(KeyError::TooBig));
        claim_in(m, "dup", 4).unwrap().publish();
        assert_eq!(claim_in(m, "dup", 4).err(), Some(KeyError::Exists));
        assert_eq!(claim_in(m, "dup", 8).err(), Some(KeyError::Exists));
    }

    #[test]
    fn slots_run_out_at_63() {
        let m = test_page();
        for i in 0..abi::MAX_KEYS {
            claim_in(m, &format!("k{i}"), 1).unwrap().publish();
        }
        assert_eq!(claim_in(m, "one-more", 1).err(), Some(KeyError::NoSlot));
    }

    #[test]
    fn page_fills_up() {
        let m = test_page();
        claim_in(m, "big", 4000).unwrap().publish();
        assert_eq!(claim_in(m, "next", 89).err(), Some(KeyError::TooBig));
        assert!(claim_in(m, "fits", 88).is_ok());
    }

    #[test]
    fn frozen_capacity_limits_later_keys() {
        let m = test_page();
        claim_in(m, "static", 16).unwrap().publish();
        let cap = freeze_capacity_in(m) as usize;
        // 8 header + 16 data + 64 budget = 88 -> a 128-byte block.
        assert_eq!(cap, 120);
        assert_eq!(freeze_capacity_in(m) as usize, cap, "frozen once");
        claim_in(m, "late1", 64).unwrap().publish();
        claim_in(m, "late2", 40).unwrap().publish();
        assert_eq!(claim_in(m, "late3", 1).err(), Some(KeyError::TooBig));
        assert_eq!(state(m).data_size as usize, cap);
    }

    #[test]
    fn capacity_is_a_power_of_two_block() {
        for ds in [0, 8, 56, 64, 100, 1000, 4000, 4088] {
            let cap = capacity_for(ds);
            assert!((abi::DATA_HDR_SIZE + cap).is_power_of_two());
            assert!(abi::DATA_HDR_SIZE + cap <= abi::PAGE_SIZE);
            assert!(cap >= ds);
            if ds + abi::DYN_BUDGET <= abi::MAX_KEY_SIZE {
                assert!(cap >= ds + abi::DYN_BUDGET);
            }
        }
    }

    #[test]
    fn a_pending_slot_is_never_duplicated() {
        let m = test_page();
        let pending = claim_in(m, "pending", 4).unwrap();
        let t = std::thread::spawn(move || claim_in(m, "pending", 4).err());
        // The other thread can only finish by seeing the published slot.
        pending.publish();
        assert_eq!(t.join().unwrap(), Some(KeyError::Exists));
    }

    #[test]
    fn concurrent_creation_is_consistent() {
        let m = test_page();
        let threads = 16;
        let barrier = Barrier::new(threads);
        let results: Vec<Vec<(String, Result<Slot, KeyError>)>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        (0..8)
                            .map(|k| {
                                // Half the names are shared between thread pairs.
                                let name = if k % 2 == 0 {
                                    format!("shared-{}-{k}", t / 2)
                                } else {
                                    format!("own-{t}-{k}")
                                };
                                let size = 1 + (t * 7 + k * 13) % 24;
                                let r = claim_in(m, &name, size).map(Claim::publish);
                                (name, r)
                            })
                            .collect()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok: Vec<(String, Slot)> = results
            .iter()
            .flatten()
            .filter_map(|(n, r)| r.as_ref().ok().map(|s| (n.clone(), *s)))
            .collect();
        let names: HashSet<&String> = ok.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), ok.len(), "a name was created twice");
        assert_eq!(
            ok.len(),
            abi::MAX_KEYS,
            "128 attempts, 96 distinct names: all slots used"
        );
        for err in results
            .iter()
            .flatten()
            .filter_map(|(_, r)| r.as_ref().err())
        {
            assert!(
                matches!(err, KeyError::Exists | KeyError::NoSlot),
                "{err:?}"
            );
        }
        let mut spans: Vec<(usize, usize)> = ok
            .iter()
            .map(|(_, s)| (s.offset, s.offset + s.size))
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "keys overlap: {w:?}");
        }
        for (name, slot) in &ok {
            assert_eq!(find_in(m, name), Some(*slot));
            assert_eq!(slot.offset % abi::ALIGN, 0);
        }
    }
}
