//! A copy whose published metadata page is not the hub (another thread of
//! it fell back to a page of its own while this one found the hub) must not
//! share blocks through the hub: its keys' offsets are those of its own
//! page, not of the other copies'. The test helper that replaces the page
//! puts copy 1 in that state. Its own binary: the state is process-wide.

use scx_hints as first;
use scx_hints_second_copy as second;

#[test]
fn a_copy_with_a_page_of_its_own_shares_no_block() {
    std::env::set_var(first::tld::abi::MAP_PIN_ENV, "/nonexistent/scx_hints/tld");
    assert!(first::tld::testing::shares_process_state());
    first::tld::testing::replace_meta_page();
    assert!(
        !first::tld::testing::shares_process_state(),
        "copy 1 shares blocks while its metadata page is not the hub"
    );
    assert!(second::tld::testing::shares_process_state());
    let a = first::tld::create_key::<u64>("private.first").unwrap();
    let b = second::tld::create_key::<u64>("private.second").unwrap();
    std::thread::spawn(move || {
        a.set(0x1111);
        b.set(0x2222);
        let blocks = (
            first::tld::testing::block_address(),
            second::tld::testing::block_address(),
        );
        assert!(blocks.0.is_some() && blocks.1.is_some());
        assert_ne!(
            blocks.0, blocks.1,
            "copy 1 put its private page's keys into the hub's block"
        );
        assert_eq!(a.get(), Some(0x1111));
        assert_eq!(b.get(), Some(0x2222));
    })
    .join()
    .unwrap();
}
