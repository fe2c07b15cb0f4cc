//! Thread exit deletes the thread's map entry before freeing its block.

use scx_hints::tld::{self, Registration};
use std::cell::Cell;
use tld_kernel_tests::{fixture, Fixture, ReadOut};

/// Runs a read in its destructor. Registered before scx_hints' own
/// thread-local, so (destructors run last-registered first) it runs after
/// scx_hints has cleaned up: it sees what the kernel has at thread exit.
struct ReadAtExit {
    fx: Cell<Option<&'static Fixture>>,
    seen: std::sync::mpsc::Sender<ReadOut>,
}

impl Drop for ReadAtExit {
    fn drop(&mut self) {
        if let Some(fx) = self.fx.get() {
            let _ = self.seen.send(fx.read("exit.value", 8, 0));
        }
    }
}

#[test]
fn thread_exit_deletes_the_entry() {
    let Some(fx) = fixture() else { return };
    let key = tld::get_or_create_key::<u64>("exit.value").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        thread_local! {
            static AT_EXIT: std::cell::RefCell<Option<ReadAtExit>> = const { std::cell::RefCell::new(None) };
        }
        AT_EXIT.with(|a| {
            *a.borrow_mut() = Some(ReadAtExit {
                fx: Cell::new(Some(fx)),
                seen: tx,
            })
        });
        key.set(77);
        let live = fx.read("exit.value", 8, 0);
        assert_eq!(live.value, Some(77));
    })
    .join()
    .unwrap();
    let at_exit = rx.recv().expect("the exit-time read ran");
    assert_eq!(
        at_exit.init_err,
        -libc::ENOENT,
        "the entry is gone at thread exit"
    );
}

#[test]
fn release_deletes_the_entry_and_next_use_registers_again() {
    let Some(fx) = fixture() else { return };
    let key = tld::get_or_create_key::<u64>("exit.value").unwrap();
    std::thread::spawn(move || {
        key.set(5);
        assert_eq!(tld::registration(), Registration::Registered);
        tld::testing::release_thread();
        assert_eq!(fx.read("exit.value", 8, 0).init_err, -libc::ENOENT);
        assert_eq!(tld::registration(), Registration::None);
        // A new block, zeroed, registered again.
        assert_eq!(key.get(), Some(0));
        key.set(6);
        assert_eq!(fx.read("exit.value", 8, 0).value, Some(6));
    })
    .join()
    .unwrap();
}
