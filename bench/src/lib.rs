//! Benchmarks of scx-hints (see docs/benchmarks.md).
