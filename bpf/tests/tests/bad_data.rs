//! Garbage in the metadata page or the data block is ignored and counted by
//! the BPF library, never followed out of bounds.

use scx_hints::tld::{self, abi};
use tld_kernel_tests::fixture;

unsafe fn poke<T>(addr: usize, v: T) {
    // SAFETY: the caller points into this process's own TLD pages.
    unsafe { std::ptr::write_volatile(addr as *mut T, v) }
}

unsafe fn peek<T>(addr: usize) -> T {
    // SAFETY: as in poke.
    unsafe { std::ptr::read_volatile(addr as *const T) }
}

#[test]
fn garbage_is_ignored_and_counted() {
    let Some(fx) = fixture() else { return };
    std::thread::spawn(move || {
        let key = tld::create_key::<u64>("bad.value").unwrap();
        key.set(9);
        assert_eq!(fx.read("bad.value", 8, 0).value, Some(9));
        let meta = tld::testing::meta_address().unwrap();
        let block = tld::testing::block_address().unwrap();
        let (magic0, meta0, offset0) = fx.stats();

        // SAFETY (all pokes): addresses inside this process's meta page and
        // this thread's block, restored before the thread ends.
        unsafe {
            // A wrong magic: nothing is read, counted.
            poke::<u32>(meta, 0xdead_beef);
            fx.forget();
            assert_eq!(fx.read("bad.value", 8, 0).init_err, -libc::EINVAL);
            poke::<u32>(meta, abi::MAGIC);
            assert!(fx.stats().0 > magic0);

            // An absurd count: the page is not searched, counted.
            let cnt_addr = meta + std::mem::offset_of!(abi::MetaPage, state);
            let cnt: u16 = peek(cnt_addr);
            poke::<u16>(cnt_addr, 60_000);
            fx.forget();
            assert_eq!(fx.read("bad.value", 8, 0).value, None);
            assert_eq!(fx.read("bad.nothing", 8, 1).value, None);
            poke::<u16>(cnt_addr, cnt);
            assert!(fx.stats().1 > meta0);

            // An absurd size in the first entry: the search stops, counted.
            let size_addr = meta + abi::META_HDR_SIZE + abi::NAME_LEN;
            let size: u16 = peek(size_addr);
            poke::<u16>(size_addr, u16::MAX);
            fx.forget();
            let meta1 = fx.stats().1;
            assert_eq!(fx.read("bad.value", 8, 0).value, None);
            assert!(fx.stats().1 > meta1);
            poke::<u16>(size_addr, size);

            // An unterminated name: never matches.
            let name_addr = meta + abi::META_HDR_SIZE;
            let saved: [u8; abi::NAME_LEN] = peek(name_addr);
            poke::<[u8; abi::NAME_LEN]>(name_addr, [b'x'; abi::NAME_LEN]);
            fx.forget();
            assert_eq!(fx.read(&"x".repeat(61), 8, 0).value, None);
            poke::<[u8; abi::NAME_LEN]>(name_addr, saved);

            // A block capacity beyond the page: nothing is read, counted.
            let cap: u16 = peek(block);
            poke::<u16>(block, u16::MAX);
            fx.forget();
            assert_eq!(fx.read("bad.value", 8, 0).init_err, -libc::EINVAL);
            poke::<u16>(block, cap);
            assert!(fx.stats().2 > offset0);
        }
        // Restored: all is well again.
        fx.forget();
        assert_eq!(fx.read("bad.value", 8, 0).value, Some(9));
    })
    .join()
    .unwrap();
}
