//! The TLD ABI: the Rust mirror of `bpf/tld_abi.h` (the one definition;
//! a unit test checks every constant here against it). docs/tld-abi.md
//! explains the layout.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU16, AtomicU64};

/// Marks an initialised metadata page (`"TLD1"` little-endian).
pub const MAGIC: u32 = 0x3144_4c54;
/// Layout version of the metadata page.
pub const VERSION: u16 = 1;
/// Size of the metadata page; no block crosses a page of this size.
pub const PAGE_SIZE: usize = 4096;
/// Bytes of a key name field, NUL included (names are 1 to 61 bytes).
pub const NAME_LEN: usize = 62;
/// Size of one metadata entry (name and size).
pub const ENTRY_SIZE: usize = 64;
/// Size of the metadata page's header, before the entries.
pub const META_HDR_SIZE: usize = 64;
/// Key slots of a process.
pub const MAX_KEYS: usize = 63;
/// Size of a thread block's header, before the key data.
pub const DATA_HDR_SIZE: usize = 8;
/// Alignment of every key's offset (and the largest value alignment).
pub const ALIGN: usize = 8;
/// Bytes every block keeps, at least, for keys created after it.
pub const DYN_BUDGET: usize = 64;
/// Largest key: a page minus the block header.
pub const MAX_KEY_SIZE: usize = PAGE_SIZE - DATA_HDR_SIZE;

/// Where the scheduler pins the task-storage map; `SCX_HINTS_TLD_MAP` overrides it.
pub const MAP_PIN_PATH: &str = "/sys/fs/bpf/scx_hints/tld";
/// The map's name in the kernel.
pub const MAP_NAME: &str = "scx_hints_tld";
/// The environment variable that overrides [`MAP_PIN_PATH`].
pub const MAP_PIN_ENV: &str = "SCX_HINTS_TLD_MAP";

/// `struct tld_meta_entry`. The name is written by the one thread that
/// claimed the slot, before the size is published, and read by others only
/// after they saw the size (acquire): hence a cell, not a plain array.
#[repr(C)]
pub struct MetaEntry {
    /// The key's name, NUL-padded.
    pub name: UnsafeCell<[u8; NAME_LEN]>,
    /// Published last, with release order; 0 while the slot is being written.
    pub size: AtomicU16,
}

/// `struct tld_meta_page`. The C fields `cnt`, `data_size`, `capacity` and
/// `reserved0` are one little-endian 64-bit word here, updated with
/// compare-and-swap (see [`State`]).
#[repr(C, align(4096))]
pub struct MetaPage {
    /// [`MAGIC`] once the page is initialised.
    pub magic: u32,
    /// [`VERSION`].
    pub version: u16,
    /// [`META_HDR_SIZE`].
    pub hdr_size: u16,
    /// The packed [`State`] word.
    pub state: AtomicU64,
    /// A random value naming this page (tells a fresh page from a reused one).
    pub cookie: u32,
    /// Zero.
    pub reserved: [u8; META_HDR_SIZE - 20],
    /// The key slots, in creation order.
    pub entries: [MetaEntry; MAX_KEYS],
}

// SAFETY: every field is atomic except the names, whose accesses are
// ordered by the release/acquire of the entry's size (see meta.rs), and the
// header fields written before the page is published.
unsafe impl Sync for MetaPage {}

/// `struct tld_data_hdr`.
#[repr(C)]
pub struct DataHdr {
    /// Bytes of key data in this block.
    pub capacity: u16,
    /// Zero.
    pub reserved0: u16,
    /// Zero.
    pub reserved1: u32,
}

/// `struct tld_map_value`: two user pointers the kernel pins, and the
/// block's offset in its page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapValue {
    /// Address of the page holding the thread's block (a user pointer the kernel pins).
    pub data: u64,
    /// Address of the metadata page (a user pointer the kernel pins).
    pub meta: u64,
    /// Offset of the block in its page.
    pub start: u16,
    /// Zero.
    pub reserved: [u16; 3],
}

#[cfg(target_endian = "big")]
compile_error!("the TLD ABI is little-endian only");

/// The unpacked 64-bit state word of the metadata page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    /// Slots claimed.
    pub cnt: u16,
    /// Sum of the claimed keys' rounded sizes.
    pub data_size: u16,
    /// Key data bytes per thread block; 0 until the first block exists.
    pub capacity: u16,
}

impl State {
    /// Unpacks the state word.
    pub fn unpack(w: u64) -> Self {
        State {
            cnt: w as u16,
            data_size: (w >> 16) as u16,
            capacity: (w >> 32) as u16,
        }
    }

    /// Packs into the state word.
    pub fn pack(self) -> u64 {
        self.cnt as u64 | (self.data_size as u64) << 16 | (self.capacity as u64) << 32
    }
}

/// Rounds a key size up to the alignment of every key.
pub const fn round_up(size: usize) -> usize {
    (size + ALIGN - 1) & !(ALIGN - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layout_matches_the_c_structs() {
        assert_eq!(size_of::<MetaEntry>(), ENTRY_SIZE);
        assert_eq!(size_of::<MetaPage>(), PAGE_SIZE);
        assert_eq!(offset_of!(MetaPage, state), 8);
        assert_eq!(offset_of!(MetaPage, cookie), 16);
        assert_eq!(offset_of!(MetaPage, entries), META_HDR_SIZE);
        assert_eq!(offset_of!(MetaEntry, size), NAME_LEN);
        assert_eq!(size_of::<DataHdr>(), DATA_HDR_SIZE);
        assert_eq!(size_of::<MapValue>(), 24);
        assert_eq!(offset_of!(MapValue, start), 16);
        assert_eq!(META_HDR_SIZE + MAX_KEYS * ENTRY_SIZE, PAGE_SIZE);
    }

    #[test]
    fn state_word_puts_fields_where_c_reads_them() {
        let s = State {
            cnt: 3,
            data_size: 40,
            capacity: 120,
        };
        let bytes = s.pack().to_le_bytes();
        // C: cnt at offset 8, data_size at 10, capacity at 12 of the page.
        assert_eq!(u16::from_le_bytes([bytes[0], bytes[1]]), 3);
        assert_eq!(u16::from_le_bytes([bytes[2], bytes[3]]), 40);
        assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 120);
        assert_eq!(State::unpack(s.pack()), s);
    }

    #[test]
    fn rounding() {
        assert_eq!(round_up(1), 8);
        assert_eq!(round_up(8), 8);
        assert_eq!(round_up(9), 16);
    }

    /// Every `#define` of tld_abi.h that has a Rust twin has the same value.
    #[test]
    fn constants_match_the_header() {
        let header = include_str!("../../../bpf/tld_abi.h");
        let defs = crate::cdefs::parse(header);
        let num = |n: &str| defs.number(n).unwrap_or_else(|| panic!("{n} missing"));
        assert_eq!(num("TLD_MAGIC"), MAGIC as i64);
        assert_eq!(num("TLD_VERSION"), VERSION as i64);
        assert_eq!(num("TLD_PAGE_SIZE"), PAGE_SIZE as i64);
        assert_eq!(num("TLD_NAME_LEN"), NAME_LEN as i64);
        assert_eq!(num("TLD_ENTRY_SIZE"), ENTRY_SIZE as i64);
        assert_eq!(num("TLD_META_HDR_SIZE"), META_HDR_SIZE as i64);
        assert_eq!(num("TLD_MAX_KEYS"), MAX_KEYS as i64);
        assert_eq!(num("TLD_DATA_HDR_SIZE"), DATA_HDR_SIZE as i64);
        assert_eq!(num("TLD_ALIGN"), ALIGN as i64);
        assert_eq!(num("TLD_DYN_BUDGET"), DYN_BUDGET as i64);
        assert_eq!(
            defs.string("TLD_MAP_PIN_PATH").as_deref(),
            Some(MAP_PIN_PATH)
        );
        assert_eq!(defs.string("TLD_MAP_NAME").as_deref(), Some(MAP_NAME));
    }
}
