//! `cargo xtask test`: every test of the project, counted.
//!
//! Steps run in order; a failing step is counted and the rest still run, so
//! one run shows everything that is broken. Cargo test binaries report their
//! own counts ("test result: ... N passed; M failed"), which are added up.

use crate::util::{self, loud, step};
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip the scheduler tests inside the sched_ext guest (not allowed in CI).
    #[arg(long)]
    pub no_guest: bool,

    /// Also build scx_bpfland and scx_lavd from crates.io for the benchmark
    /// smoke test (slow: about ten minutes on two cores the first time).
    #[arg(long)]
    pub with_published: bool,
}

#[derive(Default)]
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
    pub failures: Vec<String>,
}

impl Tally {
    pub fn check(&mut self, name: &str, result: Result<()>) {
        match result {
            Ok(()) => {
                self.passed += 1;
                eprintln!("ok: {name}");
            }
            Err(e) => {
                self.failed += 1;
                eprintln!("FAILED: {name}: {e:#}");
                self.failures.push(name.to_string());
            }
        }
    }

    /// Runs a cargo test command, echoing its output and adding up the
    /// counts of every test binary it ran. A build failure counts as one
    /// failure.
    pub fn cargo_test(&mut self, name: &str, cmd: &mut Command) {
        step(format!("{name}: {}", util::show(cmd)));
        let (passed, failed, ok) = match run_counting(cmd) {
            Ok(r) => r,
            Err(e) => {
                self.check(name, Err(e));
                return;
            }
        };
        self.passed += passed;
        self.failed += failed;
        if failed > 0 {
            self.failures.push(format!("{name} ({failed} tests)"));
        } else if !ok {
            self.check(
                name,
                Err(anyhow::anyhow!("cargo test failed to build or run")),
            );
        }
    }
}

/// Runs `cmd`, passing its output through, and sums libtest's result lines.
fn run_counting(cmd: &mut Command) -> Result<(u32, u32, bool)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = parse_result_line(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait()?;
    Ok((passed, failed, status.success()))
}

/// Parses `test result: ok. 3 passed; 1 failed; ...`.
pub fn parse_result_line(line: &str) -> Option<(u32, u32)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |what: &str| -> Option<u32> {
        rest.split(';').find_map(|part| {
            part.trim()
                .strip_suffix(what)?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
    };
    Some((count(" passed")?, count(" failed")?))
}

pub fn run(args: TestArgs) -> Result<i32> {
    let mut tally = Tally::default();
    if util::is_ci() && args.no_guest {
        anyhow::bail!("--no-guest is not allowed in CI: every test must run there");
    }
    tally.check("setup", crate::setup::host());

    tally.check(
        "cargo fmt --check",
        util::run(util::cargo().args(["fmt", "--all", "--", "--check"])),
    );
    tally.check(
        "cargo clippy -D warnings",
        util::run(util::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ])),
    );
    tally.cargo_test(
        "unit tests",
        util::cargo().args([
            "test",
            "--no-fail-fast",
            "--workspace",
            "--all-features",
            "--exclude",
            "tld_kernel_tests",
        ]),
    );
    tally.check(
        "rustdoc of scx_hints (missing docs and warnings denied)",
        util::run(
            util::cargo()
                .args(["doc", "--quiet", "--no-deps", "-p", "scx_hints"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        ),
    );
    other_platform_check(&mut tally);
    tally.check(
        "packaged scx_hinted (cargo package, then cargo install) installs scx_hinted alone, with -V",
        install_check(),
    );
    let examples = crate::capi::examples();
    let examples_dir = examples.as_ref().ok().cloned();
    tally.check(
        "C library: header matches exports; C, C++ and Python examples",
        examples.map(|_| ()),
    );
    if util::is_root() {
        if let Some(dir) = examples_dir {
            tally.cargo_test(
                "C example registers with a pinned map (host kernel)",
                util::cargo()
                    .args(["test", "-p", "tld_kernel_tests", "--test", "capi"])
                    .args(["--", "--ignored"])
                    .env("SCX_HINTS_EXAMPLES_DIR", dir),
            );
        }
        tally.cargo_test(
            "TLD tests on the host kernel",
            util::cargo().args(["test", "--no-fail-fast", "-p", "tld_kernel_tests"]),
        );
        // Once more as an ordinary user, through a pin opened to everyone,
        // as applications run (the fixture drops privileges after loading
        // its BPF reader). Tests named needs_root_* make, replace or mount
        // what only root can (they drop privileges in their own children):
        // they are left out.
        tally.cargo_test(
            "TLD tests on the host kernel as uid 65534",
            util::cargo().env("TLD_TESTS_AS_UID", "65534").args([
                "test",
                "--no-fail-fast",
                "-p",
                "tld_kernel_tests",
                "--tests",
                "--",
                "--skip",
                "needs_root_",
            ]),
        );
    } else if util::is_ci() {
        tally.check(
            "TLD tests on the host kernel",
            Err(anyhow::anyhow!(
                "CI must run as root: the BPF tests need it"
            )),
        );
    } else {
        loud("SKIPPED: TLD tests on the host kernel need root (they load BPF programs)");
    }
    if args.no_guest {
        loud("SKIPPED: scheduler tests in the sched_ext guest (--no-guest)");
    } else {
        guest_tests(&mut tally);
        tally.cargo_test(
            "guest harness API (boots the guest 3 times)",
            util::cargo().args(["test", "-q", "-p", "xtask", "--", "--ignored", "guest_api"]),
        );
        tally.check(
            "benchmark smoke test (cargo xtask bench sched --quick: report complete and sane)",
            crate::bench::smoke(args.with_published),
        );
    }

    if !tally.failures.is_empty() {
        eprintln!("failures:");
        for f in &tally.failures {
            eprintln!("  {f}");
        }
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(if tally.failed == 0 { 0 } else { 1 })
}

/// A target without BPF that scx_hints must build for, as a no-op.
pub const OTHER_PLATFORM: &str = "x86_64-apple-darwin";

/// scx_hints builds outside Linux: checked when that target's standard
/// library is installed (`rustup target add x86_64-apple-darwin`).
fn other_platform_check(tally: &mut Tally) {
    let installed =
        util::output(std::process::Command::new("rustup").args(["target", "list", "--installed"]))
            .is_ok_and(|out| out.lines().any(|l| l.trim() == OTHER_PLATFORM));
    if !installed && util::is_ci() {
        tally.check(
            &format!("scx_hints on {OTHER_PLATFORM}"),
            Err(anyhow::anyhow!(
                "the {OTHER_PLATFORM} standard library is missing (cargo xtask setup adds it)"
            )),
        );
        return;
    }
    if !installed {
        loud(format!(
            "SKIPPED: scx_hints on {OTHER_PLATFORM} (rustup target add {OTHER_PLATFORM} to check it)"
        ));
        return;
    }
    // clippy alone does no code generation, so it misses what only the
    // backend refuses (an ELF-only link section on Mach-O): build the rlib
    // too (no linker needed).
    tally.check(
        &format!("scx_hints builds on {OTHER_PLATFORM} (no BPF: hints are stores)"),
        util::run(util::cargo().args([
            "clippy",
            "--quiet",
            "-p",
            "scx_hints",
            "--target",
            OTHER_PLATFORM,
            "--",
            "-D",
            "warnings",
        ]))
        .and_then(|()| {
            util::run(util::cargo().args([
                "build",
                "--quiet",
                "-p",
                "scx_hints",
                "--lib",
                "--target",
                OTHER_PLATFORM,
            ]))
        }),
    );
}

/// The workspace's release profile (Cargo.toml), given to the packaged build
/// so that it reuses the workspace's release artifacts instead of building
/// every dependency again.
const WORKSPACE_RELEASE_PROFILE: &str = "profile.release.debug=\"line-tables-only\"";

/// What a user of the published crates gets: `cargo package` of scx_hints
/// and scx_hinted, then `cargo install` of the packaged scx_hinted (outside
/// the workspace, scx_hints patched to its package) into a scratch root. The
/// package must carry every BPF source it builds from, and install exactly
/// one binary, scx_hinted, which prints its build id.
fn install_check() -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("scx-hints-install-{}", std::process::id()));
    let r = install_from_package(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    r
}

fn install_from_package(scratch: &std::path::Path) -> Result<()> {
    let (pkg, src, root) = (
        scratch.join("pkg"),
        scratch.join("src"),
        scratch.join("root"),
    );
    std::fs::create_dir_all(&src)?;
    util::run(
        util::cargo()
            .args(["package", "--quiet", "--no-verify", "--allow-dirty"])
            .args(["-p", "scx_hints", "-p", "scx_hinted", "--target-dir"])
            .arg(&pkg),
    )?;
    for krate in ["scx_hints", "scx_hinted"] {
        let file = pkg
            .join("package")
            .join(format!("{krate}-{}.crate", crate_version(krate)?));
        util::run(
            std::process::Command::new("tar")
                .arg("xzf")
                .arg(&file)
                .arg("-C")
                .arg(&src),
        )?;
    }
    let hints = src.join(format!("scx_hints-{}", crate_version("scx_hints")?));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"));
    util::run(
        util::cargo()
            .args(["install", "--quiet", "--locked", "--path"])
            .arg(src.join(format!("scx_hinted-{}", crate_version("scx_hinted")?)))
            .arg("--root")
            .arg(&root)
            .arg("--config")
            .arg(format!(
                "patch.crates-io.scx_hints.path={:?}",
                hints.to_string_lossy()
            ))
            .args(["--config", WORKSPACE_RELEASE_PROFILE])
            .env("CARGO_TARGET_DIR", target),
    )?;
    let mut bins: Vec<String> = std::fs::read_dir(root.join("bin"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    bins.sort();
    anyhow::ensure!(
        bins == ["scx_hinted"],
        "cargo install installed {bins:?}, not just scx_hinted"
    );
    let version = util::output(std::process::Command::new(root.join("bin/scx_hinted")).arg("-V"))?;
    anyhow::ensure!(
        version.starts_with("scx_hinted 0.") && version.contains("linux"),
        "scx_hinted -V printed {version:?}, not a build id"
    );
    Ok(())
}

/// A workspace crate's version, from `cargo metadata`.
fn crate_version(name: &str) -> Result<String> {
    let meta =
        util::output(util::cargo().args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let meta: serde_json::Value = serde_json::from_str(&meta)?;
    meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["version"].as_str())
        .map(String::from)
        .with_context(|| format!("no workspace crate {name}"))
}

/// The release binaries the guest runs (built on the host: the guest sees
/// the workspace read-only).
pub fn build_scheduler() -> Result<std::path::PathBuf> {
    step("building scx_hinted and its guest tests (release)");
    util::run(util::cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "scx_hinted",
        "--bins",
        "--features",
        "scx_hinted/guest-tests",
        "-p",
        "scx_hint",
    ]))?;
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"))
        .join("release");
    Ok(dir)
}

/// The guest job that runs scx_hinted_tests from tmpfs (detaching a
/// scheduler under load while touching the 9p root stalls the guest): the
/// tests named, or by default all those it runs unnamed.
fn guest_test_script(bin: &std::path::Path, tests: &[&str]) -> String {
    let q = |p: &std::path::Path| crate::vm::shell_quote(&p.to_string_lossy());
    format!(
        "set -e\n\
         guest_stage {} {} {} stress-ng\n\
         export PATH=\"$GUEST_TMP/bin:$PATH\"\n\
         set +e\n\
         scx_hinted_tests --scheduler \"$GUEST_TMP/bin/scx_hinted\" {}\n",
        q(&bin.join("scx_hinted")),
        q(&bin.join("scx_hinted_tests")),
        q(&bin.join("scx-hint")),
        tests.join(" "),
    )
}

/// The topology tests of scx_hinted_tests (they need two LLCs, and run
/// only when named), and the guest they run in: two sockets of two SMT-2
/// cores, the smallest layout with every level a topology-aware scheduler
/// distinguishes.
const TOPOLOGY_TESTS: &[&str] = &["topo_work_conservation", "topo_cross_llc"];
const TOPOLOGY_TEST_CPUS: u32 = 8;

/// Counts `PASS name` / `FAIL name` lines of scx_hinted_tests.
pub fn parse_guest_results(output: &str) -> (Vec<String>, Vec<String>) {
    let (mut passed, mut failed) = (Vec::new(), Vec::new());
    for line in output.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("PASS ") {
            passed.push(rest.split(':').next().unwrap_or(rest).trim().to_string());
        } else if let Some(rest) = line.strip_prefix("FAIL ") {
            failed.push(rest.split(':').next().unwrap_or(rest).trim().to_string());
        }
    }
    (passed, failed)
}

fn guest_tests(tally: &mut Tally) {
    let bin = match build_scheduler() {
        Ok(bin) => bin,
        Err(e) => return tally.check("scheduler tests in the guest", Err(e)),
    };
    let run = |cfg: crate::vm::GuestConfig, label: &str, tests: &[&str]| {
        let guest = crate::vm::prepare_with(cfg)?;
        step(format!(
            "{label} in the guest (kernel {}, {} vCPUs)",
            guest.kernel(),
            guest.config().vcpus()
        ));
        let job = crate::vm::GuestJob::new(
            label,
            guest_test_script(&bin, tests),
            std::time::Duration::from_secs(40 * 60),
        );
        guest.run(&job)
    };
    let two_cpus = crate::vm::GuestConfig::from_env();
    count_guest_outcome(
        tally,
        "scheduler tests",
        two_cpus.and_then(|cfg| run(cfg, "scheduler tests", &[])),
    );
    let topology = crate::vm::GuestConfig::from_env().and_then(|cfg| {
        Ok(cfg.with_topology(crate::vm::Topology::two_sockets_smt(TOPOLOGY_TEST_CPUS)?))
    });
    count_guest_outcome(
        tally,
        "scheduler topology tests",
        topology.and_then(|cfg| run(cfg, "scheduler topology tests", TOPOLOGY_TESTS)),
    );
}

/// Adds a guest run's PASS and FAIL lines to the tally; a run that failed
/// or reported nothing, with no failure named, counts as one failure.
fn count_guest_outcome(tally: &mut Tally, label: &str, outcome: Result<crate::vm::GuestOutcome>) {
    match outcome {
        Ok(outcome) => {
            let (passed, failed) = parse_guest_results(&outcome.output);
            tally.passed += passed.len() as u32;
            tally.failed += failed.len() as u32;
            let nothing_failed = failed.is_empty();
            for f in failed {
                tally.failures.push(format!("guest: {f}"));
            }
            if (outcome.exit_code != 0 || passed.is_empty()) && nothing_failed {
                tally.check(
                    &format!("{label} in the guest"),
                    Err(anyhow::anyhow!(
                        "scx_hinted_tests exited with {} and reported {} passes, no failure",
                        outcome.exit_code,
                        passed.len()
                    )),
                );
            }
        }
        Err(e) => tally.check(&format!("{label} in the guest"), Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_guest_results, parse_result_line};

    #[test]
    fn parses_guest_lines() {
        let out = "PASS attach: enabled\nnoise\nFAIL restart: hints lost\n  PASS abuse\n1 passed";
        let (p, f) = parse_guest_results(out);
        assert_eq!(p, ["attach", "abuse"]);
        assert_eq!(f, ["restart"]);
    }

    #[test]
    fn parses_libtest_summary() {
        assert_eq!(
            parse_result_line(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
            ),
            Some((12, 0))
        );
        assert_eq!(
            parse_result_line("test result: FAILED. 3 passed; 2 failed; 0 ignored"),
            Some((3, 2))
        );
        assert_eq!(parse_result_line("running 3 tests"), None);
    }
}
