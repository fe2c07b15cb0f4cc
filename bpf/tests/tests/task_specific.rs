//! Each thread sees its own value: user space and BPF agree, per thread.

use scx_hints::tld;
use std::sync::Barrier;
use tld_kernel_tests::fixture;

const THREADS: u64 = 16;

#[test]
fn every_thread_reads_back_its_own_value() {
    let Some(fx) = fixture() else { return };
    let key = tld::create_key::<u64>("task.value").unwrap();
    let written = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let written = &written;
            s.spawn(move || {
                let mine = 0x00c0_ffee_0000 + t * 0x101;
                key.set(mine);
                // Every thread has written before any reads: a shared block
                // would show another thread's value here.
                written.wait();
                assert_eq!(key.get(), Some(mine), "user space, thread {t}");
                let r = fx.read("task.value", 8, 0);
                assert_eq!(r.init_err, 0, "thread {t} is registered");
                assert_eq!(r.value, Some(mine), "BPF, thread {t}");
            });
        }
    });
}
