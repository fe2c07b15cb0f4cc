//! A C writer that follows docs/tld-abi.md ("One state per process") joins
//! the crate's state: it finds the hub at the documented address, creates a
//! key in the shared metadata page and writes into the thread's shared
//! block; the crate sees the key and the value.

use std::ffi::{c_char, c_int, CString};
use std::process::Command;

type JoinAndSet = unsafe extern "C" fn(*const c_char, u64, *mut u64, *mut u64) -> c_int;

#[test]
fn a_c_writer_written_from_the_doc_joins_the_state() {
    std::env::set_var(
        scx_hints::tld::abi::MAP_PIN_ENV,
        "/nonexistent/scx_hints/tld",
    );
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/tld_join.c");
    let lib = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("libtld_join.so");
    let out = Command::new("cc")
        .args([
            "-std=gnu11",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-shared",
            "-fPIC",
        ])
        .arg(src)
        .arg("-o")
        .arg(&lib)
        .output()
        .expect("running cc (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = CString::new(lib.to_str().unwrap()).unwrap();
    // SAFETY: loads the library just built; it has no constructors.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen {}", lib.display());
    let sym = CString::new("tld_join_and_set").unwrap();
    // SAFETY: the function's C signature.
    let join: JoinAndSet = unsafe {
        std::mem::transmute::<*mut libc::c_void, JoinAndSet>(libc::dlsym(handle, sym.as_ptr()))
    };
    std::thread::spawn(move || {
        let mine = scx_hints::tld::create_key::<u64>("c_writer.rust").unwrap();
        mine.set(17);
        let name = CString::new("c_writer.c").unwrap();
        let (mut meta, mut block) = (0u64, 0u64);
        // SAFETY: valid pointers for the call.
        let off = unsafe { join(name.as_ptr(), 0xc0ffee, &mut meta, &mut block) };
        assert!(off > 0, "the C writer failed: errno {}", -off);
        assert_eq!(
            Some(meta as usize),
            scx_hints::tld::testing::meta_address(),
            "the C writer found another metadata page"
        );
        assert_eq!(
            Some(block as usize),
            scx_hints::tld::testing::block_address(),
            "the C writer found another block"
        );
        let k = scx_hints::tld::find_key::<u64>("c_writer.c")
            .expect("the crate sees the C writer's key")
            .unwrap();
        assert_eq!(k.offset(), off as usize);
        assert_eq!(k.get(), Some(0xc0ffee));
        assert_eq!(mine.get(), Some(17));
    })
    .join()
    .unwrap();
}
