//! A forked child registers its own thread on its next hint access, and
//! after the fork parent and child values are independent: each side's
//! writes reach BPF for its own thread only.

use scx_hints::tld;
use tld_kernel_tests::fixture;

fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

fn signal(fd: i32) {
    // SAFETY: writes one byte from a valid buffer.
    assert_eq!(unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) }, 1);
}

fn wait_for(fd: i32) -> bool {
    let mut b = [0u8];
    // SAFETY: reads one byte into a valid buffer.
    unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) == 1 }
}

#[test]
fn forked_child_registers_again() {
    let Some(fx) = fixture() else { return };
    let key = tld::create_key::<u64>("fork.value").unwrap();
    key.set(1);
    assert_eq!(fx.read("fork.value", 8, 0).value, Some(1));
    // Parent -> child: "I wrote after the fork"; child -> parent: "so did I".
    let (parent_wrote_rx, parent_wrote_tx) = pipe();
    let (child_wrote_rx, child_wrote_tx) = pipe();

    // SAFETY: the child only makes system calls and exits with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: alarm is async-signal-safe; it ends a child that hangs.
        // Closing the parent's pipe ends makes a dead parent an EOF.
        unsafe {
            libc::alarm(20);
            libc::close(parent_wrote_tx);
            libc::close(child_wrote_rx);
        }
        // Before any access, the child's thread is unknown to the kernel.
        let before = fx.read("fork.value", 8, 0).init_err;
        // The copied block holds the parent's value from before the fork.
        let inherited = key.get();
        // A set registers the child's own copy.
        key.set(2);
        let after = fx.read("fork.value", 8, 0);
        signal(child_wrote_tx);
        // The parent's write after the fork does not reach the child.
        let parent_wrote = wait_for(parent_wrote_rx);
        let later = fx.read("fork.value", 8, 0);
        let code = if before != -libc::ENOENT {
            10
        } else if inherited != Some(1) {
            11
        } else if (after.init_err, after.value) != (0, Some(2)) {
            12
        } else if !parent_wrote || later.value != Some(2) || key.get() != Some(2) {
            13
        } else {
            0
        };
        // SAFETY: ends the child without running the parent's test harness.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: closes the child's pipe ends: a dead child is an EOF, not a hang.
    unsafe {
        libc::close(child_wrote_tx);
        libc::close(parent_wrote_rx);
    }
    // The parent writes after the fork, once the child has written too.
    assert!(wait_for(child_wrote_rx), "the child died before writing");
    key.set(3);
    assert_eq!(
        fx.read("fork.value", 8, 0).value,
        Some(3),
        "the parent's write after the fork reaches BPF"
    );
    signal(parent_wrote_tx);
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child killed: {status:#x}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "child: 10 = registered before use, 11 = parent's value not inherited, \
         12 = its own write not read by BPF, 13 = the parent's later write leaked in"
    );
    // The parent's entry is untouched by the child.
    assert_eq!(fx.read("fork.value", 8, 0).value, Some(3));
    assert_eq!(key.get(), Some(3));
    for fd in [parent_wrote_tx, child_wrote_rx] {
        // SAFETY: closes our own descriptors.
        unsafe { libc::close(fd) };
    }
}
