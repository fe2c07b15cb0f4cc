/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Types and constants shared by scx_hinted's BPF program (scx_hinted.bpf.c)
 * and its user-space side (scheduler/, through bindgen). Only plain C here:
 * this file is parsed for Rust as well as compiled for BPF.
 */
#ifndef __SCX_HINTED_INTF_H
#define __SCX_HINTED_INTF_H

#include "hints.h"

#ifndef __VMLINUX_H__
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed int s32;
typedef signed long long s64;
#endif

enum hinted_consts {
	HINTED_NR_CLASSES	= SCX_HINT_NR_CLASSES,

	/*
	 * Wake-to-run latency histogram: log-linear buckets over nanoseconds,
	 * four per power of two (values 0..3 have a bucket each). Bucket 168
	 * starts at 7 << 40 ns, far beyond any latency the watchdog allows;
	 * larger values land in the last bucket.
	 */
	HINTED_LAT_SUB_BITS	= 2,
	HINTED_NR_LAT_BUCKETS	= 168,

	/* Most uids and gids that may be allowed privileged hints. */
	HINTED_MAX_ALLOW_IDS	= 16,
	/* Supplementary groups of a thread compared with the allowed gids. */
	HINTED_MAX_SUPP_GROUPS	= 32,

	/*
	 * Topology. Each last-level cache (LLC) has two shared dispatch
	 * queues: foreground (critical, interactive, normal, batch) with id
	 * HINTED_DSQ_FG_BASE + LLC index, and background with id
	 * HINTED_DSQ_BG_BASE + LLC index. LLC indexes are dense, 0 to
	 * nr_llcs - 1, given by user space (scheduler/src/topology.rs); more
	 * LLCs than HINTED_MAX_LLCS are folded together.
	 */
	HINTED_MAX_CPUS		= 512,
	HINTED_MAX_LLCS		= 64,
	HINTED_DSQ_FG_BASE	= 0,
	HINTED_DSQ_BG_BASE	= HINTED_MAX_LLCS,
};

/*
 * Counters of one latency class. The class a task is counted under is the
 * one it is being scheduled as at that moment (after clamping and any budget
 * demotion), except where a field says otherwise.
 */
struct hinted_class_stats {
	s64 tasks;		/* tasks whose hinted class is this one (gauge, before demotion) */
	u64 enqueues;		/* ops.enqueue calls and direct dispatches from select_cpu */
	u64 dispatches;		/* times a task of the class started running */
	u64 idle_picks;		/* placed on an idle CPU at wakeup or enqueue */
	u64 preemptions;	/* wakeups that preempted a lower class on a busy CPU */
	u64 demotions;		/* bursts that overran the class budget (class demoted from) */
	u64 clamped;		/* claims of this class or a negative priority refused (class claimed) */
	u64 lat[HINTED_NR_LAT_BUCKETS];	/* wake-to-run latency, see HINTED_NR_LAT_BUCKETS */
};

/* One per CPU, summed by user space. */
struct hinted_stats {
	struct hinted_class_stats cls[HINTED_NR_CLASSES];
	s64 registered;		/* tasks whose thread has a TLD registration (gauge) */
	u64 inherited;		/* forked tasks that started with their parent's hints */
	u64 bg_guard_picks;	/* background picked ahead of waiting work (minimum share) */
	u64 kthread_local;	/* per-CPU kthreads dispatched straight to their CPU */
	u64 pinned_local;	/* migration-disabled tasks dispatched straight to their CPU */
	u64 claim_lost;		/* wakers whose chosen victim CPU another waker claimed first */
	u64 slice_cuts;		/* long slices ended at a tick for an earlier deadline */
	u64 cpu_releases;	/* CPUs taken by RT/deadline tasks (local queue re-enqueued) */
	u64 starve_picks;	/* tasks run first after waiting the starvation limit */
	u64 bad_class;		/* latency-class values outside the vocabulary (ignored) */
	u64 bad_prio;		/* priority values outside -20..19 (clamped into range) */
	u64 no_task_ctx;	/* tasks met without a task context (should stay 0) */
	u64 llc_steals;		/* tasks a CPU took from another LLC's queue */
	u64 remote_preemptions;	/* wakeups that preempted a CPU of another LLC */
	u64 cgroups_untracked;	/* cgroups not tracked for cpu.weight (map full) */
};

/*
 * Where the class or the priority a task is scheduled with comes from, in
 * order of precedence (docs/policy.md, "Precedence"). SCHED_IDLE is the one
 * exception: it makes a thread background whatever else applies.
 */
enum hinted_source {
	HINTED_SRC_DEFAULT	= 0,	/* nothing applies: normal, priority 0 */
	HINTED_SRC_OWN		= 1,	/* the thread's own hint */
	HINTED_SRC_RULE		= 2,	/* a rule of scx_hinted --rules */
	HINTED_SRC_INHERITED	= 3,	/* taken over at fork or exec */
	HINTED_SRC_POLICY	= 4,	/* SCHED_IDLE (background) or SCHED_BATCH (batch) */
};

/*
 * What the scheduler applies to one task, kept in the task-storage map
 * task_views (task_view.bpf.h), pinned next to the TLD map as "tasks" and
 * readable by pidfd (scx-hint show). Updated whenever an input changes.
 */
struct hinted_task_view {
	s32 cls;		/* class applied (before any burst-budget demotion) */
	s32 prio;		/* priority hint applied: added to nice for the weight */
	u32 weight;		/* weight from nice + priority (nice 0 = 1024) */
	u32 rule_id;		/* id of the rule that matched (its line), 0 if none */
	u8 class_source;	/* enum hinted_source */
	u8 prio_source;		/* enum hinted_source */
	u8 registered;		/* the thread has a TLD registration */
	u8 clamped;		/* a critical class or negative priority it claimed was refused */
	s32 own_class;		/* the class the thread publishes, -1 if none */
};

/*
 * A rule's hints for one task, written by scx_hinted's user space into the
 * task-storage map rule_hints by pidfd (rules.bpf.h, scheduler/src/rules.rs).
 */
struct hinted_rule_hint {
	s32 cls;		/* class, -1 if the rule sets none */
	s32 prio;		/* priority, if have_prio */
	u8 have_prio;
	u8 trusted;		/* matches on user/group only: not clamped */
	u8 pad[2];
	u32 rule_id;		/* the rule's line in the rules file */
};

#endif /* __SCX_HINTED_INTF_H */
