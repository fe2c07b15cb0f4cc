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
