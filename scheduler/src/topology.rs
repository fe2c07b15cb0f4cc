// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! The CPU topology the BPF side schedules by: which last-level cache (LLC)
//! each CPU shares, read with scx_utils and written into the program's
//! read-only data before load (bpf/topology.bpf.h describes the tables).

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, Result};
use log::warn;

use crate::bpf_intf;

pub const MAX_CPUS: usize = bpf_intf::hinted_consts_HINTED_MAX_CPUS as usize;
pub const MAX_LLCS: usize = bpf_intf::hinted_consts_HINTED_MAX_LLCS as usize;

/// CPUs grouped by LLC, LLCs numbered densely from 0.
#[derive(Debug, PartialEq, Eq)]
pub struct LlcLayout {
    /// LLC index of each CPU id (0 for ids not in the topology).
    pub cpu_llc: Vec<u32>,
    /// Position of each CPU id in its LLC's run of `cpus`.
    pub cpu_pos: Vec<u32>,
    /// Start and length of each LLC's run of `cpus`.
    pub llc_first: Vec<u32>,
    pub llc_nr: Vec<u32>,
    /// CPU ids, grouped by LLC, ascending within each.
    pub cpus: Vec<u32>,
    /// More LLCs than MAX_LLCS were found and some share a queue.
    pub folded: bool,
}

impl LlcLayout {
    /// From `(cpu id, LLC id)` pairs in any order; LLC ids need not be dense.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (usize, usize)>) -> Result<Self> {
        let mut by_llc: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
        for (cpu, llc) in pairs {
            if cpu >= MAX_CPUS {
                bail!("CPU {cpu} is beyond the {MAX_CPUS} CPUs scx_hinted supports");
            }
            by_llc.entry(llc).or_default().push(cpu as u32);
        }
        if by_llc.is_empty() {
            bail!("the CPU topology lists no CPU");
        }
        let folded = by_llc.len() > MAX_LLCS;
        let mut groups: Vec<Vec<u32>> = vec![Vec::new(); by_llc.len().min(MAX_LLCS)];
        for (idx, cpus) in by_llc.into_values().enumerate() {
            groups[idx % MAX_LLCS].extend(cpus);
        }
        let max_cpu = groups.iter().flatten().copied().max().unwrap_or(0) as usize;
        let mut layout = LlcLayout {
            cpu_llc: vec![0; max_cpu + 1],
            cpu_pos: vec![0; max_cpu + 1],
            llc_first: Vec::with_capacity(groups.len()),
            llc_nr: Vec::with_capacity(groups.len()),
            cpus: Vec::new(),
            folded,
        };
        for (llc, mut cpus) in groups.into_iter().enumerate() {
            cpus.sort_unstable();
            cpus.dedup();
            layout.llc_first.push(layout.cpus.len() as u32);
            layout.llc_nr.push(cpus.len() as u32);
            for (pos, &cpu) in cpus.iter().enumerate() {
                layout.cpu_llc[cpu as usize] = llc as u32;
                layout.cpu_pos[cpu as usize] = pos as u32;
            }
            layout.cpus.extend(cpus);
        }
        Ok(layout)
    }

    /// The running system's online CPUs and their LLCs. If the topology
    /// cannot be read, one LLC holding every possible CPU (the scheduler
    /// then behaves as without topology), with a warning.
    pub fn from_system() -> Result<Self> {
        match scx_utils::Topology::new() {
            Ok(topo) => Self::from_pairs(topo.all_cpus.values().map(|c| (c.id, c.llc_id))),
            Err(e) => {
                let n = libbpf_rs::num_possible_cpus()?.min(MAX_CPUS);
                warn!("reading the CPU topology failed ({e:#}); scheduling {n} CPUs as one LLC");
                Self::from_pairs((0..n).map(|cpu| (cpu, 0)))
            }
        }
    }

    pub fn nr_llcs(&self) -> usize {
        self.llc_first.len()
    }

    /// The CPUs of each LLC, for the log: `0-3 | 4-7`.
    fn runs(&self) -> Vec<String> {
        self.llc_first
            .iter()
            .zip(&self.llc_nr)
            .map(|(&first, &nr)| {
                let cpus = &self.cpus[first as usize..(first + nr) as usize];
                cpu_list(cpus)
            })
            .collect()
    }
}

impl fmt::Display for LlcLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} CPUs in {} LLC{}: {}",
            self.cpus.len(),
            self.nr_llcs(),
            if self.nr_llcs() == 1 { "" } else { "s" },
            self.runs().join(" | ")
        )?;
        if self.folded {
            write!(f, " (more LLCs than {MAX_LLCS}: some share queues)")?;
        }
        Ok(())
    }
}

/// Sorted CPU ids as ranges: `0-3,6`.
fn cpu_list(cpus: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_cpus_by_llc() {
        // Two sockets of SMT-2 cores, siblings numbered apart, sparse LLC ids.
        let pairs = [
            (0, 8),
            (1, 8),
            (2, 20),
            (3, 20),
            (4, 8),
            (5, 8),
            (6, 20),
            (7, 20),
        ];
        let l = LlcLayout::from_pairs(pairs).unwrap();
        assert_eq!(l.cpus, [0, 1, 4, 5, 2, 3, 6, 7]);
        assert_eq!(l.llc_first, [0, 4]);
        assert_eq!(l.llc_nr, [4, 4]);
        assert_eq!(l.cpu_llc, [0, 0, 1, 1, 0, 0, 1, 1]);
        assert_eq!(l.cpu_pos, [0, 1, 0, 1, 2, 3, 2, 3]);
        assert!(!l.folded);
        assert_eq!(l.to_string(), "8 CPUs in 2 LLCs: 0-1,4-5 | 2-3,6-7");
    }

    #[test]
    fn offline_cpus_and_one_llc() {
        let l = LlcLayout::from_pairs([(0, 0), (2, 0), (3, 0)]).unwrap();
        assert_eq!(l.cpus, [0, 2, 3]);
        assert_eq!(l.cpu_llc, [0, 0, 0, 0]);
        assert_eq!(l.cpu_pos, [0, 0, 1, 2]);
        assert_eq!(l.to_string(), "3 CPUs in 1 LLC: 0,2-3");
    }

    #[test]
    fn too_many_llcs_fold_and_bad_input_is_refused() {
        let n = MAX_LLCS + 2;
        let l = LlcLayout::from_pairs((0..n).map(|c| (c, c))).unwrap();
        assert!(l.folded);
        assert_eq!(l.nr_llcs(), MAX_LLCS);
        assert_eq!(l.llc_nr[0], 2);
        assert_eq!(l.cpu_llc[MAX_LLCS], 0);
        assert_eq!(l.cpus.len(), n);
        assert!(LlcLayout::from_pairs([]).is_err());
        assert!(LlcLayout::from_pairs([(MAX_CPUS, 0)]).is_err());
    }
}
