//! A BPF search that meets a key still being created must not cache a
//! permanent miss (an upstream weak point): once the key is complete, the
//! next search finds it.

use scx_hints::tld;
use tld_kernel_tests::fixture;

#[test]
fn key_being_created_is_found_once_complete() {
    let Some(fx) = fixture() else { return };
    std::thread::spawn(move || {
        let first = tld::create_key::<u64>("window.first").unwrap();
        first.set(1);
        // Claim the second key's slot but leave its size unpublished: the
        // state a concurrent reader sees between claim and publish.
        let (offset, publish) = tld::testing::create_key_in_two_steps("window.second", 8).unwrap();
        let pending_index = tld::testing::key_count() as i32 - 1;

        let during = fx.read("window.second", 8, 0);
        assert_eq!(during.value, None, "not visible before it is published");
        assert_eq!(
            during.cached, -pending_index,
            "the search stopped at the slot being written, not past it"
        );
        // Entries before the pending slot still resolve.
        assert_eq!(fx.read("window.first", 8, 1).value, Some(1));

        assert_eq!(publish(), offset);
        let second = tld::find_key::<u64>("window.second").unwrap().unwrap();
        second.set(2);
        let after = fx.read("window.second", 8, 0);
        assert_eq!(after.value, Some(2), "found with the cached miss in place");
        assert_eq!(after.cached, offset as i32);
        // A miss cached over complete entries only skips those: a key
        // created later is still found.
        let miss = fx.read("window.third", 8, 2);
        assert_eq!(
            (miss.value, miss.cached),
            (None, -(tld::testing::key_count() as i32))
        );
        let third = tld::create_key::<u64>("window.third").unwrap();
        third.set(3);
        assert_eq!(fx.read("window.third", 8, 2).value, Some(3));
    })
    .join()
    .unwrap();
}
