//! The sched_ext guest harness (placeholder until the guest harness lands).

use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct VmArgs {
    /// The command to run inside the guest.
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

pub fn cmd(_args: VmArgs) -> Result<i32> {
    bail!("the guest harness is not built yet")
}
