//! `cargo xtask demo`: what hints buy, shown. Until the guest demo lands it
//! shows the TLD round trip on the host kernel: threads set hints, a BPF
//! program prints what the kernel sees for each thread.

use crate::{setup, util};
use anyhow::Result;

pub fn run() -> Result<i32> {
    setup::host()?;
    util::step("building and running the TLD round trip on the host kernel");
    let status = util::cargo()
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "tld_kernel_tests",
            "--bin",
            "tld-roundtrip",
        ])
        .status()?;
    Ok(status.code().unwrap_or(1))
}
