// SPDX-License-Identifier: GPL-2.0-only OR MIT
fn main() {
    // Programs linked against libscx_hints.so record the major version, so
    // an incompatible library is refused at load time, not misused.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libscx_hints.so.0");
}
