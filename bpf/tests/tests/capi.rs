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

/// The C library (a separate build of the crate) dlopen'ed into this Rust
/// program shares its TLD state: one metadata page, one block per thread,
/// one registration through which BPF reads the keys of both.
#[test]
#[ignore = "run by cargo xtask test after it builds the C library"]
fn dlopened_c_library_shares_the_state_of_the_rust_crate() {
    use std::ffi::{c_char, c_int, c_void, CString};
    use std::os::unix::ffi::OsStrExt;
    let dir = std::env::var_os("SCX_HINTS_EXAMPLES_DIR")
        .expect("SCX_HINTS_EXAMPLES_DIR names the built C examples");
    let Some(fx) = fixture() else { return };
    let rust_key = scx_hints::tld::create_key::<u64>("capi_shared.rust").unwrap();
    let lib = std::path::Path::new(&dir).join("../lib/libscx_hints.so");
    let path = CString::new(lib.as_os_str().as_bytes()).unwrap();
    // SAFETY: loads the C library; its constructors create its static keys.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen {}", lib.display());
    let sym = |name: &str| {
        let c = CString::new(name).unwrap();
        // SAFETY: a symbol of the loaded library.
        let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
        assert!(!p.is_null(), "{name} missing");
        p
    };
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct CKey {
        offset: u16,
        size: u16,
    }
    // SAFETY: the signatures of include/scx_hints.h.
    let (key_create, key_ptr, set_class, registration) = unsafe {
        (
            std::mem::transmute::<
                *mut c_void,
                extern "C" fn(*const c_char, usize, *mut CKey) -> c_int,
            >(sym("scx_hints_key_create")),
            std::mem::transmute::<*mut c_void, extern "C" fn(CKey) -> *mut c_void>(sym(
                "scx_hints_key_ptr",
            )),
            std::mem::transmute::<*mut c_void, extern "C" fn(c_int) -> c_int>(sym(
                "scx_hints_set_latency_class",
            )),
            std::mem::transmute::<*mut c_void, extern "C" fn(*mut c_int) -> c_int>(sym(
                "scx_hints_registration",
            )),
        )
    };
    let name = CString::new("capi_shared.c").unwrap();
    let mut c_key = CKey::default();
    assert_eq!(key_create(name.as_ptr(), 4, &mut c_key), 0);
    let seen = scx_hints::tld::find_raw_key("capi_shared.c")
        .expect("the Rust crate sees the C library's key");
    assert_eq!((seen.offset, seen.size), (c_key.offset, 4));
    std::thread::spawn(move || {
        rust_key.set(0x7777);
        let p = key_ptr(c_key) as *mut u32;
        assert!(!p.is_null());
        let block = scx_hints::tld::testing::block_address().unwrap();
        assert_eq!(
            p as usize,
            block + c_key.offset as usize,
            "the C library made a block of its own for this thread"
        );
        // SAFETY: the C library's pointer to this thread's 4-byte value.
        unsafe { p.write_volatile(0x4242) };
        let mut err = 0;
        assert_eq!(registration(&mut err), 3, "registered (errno {err})");
        assert_eq!(set_class(scx_hints::LatencyClass::Batch as c_int), 0);
        assert_eq!(scx_hints::latency_class(), scx_hints::LatencyClass::Batch);
        assert_eq!(fx.read("capi_shared.rust", 8, 0).value, Some(0x7777));
        assert_eq!(fx.read("capi_shared.c", 4, 1).value, Some(0x4242));
    })
    .join()
    .unwrap();
}
