//! What the scheduler applies to a thread, as `scx_hinted` exports it: the
//! latency class and priority it schedules the thread with, and where each
//! comes from (the thread's own hint, a rule, one inherited at fork or exec,
//! the thread's scheduling policy, or the default).
//!
//! `scx_hinted` keeps this view in a task-storage map pinned next to the TLD
//! map (`tasks` in the same directory), readable by every user who can
//! enter that directory; `scx-hint show` prints it. The layout mirrors
//! `struct hinted_task_view` in the scheduler's `bpf/intf.h`.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::tld::{self, sys};
use crate::LatencyClass;

/// File name of the view map's pin, in the TLD map's pin directory.
pub const PIN_NAME: &str = "tasks";

/// Where a class or priority comes from (`enum hinted_source`), in order of
/// precedence; `SCHED_IDLE` makes a thread background whatever else applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Nothing applies: class normal, priority 0.
    Default,
    /// The thread's own hint.
    Own,
    /// A rule of the scheduler's rules file.
    Rule,
    /// Taken over from the parent at fork, or from the image before exec.
    Inherited,
    /// The thread's scheduling policy: `SCHED_IDLE` or `SCHED_BATCH`.
    Policy,
    /// A value this version does not know.
    Unknown(u8),
}

impl Source {
    /// The raw value of `enum hinted_source`.
    pub fn from_raw(v: u8) -> Self {
        match v {
            0 => Self::Default,
            1 => Self::Own,
            2 => Self::Rule,
            3 => Self::Inherited,
            4 => Self::Policy,
            n => Self::Unknown(n),
        }
    }

    /// A lower-case name, as `scx-hint show` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Own => "own",
            Self::Rule => "rule",
            Self::Inherited => "inherited",
            Self::Policy => "policy",
            Self::Unknown(_) => "unknown",
        }
    }
}

/// `struct hinted_task_view`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[doc(hidden)]
pub struct RawView {
    pub cls: i32,
    pub prio: i32,
    pub weight: u32,
    pub rule_id: u32,
    pub class_source: u8,
    pub prio_source: u8,
    pub registered: u8,
    pub clamped: u8,
    pub own_class: i32,
}

/// What the scheduler applies to one thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskView {
    /// The class it schedules the thread in (before any burst-budget demotion).
    pub class: LatencyClass,
    /// Where the class comes from.
    pub class_source: Source,
    /// The priority hint applied (added to nice for the weight).
    pub priority: i32,
    /// Where the priority comes from.
    pub priority_source: Source,
    /// The weight from nice and priority (nice 0 = 1024).
    pub weight: u32,
    /// The rule that applies (its line in the rules file), if any.
    pub rule: Option<u32>,
    /// The thread has a TLD registration (its own hints can be read).
    pub registered: bool,
    /// A critical class or a negative priority it claimed was refused.
    pub clamped: bool,
    /// The class the thread publishes itself, if any (valid or not).
    pub own_class: Option<i32>,
}

impl From<RawView> for TaskView {
    fn from(r: RawView) -> Self {
        Self {
            class: LatencyClass::from_raw(r.cls),
            class_source: Source::from_raw(r.class_source),
            priority: r.prio,
            priority_source: Source::from_raw(r.prio_source),
            weight: r.weight,
            rule: (r.rule_id != 0).then_some(r.rule_id),
            registered: r.registered != 0,
            clamped: r.clamped != 0,
            own_class: (r.own_class >= 0).then_some(r.own_class),
        }
    }
}

/// The view map's pin path: `tasks` beside the TLD map's pin
/// ([`tld::map_pin_path`]).
pub fn pin_path() -> String {
    let tld = tld::map_pin_path();
    match tld.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{PIN_NAME}"),
        None => PIN_NAME.to_string(),
    }
}

/// The scheduler's view map, opened read-only.
pub struct Views(OwnedFd);

impl Views {
    /// Opens the pinned view map at [`pin_path`]. `NotFound` when no
    /// scheduler pinned it; `InvalidData` when its layout is not this
    /// version's.
    pub fn open() -> io::Result<Self> {
        Self::open_at(&pin_path())
    }

    /// Opens the view map pinned at `path`.
    pub fn open_at(path: &str) -> io::Result<Self> {
        let fd = sys::obj_get_read_only(path)?;
        let size = sys::map_value_size(fd.as_raw_fd())?;
        if size as usize != std::mem::size_of::<RawView>() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{path} holds {size}-byte entries, this version reads {}: \
                     the scheduler and this program are from different versions",
                    std::mem::size_of::<RawView>()
                ),
            ));
        }
        Ok(Self(fd))
    }

    /// What the scheduler applies to thread `tid` (of any process); `None`
    /// if it has not seen the thread since the view was created.
    pub fn get(&self, tid: i32) -> io::Result<Option<TaskView>> {
        let pidfd = sys::pidfd_of_thread(tid)?;
        Ok(sys::map_lookup::<RawView>(self.0.as_raw_fd(), &pidfd)?.map(TaskView::from))
    }
}

/// How long a thread trusts what [`assigned_class`] last found: a rule
/// matched later, a scheduler started later or restarted is seen this late.
const RECHECK: Duration = Duration::from_secs(1);

/// The view map this process opened and the identity (device, inode) of
/// the pin it opened, to notice a scheduler restart (a new map pinned over
/// the old one) or exit (the pin removed).
static VIEWS: Mutex<Option<(Views, (u64, u64))>> = Mutex::new(None);

/// Looks `tid` up in the pinned view map, reopening it if the pin is no
/// longer the one opened. A failed open is not remembered: the next call
/// tries again.
fn lookup_own(tid: i32) -> Option<TaskView> {
    let path = pin_path();
    let now = sys::file_identity(&path).ok();
    let mut views = VIEWS.lock().unwrap_or_else(|e| e.into_inner());
    if views.as_ref().map(|(_, id)| Some(*id)) != Some(now) {
        *views = None;
        let opened = Views::open_at(&path).ok()?;
        // The pin may have been replaced between the stat and the open.
        let id = now.filter(|id| sys::file_identity(&path).ok() == Some(*id))?;
        *views = Some((opened, id));
    }
    views.as_ref()?.0.get(tid).ok().flatten()
}

/// The class the scheduler gives the calling thread while it publishes none
/// (one inherited, or a rule's), for [`crate::latency_class`]. Looked up
/// at most once per [`RECHECK`] per thread (a stat, pidfd_open, one lookup,
/// close), so that a class given later is seen and no answer, not even "none",
/// is kept for the thread's life.
#[cold]
#[inline(never)]
pub(crate) fn assigned_class() -> Option<LatencyClass> {
    thread_local! {
        static CACHED: Cell<Option<(Option<LatencyClass>, Instant)>> = const { Cell::new(None) };
    }
    CACHED
        .try_with(|cached| {
            if let Some((class, at)) = cached.get() {
                if at.elapsed() < RECHECK {
                    return class;
                }
            }
            let class = lookup_own(sys::gettid())
                .filter(|v| matches!(v.class_source, Source::Inherited | Source::Rule))
                .map(|v| v.class);
            cached.set(Some((class, Instant::now())));
            class
        })
        .ok()
        .flatten()
}
