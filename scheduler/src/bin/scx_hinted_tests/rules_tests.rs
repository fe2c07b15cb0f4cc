// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! Hints for unmodified programs, as the scheduler sees them: a class
//! inherited through `scx-hint run` and rules (`scx_hinted --rules`),
//! checked through the task view (`scx-hint show`) and the class counters.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use scx_hints::view::{Source, TaskView, Views};
use scx_hints::LatencyClass;

use crate::harness::{self, stats, wait_stats, Env, Sched};

/// How often the scheduler under test matches its rules.
const RULES_INTERVAL_MS: u64 = 200;
/// The unprivileged user of the uid rule (nobody).
const UID: u32 = 65534;
/// Another unprivileged user, whose spinner a name rule claims critical for.
const CLAIM_UID: u32 = 65533;

/// Line 3: a stress-ng hash worker (renamed by stress-ng itself); line 4:
/// anything of user 65534; line 5: this program's threads named `rules-*`;
/// line 6: critical and priority -5 for user 65533's spinner, by a rule
/// that also matches on the thread's name (`comm=*`: a staged program's name
/// is its loader's), which anyone can choose: clamped.
fn rules_text(hash_class: &str) -> String {
    format!(
        "# scx_hinted_tests: rules\n\
         \n\
         comm=stress-ng-hash class={hash_class}\n\
         user={UID} class=batch priority=4\n\
         comm=rules-* class=background\n\
         comm=* user={CLAIM_UID} class=critical priority=-5\n"
    )
}

fn scx_hint() -> Result<std::path::PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("scx-hint"))
                .find(|p| p.is_file())
        })
        .context("scx-hint is not on PATH (cargo xtask test stages it)")
}

fn stress(env: &Env, launcher: Option<&str>, stressor: &str) -> Result<Child> {
    let stress = harness::stress_ng().context("stress-ng is not on PATH")?;
    let mut cmd = match launcher {
        Some(class) => {
            let mut c = Command::new(scx_hint()?);
            c.args(["run", "--require", "--class", class, "--"])
                .arg(stress);
            c
        }
        None => Command::new(stress),
    };
    cmd.args([stressor, "1", "--timeout", "60s", "-q", "--temp-path"])
        .arg(&env.tmp)
        .current_dir(&env.tmp)
        .stdin(Stdio::null())
        .spawn()
        .context("starting stress-ng")
}

/// The forked worker of a stress-ng run (its only child).
fn worker_of(pid: u32, timeout: Duration) -> Result<i32> {
    let start = Instant::now();
    loop {
        let kids =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(kid) = kids.split_whitespace().next().and_then(|k| k.parse().ok()) {
            return Ok(kid);
        }
        if start.elapsed() > timeout {
            bail!("stress-ng ({pid}) started no worker within {timeout:?}");
        }
        sleep(Duration::from_millis(50));
    }
}

/// Polls the view of `tid` until `cond` holds; the last view otherwise.
pub(crate) fn wait_view(
    views: &Views,
    tid: i32,
    what: &str,
    cond: impl Fn(&TaskView) -> bool,
) -> Result<TaskView> {
    let start = Instant::now();
    let timeout = Duration::from_secs(10);
    loop {
        let v = views
            .get(tid)
            .with_context(|| format!("reading the view of {tid}"))?;
        match v {
            Some(v) if cond(&v) => return Ok(v),
            _ if start.elapsed() > timeout => {
                bail!("{what}: thread {tid} is seen as {v:?} after {timeout:?}")
            }
            _ => sleep(Duration::from_millis(50)),
        }
    }
}

fn is(class: LatencyClass, source: Source) -> impl Fn(&TaskView) -> bool {
    move |v| v.class == class && v.class_source == source
}

/// A thread of this process named `name` that wakes every 2 ms (so that the
/// scheduler reads its hints often), publishing `own` if given.
fn named_thread(
    name: &str,
    own: Option<LatencyClass>,
    stop: &Arc<AtomicBool>,
) -> Result<(i32, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let stop = stop.clone();
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Some(class) = own {
                scx_hints::set_latency_class(class);
            }
            // SAFETY: gettid has no preconditions.
            let _ = tx.send(unsafe { libc::gettid() });
            while !stop.load(Ordering::Relaxed) {
                sleep(Duration::from_millis(2));
            }
        })?;
    Ok((rx.recv()?, handle))
}

/// A thread named `rules-forker` that, once told to, starts a thread named
/// `forked-child`; returns its tid, the go channel, the channel that gives
/// the child's tid, and its handle (it joins the child).
#[allow(clippy::type_complexity)]
fn forking_thread(
    stop: &Arc<AtomicBool>,
) -> Result<(i32, mpsc::Sender<()>, mpsc::Receiver<i32>, JoinHandle<()>)> {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (child_tx, child_rx) = mpsc::channel();
    let stop = stop.clone();
    let handle = std::thread::Builder::new()
        .name("rules-forker".into())
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            // Wake often until told, so that the rule is read.
            while go_rx.try_recv().is_err() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                sleep(Duration::from_millis(2));
            }
            let child_stop = stop.clone();
            let child = std::thread::Builder::new()
                .name("forked-child".into())
                .spawn(move || {
                    // SAFETY: gettid has no preconditions.
                    let _ = child_tx.send(unsafe { libc::gettid() });
                    while !child_stop.load(Ordering::Relaxed) {
                        sleep(Duration::from_millis(2));
                    }
                });
            if let Ok(child) = child {
                let _ = child.join();
            }
        })?;
    Ok((tid_rx.recv()?, go_tx, child_rx, handle))
}

/// `scx-hint show PID`'s output (as user `uid`), with the check that it ran.
fn show_as(pid: u32, uid: u32) -> Result<String> {
    let mut cmd = Command::new(scx_hint()?);
    cmd.args(["show", &pid.to_string()]).stdin(Stdio::null());
    if uid != 0 {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().context("running scx-hint show")?;
    ensure!(
        out.status.success(),
        "scx-hint show {pid} (uid {uid}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn show(pid: u32) -> Result<String> {
    show_as(pid, 0)
}

fn show_line(listing: &str, tid: i32) -> Option<&str> {
    listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&tid.to_string()))
}

fn write_rules(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn sighup(sched: &Sched) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(sched.pid(), libc::SIGHUP) };
}

/// Waits for `needle` in the scheduler's log.
fn wait_log(sched: &Sched, needle: &str) -> Result<String> {
    let start = Instant::now();
    loop {
        let tail = sched.log_tail(40);
        if let Some(line) = tail.lines().rev().find(|l| l.contains(needle)) {
            return Ok(line.to_string());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("no {needle:?} in the scheduler's log:\n{tail}");
        }
        sleep(Duration::from_millis(50));
    }
}

/// One scheduler with a rules file:
/// - an unmodified stress-ng under `scx-hint run --class background`:
///   `scx-hint show` lists its worker as background (inherited);
/// - the view pin is root 0644 and `scx-hint show` works as an unprivileged user;
/// - a rule on a stress-ng worker's comm: interactive (rule), counted in
///   the interactive tasks; a uid rule on an unprivileged process; a
///   thread's own hint beats a rule that matches it;
/// - `latency_class()` in a thread that publishes nothing reports the class
///   it inherited, without registering the thread;
/// - SIGHUP with a changed file moves the worker to batch; SIGHUP with a
///   bad file is refused with its line and column, and the rules stay;
/// - a name rule's critical class is clamped for an unprivileged process,
///   a rule is handed down to a new thread, a removed rule falls back to
///   the inherited class, and SIGHUP does not end a scheduler without
///   --rules.
pub fn rules(env: &Env) -> Result<String> {
    let path = env.tmp.join("rules.conf");
    write_rules(&path, &rules_text("interactive"))?;
    let path_str = path.to_string_lossy().into_owned();
    let interval = RULES_INTERVAL_MS.to_string();
    let mut sched = Sched::start(
        env,
        &["--rules", &path_str, "--rules-interval-ms", &interval],
    )?;
    let loaded = wait_log(&sched, "rules: 4 loaded")?;
    let s0 = stats()?;
    let inter0 = s0.class("interactive", "tasks");

    let stop = Arc::new(AtomicBool::new(false));
    let mut children: Vec<Child> = Vec::new();
    let mut threads = Vec::new();
    let result = (|| -> Result<String> {
        let views = Views::open().context("opening the task view")?;

        // Inherited: scx-hint run, seen by scx-hint show.
        children.push(stress(env, Some("background"), "--cpu")?);
        let launched = children[0].id();
        let inh_worker = worker_of(launched, Duration::from_secs(15))?;
        wait_view(
            &views,
            inh_worker,
            "the worker under scx-hint run",
            is(LatencyClass::Background, Source::Inherited),
        )
        .with_context(|| {
            format!(
                "stress-ng's main thread is seen as {:?}; forks that inherited a class: {}",
                views.get(launched as i32).ok().flatten(),
                stats().map_or(f64::NAN, |s| s.get("inherited"))
            )
        })?;
        let listing = show(launched)?;
        ensure!(
            show_line(&listing, launched as i32)
                .is_some_and(|l| l.contains("background (inherited)")),
            "scx-hint show {launched} does not list it as background (inherited):\n{listing}"
        );
        // The view is readable by any user, writable by root only.
        let pin = scx_hints::view::pin_path();
        let meta = std::fs::metadata(&pin).with_context(|| format!("no view pin at {pin}"))?;
        ensure!(
            meta.mode() & 0o777 == 0o644 && meta.uid() == 0,
            "the view pin {pin} is {:o} owned by uid {}, not 644 root",
            meta.mode() & 0o777,
            meta.uid()
        );
        let listing = show_as(inh_worker as u32, UID)?;
        ensure!(
            show_line(&listing, inh_worker).is_some_and(|l| l.contains("background (inherited)")),
            "scx-hint show {inh_worker} as uid {UID} does not list the worker as background \
             (inherited):\n\
             {listing}"
        );

        // A comm rule on an unmodified stress-ng worker, started in the
        // background class: the rule beats what it inherited.
        children.push(stress(env, Some("background"), "--hash")?);
        let hash = worker_of(children[1].id(), Duration::from_secs(15))?;
        let v = wait_view(
            &views,
            hash,
            "the hash worker (rule at line 3)",
            is(LatencyClass::Interactive, Source::Rule),
        )?;
        ensure!(
            v.rule == Some(3),
            "the hash worker's rule is {:?}, not line 3",
            v.rule
        );
        let counted = wait_stats(Duration::from_secs(10), |s| {
            s.class("interactive", "tasks") >= inter0 + 1.0
        })
        .context("the rule's interactive worker is not counted in interactive tasks")?;
        let listing = show(hash as u32)?;
        ensure!(
            show_line(&listing, hash)
                .is_some_and(|l| l.contains("interactive (rule)") && l.contains("rule at line 3")),
            "scx-hint show {hash} does not list the worker as interactive (rule):\n{listing}"
        );

        // A uid rule on a process of an unprivileged user that hints nothing.
        let mut spin = Command::new(&env.self_exe);
        spin.args(["--spin", "60"])
            .uid(UID)
            .gid(UID)
            .stdin(Stdio::null());
        children.push(spin.spawn().context("starting a spinner as uid 65534")?);
        let spinner = children[2].id() as i32;
        let v = wait_view(
            &views,
            spinner,
            "the process of uid 65534 (rule at line 4)",
            is(LatencyClass::Batch, Source::Rule),
        )?;
        ensure!(
            v.priority == 4 && v.priority_source == Source::Rule,
            "the uid rule's priority 4 is not applied: {v:?}"
        );

        // A rule naming a thread by what anyone can fake gives an
        // unprivileged process no critical class, no negative priority.
        let mut spin = Command::new(&env.self_exe);
        spin.args(["--spin", "60"])
            .uid(CLAIM_UID)
            .gid(CLAIM_UID)
            .stdin(Stdio::null());
        children.push(spin.spawn().context("starting a spinner as uid 65533")?);
        let claimer = children[3].id() as i32;
        let v = wait_view(
            &views,
            claimer,
            "the process of uid 65533 (critical by name, rule at line 6)",
            |v| v.rule == Some(6),
        )?;
        ensure!(
            v.class == LatencyClass::Interactive
                && v.class_source == Source::Rule
                && v.priority == 0
                && v.clamped,
            "a name rule's critical class and priority -5 for uid {CLAIM_UID} are not clamped \
             to interactive and 0: {v:?}"
        );

        // The own hint beats a rule; the rule applies to a thread without one.
        let (own, h) = named_thread("rules-own", Some(LatencyClass::Interactive), &stop)?;
        threads.push(h);
        let (plain, h) = named_thread("rules-plain", None, &stop)?;
        threads.push(h);
        wait_view(
            &views,
            plain,
            "a thread named rules-plain (rule at line 5)",
            is(LatencyClass::Background, Source::Rule),
        )?;
        wait_view(
            &views,
            own,
            "a thread named rules-own publishing interactive",
            is(LatencyClass::Interactive, Source::Own),
        )?;

        // What a rule gives is handed down: a thread started by a thread
        // the rule matched is background (inherited) from its start, and
        // stays so, since no rule matches its own name.
        let (forker, go, child_tid, h) = forking_thread(&stop)?;
        threads.push(h);
        wait_view(
            &views,
            forker,
            "a thread named rules-forker (rule at line 5)",
            is(LatencyClass::Background, Source::Rule),
        )?;
        go.send(())?;
        let child = child_tid.recv()?;
        wait_view(
            &views,
            child,
            "a thread started by the rule-matched rules-forker",
            is(LatencyClass::Background, Source::Inherited),
        )?;

        // latency_class() in a thread that publishes nothing reports the
        // class it inherited from its parent thread, and reading it does not
        // register the thread (which would publish class normal).
        let (inh_class, inh_registered) = std::thread::Builder::new()
            .name("rules-parent".into())
            .spawn(|| {
                scx_hints::set_latency_class(LatencyClass::Interactive);
                std::thread::Builder::new()
                    .name("inh-child".into())
                    .spawn(|| {
                        let class = scx_hints::latency_class();
                        (class, scx_hints::registration().is_registered())
                    })
                    .map(|h| h.join())
            })?
            .join()
            .map_err(|_| anyhow::anyhow!("the rules-parent thread panicked"))?
            .context("spawning the inh-child thread")?
            .map_err(|_| anyhow::anyhow!("the inh-child thread panicked"))?;
        ensure!(
            inh_class == LatencyClass::Interactive && !inh_registered,
            "latency_class() in a thread that inherited interactive says {inh_class:?} \
             (registered by the read: {inh_registered})"
        );

        // Reload: the worker's rule now says batch.
        write_rules(&path, &rules_text("batch"))?;
        sighup(&sched);
        wait_view(
            &views,
            hash,
            "the hash worker after the reload",
            is(LatencyClass::Batch, Source::Rule),
        )?;

        // A bad file on reload: refused where it is wrong, old rules kept.
        write_rules(&path, "comm=stress-ng-hash clas=interactive\n")?;
        sighup(&sched);
        let refused = wait_log(&sched, "not reloaded")?;
        ensure!(
            refused.contains(":1:21: unknown key \"clas\""),
            "the refusal does not say line 1, column 21: {refused}"
        );
        // Nothing signals "nothing changed": give the matcher ten scans.
        sleep(Duration::from_millis(10 * RULES_INTERVAL_MS));
        for (tid, class, what) in [
            (hash, LatencyClass::Batch, "hash worker"),
            (plain, LatencyClass::Background, "rules-plain thread"),
        ] {
            let v = views.get(tid)?;
            ensure!(
                v.is_some_and(|v| v.class == class && v.class_source == Source::Rule),
                "after a refused reload the {what} is seen as {v:?}"
            );
        }
        // A reload without the worker's rule: it falls back to the class it
        // inherited from scx-hint run.
        write_rules(&path, "comm=rules-* class=background\n")?;
        sighup(&sched);
        wait_view(
            &views,
            hash,
            "the hash worker after a reload that removed its rule",
            is(LatencyClass::Background, Source::Inherited),
        )?;
        Ok(format!(
            "{}; inherited background seen by show; comm, uid and own-beats-rule seen \
             (interactive tasks {inter0} -> {}); a name rule's critical clamped for an \
             unprivileged process; a rule handed down to a new thread; latency_class() \
             reports an inherited class; reload to batch applied; bad file refused: {}; \
             a removed rule falls back to the inherited class",
            loaded.split("rules: ").nth(1).unwrap_or(&loaded),
            counted.class("interactive", "tasks"),
            refused.split("rules: ").nth(1).unwrap_or(&refused)
        ))
    })();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    for child in &mut children {
        // SAFETY: our own unreaped child; SIGTERM lets stress-ng stop its worker.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
    }
    let summary = result?;
    sched.check()?;
    sched.stop()?;

    // Without --rules, SIGHUP (systemctl reload) must not end the scheduler.
    let mut plain = Sched::start(env, &[])?;
    sighup(&plain);
    // A round trip through the scheduler's process after the signal.
    let alive = stats().and_then(|_| plain.check());
    plain.stop()?;
    alive.context("scx_hinted without --rules after SIGHUP")?;
    Ok(format!("{summary}; SIGHUP without --rules ignored"))
}
