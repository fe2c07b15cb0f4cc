//! Moving a value between a thread's block and the caller one aligned 8-byte
//! word at a time. A plain or volatile store of a struct may be compiled to
//! several narrower stores (an optimized build stores a two-`u32` struct as
//! two 4-byte stores), so a reader could see half of one value and half of
//! another; a single-copy atomic access per word rules that out. The bytes
//! after a value up to its rounded size are the key's own padding: stores
//! zero them.

use super::Pod;
use std::mem::{size_of, MaybeUninit};
use std::sync::atomic::{AtomicU64, Ordering};

/// Stores `value` at `dst`.
///
/// # Safety
/// `dst` is 8-byte aligned with `round_up(size_of::<T>())` bytes writable.
#[inline(always)]
pub unsafe fn store<T: Pod>(dst: *mut u8, value: T) {
    let src = &value as *const T as *const u8;
    let size = size_of::<T>();
    let mut at = 0;
    while at < size {
        let n = (size - at).min(8);
        let mut word = [0u8; 8];
        // SAFETY: `n` bytes of `value` from `at` exist; Pod has no padding.
        unsafe { std::ptr::copy_nonoverlapping(src.add(at), word.as_mut_ptr(), n) };
        // SAFETY: an aligned word of the caller's writable range.
        unsafe { AtomicU64::from_ptr(dst.add(at) as *mut u64) }
            .store(u64::from_ne_bytes(word), Ordering::Relaxed);
        at += 8;
    }
}

/// Loads a `T` from `src`.
///
/// # Safety
/// `src` is 8-byte aligned with `round_up(size_of::<T>())` bytes readable.
#[inline(always)]
pub unsafe fn load<T: Pod>(src: *const u8) -> T {
    let mut value = MaybeUninit::<T>::uninit();
    let dst = value.as_mut_ptr() as *mut u8;
    let size = size_of::<T>();
    let mut at = 0;
    while at < size {
        let n = (size - at).min(8);
        // SAFETY: an aligned word of the caller's readable range.
        let word = unsafe { AtomicU64::from_ptr(src.add(at) as *mut u64) }
            .load(Ordering::Relaxed)
            .to_ne_bytes();
        // SAFETY: `n` bytes of `value` from `at` exist.
        unsafe { std::ptr::copy_nonoverlapping(word.as_ptr(), dst.add(at), n) };
        at += 8;
    }
    // SAFETY: every byte was written, and any bit pattern is a valid Pod.
    unsafe { value.assume_init() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(8))]
    struct Block([u8; 32]);

    #[test]
    fn values_round_trip_and_padding_is_zeroed() {
        let mut b = Block([0xff; 32]);
        let p = b.0.as_mut_ptr();
        // SAFETY: p is 8-aligned with 32 bytes.
        unsafe {
            store(p, [1u8, 2, 3]);
            assert_eq!(load::<[u8; 3]>(p), [1, 2, 3]);
            store(p.add(8), [7u16; 9]);
            assert_eq!(load::<[u16; 9]>(p.add(8)), [7; 9]);
        }
        assert_eq!(b.0[..8], [1, 2, 3, 0, 0, 0, 0, 0]);
        assert_eq!(b.0[26..], [0u8; 6], "the rounded tail is the key's own");
    }
}
