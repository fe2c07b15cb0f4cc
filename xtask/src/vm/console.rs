//! Reading the guest's serial console: kernel failure reports, and the
//! markers the guest wrapper (`xtask/guest/run.sh`) prints around the job.

/// The text of a kernel log line, `[   12.345678] text` -> `text`. The
/// timestamp may follow other bytes on the same console line (a job's
/// unterminated output), so it is searched for, not only expected first.
pub fn printk_text(line: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(pos) = line[from..].find('[') {
        let start = from + pos;
        if let Some(text) = after_timestamp(&line[start..]) {
            return Some(text);
        }
        from = start + 1;
    }
    None
}

/// `[   12.345678] text` -> `text`, if `s` starts with such a timestamp.
fn after_timestamp(s: &str) -> Option<&str> {
    let inner_end = s.find(']')?;
    let inner = s[1..inner_end].trim_start();
    let (secs, frac) = inner.split_once('.')?;
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || !digits(frac) {
        return None;
    }
    Some(
        s[inner_end + 1..]
            .strip_prefix(' ')
            .unwrap_or(&s[inner_end + 1..]),
    )
}

/// If a console line is a kernel report of a crash, hang or kernel bug,
/// names what kind. Only kernel log lines count (a job printing "BUG:" on
/// its stdout is not a crash); benign lines such as `NMI watchdog: Perf NMI
/// watchdog permanently disabled` or `... report a bug` do not match.
pub fn crash_kind(line: &str) -> Option<&'static str> {
    let text = printk_text(line)?;
    // Strip a subsystem prefix such as "watchdog: " or "rcu: ".
    let body = text
        .split_once(": ")
        .filter(|(prefix, _)| !prefix.contains(' ') && !prefix.is_empty() && prefix.len() < 24)
        .map_or(text, |(_, rest)| rest);
    let starts = |p: &str| text.starts_with(p) || body.starts_with(p);
    if text.contains("Kernel panic") {
        return Some("kernel panic");
    }
    if starts("BUG: soft lockup") || text.contains("hard LOCKUP") {
        return Some("lockup (watchdog)");
    }
    if starts("BUG: workqueue lockup") {
        return Some("workqueue lockup (watchdog)");
    }
    if starts("BUG:") || text.contains("kernel BUG at ") {
        return Some("kernel BUG");
    }
    if starts("Oops") || is_oops_header(text) {
        return Some("kernel oops");
    }
    if text.contains("detected stalls on CPU")
        || text.contains("self-detected stall on CPU")
        || (text.starts_with("rcu: INFO:") && text.contains("stall"))
    {
        return Some("RCU stall");
    }
    if starts("INFO: task ") && text.contains("blocked for more than") {
        return Some("hung task");
    }
    if starts("WARNING: CPU:") || starts("WARNING: at ") {
        return Some("kernel warning");
    }
    if starts("watchdog: ") {
        return Some("watchdog");
    }
    None
}

/// An oops header carries the oops counter: `general protection fault ...:
/// 0000 [#1] PREEMPT SMP NOPTI`, `invalid opcode: 0000 [#1] SMP`.
fn is_oops_header(text: &str) -> bool {
    text.match_indices("[#").any(|(i, _)| {
        let rest = &text[i + 2..];
        let n = rest.bytes().take_while(u8::is_ascii_digit).count();
        n > 0 && rest[n..].starts_with(']')
    })
}

/// A line printed by the guest wrapper.
#[derive(Debug, PartialEq, Eq)]
pub enum Marker {
    /// The job is about to start.
    Start,
    /// The job ended with this status.
    Exit(i32),
}

/// The marker tag; `nonce` makes it unique to one run.
pub fn marker_tag(nonce: &str) -> String {
    format!("@@scx-hints-guest {nonce} ")
}

/// Parses `@@scx-hints-guest <nonce> start@@` and `... exit <n>@@`.
pub fn marker(line: &str, nonce: &str) -> Option<Marker> {
    let tag = marker_tag(nonce);
    let rest = &line[line.find(&tag)? + tag.len()..];
    let what = &rest[..rest.find("@@")?];
    match what.split_once(' ') {
        None if what == "start" => Some(Marker::Start),
        Some(("exit", n)) => n.trim().parse().ok().map(Marker::Exit),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Excerpts of real console logs (7.3.4 guest under qemu 10), with a
    /// job's output mixed in.
    const CLEAN: &str = "\
Probing EDD (edd=off to disable)... ok
[    0.000000] Linux version 7.3.4+deb13-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 7.3.4-1~bpo13+1
[    0.219883] rcu: Preemptible hierarchical RCU implementation.
[    0.221574] rcu: Adjusting geometry for rcu_fanout_leaf=16, nr_cpu_ids=2
[    0.733791] NMI watchdog: Perf NMI watchdog permanently disabled
[    0.030798] calibrate_delay_direct() failed to get a good estimate for loops_per_jiffy.
[    1.399190] PCI: Using host bridge windows from ACPI; if necessary, use \"pci=nocrs\" and report a bug
[    3.506102] Invalid ELF header magic: != ELF
[    6.665851] virtme-ng-init: starting script (console fallback)
BUG: this is the job's own output, not the kernel's
Oops: also the job's
[   20.101000] sched_ext: BPF scheduler \"hinted\" enabled
[   24.310000] sched_ext: BPF scheduler \"hinted\" disabled (unregistered from user space)
[   24.500000] sched_ext: BPF scheduler \"fifo\" disabled (runnable task stall)
[    6.980251] virtme-ng-init: script exited with code 3
[    6.988237] reboot: Power down";

    #[test]
    fn clean_boot_has_no_crash() {
        for line in CLEAN.lines() {
            assert_eq!(crash_kind(line), None, "false alarm on {line:?}");
        }
    }

    #[test]
    fn crashes_are_named() {
        let cases = [
            ("[   41.235417] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI", "kernel oops"),
            ("[   41.235417] int3: 0000 [#1] SMP PTI", "kernel oops"),
            (
                "[   12.000001] general protection fault, probably for non-canonical address 0xdead: 0000 [#1] PREEMPT SMP NOPTI",
                "kernel oops",
            ),
            (
                "[   41.240000] Kernel panic - not syncing: Fatal exception in interrupt",
                "kernel panic",
            ),
            (
                "[   30.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008",
                "kernel BUG",
            ),
            ("[    5.5] kernel BUG at kernel/sched/ext.c:1234!", "kernel BUG"),
            (
                "[   88.100000] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [stress-ng:412]",
                "lockup (watchdog)",
            ),
            (
                "[   88.100000] watchdog: Watchdog detected hard LOCKUP on cpu 1",
                "lockup (watchdog)",
            ),
            (
                "[  100.000000] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
                "RCU stall",
            ),
            (
                "[  100.000000] rcu: INFO: rcu_preempt self-detected stall on CPU",
                "RCU stall",
            ),
            (
                "[  242.000000] INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
                "hung task",
            ),
            (
                "[   10.000000] WARNING: CPU: 1 PID: 77 at kernel/sched/ext.c:4321 scx_foo+0x12/0x40",
                "kernel warning",
            ),
            // The timestamp after a job's unterminated line.
            ("progress: 12[   50.000000] Oops: int3: 0000 [#1] SMP", "kernel oops"),
        ];
        for (line, kind) in cases {
            assert_eq!(crash_kind(line), Some(kind), "{line:?}");
        }
    }

    #[test]
    fn printk_prefix() {
        assert_eq!(printk_text("[    6.9] a b"), Some("a b"));
        assert_eq!(printk_text("[12345.000001] x"), Some("x"));
        assert_eq!(printk_text("[x] y"), None);
        assert_eq!(printk_text("[1.] y"), None);
        assert_eq!(printk_text("plain"), None);
    }

    #[test]
    fn markers() {
        let n = "1234-5";
        assert_eq!(
            marker("@@scx-hints-guest 1234-5 start@@", n),
            Some(Marker::Start)
        );
        assert_eq!(
            marker("@@scx-hints-guest 1234-5 exit 3@@", n),
            Some(Marker::Exit(3))
        );
        assert_eq!(
            marker("junk@@scx-hints-guest 1234-5 exit 137@@", n),
            Some(Marker::Exit(137))
        );
        assert_eq!(marker("@@scx-hints-guest 999 start@@", n), None);
        assert_eq!(marker("@@scx-hints-guest 1234-5 exit x@@", n), None);
        assert_eq!(marker("echo @@scx-hints-guest 1234-5 start", n), None);
    }
}
