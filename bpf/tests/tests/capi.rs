//! The C library's example registers its thread when a map is pinned.
//! `cargo xtask test` builds the example and runs this with
//! SCX_HINTS_EXAMPLES_DIR pointing at it (hence ignored on its own).

use std::process::Command;
use tld_kernel_tests::fixture;

#[test]
#[ignore = "run by cargo xtask test after it builds the C examples"]
fn c_example_registers_with_a_pinned_map() {
    let dir = std::env::var_os("SCX_HINTS_EXAMPLES_DIR")
        .expect("SCX_HINTS_EXAMPLES_DIR names the built C examples");
    let Some(fx) = fixture() else { return };
    let out = Command::new(std::path::Path::new(&dir).join("hints_example"))
        .arg("registered")
        .env(scx_hints::tld::abi::MAP_PIN_ENV, fx.pin_path())
        .env("LD_LIBRARY_PATH", std::path::Path::new(&dir).join("../lib"))
        .output()
        .expect("running the C example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("registration 3"), "{stdout}");
}

/// What `scx-hint show` reports per thread: whether it has a registration.
#[test]
fn another_thread_s_registration_is_visible() {
    let Some(_fx) = fixture() else { return };
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    scx_hints::set_latency_class(scx_hints::LatencyClass::Batch);
    assert_eq!(
        scx_hints::registration(),
        scx_hints::Registration::Registered
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let silent = std::thread::spawn(move || {
        // SAFETY: as above.
        tx.send(unsafe { libc::gettid() }).unwrap();
        let _ = done_rx.recv();
    });
    let silent_tid = rx.recv().unwrap();
    assert!(scx_hints::tld::thread_registered(me).unwrap());
    assert!(!scx_hints::tld::thread_registered(silent_tid).unwrap());
    done_tx.send(()).unwrap();
    silent.join().unwrap();
}
