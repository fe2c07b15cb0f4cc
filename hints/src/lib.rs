//! Per-thread scheduler hints for sched_ext.
