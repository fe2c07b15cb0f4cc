//! Per-thread scheduler hints for sched_ext.
//!
//! An application says which of its threads are latency-critical and which
//! are background work; a sched_ext scheduler such as `scx_hinted` reads it
//! on every scheduling decision. Setting a hint is a plain store into the
//! thread's own memory (task local data, see [`tld`]): no syscall per hint.
//! Where no scheduler runs, hints are kept and cost the same store.
//!
//! ```
//! use scx_hints::{LatencyClass, set_latency_class, latency_class};
//!
//! set_latency_class(LatencyClass::Interactive);
//! assert_eq!(latency_class(), LatencyClass::Interactive);
//! {
//!     let _batch = scx_hints::latency_class_scope(LatencyClass::Batch);
//!     assert_eq!(latency_class(), LatencyClass::Batch);
//! }
//! assert_eq!(latency_class(), LatencyClass::Interactive);
//! ```

#![deny(missing_docs)]

pub mod tld;

mod future;
pub use future::{HintExt, WithLatencyClass};

#[cfg(test)]
mod cdefs;
pub mod view;
pub mod vocab;

use std::fmt;
use std::marker::PhantomData;

pub use tld::Registration;

declare_key!(static LATENCY_CLASS: i32 = vocab::KEY_LATENCY_CLASS);
declare_key!(static PRIORITY: i32 = vocab::KEY_PRIORITY);

/// How soon a thread wants the CPU once it is runnable. What a scheduler
/// does with each class is its policy (`docs/policy.md` for `scx_hinted`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum LatencyClass {
    /// Must run as soon as it wakes (audio, frame pacing, control loops).
    Critical = vocab::CLASS_CRITICAL,
    /// A person or a peer waits for it (request handlers, UI).
    Interactive = vocab::CLASS_INTERACTIVE,
    /// No preference: fair sharing. The default.
    #[default]
    Normal = vocab::CLASS_NORMAL,
    /// Throughput work: longer slices, never preempts others.
    Batch = vocab::CLASS_BATCH,
    /// Runs when nothing else wants the CPU, with a small guaranteed share.
    Background = vocab::CLASS_BACKGROUND,
}

impl LatencyClass {
    /// Every class, most urgent first.
    pub const ALL: [LatencyClass; 5] = [
        LatencyClass::Critical,
        LatencyClass::Interactive,
        LatencyClass::Normal,
        LatencyClass::Batch,
        LatencyClass::Background,
    ];

    /// The class of a raw hint value; unknown values read as `Normal`, as
    /// the scheduler reads them.
    pub fn from_raw(v: i32) -> Self {
        Self::ALL
            .into_iter()
            .find(|c| *c as i32 == v)
            .unwrap_or(LatencyClass::Normal)
    }

    /// The class's name as the command line and docs spell it.
    pub fn name(self) -> &'static str {
        match self {
            LatencyClass::Critical => "critical",
            LatencyClass::Interactive => "interactive",
            LatencyClass::Normal => "normal",
            LatencyClass::Batch => "batch",
            LatencyClass::Background => "background",
        }
    }
}

impl fmt::Display for LatencyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LatencyClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown latency class {s:?} (critical, interactive, normal, batch, background)")
            })
    }
}

/// Sets the calling thread's latency class.
#[inline]
pub fn set_latency_class(class: LatencyClass) {
    LATENCY_CLASS.set(class as i32);
}

/// The calling thread's latency class. Until the thread sets one: the class
/// `scx_hinted` gives it without a hint of its own (inherited at fork or
/// across exec, as with `scx-hint run`, or from a rule), read from the
/// scheduler's task view ([`view`]) at most once a second per thread;
/// `Normal` without one.
#[inline]
pub fn latency_class() -> LatencyClass {
    // A thread without a block is not allocated one here: registering it
    // would publish class normal as its own and override the assigned class.
    LATENCY_CLASS
        .get_existing(|| view::assigned_class().map(|c| c as i32))
        .map_or(LatencyClass::Normal, LatencyClass::from_raw)
}

/// A priority outside -20..=19.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriorityOutOfRange(pub i32);

impl fmt::Display for PriorityOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "priority {} is outside {}..={}",
            self.0,
            vocab::PRIO_MIN,
            vocab::PRIO_MAX
        )
    }
}

impl std::error::Error for PriorityOutOfRange {}

/// Sets the calling thread's priority, nice-like: -20 (most CPU) to 19
/// (least), 0 by default. Whether a thread may claim a negative priority is
/// the scheduler's policy; `scx_hinted` clamps claims it does not allow.
#[inline]
pub fn set_priority(prio: i32) -> Result<(), PriorityOutOfRange> {
    if !(vocab::PRIO_MIN..=vocab::PRIO_MAX).contains(&prio) {
        return Err(PriorityOutOfRange(prio));
    }
    PRIORITY.set(prio);
    Ok(())
}

/// The calling thread's priority (0 until set).
#[inline]
pub fn priority() -> i32 {
    PRIORITY.get().unwrap_or(vocab::PRIO_DEFAULT)
}

/// Restores the thread's previous latency class when dropped. Not `Send`:
/// it belongs to the thread that made it.
#[must_use = "the class is restored when the guard is dropped"]
pub struct LatencyClassGuard {
    previous: LatencyClass,
    _not_send: PhantomData<*const ()>,
}

impl Drop for LatencyClassGuard {
    fn drop(&mut self) {
        set_latency_class(self.previous);
    }
}

/// Sets the latency class until the guard is dropped.
pub fn latency_class_scope(class: LatencyClass) -> LatencyClassGuard {
    let previous = latency_class();
    set_latency_class(class);
    LatencyClassGuard {
        previous,
        _not_send: PhantomData,
    }
}

/// Restores the thread's previous priority when dropped.
#[must_use = "the priority is restored when the guard is dropped"]
pub struct PriorityGuard {
    previous: i32,
    _not_send: PhantomData<*const ()>,
}

impl Drop for PriorityGuard {
    fn drop(&mut self) {
        PRIORITY.set(self.previous);
    }
}

/// Sets the priority until the guard is dropped.
pub fn priority_scope(prio: i32) -> Result<PriorityGuard, PriorityOutOfRange> {
    let previous = priority();
    set_priority(prio)?;
    Ok(PriorityGuard {
        previous,
        _not_send: PhantomData,
    })
}

/// Whether the calling thread's hints reach a scheduler. `None` until the
/// thread touches a hint; then `Registered`, or why not: `NoMap` (no
/// scheduler), `NotAllowed(errno)` (the map's permissions refuse this
/// process), `Failed(errno)`.
///
/// Nothing needs to be done about a failure: the thread is registered by
/// itself (by the crate's watcher thread, without touching a hint) when a
/// map is pinned, replaced, or its mode changes, and transient failures
/// (`EAGAIN`, `ENOMEM`, `EMFILE`, ...) are retried with a growing delay. The
/// first failure other than `NoMap` is logged at `warn` level.
///
/// ```
/// use scx_hints::Registration;
///
/// scx_hints::set_latency_class(scx_hints::LatencyClass::Batch);
/// match scx_hints::registration() {
///     Registration::Registered => println!("hints reach the scheduler"),
///     Registration::NoMap => println!("no scheduler runs"),
///     r => println!("hints do not arrive: {r}"),
/// }
/// ```
pub fn registration() -> Registration {
    tld::registration()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        std::thread::spawn(|| {
            assert_eq!(latency_class(), LatencyClass::Normal);
            assert_eq!(priority(), 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn set_get_and_scopes_nest() {
        std::thread::spawn(|| {
            set_latency_class(LatencyClass::Interactive);
            set_priority(-3).unwrap();
            {
                let _a = latency_class_scope(LatencyClass::Critical);
                let _p = priority_scope(5).unwrap();
                assert_eq!((latency_class(), priority()), (LatencyClass::Critical, 5));
                {
                    let _b = latency_class_scope(LatencyClass::Background);
                    assert_eq!(latency_class(), LatencyClass::Background);
                }
                assert_eq!(latency_class(), LatencyClass::Critical);
            }
            assert_eq!(
                (latency_class(), priority()),
                (LatencyClass::Interactive, -3)
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn out_of_range_priority_is_refused_and_changes_nothing() {
        std::thread::spawn(|| {
            set_priority(4).unwrap();
            assert_eq!(set_priority(20), Err(PriorityOutOfRange(20)));
            assert_eq!(set_priority(-21), Err(PriorityOutOfRange(-21)));
            assert!(priority_scope(100).is_err());
            assert_eq!(priority(), 4);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn class_names_parse_and_unknown_raw_values_are_normal() {
        for c in LatencyClass::ALL {
            assert_eq!(c.name().parse::<LatencyClass>(), Ok(c));
            assert_eq!(LatencyClass::from_raw(c as i32), c);
        }
        assert!("urgent".parse::<LatencyClass>().is_err());
        assert_eq!(LatencyClass::from_raw(77), LatencyClass::Normal);
    }
}
