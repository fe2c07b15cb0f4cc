// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! `scx-hint run` without a scheduler: the exit statuses its --help promises.

use std::process::Command;

/// `scx-hint run --class batch ARGS...` with no map to find.
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scx-hint"))
        .args(["run", "--class", "batch"])
        .args(args)
        .env("SCX_HINTS_TLD_MAP", "/nonexistent/scx_hints/tld")
        .output()
        .unwrap();
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn runs_the_command_unhinted_and_returns_its_status() {
    let (status, stderr) = run(&["--", "sh", "-c", "exit 3"]);
    assert_eq!(status, 3, "{stderr}");
    assert!(stderr.contains("running the command unhinted"), "{stderr}");
}

#[test]
fn require_refuses_to_run_unhinted() {
    let dir = std::env::temp_dir().join(format!("scx-hint-require-{}", std::process::id()));
    let (status, stderr) = run(&["--require", "--", "mkdir", dir.to_str().unwrap()]);
    assert_eq!(status, 1, "{stderr}");
    assert!(!dir.exists(), "the command ran");
}

#[test]
fn a_missing_command_is_127_and_a_non_executable_one_126() {
    let (status, stderr) = run(&["--", "/nonexistent/scx-hint-test"]);
    assert_eq!(status, 127, "{stderr}");
    let file = std::env::temp_dir().join(format!("scx-hint-noexec-{}", std::process::id()));
    std::fs::write(&file, "#!/bin/sh\n").unwrap();
    let (status, stderr) = run(&["--", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(status, 126, "{stderr}");
    assert!(stderr.contains("cannot run"), "{stderr}");
}
