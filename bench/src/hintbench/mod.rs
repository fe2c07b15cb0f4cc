//! `hintbench`: what hints buy, measured against the kernel's default
//! scheduler, its knobs and other sched_ext schedulers, inside one boot.
//!
//! The binary runs in a sched_ext kernel (the guest `cargo xtask demo` and
//! `cargo xtask bench` boot): `hintbench suite` attaches each contender's
//! scheduler in turn, runs the [`scenarios`] under it, alternating the
//! order between repetitions, and writes JSON; `hintbench report` (on the
//! host) turns that JSON into the tables, plots and goal lines.

pub mod apps;
pub mod calib;
pub mod compare;
pub mod report;
pub mod scenarios;
pub mod sched;
pub mod suite;
pub mod workload;
