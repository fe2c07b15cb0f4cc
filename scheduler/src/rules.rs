// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! Rules: hints for programs that publish none (`scx_hinted --rules FILE`).
//!
//! The file has one rule per line: `KEY=VALUE` words, the matchers all of
//! which a thread must satisfy and the hints it then gets. The first rule
//! that matches a thread applies. docs/operators.md ("Rules") documents the
//! format; [`parse`] reports errors with their line and column.
//!
//! Matching happens here, in user space, by reading /proc: at start, after
//! a reload (SIGHUP), and every `--rules-interval-ms`. For each thread whose
//! rule changed, the rule's hints go into the BPF task-storage map
//! `rule_hints` by pidfd (or its entry is deleted), then `rules_gen` is
//! bumped so that those tasks look their entries up again (bpf/rules.bpf.h).
//! A thread started between two scans runs with what it inherited until the
//! next one; after an exec it keeps its rule until the next scan matches the
//! new program.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::libbpf_sys;
use log::{info, warn};
use scx_hints::LatencyClass;

use crate::bpf_intf;

/// A pattern: `*` matches any run of characters (also `/`); everything else
/// matches itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub fn matches(&self, s: &str) -> bool {
        let mut parts = self.0.split('*');
        let first = parts.next().unwrap_or("");
        let Some(mut rest) = s.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            return rest.is_empty(); // no `*`: an exact match
        };
        for part in middle {
            match rest.find(part) {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// One rule: matchers (all must hold) and the hints it gives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// Line in the file: the rule's id in the scheduler and in `scx-hint show`.
    pub line: u32,
    pub exe: Option<Glob>,
    pub comm: Option<Glob>,
    pub pcomm: Option<Glob>,
    pub cgroup: Option<Glob>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub class: Option<LatencyClass>,
    pub priority: Option<i32>,
}

/// What is known of a thread, read from /proc (only what the rules use).
#[derive(Debug, Default)]
pub struct Thread {
    pub exe: Option<String>,
    pub comm: String,
    pub pcomm: String,
    pub cgroup: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Rule {
    fn matches(&self, t: &Thread) -> bool {
        let glob = |g: &Option<Glob>, v: Option<&str>| match g {
            None => true,
            Some(g) => v.is_some_and(|v| g.matches(v)),
        };
        let id = |want: Option<u32>, have: Option<u32>| want.is_none() || want == have;
        glob(&self.exe, t.exe.as_deref())
            && glob(&self.comm, Some(&t.comm))
            && glob(&self.pcomm, Some(&t.pcomm))
            && glob(&self.cgroup, t.cgroup.as_deref())
            && id(self.uid, t.uid)
            && id(self.gid, t.gid)
    }

    /// Whether the rule names threads only by what their owner cannot
    /// change: its user and group. Names, cgroups (a delegated subtree) and
    /// executable paths (a bind mount in a user namespace) can be faked by
    /// anyone, so a rule that uses them gets a critical class or a negative
    /// priority only for privileged threads, as an own claim would.
    fn trusted(&self) -> bool {
        self.exe.is_none() && self.comm.is_none() && self.pcomm.is_none() && self.cgroup.is_none()
    }

    fn hint(&self) -> Hint {
        Hint {
            class: self.class.map_or(-1, |c| c as i32),
            priority: self.priority,
            trusted: self.trusted(),
            rule: self.line,
        }
    }
}

/// A parse error at a line and column (both from 1).
#[derive(Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: u32,
    pub col: u32,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.msg)
    }
}

const MATCHERS: &str = "exe, comm, pcomm, cgroup, user, group";
const ACTIONS: &str = "class, priority";
/// The kernel keeps 15 bytes of a thread's name.
const COMM_LEN: usize = 15;

/// The words of a line: (column, text), with `"..."` quoting (`\"` and `\\`
/// inside) and `#` starting a comment outside quotes.
fn words(line: &str) -> Result<Vec<(u32, String)>, (u32, String)> {
    let mut out = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '#' {
            break;
        }
        let col = line[..i].chars().count() as u32 + 1;
        let mut word = String::new();
        let mut quoted = false;
        while let Some(&(_, c)) = chars.peek() {
            if !quoted && c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' => quoted = !quoted,
                '\\' if quoted => match chars.next() {
                    Some((_, e @ ('"' | '\\'))) => word.push(e),
                    _ => return Err((col, "only \\\" and \\\\ may be escaped".into())),
                },
                c => word.push(c),
            }
        }
        if quoted {
            return Err((col, "unterminated quote".into()));
        }
        out.push((col, word));
    }
    Ok(out)
}

/// Parses a rules file. `resolve(name, group)` turns a user or group name
/// into its id.
pub fn parse(
    text: &str,
    resolve: impl Fn(&str, bool) -> Result<u32>,
) -> Result<Vec<Rule>, ParseError> {
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n as u32 + 1;
        let err = |col: u32, msg: String| ParseError {
            line: line_no,
            col,
            msg,
        };
        let words = words(line).map_err(|(col, msg)| err(col, msg))?;
        if words.is_empty() {
            continue;
        }
        let mut rule = Rule {
            line: line_no,
            ..Default::default()
        };
        for (col, word) in words {
            let Some((key, value)) = word.split_once('=') else {
                return Err(err(
                    col,
                    format!("expected KEY=VALUE, found {word:?} (keys: {MATCHERS}; {ACTIONS})"),
                ));
            };
            let vcol = col + key.chars().count() as u32 + 1;
            if value.is_empty() {
                return Err(err(vcol, format!("{key} needs a value")));
            }
            let dup = |set: bool| {
                if set {
                    Err(err(col, format!("{key} given twice in one rule")))
                } else {
                    Ok(())
                }
            };
            let glob = Glob(value.to_string());
            match key {
                "exe" => {
                    dup(rule.exe.is_some())?;
                    if !value.starts_with('/') && !value.starts_with('*') {
                        return Err(err(
                            vcol,
                            "exe is an absolute path (or a pattern starting with *)".into(),
                        ));
                    }
                    rule.exe = Some(glob);
                }
                "comm" | "pcomm" => {
                    if !value.contains('*') && value.len() > COMM_LEN {
                        return Err(err(
                            vcol,
                            format!(
                                "{key} {value:?} is longer than the kernel keeps \
                                 ({COMM_LEN} bytes): write {:?}",
                                value.get(..COMM_LEN).unwrap_or(value)
                            ),
                        ));
                    }
                    if key == "comm" {
                        dup(rule.comm.is_some())?;
                        rule.comm = Some(glob);
                    } else {
                        dup(rule.pcomm.is_some())?;
                        rule.pcomm = Some(glob);
                    }
                }
                "cgroup" => {
                    dup(rule.cgroup.is_some())?;
                    if !value.starts_with('/') && !value.starts_with('*') {
                        return Err(err(
                            vcol,
                            "cgroup is a path from the cgroup root, like /system.slice/*".into(),
                        ));
                    }
                    rule.cgroup = Some(glob);
                }
                "user" | "group" => {
                    let group = key == "group";
                    let id = resolve(value, group).map_err(|e| err(vcol, format!("{e:#}")))?;
                    let slot = if group { &mut rule.gid } else { &mut rule.uid };
                    dup(slot.is_some())?;
                    *slot = Some(id);
                }
                "class" => {
                    dup(rule.class.is_some())?;
                    rule.class = Some(value.parse().map_err(|e: String| err(vcol, e))?);
                }
                "priority" => {
                    dup(rule.priority.is_some())?;
                    let p = value
                        .parse::<i32>()
                        .ok()
                        .filter(|p| {
                            (scx_hints::vocab::PRIO_MIN..=scx_hints::vocab::PRIO_MAX).contains(p)
                        })
                        .ok_or_else(|| {
                            err(
                                vcol,
                                format!("priority {value:?} is not a number in -20..19"),
                            )
                        })?;
                    rule.priority = Some(p);
                }
                _ => {
                    return Err(err(
                        col,
                        format!("unknown key {key:?} (matchers: {MATCHERS}; hints: {ACTIONS})"),
                    ))
                }
            }
        }
        let has_matcher = rule.exe.is_some()
            || rule.comm.is_some()
            || rule.pcomm.is_some()
            || rule.cgroup.is_some()
            || rule.uid.is_some()
            || rule.gid.is_some();
        if !has_matcher {
            return Err(err(1, format!("a rule needs a matcher ({MATCHERS})")));
        }
        if rule.class.is_none() && rule.priority.is_none() {
            return Err(err(1, format!("a rule needs a hint to give ({ACTIONS})")));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// The hints a rule gives one thread, as written to `rule_hints`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hint {
    class: i32,
    priority: Option<i32>,
    trusted: bool,
    rule: u32,
}

impl Hint {
    fn bytes(&self) -> Vec<u8> {
        let v = bpf_intf::hinted_rule_hint {
            cls: self.class,
            prio: self.priority.unwrap_or(0),
            have_prio: self.priority.is_some() as u8,
            trusted: self.trusted as u8,
            pad: [0; 2],
            rule_id: self.rule,
        };
        // SAFETY: hinted_rule_hint is plain integers without implicit padding
        // (pad is explicit); the slice lives no longer than v.
        unsafe {
            std::slice::from_raw_parts(&v as *const _ as *const u8, std::mem::size_of_val(&v))
        }
        .to_vec()
    }
}

/// What is written for a thread, and which thread it was (a tid can be
/// reused: the start time tells two apart).
struct Applied {
    start: u64,
    hint: Hint,
}

/// Set by SIGHUP: reload the rules file.
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sighup(_: libc::c_int) {
    RELOAD.store(true, Ordering::Relaxed);
}

/// Makes SIGHUP reload the rules instead of ending the scheduler.
pub fn reload_on_sighup() -> Result<()> {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    let old = unsafe {
        libc::signal(
            libc::SIGHUP,
            on_sighup as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t,
        )
    };
    if old == libc::SIG_ERR {
        anyhow::bail!(
            "installing the SIGHUP handler: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Which attributes the rules look at, so that a scan reads no more.
#[derive(Default)]
struct Needs {
    exe: bool,
    pcomm: bool,
    cgroup: bool,
    ids: bool,
}

pub struct Rules {
    path: PathBuf,
    rules: Vec<Rule>,
    needs: Needs,
    interval: Duration,
    next_scan: Instant,
    applied: HashMap<i32, Applied>,
}

fn load(path: &Path) -> Result<Vec<Rule>> {
    warn_if_writable_by_others(path);
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, crate::resolve_id).map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))
}

/// Rules give what only root should give (user= and group= rules are
/// trusted with the critical class): a file others can change is worth a
/// warning.
fn warn_if_writable_by_others(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return; // reading it reports the error
    };
    if meta.uid() != 0 {
        warn!(
            "rules: {} is owned by uid {}, not root: its owner can change the rules",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        warn!(
            "rules: {} is writable by its group or by everyone (mode {:o}): they can change \
             the rules",
            path.display(),
            meta.mode() & 0o7777
        );
    }
}

impl Rules {
    /// Loads the rules file (an error in it is fatal here, not at reload).
    pub fn new(path: &Path, interval: Duration) -> Result<Self> {
        let mut r = Self {
            path: path.to_path_buf(),
            rules: Vec::new(),
            needs: Needs::default(),
            interval,
            next_scan: Instant::now(),
            applied: HashMap::new(),
        };
        r.set(load(path)?);
        Ok(r)
    }

    fn set(&mut self, rules: Vec<Rule>) {
        self.needs = Needs {
            exe: rules.iter().any(|r| r.exe.is_some()),
            pcomm: rules.iter().any(|r| r.pcomm.is_some()),
            cgroup: rules.iter().any(|r| r.cgroup.is_some()),
            ids: rules.iter().any(|r| r.uid.is_some() || r.gid.is_some()),
        };
        info!(
            "rules: {} loaded from {} (matched every {} ms and at SIGHUP)",
            rules.len(),
            self.path.display(),
            self.interval.as_millis()
        );
        self.rules = rules;
    }

    /// How long until the next scan is due.
    pub fn due_in(&self) -> Duration {
        if RELOAD.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        self.next_scan.saturating_duration_since(Instant::now())
    }

    /// Reloads if SIGHUP asked, and scans if due.
    pub fn tick(&mut self, map: &libbpf_rs::MapMut, gen: *mut u64) {
        if RELOAD.swap(false, Ordering::Relaxed) {
            match load(&self.path) {
                Ok(rules) => self.set(rules),
                Err(e) => warn!(
                    "rules: not reloaded, the {} rules loaded before stay: {e:#}",
                    self.rules.len()
                ),
            }
            self.next_scan = Instant::now();
        }
        if Instant::now() < self.next_scan {
            return;
        }
        self.next_scan = Instant::now() + self.interval;
        let changes = self.scan(map);
        if changes > 0 {
            // Release order: a task that sees the new generation sees the
            // entries written before it (the BPF side orders its load too).
            // SAFETY: gen points to the aligned u64 rules_gen in the mmapped
            // .bss of the loaded program, which lives as long as the caller's
            // borrow; BPF only adds 0 to it, atomically.
            unsafe { AtomicU64::from_ptr(gen) }.fetch_add(1, Ordering::Release);
        }
    }

    /// Matches every thread; returns how many entries it wrote or deleted.
    fn scan(&mut self, map: &libbpf_rs::MapMut) -> usize {
        let mut seen: HashMap<i32, Applied> = HashMap::with_capacity(self.applied.len());
        let mut changes = 0;
        let Ok(procs) = std::fs::read_dir("/proc") else {
            warn!("rules: cannot read /proc");
            return 0;
        };
        for pid in procs
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            let exe = self
                .needs
                .exe
                .then(|| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
                .flatten()
                .map(|p| p.to_string_lossy().into_owned());
            let pcomm = if self.needs.pcomm {
                read_trimmed(&format!("/proc/{pid}/comm")).unwrap_or_default()
            } else {
                String::new()
            };
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue; // exited
            };
            for tid in tasks
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            {
                // The pidfd first, /proc after: read first, a tid can be
                // reused by a new thread before the pidfd is opened, which
                // then gets the entry meant for the old one. Read after,
                // /proc describes the pidfd's thread, or that thread is gone
                // and the write through its pidfd fails.
                let Ok(pidfd) = pidfd_open(tid) else {
                    continue; // exited
                };
                let dir = format!("/proc/{pid}/task/{tid}");
                let Some((comm, start)) = stat_comm_start(&dir) else {
                    continue;
                };
                let (uid, gid) = if self.needs.ids {
                    ids(&dir)
                } else {
                    (None, None)
                };
                let thread = Thread {
                    exe: exe.clone(),
                    comm,
                    pcomm: pcomm.clone(),
                    cgroup: self.needs.cgroup.then(|| cgroup(&dir)).flatten(),
                    uid,
                    gid,
                };
                let want = self
                    .rules
                    .iter()
                    .find(|r| r.matches(&thread))
                    .map(Rule::hint);
                let prev = self.applied.remove(&tid);
                // Recorded for an older thread with this tid: the map entry
                // went with that thread, unless it reached this one; write
                // (or delete) to be sure.
                let stale = prev.as_ref().is_some_and(|a| a.start != start);
                let had = prev.as_ref().filter(|a| a.start == start).map(|a| a.hint);
                if want == had && !stale {
                    if let Some(hint) = want {
                        seen.insert(tid, Applied { start, hint });
                    }
                    continue;
                }
                match write(map, &pidfd, want) {
                    Ok(()) => {
                        changes += 1;
                        if let Some(hint) = want {
                            seen.insert(tid, Applied { start, hint });
                        }
                    }
                    // The thread is gone, or a deleted entry was not there.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENOENT)) => {}
                    Err(e) => {
                        warn!("rules: thread {tid}: {e}");
                        // The map still holds what it held: remember it, so
                        // that the next scan tries again.
                        if let Some(a) = prev {
                            seen.insert(
                                tid,
                                Applied {
                                    start,
                                    hint: a.hint,
                                },
                            );
                        }
                    }
                }
            }
        }
        // Threads not seen exited: their entries went with them.
        self.applied = seen;
        changes
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
}

/// The thread's comm and start time (fields 2 and 22 of its stat).
fn stat_comm_start(dir: &str) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    // rest starts with field 3 (state).
    let start = rest.split_whitespace().nth(22 - 3)?.parse().ok()?;
    Some((comm, start))
}

/// The thread's effective uid and gid (its status, lines Uid and Gid).
fn ids(dir: &str) -> (Option<u32>, Option<u32>) {
    let Ok(status) = std::fs::read_to_string(format!("{dir}/status")) else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().nth(1)?.parse().ok())
    };
    (field("Uid:"), field("Gid:"))
}

/// The thread's cgroup v2 path (the `0::` line).
fn cgroup(dir: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("{dir}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Opens a thread's pidfd (PIDFD_THREAD, the value of O_EXCL, Linux 6.9 on).
fn pidfd_open(tid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, libc::O_EXCL) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Writes (or, with `None`, deletes) the rule entry of a thread by pidfd.
/// Errors keep their errno: ESRCH or ENOENT mean the thread is gone (or,
/// for a delete, that there was no entry).
fn write(map: &libbpf_rs::MapMut, pidfd: &OwnedFd, hint: Option<Hint>) -> std::io::Result<()> {
    let key = pidfd.as_raw_fd().to_ne_bytes();
    let map_fd = map.as_fd().as_raw_fd();
    let ret = match hint {
        Some(h) => {
            let value = h.bytes();
            // SAFETY: key and value are live buffers of the map's key size
            // (an int) and value size (struct hinted_rule_hint).
            unsafe {
                libbpf_sys::bpf_map_update_elem(
                    map_fd,
                    key.as_ptr().cast(),
                    value.as_ptr().cast(),
                    libbpf_sys::BPF_ANY.into(),
                )
            }
        }
        // SAFETY: key is a live buffer of the map's key size.
        None => unsafe { libbpf_sys::bpf_map_delete_elem(map_fd, key.as_ptr().cast()) },
    };
    if ret < 0 {
        return Err(std::io::Error::from_raw_os_error(-ret));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(name: &str, group: bool) -> Result<u32> {
        match (name, group) {
            ("builder", false) => Ok(1000),
            ("staff", true) => Ok(50),
            _ => name
                .parse()
                .map_err(|_| anyhow::anyhow!("no user named {name:?}")),
        }
    }

    #[test]
    fn globs_match_as_documented() {
        let g = |p: &str| Glob(p.to_string());
        assert!(g("stress-ng").matches("stress-ng"));
        assert!(!g("stress-ng").matches("stress-ng-cpu"));
        assert!(g("stress-ng*").matches("stress-ng-cpu"));
        assert!(g("*-cpu").matches("stress-ng-cpu"));
        assert!(!g("*-cpu").matches("stress-ng-io"));
        assert!(g("/user.slice/*/app-*.scope").matches("/user.slice/u/app-x.scope"));
        assert!(!g("a*b*c").matches("acb"));
        assert!(g("a*a").matches("aa"));
        assert!(!g("a*a").matches("a"));
        assert!(g("*").matches(""));
    }

    #[test]
    fn parses_rules_with_quotes_comments_and_names() {
        let text = "# build jobs\n\
                    \n\
                    exe=/usr/bin/make class=batch priority=5   # trailing\n\
                    comm=\"my worker\" user=builder class=background\n\
                    cgroup=/system.slice/* group=staff priority=-3\n";
        let rules = parse(text, ids).unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].line, 3);
        assert_eq!(rules[0].exe, Some(Glob("/usr/bin/make".into())));
        assert_eq!(rules[0].class, Some(LatencyClass::Batch));
        assert_eq!(rules[0].priority, Some(5));
        assert_eq!(rules[1].comm, Some(Glob("my worker".into())));
        assert_eq!(rules[1].uid, Some(1000));
        assert_eq!(rules[2].gid, Some(50));
        assert_eq!(rules[2].priority, Some(-3));
        assert_eq!(rules[2].class, None);
    }

    #[test]
    fn errors_say_where() {
        for (text, line, col, what) in [
            ("comm=a clas=batch", 1, 8, "unknown key \"clas\""),
            ("\ncomm=a class=urgent", 2, 14, "unknown latency class"),
            ("comm=a priority=20", 1, 17, "-20..19"),
            ("class=batch", 1, 1, "needs a matcher"),
            ("comm=a", 1, 1, "needs a hint"),
            ("comm=a comm=b class=batch", 1, 8, "twice"),
            ("comm=a user=nobody-here class=batch", 1, 13, "no user"),
            ("comm=\"a class=batch", 1, 1, "unterminated"),
            ("exe=make class=batch", 1, 5, "absolute"),
            ("comm=a-very-long-thread-name class=batch", 1, 6, "longer"),
            ("comm=a batch", 1, 8, "KEY=VALUE"),
            ("comm= class=batch", 1, 6, "needs a value"),
        ] {
            let e = parse(text, ids).unwrap_err();
            assert_eq!((e.line, e.col), (line, col), "{text:?}: {e}");
            assert!(e.msg.contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_first_matching_rule_wins_and_all_matchers_must_hold() {
        let rules = parse(
            "comm=stress-ng-cpu user=0 class=critical\n\
             comm=stress-ng* class=background\n\
             exe=/usr/bin/* priority=3\n",
            ids,
        )
        .unwrap();
        let t = |comm: &str, uid: u32, exe: Option<&str>| Thread {
            exe: exe.map(str::to_string),
            comm: comm.into(),
            uid: Some(uid),
            ..Default::default()
        };
        let first = |t: &Thread| rules.iter().find(|r| r.matches(t)).map(|r| r.line);
        assert_eq!(first(&t("stress-ng-cpu", 0, None)), Some(1));
        assert_eq!(first(&t("stress-ng-cpu", 1000, None)), Some(2));
        assert_eq!(first(&t("bash", 0, Some("/usr/bin/bash"))), Some(3));
        // A kernel thread has no exe: an exe rule never matches it.
        assert_eq!(first(&t("kworker/0:1", 0, None)), None);
    }

    #[test]
    fn only_rules_on_user_and_group_alone_are_trusted() {
        let rules = parse(
            "user=0 class=critical\n\
             user=0 group=50 priority=-5\n\
             comm=pipewire class=critical\n\
             comm=pipewire user=0 class=critical\n\
             exe=/usr/bin/x priority=-1\n\
             cgroup=/a/* class=critical\n\
             pcomm=x class=critical\n",
            ids,
        )
        .unwrap();
        let trusted: Vec<bool> = rules.iter().map(|r| r.hint().trusted).collect();
        assert_eq!(trusted, [true, true, false, false, false, false, false]);
    }

    #[test]
    fn reads_this_thread_s_attributes() {
        let dir = format!("/proc/self/task/{}", std::process::id());
        let (comm, start) = stat_comm_start(&dir).unwrap();
        assert!(!comm.is_empty());
        assert!(start > 0);
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!(super::ids(&dir), (Some(uid), Some(gid)));
    }
}
