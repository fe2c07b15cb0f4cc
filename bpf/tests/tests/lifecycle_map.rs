//! A map that appears after the application started, or replaces the one it
//! used, is registered with on the next access, without the application
//! doing anything; the steady state stays a plain store.

use scx_hints::tld::{self, Registration};
use std::time::{Duration, Instant};
use tld_kernel_tests::{fixture, Fixture};

/// Waits until the watcher noticed a change of the pin (epoch moved).
fn wait_for_epoch_after(old: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tld::testing::epoch() == old {
        assert!(
            Instant::now() < deadline,
            "the map watcher did not notice the change"
        );
        std::thread::yield_now();
    }
}

#[test]
fn needs_root_late_and_replaced_maps_are_registered_on_next_use() {
    let Some(fx) = fixture() else { return };
    let key = tld::create_key::<u64>("map.value").unwrap();
    let (to_thread, rx) = std::sync::mpsc::channel::<&'static Fixture>();
    let (done_tx, done) = std::sync::mpsc::channel::<()>();

    // The application starts before any map is pinned.
    fx.unpin();
    let app = std::thread::spawn(move || {
        key.set(1);
        assert_eq!(tld::registration(), Registration::NoMap);
        done_tx.send(()).unwrap();

        // The scheduler pins its map: the next set registers.
        let map = rx.recv().unwrap();
        key.set(2);
        assert_eq!(tld::registration(), Registration::Registered);
        assert_eq!(map.read("map.value", 8, 0).value, Some(2));
        done_tx.send(()).unwrap();

        // The scheduler restarts with a new map at the same path.
        let replaced = rx.recv().unwrap();
        key.set(3);
        assert_eq!(replaced.read("map.value", 8, 0).value, Some(3));
        assert_eq!(
            map.read("map.value", 8, 0).init_err,
            -libc::ENOENT,
            "moving to the new map deleted the entry in the old one"
        );

        // Exit after a switch deletes the entry in the map the thread is in.
        tld::testing::release_thread();
        assert_eq!(replaced.read("map.value", 8, 0).init_err, -libc::ENOENT);
        done_tx.send(()).unwrap();
    });

    done.recv().unwrap();
    let epoch = tld::testing::epoch();
    fx.pin().unwrap();
    wait_for_epoch_after(epoch);
    to_thread.send(fx).unwrap();
    done.recv().unwrap();

    let epoch = tld::testing::epoch();
    let replacement: &'static Fixture = Box::leak(Box::new(fx.replacement().unwrap()));
    wait_for_epoch_after(epoch);
    to_thread.send(replacement).unwrap();
    done.recv().unwrap();
    app.join().unwrap();
}
