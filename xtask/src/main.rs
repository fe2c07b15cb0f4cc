//! `cargo xtask <command>`: the developer commands of scx-hints.

mod bench;
mod capi;
mod demo;
mod scale;
mod setup;
mod soak;
mod test;
mod util;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Developer commands of scx-hints",
    long_about = "Developer commands of scx-hints. Each installs what it is missing \
                  (Debian packages, the guest kernel, virtme-ng) and says so before it does."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build, start scx_hinted (inside a sched_ext guest if the host has no
    /// sched_ext), run a hinted workload and print the latency comparison.
    Demo,
    /// Run every test: formatting, clippy, unit tests, BPF tests on the host
    /// kernel, scheduler tests in the guest. Ends with `N passed, M failed`.
    Test(test::TestArgs),
    /// Run benchmarks and print their results as ratios.
    Bench(bench::BenchArgs),
    /// Install the C library (libscx_hints, header, pkg-config file).
    Capi(capi::CapiArgs),
    /// Install the host packages the build and tests need.
    Setup,
    /// Soak scx_hinted in a 4-vCPU guest: churn, fork/exec storms, hogs,
    /// restarts (SIGINT, kill -9, CPU hotplug); `--minutes N`.
    Soak(soak::SoakArgs),
    /// Boot the sched_ext guest kernel under qemu and run a command in it.
    Vm(vm::VmArgs),
}

fn main() {
    let cli = Cli::parse();
    let result: Result<i32> = match cli.cmd {
        Cmd::Demo => demo::run(),
        Cmd::Test(args) => test::run(args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Capi(args) => capi::cmd(args),
        Cmd::Setup => setup::host().map(|()| 0),
        Cmd::Soak(args) => soak::run(args),
        Cmd::Vm(args) => vm::cmd(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
