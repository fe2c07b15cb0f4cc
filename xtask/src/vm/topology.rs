//! The guest's CPU topology: sockets, cores per socket, SMT threads per
//! core, and optionally one NUMA node per socket. qemu gives each socket its
//! own L3 cache, so two sockets are two LLCs for the guest kernel.

use anyhow::{bail, Result};
use std::fmt;
use std::str::FromStr;

/// qemu's CPU model for guests with a topology. vng picks `max`, whose
/// vendor under TCG is AMD: the guest kernel then gives every CPU its own
/// L3 id (`cache/index3/id`) although `shared_cpu_list` is right, and
/// scx_utils' topology takes LLCs from that id. TCG cannot emulate AMD's
/// `topoext`; with Intel's vendor string the kernel reads CPUID leaf 4 and
/// numbers one L3 per socket (checked in a 2s2c2t guest).
pub const CPU_MODEL: &str = "-cpu max,vendor=GenuineIntel";

/// `SsCcTt[n]`, e.g. `2s2c2t` (8 CPUs: 2 sockets of 2 cores of 2 SMT
/// threads) or `2s4c2tn` (16 CPUs, a NUMA node per socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
    /// One NUMA node per socket (the memory split evenly).
    pub numa: bool,
}

impl Topology {
    pub fn cpus(&self) -> u32 {
        self.sockets * self.cores * self.threads
    }

    /// Two sockets (two LLCs) of SMT-2 cores: the smallest layout that has
    /// every level a topology-aware scheduler distinguishes. `cpus` must be a
    /// multiple of 4.
    pub fn two_sockets_smt(cpus: u32) -> Result<Topology> {
        if cpus == 0 || !cpus.is_multiple_of(4) {
            bail!(
                "{cpus} vCPUs cannot be split into 2 sockets of SMT-2 cores (use a multiple of 4)"
            );
        }
        Ok(Topology {
            sockets: 2,
            cores: cpus / 4,
            threads: 2,
            numa: false,
        })
    }

    /// The value of vng's `--cpus` (qemu's `-smp`).
    pub fn smp_arg(&self) -> String {
        format!(
            "{},sockets={},cores={},threads={}",
            self.cpus(),
            self.sockets,
            self.cores,
            self.threads
        )
    }

    /// vng's `--numa` values: one node per socket, `memory_mib` split evenly
    /// (qemu numbers CPUs socket by socket).
    pub fn numa_args(&self, memory_mib: u64) -> Result<Vec<String>> {
        if !self.numa {
            return Ok(Vec::new());
        }
        if !memory_mib.is_multiple_of(u64::from(self.sockets)) {
            bail!(
                "{memory_mib} MiB of guest memory cannot be split evenly into {} NUMA nodes",
                self.sockets
            );
        }
        let per_node = memory_mib / u64::from(self.sockets);
        let per_socket = self.cores * self.threads;
        Ok((0..self.sockets)
            .map(|s| {
                let first = s * per_socket;
                format!("{per_node}M,cpus={first}-{}", first + per_socket - 1)
            })
            .collect())
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s{}c{}t", self.sockets, self.cores, self.threads)?;
        if self.numa {
            write!(f, "n")?;
        }
        Ok(())
    }
}

impl FromStr for Topology {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Topology> {
        let bad = || {
            anyhow::anyhow!(
                "topology {s:?}: expected <sockets>s<cores>c<threads>t with an optional n for one \
                 NUMA node per socket, e.g. 2s2c2t or 2s4c2tn"
            )
        };
        let (body, numa) = match s.strip_suffix('n') {
            Some(b) => (b, true),
            None => (s, false),
        };
        let mut nums = [0u32; 3];
        let mut rest = body;
        for (slot, unit) in nums.iter_mut().zip(['s', 'c', 't']) {
            let (n, tail) = rest.split_once(unit).ok_or_else(bad)?;
            *slot = n.parse().map_err(|_| bad())?;
            if *slot == 0 {
                bail!("topology {s:?}: every count must be at least 1");
            }
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        let t = Topology {
            sockets: nums[0],
            cores: nums[1],
            threads: nums[2],
            numa,
        };
        if t.cpus() > 64 {
            bail!(
                "topology {s:?} has {} CPUs; at most 64 are supported",
                t.cpus()
            );
        }
        Ok(t)
    }
}

/// qemu's `-m` value in MiB (`2G`, `2048M`, `2048`).
pub fn memory_mib(mem: &str) -> Result<u64> {
    let m = mem.trim();
    let (num, mult) = match m.chars().last() {
        Some('G' | 'g') => (&m[..m.len() - 1], 1024),
        Some('M' | 'm') => (&m[..m.len() - 1], 1),
        _ => (m, 1),
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n * mult),
        _ => bail!("guest memory {mem:?}: expected a size such as 2G or 2048M"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let t: Topology = "2s2c2t".parse().unwrap();
        assert_eq!(t.cpus(), 8);
        assert_eq!(t.smp_arg(), "8,sockets=2,cores=2,threads=2");
        assert_eq!(t.to_string(), "2s2c2t");
        let n: Topology = "2s4c2tn".parse().unwrap();
        assert!(n.numa);
        assert_eq!(n.cpus(), 16);
        assert_eq!(
            n.numa_args(2048).unwrap(),
            vec!["1024M,cpus=0-7", "1024M,cpus=8-15"]
        );
        assert!(t.numa_args(2048).unwrap().is_empty());
        for bad in [
            "", "2s2c", "2s2c2t3", "0s2c2t", "2x2c2t", "s2c2t", "2s2c2tnn",
        ] {
            assert!(bad.parse::<Topology>().is_err(), "{bad}");
        }
        assert_eq!(Topology::two_sockets_smt(16).unwrap().to_string(), "2s4c2t");
        assert!(Topology::two_sockets_smt(6).is_err());
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(memory_mib("2G").unwrap(), 2048);
        assert_eq!(memory_mib("512M").unwrap(), 512);
        assert_eq!(memory_mib("300").unwrap(), 300);
        assert!(memory_mib("lots").is_err());
    }
}
