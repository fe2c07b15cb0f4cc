// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! Statistics: the BPF program's per-CPU counters summed into a [`Snapshot`],
//! and the [`Metrics`] that `--stats`, `--monitor` and any scx_stats client
//! see: counters as differences over the client's interval, gauges as they
//! are now, and wake-to-run latency percentiles from the interval's
//! histogram.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use scx_stats::prelude::*;
use scx_stats_derive::{stat_doc, Stats};
use serde::{Deserialize, Serialize};

use crate::bpf_intf;

pub const NR_CLASSES: usize = bpf_intf::hinted_consts_HINTED_NR_CLASSES as usize;
pub const NR_LAT_BUCKETS: usize = bpf_intf::hinted_consts_HINTED_NR_LAT_BUCKETS as usize;
const LAT_SUB_BITS: u32 = bpf_intf::hinted_consts_HINTED_LAT_SUB_BITS;

/// Latency classes in display order, with their hint values (hints.h).
pub const CLASSES: [(&str, usize); NR_CLASSES] = [
    ("critical", bpf_intf::SCX_HINT_CLASS_CRITICAL as usize),
    ("interactive", bpf_intf::SCX_HINT_CLASS_INTERACTIVE as usize),
    ("normal", bpf_intf::SCX_HINT_CLASS_NORMAL as usize),
    ("batch", bpf_intf::SCX_HINT_CLASS_BATCH as usize),
    ("background", bpf_intf::SCX_HINT_CLASS_BACKGROUND as usize),
];

/// Cumulative counters of one class, summed over CPUs.
#[derive(Clone, Debug)]
pub struct ClassSnapshot {
    pub tasks: i64,
    pub enqueues: u64,
    pub dispatches: u64,
    pub idle_picks: u64,
    pub preemptions: u64,
    pub demotions: u64,
    pub clamped: u64,
    pub lat: [u64; NR_LAT_BUCKETS],
}

impl Default for ClassSnapshot {
    fn default() -> Self {
        Self {
            tasks: 0,
            enqueues: 0,
            dispatches: 0,
            idle_picks: 0,
            preemptions: 0,
            demotions: 0,
            clamped: 0,
            lat: [0; NR_LAT_BUCKETS],
        }
    }
}

/// Everything the scheduler counts, cumulative since it loaded.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub classes: [ClassSnapshot; NR_CLASSES],
    pub registered: i64,
    pub inherited: u64,
    pub bg_guard_picks: u64,
    pub kthread_local: u64,
    pub pinned_local: u64,
    pub claim_lost: u64,
    pub slice_cuts: u64,
    pub cpu_releases: u64,
    pub starve_picks: u64,
    pub llc_steals: u64,
    pub remote_preemptions: u64,
    pub cgroups_untracked: u64,
    pub bad_class: u64,
    pub bad_prio: u64,
    pub no_task_ctx: u64,
    pub tld_bad_magic: u64,
    pub tld_bad_meta: u64,
    pub tld_bad_offset: u64,
    pub tld_throttled: u64,
}

impl Snapshot {
    /// Adds one CPU's counters.
    pub fn add_cpu(&mut self, s: &bpf_intf::hinted_stats) {
        for (dst, src) in self.classes.iter_mut().zip(s.cls.iter()) {
            dst.tasks = dst.tasks.wrapping_add(src.tasks);
            dst.enqueues = dst.enqueues.wrapping_add(src.enqueues);
            dst.dispatches = dst.dispatches.wrapping_add(src.dispatches);
            dst.idle_picks = dst.idle_picks.wrapping_add(src.idle_picks);
            dst.preemptions = dst.preemptions.wrapping_add(src.preemptions);
            dst.demotions = dst.demotions.wrapping_add(src.demotions);
            dst.clamped = dst.clamped.wrapping_add(src.clamped);
            for (d, s) in dst.lat.iter_mut().zip(src.lat.iter()) {
                *d = d.wrapping_add(*s);
            }
        }
        self.registered = self.registered.wrapping_add(s.registered);
        self.inherited = self.inherited.wrapping_add(s.inherited);
        self.bg_guard_picks = self.bg_guard_picks.wrapping_add(s.bg_guard_picks);
        self.kthread_local = self.kthread_local.wrapping_add(s.kthread_local);
        self.pinned_local = self.pinned_local.wrapping_add(s.pinned_local);
        self.claim_lost = self.claim_lost.wrapping_add(s.claim_lost);
        self.slice_cuts = self.slice_cuts.wrapping_add(s.slice_cuts);
        self.cpu_releases = self.cpu_releases.wrapping_add(s.cpu_releases);
        self.starve_picks = self.starve_picks.wrapping_add(s.starve_picks);
        self.llc_steals = self.llc_steals.wrapping_add(s.llc_steals);
        self.remote_preemptions = self.remote_preemptions.wrapping_add(s.remote_preemptions);
        self.cgroups_untracked = self.cgroups_untracked.wrapping_add(s.cgroups_untracked);
        self.bad_class = self.bad_class.wrapping_add(s.bad_class);
        self.bad_prio = self.bad_prio.wrapping_add(s.bad_prio);
        self.no_task_ctx = self.no_task_ctx.wrapping_add(s.no_task_ctx);
    }
}

/// Lower and upper bound, in nanoseconds, of latency histogram bucket `idx`
/// (the inverse of the bucketing in scx_hinted.bpf.c's ops.running()).
pub fn bucket_bounds(idx: usize) -> (u64, u64) {
    let sub = 1usize << LAT_SUB_BITS;
    if idx < sub {
        return (idx as u64, idx as u64 + 1);
    }
    let exp = (idx >> LAT_SUB_BITS) as u32 - 1;
    let mant = (sub + (idx & (sub - 1))) as u64;
    (mant << exp, (mant + 1) << exp)
}

/// The bucket a latency falls in, as the BPF side computes it.
#[cfg(test)]
fn bucket_of(lat: u64) -> usize {
    let msb = 63 - (lat | 1).leading_zeros();
    let idx = if msb < LAT_SUB_BITS {
        lat as usize
    } else {
        (((msb - LAT_SUB_BITS + 1) << LAT_SUB_BITS) as usize)
            | ((lat >> (msb - LAT_SUB_BITS)) as usize & ((1 << LAT_SUB_BITS) - 1))
    };
    idx.min(NR_LAT_BUCKETS - 1)
}

/// The `pct` percentile of a histogram, in microseconds, as the upper bound
/// of the bucket it falls in (a bound, never an underestimate); 0 if empty.
pub fn percentile_us(hist: &[u64], pct: f64) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = ((total as f64) * pct / 100.0).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (idx, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return bucket_bounds(idx).1 as f64 / 1000.0;
        }
    }
    bucket_bounds(hist.len() - 1).1 as f64 / 1000.0
}

#[stat_doc]
#[derive(Clone, Debug, Default, Serialize, Deserialize, Stats)]
pub struct ClassMetrics {
    #[stat(desc = "Tasks whose hinted class this is (now; before budget demotion)")]
    pub tasks: i64,
    #[stat(desc = "Enqueues (including direct dispatches at wakeup)")]
    pub enqueues: u64,
    #[stat(desc = "Times a task of this class started running")]
    pub dispatches: u64,
    #[stat(desc = "Placements on an idle CPU")]
    pub idle_picks: u64,
    #[stat(desc = "Wakeups that preempted a lower class")]
    pub preemptions: u64,
    #[stat(desc = "Bursts demoted for overrunning the class budget")]
    pub demotions: u64,
    #[stat(desc = "Refused claims (critical, negative priority), clamped")]
    pub clamped: u64,
    #[stat(desc = "Wake-to-run latency samples")]
    pub lat_samples: u64,
    #[stat(desc = "Wake-to-run latency p50 (us, bucket upper bound)")]
    pub lat_p50_us: f64,
    #[stat(desc = "Wake-to-run latency p99 (us, bucket upper bound)")]
    pub lat_p99_us: f64,
}

#[stat_doc]
#[derive(Clone, Debug, Default, Serialize, Deserialize, Stats)]
#[stat(top)]
pub struct Metrics {
    #[stat(desc = "Threads with registered hints (TLD map entries seen, now)")]
    pub registered: i64,
    #[stat(desc = "Forked tasks that started with their parent's hints")]
    pub inherited: u64,
    #[stat(desc = "Background tasks run ahead of other work (minimum share)")]
    pub bg_guard_picks: u64,
    #[stat(desc = "Per-CPU kthreads dispatched straight to their CPU")]
    pub kthread_local: u64,
    #[stat(desc = "Migration-disabled tasks dispatched straight to their CPU")]
    pub pinned_local: u64,
    #[stat(
        desc = "Wakeups whose chosen CPU to preempt another waker claimed first (queued instead)"
    )]
    pub claim_lost: u64,
    #[stat(desc = "Slices longer than a normal one ended at a tick for a queued earlier deadline")]
    pub slice_cuts: u64,
    #[stat(desc = "Times an RT or deadline task took a CPU (its local queue re-enqueued)")]
    pub cpu_releases: u64,
    #[stat(desc = "Tasks run ahead of the queue order after waiting the starvation limit")]
    pub starve_picks: u64,
    #[stat(desc = "Tasks a CPU took from another last-level cache's queue (work stealing)")]
    pub llc_steals: u64,
    #[stat(desc = "Wakeups that preempted a CPU of another last-level cache than their own")]
    pub remote_preemptions: u64,
    #[stat(
        desc = "cgroups not tracked for cpu.weight since the scheduler started (map full): \
                   their tasks keep their base weight"
    )]
    pub cgroups_untracked: u64,
    #[stat(desc = "Errors: TLD metadata page without the magic or version")]
    pub err_tld_bad_magic: u64,
    #[stat(desc = "Errors: TLD metadata with absurd counts, sizes or names")]
    pub err_tld_bad_meta: u64,
    #[stat(desc = "Errors: TLD block or key outside its page")]
    pub err_tld_bad_offset: u64,
    #[stat(
        desc = "Decisions that used default hints because a task's TLD metadata page changed \
                again within 10 ms of its last search (cost bound, not an error of the app)"
    )]
    pub tld_throttled: u64,
    #[stat(desc = "Errors: latency-class values outside the vocabulary")]
    pub err_bad_class: u64,
    #[stat(desc = "Errors: priority values outside -20..19")]
    pub err_bad_prio: u64,
    #[stat(desc = "Errors: tasks met without a task context")]
    pub err_no_task_ctx: u64,
    #[stat(desc = "Per latency class")]
    pub classes: BTreeMap<String, ClassMetrics>,
}

impl Metrics {
    /// Metrics over the interval between two snapshots.
    pub fn between(cur: &Snapshot, prev: &Snapshot) -> Self {
        let mut classes = BTreeMap::new();
        for (name, idx) in CLASSES {
            let (c, p) = (&cur.classes[idx], &prev.classes[idx]);
            let hist: Vec<u64> = c
                .lat
                .iter()
                .zip(p.lat.iter())
                .map(|(a, b)| a.wrapping_sub(*b))
                .collect();
            classes.insert(
                name.to_string(),
                ClassMetrics {
                    tasks: c.tasks,
                    enqueues: c.enqueues.wrapping_sub(p.enqueues),
                    dispatches: c.dispatches.wrapping_sub(p.dispatches),
                    idle_picks: c.idle_picks.wrapping_sub(p.idle_picks),
                    preemptions: c.preemptions.wrapping_sub(p.preemptions),
                    demotions: c.demotions.wrapping_sub(p.demotions),
                    clamped: c.clamped.wrapping_sub(p.clamped),
                    lat_samples: hist.iter().sum(),
                    lat_p50_us: percentile_us(&hist, 50.0),
                    lat_p99_us: percentile_us(&hist, 99.0),
                },
            );
        }
        Self {
            registered: cur.registered,
            inherited: cur.inherited.wrapping_sub(prev.inherited),
            bg_guard_picks: cur.bg_guard_picks.wrapping_sub(prev.bg_guard_picks),
            kthread_local: cur.kthread_local.wrapping_sub(prev.kthread_local),
            pinned_local: cur.pinned_local.wrapping_sub(prev.pinned_local),
            claim_lost: cur.claim_lost.wrapping_sub(prev.claim_lost),
            slice_cuts: cur.slice_cuts.wrapping_sub(prev.slice_cuts),
            cpu_releases: cur.cpu_releases.wrapping_sub(prev.cpu_releases),
            starve_picks: cur.starve_picks.wrapping_sub(prev.starve_picks),
            llc_steals: cur.llc_steals.wrapping_sub(prev.llc_steals),
            remote_preemptions: cur.remote_preemptions.wrapping_sub(prev.remote_preemptions),
            cgroups_untracked: cur.cgroups_untracked,
            err_tld_bad_magic: cur.tld_bad_magic.wrapping_sub(prev.tld_bad_magic),
            err_tld_bad_meta: cur.tld_bad_meta.wrapping_sub(prev.tld_bad_meta),
            err_tld_bad_offset: cur.tld_bad_offset.wrapping_sub(prev.tld_bad_offset),
            tld_throttled: cur.tld_throttled.wrapping_sub(prev.tld_throttled),
            err_bad_class: cur.bad_class.wrapping_sub(prev.bad_class),
            err_bad_prio: cur.bad_prio.wrapping_sub(prev.bad_prio),
            err_no_task_ctx: cur.no_task_ctx.wrapping_sub(prev.no_task_ctx),
            classes,
        }
    }

    pub fn format<W: Write>(&self, w: &mut W) -> Result<()> {
        writeln!(
            w,
            "[{}] registered {} | inherited {} | bg guard picks {} | pcpu kthreads {} | \
             pinned {} | claims lost {} | slice cuts {} | cpu releases {} | starve picks {} | \
             llc steals {} | remote preemptions {} | untracked cgroups {} | tld throttled {} | errors: tld magic/meta/offset {}/{}/{} class {} prio {} ctx {}",
            crate::SCHEDULER_NAME,
            self.registered,
            self.inherited,
            self.bg_guard_picks,
            self.kthread_local,
            self.pinned_local,
            self.claim_lost,
            self.slice_cuts,
            self.cpu_releases,
            self.starve_picks,
            self.llc_steals,
            self.remote_preemptions,
            self.cgroups_untracked,
            self.tld_throttled,
            self.err_tld_bad_magic,
            self.err_tld_bad_meta,
            self.err_tld_bad_offset,
            self.err_bad_class,
            self.err_bad_prio,
            self.err_no_task_ctx,
        )?;
        writeln!(
            w,
            "  {:<11} {:>6} {:>8} {:>8} {:>7} {:>7} {:>6} {:>6} {:>9} {:>9}",
            "class",
            "tasks",
            "enqueue",
            "dispatch",
            "idle",
            "preempt",
            "demote",
            "clamp",
            "p50(us)",
            "p99(us)"
        )?;
        for (name, _) in CLASSES {
            let Some(c) = self.classes.get(name) else {
                continue;
            };
            writeln!(
                w,
                "  {:<11} {:>6} {:>8} {:>8} {:>7} {:>7} {:>6} {:>6} {:>9.1} {:>9.1}",
                name,
                c.tasks,
                c.enqueues,
                c.dispatches,
                c.idle_picks,
                c.preemptions,
                c.demotions,
                c.clamped,
                c.lat_p50_us,
                c.lat_p99_us
            )?;
        }
        Ok(())
    }
}

/// The stats server's data: each client sees differences since its previous
/// request (its first request covers the time since the scheduler loaded).
pub fn server_data() -> StatsServerData<(), Snapshot> {
    let open: Box<dyn StatsOpener<(), Snapshot>> = Box::new(move |(req_ch, res_ch)| {
        let mut prev = Snapshot::default();
        let read: Box<dyn StatsReader<(), Snapshot>> = Box::new(move |_args, (req_ch, res_ch)| {
            req_ch.send(())?;
            let cur = res_ch.recv()?;
            let metrics = Metrics::between(&cur, &prev);
            prev = cur;
            metrics.to_json()
        });
        let _ = (req_ch, res_ch);
        Ok(read)
    });

    StatsServerData::new()
        .add_meta(Metrics::meta())
        .add_meta(ClassMetrics::meta())
        .add_ops("top", StatsOps { open, close: None })
}

pub fn monitor(intv: Duration, shutdown: Arc<AtomicBool>) -> Result<()> {
    scx_utils::monitor_stats::<Metrics>(
        &[],
        intv,
        || shutdown.load(Ordering::Relaxed),
        |metrics| metrics.format(&mut std::io::stdout()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_invert() {
        for lat in [0u64, 1, 2, 3, 4, 5, 7, 8, 9, 1000, 4096, 123_456, 9_999_999] {
            let (lo, hi) = bucket_bounds(bucket_of(lat));
            assert!(lo <= lat && lat < hi, "{lat} not in [{lo}, {hi})");
        }
        for idx in 0..NR_LAT_BUCKETS - 1 {
            assert_eq!(bucket_bounds(idx).1, bucket_bounds(idx + 1).0);
        }
    }

    #[test]
    fn percentiles() {
        let mut hist = vec![0u64; NR_LAT_BUCKETS];
        assert_eq!(percentile_us(&hist, 99.0), 0.0);
        hist[bucket_of(10_000)] = 99;
        hist[bucket_of(5_000_000)] = 1;
        assert!(percentile_us(&hist, 50.0) <= 12.5);
        assert!(percentile_us(&hist, 99.0) <= 12.5);
        assert!(percentile_us(&hist, 100.0) >= 5000.0);
    }
}
