/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * cgroup CPU weights (cpu.weight), as systemd uses them to share CPU between
 * slices and services.
 *
 * scx_hinted schedules tasks, not groups: every task has a weight and its
 * vruntime advances by runtime * 1024 / weight in its LLC's queue. So that
 * CPU splits between cgroups follow their cpu.weight and not their task
 * counts, a task's weight is scaled by its cgroup's share, level by level,
 * as the kernel's fair class would split it (the hierarchy is "flattened"):
 *
 *   weight = base * w(C1) / load(C1) * w(C2) / load(C2) * ... * w(Ck) / load(Ck)
 *
 * where base is the task's weight from nice and its priority hint, C1 is its
 * cgroup, Ck the top-level cgroup it is under, w(C) the cgroup's cpu.weight
 * (100 = 1024, one nice-0 task) and load(C) the sum of the weights of what is
 * runnable directly in C: its tasks' base weights and its active child
 * cgroups' w. The root cgroup's tasks keep their base weight and compete with
 * the top-level cgroups as one nice-0 task does with a cgroup of weight 100.
 * The weights of a cgroup's runnable tasks thus add up to its share of its
 * parent: two sibling cgroups of cpu.weight 100 and 300 get 1:3 of a CPU
 * whether they hold one task each or three and one.
 *
 * Bookkeeping: ops.runnable() adds a task's base weight to its cgroup's load
 * (ops.quiescent() takes it back); a cgroup that becomes active adds its
 * weight to its parent's load, and so on up (a cgroup that goes idle takes
 * it back). The weight is recomputed from these loads whenever the task's
 * hints are refreshed (each wakeup, enqueue and slice end): up to
 * CGW_MAX_DEPTH hash lookups. Deeper cgroups count from their CGW_MAX_DEPTH
 * nearest levels. cgroups beyond CGW_MAX_CGROUPS are not tracked, nor are
 * their descendants: their tasks keep their base weight, as do all tasks on
 * kernels without cgroup support
 * in sched_ext (CONFIG_EXT_GROUP_SCHED), which never call the cgroup ops.
 *
 * Hints: a priority hint changes a task's base weight, and so its part of
 * its cgroup's share, never the share itself. A class sets slices, wakeup
 * credit and preemption, not share: a critical thread in a low-weight cgroup
 * is picked early when it wakes, but does not take more than the cgroup's
 * share over time.
 */
#ifndef __SCX_HINTED_CGROUP_WEIGHT_BPF_H
#define __SCX_HINTED_CGROUP_WEIGHT_BPF_H

#define CGW_MAX_CGROUPS		16384
#define CGW_MAX_DEPTH		16
/* cpu.weight of a cgroup that counts as one nice-0 task. */
#define CGW_WEIGHT_DFL		100
#define CGW_NICE_0		1024
/*
 * Loads and cgroup weights are kept in 1/64 of a task weight unit, so that a
 * small cpu.weight keeps its value (cpu.weight 1 is 10.24 units: 655/64, not
 * 10), and the scaling in cgw_weight() carries 16 more fractional bits; only
 * the final task weight is rounded to a whole unit.
 */
#define CGW_LOAD_SHIFT		6
#define CGW_EFF_SHIFT		16

/* Set by user space (--no-cgroup-weights turns it off). */
const volatile bool cgroup_weights = true;

/*
 * A tracked (non-root) cgroup. nr_active moves without the lock while it
 * stays above zero (the per-wakeup path); every 0 <-> 1 transition, and
 * with it contrib and the matching change of the parent's load, happens
 * under the lock, as does a weight change: so contrib is nonzero exactly
 * while nr_active is, and the parent's load always holds contrib.
 */
struct cgw_node {
	struct bpf_spin_lock lock;
	u32 nr_active;		/* its runnable tasks and active children */
	s64 load;		/* weights of its runnable tasks and active children */
	u64 parent;		/* id of its parent, 0 if that is the root */
	u64 weight;		/* cpu.weight in load units (100 = 1024 << CGW_LOAD_SHIFT) */
	u64 contrib;		/* what it added to its parent's load, 0 if idle */
};

/* Per task, inside its task context. */
struct cgw_task {
	u64 cgid;		/* id of its cgroup, 0 if none is tracked */
	u64 contrib;		/* base weight it added to its cgroup's load, 0 if not runnable */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CGW_MAX_CGROUPS);
	__type(key, u64);
	__type(value, struct cgw_node);
} cgw_nodes SEC(".maps");

/* cpu.weight (1..10000) in load units, rounded to the nearest. */
static __always_inline u64 cgw_scaled(u32 cpu_weight)
{
	return ((u64)cpu_weight * (CGW_NICE_0 << CGW_LOAD_SHIFT) + CGW_WEIGHT_DFL / 2) /
	       CGW_WEIGHT_DFL;
}

static __always_inline u64 cgw_id(struct cgroup *cgrp)
{
	return cgrp ? BPF_CORE_READ(cgrp, kn, id) : 0;
}

/* The id a task in cgrp keeps: 0 for the root cgroup, which is not tracked
 * (its tasks then cost no lookup at all). */
static __always_inline u64 cgw_task_cgid(struct cgroup *cgrp)
{
	if (!cgroup_weights || !cgrp || BPF_CORE_READ(cgrp, level) <= 0)
		return 0;
	return cgw_id(cgrp);
}

/*
 * An entity of weight w (load units) became runnable in (task) or active
 * under (cgroup) cgroup id: add w to its load; if that made the cgroup
 * active, it adds its own weight to its parent's load, and so on up.
 */
static void cgw_activate(u64 id, u64 w)
{
	struct cgw_node *n;
	u32 cnt, i;

	bpf_for(i, 0, CGW_MAX_DEPTH) {
		if (!id || !(n = bpf_map_lookup_elem(&cgw_nodes, &id)))
			return;
		__sync_fetch_and_add(&n->load, w);
		cnt = READ_ONCE(n->nr_active);
		if (cnt && __sync_val_compare_and_swap(&n->nr_active, cnt, cnt + 1) == cnt)
			return;
		/* Idle, or raced: decide under the lock. */
		w = 0;
		bpf_spin_lock(&n->lock);
		if (__sync_fetch_and_add(&n->nr_active, 1) == 0) {
			w = n->weight;
			n->contrib = w;
		}
		bpf_spin_unlock(&n->lock);
		if (!w)
			return;
		id = n->parent;
	}
}

/* The reverse of cgw_activate(). */
static void cgw_deactivate(u64 id, u64 w)
{
	struct cgw_node *n;
	u32 cnt, i;

	bpf_for(i, 0, CGW_MAX_DEPTH) {
		if (!id || !(n = bpf_map_lookup_elem(&cgw_nodes, &id)))
			return;
		__sync_fetch_and_sub(&n->load, w);
		cnt = READ_ONCE(n->nr_active);
		if (cnt > 1 && __sync_val_compare_and_swap(&n->nr_active, cnt, cnt - 1) == cnt)
			return;
		w = 0;
		bpf_spin_lock(&n->lock);
		if (__sync_fetch_and_sub(&n->nr_active, 1) == 1) {
			w = n->contrib;
			n->contrib = 0;
		}
		bpf_spin_unlock(&n->lock);
		if (!w)
			return;
		id = n->parent;
	}
}

/* ops.runnable(): the task's base weight joins its cgroup's load. */
static __always_inline void cgw_runnable(struct cgw_task *ct, u32 base)
{
	if (!cgroup_weights || !ct->cgid || ct->contrib)
		return;
	ct->contrib = base;
	cgw_activate(ct->cgid, (u64)base << CGW_LOAD_SHIFT);
}

/* ops.quiescent(): and leaves it. */
static __always_inline void cgw_quiescent(struct cgw_task *ct)
{
	u64 w = ct->contrib;

	if (!w)
		return;
	ct->contrib = 0;
	cgw_deactivate(ct->cgid, w << CGW_LOAD_SHIFT);
}

/* The task's base weight changed (nice, priority hint): update its cgroup's
 * load if it is in it. Only under the task's rq lock, as ct->contrib is
 * otherwise changed by ops.runnable(), ops.quiescent() and a cgroup move. */
static __always_inline void cgw_set_base(struct cgw_task *ct, u32 base)
{
	struct cgw_node *n;
	u64 id = ct->cgid;

	if (!ct->contrib || ct->contrib == base)
		return;
	n = bpf_map_lookup_elem(&cgw_nodes, &id);
	if (n)
		__sync_fetch_and_add(&n->load, ((s64)base - (s64)ct->contrib) << CGW_LOAD_SHIFT);
	ct->contrib = base;
}

/*
 * The weight a task of this base weight is scheduled with (see above). If a
 * cgroup on its path is not tracked (the map was full), the task keeps its
 * base weight: the levels below alone could weigh it as if its cgroup were
 * at the top.
 */
static __noinline u32 cgw_weight(const struct cgw_task *ct, u32 base)
{
	u64 id = ct->cgid, eff = (u64)base << CGW_EFF_SHIFT;
	u64 own = (u64)base << CGW_LOAD_SHIFT;
	bool counted = ct->contrib;
	struct cgw_node *n;
	s64 load;
	u32 i;

	if (!cgroup_weights || !id)
		return base;
	bpf_for(i, 0, CGW_MAX_DEPTH) {
		if (!id)
			break;
		n = bpf_map_lookup_elem(&cgw_nodes, &id);
		if (!n)
			return base;
		load = READ_ONCE(n->load);
		/* Not yet runnable (ops.select_cpu() comes before
		 * ops.runnable()), or the cgroup not yet active: count it as
		 * it will be. A load below the entity's own weight is a
		 * transient of concurrent updates. */
		if (!counted)
			load += own;
		if (load < (s64)own)
			load = own;
		own = READ_ONCE(n->weight);
		/* eff is at most the weight of the level below (cpu.weight
		 * 10000 is 102400 units, << 16 below 2^33) and own below 2^23:
		 * the product fits. */
		eff = eff * own / (load ?: 1);
		counted = READ_ONCE(n->nr_active) != 0;
		id = n->parent;
	}
	eff = (eff + (1ULL << (CGW_EFF_SHIFT - 1))) >> CGW_EFF_SHIFT;
	if (!eff)
		return 1;
	return eff > 0xffffffffULL ? 0xffffffff : eff;
}

/* ops.init_task(): the cgroup the task starts in. */
static __always_inline void cgw_task_init(struct cgw_task *ct, struct scx_init_task_args *args)
{
	struct cgroup *cgrp = NULL;

	ct->contrib = 0;
	if (bpf_core_field_exists(args->cgroup))
		cgrp = args->cgroup;
	ct->cgid = cgw_task_cgid(cgrp);
}

/* The cgroup ops; each one is optional for the kernel. */

/*
 * A cgroup is tracked only under a tracked parent: when the map is full, the
 * untracked cgroup's whole subtree is, and its tasks keep their base weight
 * (counted in s->cgroups_untracked; never fail a mkdir for it).
 */
static s32 cgw_cgroup_init(struct cgroup *cgrp, struct scx_cgroup_init_args *args,
			   struct hinted_stats *s)
{
	struct cgw_node n = {};
	u64 id;
	int level;

	level = BPF_CORE_READ(cgrp, level);
	if (!cgroup_weights || level <= 0)
		return 0;	/* the root: its tasks keep their weight */
	id = cgw_id(cgrp);
	n.weight = cgw_scaled(args->weight);
	if (level > 1) {
		n.parent = BPF_CORE_READ(cgrp, self.parent, cgroup, kn, id);
		if (!bpf_map_lookup_elem(&cgw_nodes, &n.parent))
			goto untracked;
	}
	if (!bpf_map_update_elem(&cgw_nodes, &id, &n, BPF_ANY))
		return 0;
untracked:
	if (s)
		__sync_fetch_and_add(&s->cgroups_untracked, 1);
	return 0;
}

static void cgw_cgroup_exit(struct cgroup *cgrp)
{
	u64 id = cgw_id(cgrp);

	bpf_map_delete_elem(&cgw_nodes, &id);
}

/* cpu.weight changed: an active cgroup's contribution to its parent's load
 * changes with it (an idle one adds the new weight when it activates). */
static void cgw_set_weight(struct cgroup *cgrp, u32 cpu_weight)
{
	u64 id = cgw_id(cgrp), w = cgw_scaled(cpu_weight);
	struct cgw_node *n, *pn;
	s64 delta = 0;

	n = bpf_map_lookup_elem(&cgw_nodes, &id);
	if (!n)
		return;
	bpf_spin_lock(&n->lock);
	n->weight = w;
	if (n->contrib) {
		delta = (s64)w - (s64)n->contrib;
		n->contrib = w;
	}
	bpf_spin_unlock(&n->lock);
	id = n->parent;
	if (delta && id && (pn = bpf_map_lookup_elem(&cgw_nodes, &id)))
		__sync_fetch_and_add(&pn->load, delta);
}

/* The task moved (the kernel dequeues it first, so it is normally not
 * counted anywhere now; if it is, its weight moves with it). */
static __always_inline void cgw_move(struct cgw_task *ct, struct cgroup *to)
{
	u64 w = ct->contrib;

	cgw_quiescent(ct);
	ct->cgid = cgw_task_cgid(to);
	if (w)
		cgw_runnable(ct, w);
}

#endif /* __SCX_HINTED_CGROUP_WEIGHT_BPF_H */
