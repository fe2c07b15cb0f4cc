//! Two copies of the crate in one process (scx_hints and the same source
//! built as scx_hints_second_copy) share one metadata page and one block
//! per thread: keys and values of either are the other's.

use scx_hints as first;
use scx_hints_second_copy as second;

/// No map: these tests need no root and must not find a scheduler's.
/// Set once, before any test of this binary reads the environment (the
/// tests run on parallel threads).
fn no_map_here() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::env::set_var(first::tld::abi::MAP_PIN_ENV, "/nonexistent/scx_hints/tld")
    });
}

#[test]
fn both_copies_use_one_metadata_page_and_one_block() {
    no_map_here();
    // Both copies' static keys were created before main: each found or
    // made the process's metadata page then.
    let meta = first::tld::testing::meta_address().expect("copy 1 has a metadata page");
    assert_eq!(
        second::tld::testing::meta_address(),
        Some(meta),
        "the two copies made a metadata page each"
    );
    let a = first::tld::create_key::<u64>("two_copies.first").unwrap();
    let b = second::tld::create_key::<u32>("two_copies.second").unwrap();
    assert_ne!(a.offset(), b.offset(), "keys of both copies share one page");
    std::thread::spawn(move || {
        a.set(0x1111_2222_3333_4444);
        b.set(0x5555_6666);
        let block = first::tld::testing::block_address().unwrap();
        assert_eq!(
            second::tld::testing::block_address(),
            Some(block),
            "the two copies made a block each for one thread"
        );
        // Each copy reads the other's key by name, at the same place.
        let b_seen_by_first = first::tld::find_key::<u32>("two_copies.second")
            .expect("copy 1 sees copy 2's key")
            .unwrap();
        assert_eq!(b_seen_by_first.offset(), b.offset());
        assert_eq!(b_seen_by_first.get(), Some(0x5555_6666));
        let a_seen_by_second = second::tld::find_key::<u64>("two_copies.first")
            .expect("copy 2 sees copy 1's key")
            .unwrap();
        assert_eq!(a_seen_by_second.get(), Some(0x1111_2222_3333_4444));
        // The hints themselves are one: a class set through one copy is
        // the class the other reads (and the scheduler).
        first::set_latency_class(first::LatencyClass::Background);
        assert_eq!(second::latency_class(), second::LatencyClass::Background);
        second::set_priority(7).unwrap();
        assert_eq!(first::priority(), 7);
    })
    .join()
    .unwrap();
}

/// The block lives while any copy uses it: one copy releasing it (what its
/// thread-exit code does) leaves it to the other, and coming back adopts
/// it again; the last one frees it.
#[test]
fn a_block_outlives_one_copy_s_release() {
    no_map_here();
    let a = first::tld::get_or_create_key::<u64>("two_copies.release_first").unwrap();
    let b = second::tld::get_or_create_key::<u64>("two_copies.release_second").unwrap();
    std::thread::spawn(move || {
        a.set(1);
        b.set(2);
        let block = first::tld::testing::block_address().unwrap();
        first::tld::testing::release_thread();
        assert_eq!(first::tld::testing::block_address(), None);
        // Still copy 2's: its values are intact.
        assert_eq!(second::tld::testing::block_address(), Some(block));
        assert_eq!(b.get(), Some(2));
        let a_in_second = second::tld::find_key::<u64>("two_copies.release_first")
            .unwrap()
            .unwrap();
        assert_eq!(a_in_second.get(), Some(1));
        // Copy 1 comes back to the same block.
        assert_eq!(a.get(), Some(1));
        assert_eq!(first::tld::testing::block_address(), Some(block));
        // Both let go: the next use starts a fresh, zeroed block.
        first::tld::testing::release_thread();
        second::tld::testing::release_thread();
        assert_eq!(b.get(), Some(0), "a block outlived its last user");
        assert_eq!(a.get(), Some(0));
        assert_eq!(b.get(), Some(0));
        assert_eq!(
            first::tld::testing::block_address(),
            second::tld::testing::block_address()
        );
    })
    .join()
    .unwrap();
}

/// The hub's pthread key, read from the hub header (offset 16 of its
/// second page, docs/tld-abi.md).
fn hub_thread_key() -> libc::pthread_key_t {
    let hub = first::tld::testing::process_state_address().expect("a hub address");
    assert!(first::tld::testing::shares_process_state());
    // SAFETY: the hub is mapped for the life of the process.
    unsafe { ((hub + 4096 + 16) as *const u32).read() as libc::pthread_key_t }
}

/// libc may clear the hub key's value before the copies' thread-exit code
/// runs (musl clears every value before later destructors; a writer
/// cleaning up from its own key's destructor sees it on glibc). Each copy
/// must still release the block through the record it keeps: found by the
/// key, a null record made every copy free the block (a double free that
/// glibc aborts on).
#[test]
fn a_thread_whose_key_value_was_cleared_exits_cleanly() {
    no_map_here();
    let a = first::tld::get_or_create_key::<u64>("two_copies.cleared_first").unwrap();
    let b = second::tld::get_or_create_key::<u64>("two_copies.cleared_second").unwrap();
    let key = hub_thread_key();
    for _ in 0..20 {
        std::thread::spawn(move || {
            a.set(1);
            b.set(2);
            assert_eq!(
                first::tld::testing::block_address(),
                second::tld::testing::block_address()
            );
            // SAFETY: the hub's key, alive for the life of the process.
            assert_eq!(
                unsafe { libc::pthread_setspecific(key, std::ptr::null()) },
                0
            );
            // The copies' thread-local state is torn down at the real thread exit.
        })
        .join()
        .unwrap();
    }
    // Still sound after: a new thread gets a fresh shared block.
    std::thread::spawn(move || {
        assert_eq!(a.get(), Some(0));
        assert_eq!(b.get(), Some(0));
        assert_eq!(
            first::tld::testing::block_address(),
            second::tld::testing::block_address()
        );
    })
    .join()
    .unwrap();
}
