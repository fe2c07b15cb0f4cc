// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! The generated BPF skeleton of bpf/tld_guard.bpf.c.

include!(concat!(env!("OUT_DIR"), "/tld_guard_skel.rs"));
