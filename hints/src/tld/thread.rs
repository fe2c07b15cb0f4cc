//! Each thread's data block and its registration with the kernel.
//!
//! The block is allocated on the thread's first hint access, sized by the
//! frozen capacity and aligned to its own power-of-two size so that it never
//! crosses a page (the kernel refuses uptrs that do). It is registered in the
//! task-storage map with the thread's pidfd; after that, accesses are plain
//! loads and stores into it. At thread exit the map entry is deleted before
//! the block is freed, so the kernel never keeps reading reused memory.

use super::abi::{self, DataHdr, MapValue};
use super::{map, meta, sys};
use std::cell::Cell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Registration outcome of this thread, for diagnostics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// The thread has not touched a hint yet.
    None,
    /// No map is pinned (or it cannot be opened): hints stay in the block.
    NoMap,
    /// The kernel refused the update (errno).
    Failed(i32),
    /// The thread's block is in the map.
    Registered,
}

pub struct ThreadBlock {
    /// The block (header + key data), or null before first use.
    base: Cell<*mut u8>,
    /// Block-relative end of key data (header + capacity).
    end: Cell<usize>,
    /// The map epoch this thread last registered for (0: never).
    epoch: Cell<u32>,
    state: Cell<Registration>,
    /// The map this block is registered in (kept open: the entry must be
    /// deleted from it, even if the pin has moved on since).
    map: Cell<Option<Arc<OwnedFd>>>,
    /// An entry could not be deleted: the kernel may still read the block,
    /// which must then never be freed.
    stuck: Cell<bool>,
}

thread_local! {
    static BLOCK: ThreadBlock = const {
        ThreadBlock {
            base: Cell::new(ptr::null_mut()),
            end: Cell::new(0),
            epoch: Cell::new(0),
            state: Cell::new(Registration::None),
            map: Cell::new(None),
            stuck: Cell::new(false),
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
        self.register();
        (offset + size <= self.end.get()).then(|| self.base.get().wrapping_add(offset))
    }

    fn allocate(&self) -> bool {
        let Ok(capacity) = meta::freeze_capacity() else {
            return false;
        };
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
        self.base.set(p as *mut u8);
        self.end.set(size);
        true
    }

    /// Registers the block in the current map (or notes that there is none).
    fn register(&self) {
        // Recorded first: an access made while registering (a logger that
        // sets a hint, say) takes the fast path instead of recursing.
        self.epoch.set(map::EPOCH.load(Ordering::Acquire));
        let base = self.base.get() as usize;
        let Ok(meta) = meta::page() else { return };
        let value = MapValue {
            data: (base & !(abi::PAGE_SIZE - 1)) as u64,
            meta: meta as *const _ as u64,
            start: (base & (abi::PAGE_SIZE - 1)) as u16,
            reserved: [0; 3],
        };
        let current = map::current();
        // Leave the map the block was registered in, if that is not the
        // current one: its entry would keep pointing at this block.
        if let Some(old) = self.map.take() {
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &old)) {
                self.map.set(Some(old));
            } else if !delete_entry(&old) {
                self.stuck.set(true);
            }
        }
        let outcome = match current {
            None => Registration::NoMap,
            Some(fd) => {
                let r = sys::thread_pidfd()
                    .and_then(|pidfd| sys::map_update(fd.as_raw_fd(), &pidfd, &value));
                match r {
                    Ok(()) => {
                        self.map.set(Some(fd));
                        Registration::Registered
                    }
                    Err(e) => {
                        log::debug!(
                            "scx_hints: registering thread {} failed: {e}",
                            sys::gettid()
                        );
                        Registration::Failed(e.raw_os_error().unwrap_or(0))
                    }
                }
            }
        };
        self.state.set(outcome);
    }
}

/// Deletes the calling thread's entry from `map`; true if it is gone.
fn delete_entry(map: &OwnedFd) -> bool {
    let r = sys::thread_pidfd().and_then(|pidfd| sys::map_delete(map.as_raw_fd(), &pidfd));
    // ENOENT: the entry is gone already.
    r.is_ok() || r.is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT))
}

impl ThreadBlock {
    /// Deletes the map entry, then frees the block; the next access starts
    /// over. If the entry cannot be deleted, the block is kept: the kernel
    /// may still read it, so it must never be reused.
    fn release(&self) {
        let base = self.base.get();
        if base.is_null() {
            return;
        }
        if let Some(m) = self.map.take() {
            if !delete_entry(&m) {
                self.stuck.set(true);
            }
        }
        if self.stuck.replace(false) {
            log::debug!(
                "scx_hints: thread {}: entry not deleted, block kept",
                sys::gettid()
            );
        } else {
            // SAFETY: allocated by posix_memalign in allocate(), registered nowhere.
            unsafe { libc::free(base as *mut libc::c_void) };
        }
        self.base.set(ptr::null_mut());
        self.epoch.set(0);
        self.state.set(Registration::None);
    }
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
        .try_with(|b| b.state.get())
        .unwrap_or(Registration::None)
}

/// Sets the thread up now (allocation and registration) instead of at its
/// first hint access; returns the outcome.
pub fn register_now() -> Registration {
    BLOCK
        .try_with(|b| {
            b.ptr(abi::DATA_HDR_SIZE, 0);
            b.state.get()
        })
        .unwrap_or(Registration::None)
}

/// The address of this thread's block (tests compare it with what BPF sees).
pub fn block_address() -> Option<usize> {
    BLOCK
        .try_with(|b| b.base.get() as usize)
        .ok()
        .filter(|&a| a != 0)
}
