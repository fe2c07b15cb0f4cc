//! A child process for the registration tests (tests/registration_retry.rs):
//! an application whose one hinted thread sets a value once and never
//! touches a hint again, and reports its registration state on request.
//!
//! ```text
//! tld-registration-probe [--uid N] [--emfile]
//! ```
//!
//! `--uid N`: become uid and gid N with no supplementary groups first.
//! `--emfile`: the hinted thread's registration finds the file table full
//! (the soft fd limit lowered to the lowest free fd); the limit is restored
//! right after the first report.
//!
//! Prints `state <Registration>` once the thread has set its value, then
//! answers lines on stdin: `wait-registered MS` (polls until registered or
//! MS elapse, prints `state <Registration> <elapsed ms>`), `exit`. Log
//! records go to stderr as `LOG <level> <message>`. The pin path comes from
//! `SCX_HINTS_TLD_MAP`.

use scx_hints::tld::{self, Registration};
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        eprintln!("LOG {} {}", r.level(), r.args());
    }
    fn flush(&self) {}
}

static LOGGER: StderrLog = StderrLog;

fn become_user(id: u32) -> std::io::Result<()> {
    // SAFETY: plain credential syscalls; glibc applies them to every thread.
    let ok = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setresgid(id, id, id) == 0
            && libc::setresuid(id, id, id) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Lowers the soft fd limit to the lowest free fd, so that no new fd can be
/// had; returns the old limit.
fn fill_fd_table() -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on locals.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut old);
        let free = libc::dup(0);
        libc::close(free);
        let new = libc::rlimit {
            rlim_cur: free as libc::rlim_t,
            rlim_max: old.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &new);
    }
    old
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut uid = None;
    let mut emfile = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--uid" => uid = it.next().and_then(|v| v.parse::<u32>().ok()),
            "--emfile" => emfile = true,
            other => {
                eprintln!("tld-registration-probe: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Debug));
    if let Some(id) = uid {
        if let Err(e) = become_user(id) {
            eprintln!("tld-registration-probe: becoming uid {id}: {e}");
            std::process::exit(2);
        }
    }
    let key = tld::get_or_create_key::<u64>("probe.value").expect("creating the key");
    let mut saved_limit = None;
    if emfile {
        // Open the map and start the watcher first (this thread registers):
        // only the hinted thread's own registration then lacks an fd.
        key.set(1);
        // The watcher makes its fds as it starts: let it (no event to wait on).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tld::testing::watcher_ready() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        saved_limit = Some(fill_fd_table());
    }

    let (ask, requests) = mpsc::channel::<()>();
    let (answer, answers) = mpsc::channel::<Registration>();
    std::thread::spawn(move || {
        key.set(42);
        // From here on this thread never touches a hint: it only reports.
        let _ = answer.send(tld::registration());
        while requests.recv().is_ok() {
            let _ = answer.send(tld::registration());
        }
    });
    let first = answers.recv().expect("the hinted thread reports");
    if let Some(limit) = saved_limit {
        // SAFETY: restores the limit read above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
    println!("state {first:?}");

    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        match words.next() {
            Some("wait-registered") => {
                let ms = words.next().and_then(|v| v.parse().ok()).unwrap_or(5000);
                let start = Instant::now();
                let state = loop {
                    ask.send(()).expect("the hinted thread runs");
                    let s = answers.recv().expect("the hinted thread reports");
                    if s == Registration::Registered || start.elapsed() > Duration::from_millis(ms)
                    {
                        break s;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                };
                println!("state {state:?} {}", start.elapsed().as_millis());
            }
            Some("exit") | None => break,
            Some(other) => println!("error unknown command {other:?}"),
        }
    }
}
