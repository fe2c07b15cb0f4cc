// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! The generated BPF skeleton of bpf/scx_hinted.bpf.c.

include!(concat!(env!("OUT_DIR"), "/bpf_skel.rs"));
