//! Running vng (and the qemu under it) in a process group of its own that
//! is always killed: on a normal end, an error, a panic, a timeout, and when
//! xtask gets SIGINT, SIGTERM or SIGHUP.

use anyhow::{Context, Result};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A child process leading its own process group. Dropping it kills the
/// whole group and reaps the child.
pub struct Group {
    child: Child,
    pgid: i32,
    done: bool,
}

/// Starts `cmd` as the leader of a new process group, with stdin from
/// /dev/null and stdout and stderr both into one pipe, whose read end is
/// returned. If xtask dies without cleaning up (SIGKILL), the child gets
/// SIGTERM (`PR_SET_PDEATHSIG`); when the child is `timeout`, that takes
/// the whole group down.
pub fn spawn(cmd: &mut Command) -> Result<(Group, std::fs::File)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: pipe2 just returned these two fresh descriptors; each is
    // owned exactly once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let write2 = write.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write2))
        .process_group(0);
    // SAFETY: the closure only calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`", crate::util::show(cmd)))?;
    // The Command still holds the write ends; replace them so that the
    // pipe reaches EOF once the group is gone.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let pgid = child.id() as i32;
    Ok((
        Group {
            child,
            pgid,
            done: false,
        },
        std::fs::File::from(read),
    ))
}

impl Group {
    /// The exit status of the leader, if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Kills every process of the group (SIGTERM, then SIGKILL after
    /// `grace`) and reaps the leader. Returns how many processes needed
    /// SIGKILL. Safe to call more than once.
    pub fn kill(&mut self, grace: Duration) -> usize {
        if self.done {
            return 0;
        }
        let alive = |g: &Group| !group_members(g.pgid).is_empty();
        if alive(self) {
            // SAFETY: kill has no memory-safety preconditions; a negative
            // pid addresses our own child's process group.
            unsafe { libc::kill(-self.pgid, libc::SIGTERM) };
            let end = Instant::now() + grace;
            while Instant::now() < end && alive(self) {
                let _ = self.child.try_wait();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let mut killed = 0;
        for _ in 0..50 {
            let left = group_members(self.pgid);
            if left.is_empty() {
                break;
            }
            killed = killed.max(left.len());
            // SAFETY: as above.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
            let _ = self.child.try_wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.wait();
        self.done = true;
        killed
    }

    /// Waits for the leader to exit by itself, up to `limit`.
    pub fn wait_for(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill(Duration::from_secs(2));
    }
}

/// The pids (other than zombies) whose process group is `pgid`, from /proc.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat_pgrp(&stat))
                .is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z')
        })
        .collect()
}

/// State and process group from `/proc/<pid>/stat`: `pid (comm) S ppid
/// pgrp ...` (comm may contain spaces and parentheses).
pub fn parse_stat_pgrp(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    Some((state, fields.next()?.parse().ok()?))
}

static PENDING: AtomicI32 = AtomicI32::new(0);
const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

struct Saved {
    users: usize,
    old: Vec<(i32, libc::sigaction)>,
}

static SAVED: Mutex<Option<Saved>> = Mutex::new(None);

extern "C" fn on_signal(sig: libc::c_int) {
    PENDING.store(sig, Ordering::SeqCst);
}

/// While alive, SIGINT, SIGTERM and SIGHUP only set a flag (see
/// [`pending`]) so that the guest can be killed before xtask exits.
pub struct SignalGuard(());

impl SignalGuard {
    pub fn install() -> SignalGuard {
        let mut saved = SAVED.lock().unwrap_or_else(|e| e.into_inner());
        match saved.as_mut() {
            Some(s) => s.users += 1,
            None => {
                let mut old = Vec::new();
                for sig in SIGNALS {
                    // SAFETY: sigaction structs are plain data; the handler
                    // only stores to an atomic, which is async-signal-safe.
                    unsafe {
                        let mut act: libc::sigaction = std::mem::zeroed();
                        act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                        libc::sigemptyset(&mut act.sa_mask);
                        let mut prev: libc::sigaction = std::mem::zeroed();
                        if libc::sigaction(sig, &act, &mut prev) == 0 {
                            old.push((sig, prev));
                        }
                    }
                }
                *saved = Some(Saved { users: 1, old });
            }
        }
        SignalGuard(())
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let mut saved = SAVED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = saved.as_mut() {
            s.users -= 1;
            if s.users == 0 {
                for (sig, prev) in &s.old {
                    // SAFETY: restores the action saved by install().
                    unsafe { libc::sigaction(*sig, prev, std::ptr::null_mut()) };
                }
                *saved = None;
            }
        }
    }
}

/// The signal received since the guard was installed, if any.
pub fn pending() -> Option<i32> {
    match PENDING.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// After cleaning up for a signal: restore the default action and die by
/// it, the way a shell expects an interrupted program to end. Only returns
/// if the signal does not terminate the process.
pub fn die_by(sig: i32) {
    // SAFETY: resetting a signal to its default action and raising it.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        assert_eq!(
            parse_stat_pgrp("4242 (qemu-system-x86) S 4240 4239 4239 0 -1 4194560 ..."),
            Some(('S', 4239))
        );
        assert_eq!(parse_stat_pgrp("7 (a) b) (c) Z 1 99 99 0"), Some(('Z', 99)));
        assert_eq!(parse_stat_pgrp("garbage"), None);
    }

    #[test]
    fn group_is_killed_on_drop() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30 & echo up; wait"]);
        let (group, out) = spawn(&mut cmd).unwrap();
        let pgid = group.pgid;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
        assert_eq!(line, "up\n");
        assert_eq!(group_members(pgid).len(), 3);
        drop(group);
        assert!(group_members(pgid).is_empty());
    }
}
