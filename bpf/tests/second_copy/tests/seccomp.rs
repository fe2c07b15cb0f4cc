//! Joining the process's TLD state is safe under a seccomp profile that
//! kills on `process_vm_readv` (older systemd's `@system-service` does):
//! a copy finds the hub with plain system calls. Its own binary: the child
//! is forked from a process with one test thread.

mod common;

use scx_hints as first;
use scx_hints_second_copy as second;

/// Installs a filter that kills the process on `process_vm_readv`.
fn forbid_process_vm_readv() -> Result<(), String> {
    const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let nr = libc::SYS_process_vm_readv as u32;
    let filter = [
        // Load seccomp_data.nr (offset 0).
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // if nr == process_vm_readv: next, else skip one.
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: nr,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_KILL_PROCESS,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; prog points to a valid filter.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
        {
            return Err(format!("seccomp: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// In a forked child whose thread never touched a block: copy 2 forgets
/// the state and joins it again under the filter.
fn join_in_child() -> Result<(), String> {
    let meta = first::tld::testing::meta_address().ok_or("no state")?;
    second::tld::testing::forget_process_state();
    forbid_process_vm_readv()?;
    let k = second::tld::create_key::<u64>("seccomp.second").map_err(|e| e.to_string())?;
    if second::tld::testing::meta_address() != Some(meta) {
        return Err("copy 2 did not join the hub".into());
    }
    if !second::tld::testing::shares_process_state() {
        return Err("copy 2 does not share".into());
    }
    let seen = first::tld::find_key::<u64>("seccomp.second")
        .ok_or("copy 1 does not see copy 2's key")?
        .map_err(|e| e.to_string())?;
    if seen.offset() != k.offset() {
        return Err("the key is elsewhere for copy 1".into());
    }
    Ok(())
}

#[test]
fn the_state_is_joined_under_a_seccomp_filter_without_process_vm_readv() {
    std::env::set_var(first::tld::abi::MAP_PIN_ENV, "/nonexistent/scx_hints/tld");
    let status = common::in_child("", join_in_child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed (wait status {status:#x}: signal 31 is SIGSYS; its stderr says why)"
    );
}
