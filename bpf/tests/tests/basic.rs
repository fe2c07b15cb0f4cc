//! Key creation errors, and BPF finding every created key by name.

use scx_hints::tld::{self, KeyError, Registration};
use tld_kernel_tests::fixture;

#[test]
fn bpf_finds_every_key_and_nothing_else() {
    let Some(fx) = fixture() else { return };

    // Invalid creations, with upstream's error codes.
    assert_eq!(
        tld::create_key::<u64>("").unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(
        tld::create_key::<u8>(&"n".repeat(62)).unwrap_err(),
        KeyError::InvalidName
    );
    assert_eq!(
        tld::create_key::<[u8; 4089]>("huge").unwrap_err(),
        KeyError::TooBig
    );

    let k8 = tld::create_key::<u64>("basic.u64").unwrap();
    let k4 = tld::create_key::<u32>("basic.u32").unwrap();
    let k2 = tld::create_key::<u16>("basic.u16").unwrap();
    let k1 = tld::create_key::<u8>("basic.u8").unwrap();
    assert_eq!(
        tld::create_key::<u64>("basic.u64").unwrap_err(),
        KeyError::Exists
    );
    assert_eq!(
        tld::create_key::<u64>("basic.u64").unwrap_err().errno(),
        libc::EEXIST
    );

    std::thread::spawn(move || {
        k8.set(0x1122_3344_5566_7788);
        k4.set(0xdead_beef);
        k2.set(0xabcd);
        k1.set(0x5a);
        assert_eq!(tld::registration(), Registration::Registered);

        let r = fx.read("basic.u64", 8, 0);
        assert_eq!(r.init_err, 0);
        assert_eq!(r.value, Some(0x1122_3344_5566_7788));
        assert_eq!(
            r.cached,
            k8.offset() as i32,
            "BPF and user space agree on the offset"
        );
        let r4 = fx.read("basic.u32", 4, 1);
        let r2 = fx.read("basic.u16", 2, 2);
        let r1 = fx.read("basic.u8", 1, 3);
        assert_eq!(
            [r4.value, r2.value, r1.value],
            [Some(0xdead_beef), Some(0xabcd), Some(0x5a)]
        );
        assert_eq!(
            [r4.cached, r2.cached, r1.cached],
            [k4.offset() as i32, k2.offset() as i32, k1.offset() as i32]
        );

        // Reading a key as another size is refused, not a read of its
        // neighbour's bytes.
        assert_eq!(fx.read("basic.u32", 8, 5).value, None);
        assert_eq!(fx.read("basic.u32", 4, 5).value, Some(0xdead_beef));

        // A name that does not exist: no value, and the miss is cached as
        // the number of entries searched.
        let miss = fx.read("basic.absent", 8, 4);
        assert_eq!(miss.value, None);
        assert!(miss.cached <= 0, "a miss caches a non-positive count");

        // Updates are seen without re-registration: a plain store.
        k8.set(42);
        assert_eq!(fx.read("basic.u64", 8, 0).value, Some(42));
    })
    .join()
    .unwrap();
}

#[test]
fn unregistered_thread_reads_nothing() {
    let Some(fx) = fixture() else { return };
    std::thread::spawn(move || {
        // This thread never touched a hint: no map entry.
        let r = fx.read("basic.u64", 8, 0);
        assert_eq!(r.init_err, -libc::ENOENT);
        assert_eq!(r.value, None);
    })
    .join()
    .unwrap();
}
