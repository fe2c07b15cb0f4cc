//! Shared by the tests that must run in a process of their own.

/// Runs `test` in a forked child and returns the child's wait status: exit
/// 0 if it returned Ok, 1 (its error printed after `label`) if not; a 20 s
/// alarm ends a child that hangs. Call it from a thread that holds no lock
/// the child needs (the child has only the forking thread).
pub fn in_child(label: &str, test: impl FnOnce() -> Result<(), String>) -> i32 {
    // SAFETY: the child reports through its exit status and leaves with
    // _exit; the alarm ends it if it hangs.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: alarm and _exit are async-signal-safe.
        unsafe { libc::alarm(20) };
        let code = match test() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{label}{e}");
                1
            }
        };
        // SAFETY: as above.
        unsafe { libc::_exit(code) };
    }
    assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}
