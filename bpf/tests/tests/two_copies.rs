//! Two copies of the crate on one thread make one registration, through
//! which BPF reads the keys of both (before the copies shared their state,
//! each registered its own block and the last one won).

use scx_hints::tld;
use scx_hints_second_copy as second;
use tld_kernel_tests::fixture;

#[test]
fn bpf_reads_both_copies_keys_through_one_registration() {
    let Some(fx) = fixture() else { return };
    let a = tld::create_key::<u64>("two_copies.first").unwrap();
    let b = second::tld::create_key::<u32>("two_copies.second").unwrap();
    std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        assert!(!tld::thread_registered(me).unwrap());
        a.set(0x0123_4567_89ab_cdef);
        assert_eq!(tld::registration(), tld::Registration::Registered);
        b.set(0xfeed_f00d);
        assert_eq!(
            second::tld::registration(),
            second::tld::Registration::Registered
        );
        assert!(tld::thread_registered(me).unwrap());
        let ra = fx.read("two_copies.first", 8, 0);
        let rb = fx.read("two_copies.second", 4, 1);
        assert_eq!(
            (ra.value, rb.value),
            (Some(0x0123_4567_89ab_cdef), Some(0xfeed_f00d)),
            "BPF sees one copy's keys only: each registered a state of its own"
        );
        assert_eq!(
            (ra.cached, rb.cached),
            (a.offset() as i32, b.offset() as i32)
        );
        // Later stores of either copy are plain stores into the one block.
        a.set(5);
        b.set(6);
        assert_eq!(fx.read("two_copies.first", 8, 0).value, Some(5));
        assert_eq!(fx.read("two_copies.second", 4, 1).value, Some(6));
        // A key created after the registration is found too: the kernel
        // pinned the metadata page the process writes, not the memfd's.
        let late = second::tld::create_key::<u16>("two_copies.late").unwrap();
        late.set(0x4321);
        assert_eq!(fx.read("two_copies.late", 2, 2).value, Some(0x4321));
        // The scheduler's own hints are one, whichever copy sets them.
        second::set_latency_class(second::LatencyClass::Critical);
        assert_eq!(
            scx_hints::latency_class(),
            scx_hints::LatencyClass::Critical
        );
    })
    .join()
    .unwrap();
}

/// A thread's registration is gone once every copy let go of its block
/// (each deletes its entry before it drops its use; the last one frees the
/// block), and a copy that lets go first leaves the block to the other.
#[test]
fn no_registration_outlives_the_copies_of_a_thread() {
    let Some(_fx) = fixture() else { return };
    let a = tld::get_or_create_key::<u64>("two_copies.exit_first").unwrap();
    let b = second::tld::get_or_create_key::<u64>("two_copies.exit_second").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        a.set(1);
        b.set(2);
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() }).unwrap();
        let _ = done_rx.recv();
        // What thread exit does, one copy after the other.
        tld::testing::release_thread();
        let kept = b.get();
        second::tld::testing::release_thread();
        kept
    });
    let tid = rx.recv().unwrap();
    assert!(tld::thread_registered(tid).unwrap());
    done_tx.send(()).unwrap();
    assert_eq!(t.join().unwrap(), Some(2), "copy 2 lost its block");
    assert!(
        !tld::thread_registered(tid).unwrap_or(false),
        "a registration outlived the thread's block"
    );
}
