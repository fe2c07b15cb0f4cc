use std::process::Command;

/// `g<short sha>[-dirty]` of the source tree, if it is a git checkout with
/// git at hand (not for a packaged crate).
fn git_id() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let sha = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(format!("g{sha}{}", if dirty { "-dirty" } else { "" }))
}

fn main() {
    println!(
        "cargo:rustc-env=SCX_HINTED_GIT={}",
        git_id().unwrap_or_default()
    );
    if let Ok(head) = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
    {
        let dir = String::from_utf8_lossy(&head.stdout).trim().to_string();
        if !dir.is_empty() {
            println!("cargo:rerun-if-changed={dir}/HEAD");
            println!("cargo:rerun-if-changed={dir}/index");
        }
    }
    // scheduler/bpf links to the workspace's bpf/ directory; a packaged
    // crate (`cargo package`) carries the files themselves there.
    scx_cargo::BpfBuilder::new()
        .unwrap()
        .enable_intf("bpf/intf.h", "bpf_intf.rs")
        .enable_skel("bpf/scx_hinted.bpf.c", "bpf")
        .build()
        .unwrap();
    // The ownership guard: a separate object, so that it loads (and can stay
    // attached) without the scheduler, also on kernels without sched_ext.
    scx_cargo::BpfBuilder::new()
        .unwrap()
        .enable_skel("bpf/tld_guard.bpf.c", "tld_guard")
        .build()
        .unwrap();
}
