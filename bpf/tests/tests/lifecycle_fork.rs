//! A forked child registers its own thread on its next hint access.

use scx_hints::tld;
use tld_kernel_tests::fixture;

#[test]
fn forked_child_registers_again() {
    let Some(fx) = fixture() else { return };
    let key = tld::create_key::<u64>("fork.value").unwrap();
    key.set(1);
    assert_eq!(fx.read("fork.value", 8, 0).value, Some(1));

    // SAFETY: the child only makes system calls and exits with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Before any access, the child's thread is unknown to the kernel.
        let before = fx.read("fork.value", 8, 0).init_err;
        // The copied block already holds the parent's value; a set
        // registers the child's own copy.
        key.set(2);
        let after = fx.read("fork.value", 8, 0);
        let code = match (before, after.init_err, after.value) {
            (e, 0, Some(2)) if e == -libc::ENOENT => 0,
            (e, _, _) if e != -libc::ENOENT => 10,
            (_, 0, _) => 11,
            _ => 12,
        };
        // SAFETY: ends the child without running the parent's test harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status));
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "child: 10 = registered before use, 11 = wrong value, 12 = not registered"
    );
    // The parent's entry is untouched.
    assert_eq!(fx.read("fork.value", 8, 0).value, Some(1));
}
