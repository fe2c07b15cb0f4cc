//! Installs what the build and the tests need on a Debian 12 host, and
//! nothing else: each missing piece is named before it is installed.

use crate::util::{self, step};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// Debian packages the host needs. qemu comes from bookworm-backports (10.x):
/// bookworm's 7.2 would replace the machine's newer qemu-utils, and crashes
/// the guest kernel more often under multi-threaded TCG.
const HOST_PACKAGES: &[&str] = &[
    "clang-19",
    "libelf-dev",
    "zlib1g-dev",
    "pkg-config",
    "make",
    "gcc",
    "kmod",
    "busybox-static",
    "python3-venv",
    "stress-ng",
    // hackbench, hintbench's published many-task messaging workload.
    "rt-tests",
];
const BACKPORTS_PACKAGES: &[&str] = &["qemu-system-x86", "qemu-utils"];

const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/scx-hints-backports.sources";
const KERNEL_SOURCES: &str = "/etc/apt/sources.list.d/scx-hints-kernels.sources";
const KERNEL_PIN: &str = "/etc/apt/preferences.d/scx-hints-kernels";

/// The suites that carry sched_ext kernels. They are only ever downloaded
/// from (never installed), and pinned below bookworm so that no upgrade can
/// pull anything from them.
pub const KERNEL_SUITES: &[&str] = &["trixie-backports", "sid"];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn installed_from_backports(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("bpo12"))
}

fn write_if_changed(path: &str, content: &str) -> Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|c| c == content) {
        return Ok(false);
    }
    std::fs::write(path, content).with_context(|| format!("cannot write {path}"))?;
    Ok(true)
}

/// Adds bookworm-backports and the kernel suites to apt's sources (the
/// latter pinned at 50). Returns true if apt needs an update.
fn apt_sources() -> Result<bool> {
    let mut changed = write_if_changed(
        BACKPORTS_SOURCES,
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\n\
         Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )?;
    changed |= write_if_changed(
        KERNEL_SOURCES,
        &format!(
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {}\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            KERNEL_SUITES.join(" ")
        ),
    )?;
    changed |= write_if_changed(
        KERNEL_PIN,
        "Package: *\nPin: release a=trixie-backports\nPin-Priority: 50\n\n\
         Package: *\nPin: release a=unstable\nPin-Priority: 50\n",
    )?;
    Ok(changed
        || !Path::new("/var/lib/apt/lists")
            .read_dir()?
            .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().contains("trixie-backports"))))
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-y", "-q", "-o", "Dpkg::Use-Pty=0"]);
    cmd
}

/// Makes sure apt knows the kernel suites (the guest harness downloads from them).
pub fn ensure_apt_lists() -> Result<()> {
    if !util::is_root() {
        bail!("apt sources must be set up as root (run `cargo xtask setup` as root)");
    }
    if apt_sources()? {
        step("apt-get update (bookworm-backports and the sched_ext kernel suites were added)");
        util::run(apt_get().arg("update"))?;
    }
    Ok(())
}

/// Installs the host packages that are missing.
pub fn host_packages() -> Result<()> {
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    let missing_bpo: Vec<&str> = BACKPORTS_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p) || !installed_from_backports(p))
        .collect();
    if missing.is_empty() && missing_bpo.is_empty() {
        return Ok(());
    }
    if !util::is_root() {
        bail!(
            "missing packages {:?}; run as root or install them: apt-get install {} && \
             apt-get install -t bookworm-backports {}",
            [&missing[..], &missing_bpo[..]].concat(),
            missing.join(" "),
            missing_bpo.join(" ")
        );
    }
    ensure_apt_lists()?;
    if !missing.is_empty() {
        step(format!("installing {}", missing.join(" ")));
        util::run(
            apt_get()
                .args(["install", "--no-install-recommends"])
                .args(&missing),
        )?;
    }
    if !missing_bpo.is_empty() {
        step(format!(
            "installing {} from bookworm-backports",
            missing_bpo.join(" ")
        ));
        util::run(
            apt_get()
                .args([
                    "install",
                    "--no-install-recommends",
                    "-t",
                    "bookworm-backports",
                ])
                .args(&missing_bpo),
        )?;
    }
    Ok(())
}

/// rustfmt and clippy, which `cargo xtask test` runs.
pub fn rust_components() -> Result<()> {
    for (tool, component) in [("rustfmt", "rustfmt"), ("cargo-clippy", "clippy")] {
        if !util::have(tool) && util::have("rustup") {
            step(format!("rustup component add {component}"));
            util::run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    // The standard library of a target without BPF: `cargo xtask test`
    // checks that scx_hints builds there as a no-op.
    let target = crate::test::OTHER_PLATFORM;
    if util::have("rustup")
        && !util::output(Command::new("rustup").args(["target", "list", "--installed"]))
            .is_ok_and(|out| out.lines().any(|l| l.trim() == target))
    {
        step(format!("rustup target add {target}"));
        util::run(Command::new("rustup").args(["target", "add", target]))?;
    }
    Ok(())
}

/// Everything the host needs to build and run the host-side tests.
pub fn host() -> Result<()> {
    host_packages()?;
    rust_components()?;
    Ok(())
}
