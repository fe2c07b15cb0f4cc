//! `cargo xtask bench`: benchmarks (placeholder until they land).

use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Which benchmark: `hint-cost`.
    pub which: Option<String>,
}

pub fn run(_args: BenchArgs) -> Result<i32> {
    bail!("no benchmark is built yet")
}
