/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * scx_hinted: a sched_ext scheduler steered by per-thread hints.
 *
 * What it demonstrates: an application publishes a latency class and a
 * priority for each of its threads as task local data (TLD, see tld_abi.h
 * and hints.h); setting a hint is a plain store into the thread's own memory,
 * no syscall. This scheduler reads those values with the TLD BPF library in
 * ops.select_cpu(), ops.enqueue() and ops.dispatch(), keeping the resolved
 * key offsets in its own per-task context, and schedules by them.
 *
 * How it decides:
 *
 * - Weighted virtual time. Every task has a vruntime that advances by
 *   runtime * 1024 / weight; the weight comes from the task's nice value,
 *   shifted by its priority hint (nice + priority, clamped to -20..19).
 *   Tasks wait in a shared queue of their LLC (below) ordered by virtual
 *   deadline = vruntime + the class slice scaled by weight. The system's
 *   virtual time (vtime_now) is the largest vruntime seen starting to run,
 *   of any class, and a slice that ops.dispatch() refills is charged like a
 *   new run. At every enqueue a task's vruntime is raised to no less than
 *   vtime_now minus the class's wakeup credit ("lag"), so sleeping earns a
 *   bounded head start, and lowered to at most max_lead_ns (20 ms, scaled by
 *   weight) ahead of it, so time charged while a vCPU was stolen cannot
 *   leave a task far behind everyone else. The lead is well above what a
 *   task may legitimately run past vtime_now (its slice plus a tick):
 *   forgiving less would forgive real CPU time, and threads that run long
 *   bursts between short naps would take more than their share.
 *
 * - cgroup weights. A task's weight is scaled by its cgroup's share among
 *   the busy siblings at each level (cgroup_weight.bpf.h), so CPU time splits
 *   between cgroups by cpu.weight, not by task count; hints act within it.
 *
 * - Latency classes. critical and interactive get short slices, small
 *   requests (early deadlines) and a large wakeup credit; they take an idle
 *   CPU first and, when none is idle, preempt a CPU running a lower class if
 *   their deadline is earlier than that task's or they are behind it in
 *   virtual time (background is preempted regardless). normal preempts batch
 *   and background the same way, and waits out another normal task's slice
 *   (unless --peer-preemption: see find_victim()). A waker claims the CPU
 *   it preempts, so two wakers never pick the same one. batch gets long
 *   slices, no wakeup credit, never preempts, and its slice ends at a tick
 *   after a normal slice's worth when an earlier deadline waits. background
 *   waits in its own queue that a CPU serves only when no other work is
 *   queued, except that each CPU gives it a background slice of run time at
 *   least every bg_period_ns (a guaranteed minimum share, counted in time:
 *   many short runs make up one slice; a guard pick yields only to critical
 *   and interactive, and only after bg_guard_min_ns), so it never starves.
 *
 * - Topology. Each last-level cache (LLC) has its own queues (topology.bpf.h);
 *   a task queues in the LLC of the CPU it was placed on. A CPU serves its
 *   LLC's queue first and steals from the others before it would go idle,
 *   and a critical or interactive task first in another LLC's queue beats
 *   its own LLC's lower classes. Idle CPUs are chosen by the kernel's
 *   topology-aware search (a whole idle core first, then the task's LLC).
 *   The wakeup victim search looks at the CPUs of the task's LLC, and for
 *   critical and interactive tasks a bounded number of others.
 *
 * - Starvation guard. Deadlines scale with the inverse of the weight, so a
 *   nice-19 task among many CPU hogs could wait seconds per slice; a task
 *   that has waited starve_ns (1 s) in its LLC's queue runs ahead of the
 *   deadline order (one CPU looks every starve_check_ns, 100 ms, and again
 *   right after each such pick), so the watchdog does not fire. Background
 *   tasks too, after 5 s: hundreds of runnable background threads per CPU
 *   would outwait their minimum share.
 *
 * - Abuse budget. A critical or interactive thread that runs longer than its
 *   class budget without sleeping is scheduled as normal for the rest of that
 *   burst (checked at every tick and every stop, so the bound is the budget
 *   plus one tick). Preemption also requires the waker to be early in
 *   deadline or behind in virtual time, so a class buys latency, never CPU
 *   share: share follows weight, and negative priorities are privileged.
 *
 * - Policy. Claiming critical or a negative priority needs a privileged
 *   thread (root, or an allowed uid or gid); other claims are clamped to
 *   interactive and 0, and counted. SCHED_IDLE threads are background whatever
 *   they hint; SCHED_BATCH threads default to batch. A forked task starts with
 *   its parent's effective hints until it publishes its own (optional).
 *   Rules from the administrator (rules.bpf.h) give hints to threads that
 *   publish none: the own hint beats a rule, a rule beats an inherited one.
 *   What is applied to each task, and why, is kept in a view that user
 *   space can read (task_view.bpf.h).
 *
 * - The kernel's side. Exiting and migration-disabled tasks come through
 *   ops.enqueue() too (the latter go to their CPU's local queue), wakeups may
 *   be queued to the target CPU, and when an RT or deadline task takes a CPU
 *   its local queue goes back through ops.enqueue() (from the sched_switch
 *   tracepoint, or ops.cpu_release on kernels before 6.19). A task that
 *   calls sched_yield() gives its CPU to the first task queued in its LLC.
 *
 * docs/policy.md says the same for users, with the numbers.
 */
#include <scx/common.bpf.h>
#include "intf.h"
#include "topology.bpf.h"
#include "tld.bpf.h"
#include "rules.bpf.h"
#include "cgroup_weight.bpf.h"

char _license[] SEC("license") = "GPL";

UEI_DEFINE(uei);

#define NICE_0_WEIGHT		1024
#define CLASS_NONE		(-1)

/* Key cache slots in struct tld_keys. */
#define KEY_SLOT_CLASS		0
#define KEY_SLOT_PRIO		1

#ifndef SCHED_BATCH
#define SCHED_BATCH		3
#endif
#ifndef SCHED_IDLE
#define SCHED_IDLE		5
#endif

/*
 * Tunables, written by user space before load (see scheduler/src/main.rs for
 * the command-line options and their defaults).
 */
const volatile u64 slice_ns[HINTED_NR_CLASSES] = {
	[SCX_HINT_CLASS_NORMAL]		= 3000000,
	[SCX_HINT_CLASS_CRITICAL]	= 750000,
	[SCX_HINT_CLASS_INTERACTIVE]	= 1500000,
	[SCX_HINT_CLASS_BATCH]		= 12000000,
	[SCX_HINT_CLASS_BACKGROUND]	= 3000000,
};
const volatile u64 lag_ns[HINTED_NR_CLASSES] = {
	[SCX_HINT_CLASS_NORMAL]		= 20000000,
	[SCX_HINT_CLASS_CRITICAL]	= 40000000,
	[SCX_HINT_CLASS_INTERACTIVE]	= 40000000,
	[SCX_HINT_CLASS_BATCH]		= 0,
	[SCX_HINT_CLASS_BACKGROUND]	= 20000000,
};
/* Burst budget of the elevated classes; 0 = unlimited. */
const volatile u64 budget_ns[HINTED_NR_CLASSES] = {
	[SCX_HINT_CLASS_CRITICAL]	= 5000000,
	[SCX_HINT_CLASS_INTERACTIVE]	= 20000000,
};
/* How far ahead of vtime_now a vruntime may be (scaled by weight). */
const volatile u64 max_lead_ns = 20000000;
/* Longest time a CPU serves other work while background waits. */
const volatile u64 bg_period_ns = 57000000;
/* How long a guard slice runs before critical and interactive may preempt it. */
const volatile u64 bg_guard_min_ns = 1000000;
/* Whether a waking normal task may preempt a running one (--peer-preemption). */
const volatile bool peer_preemption = false;
/* How long a normal task runs before such a waker may preempt it. */
const volatile u64 peer_min_run_ns = 1000000;
/* Background tasks the starvation guard looks at, from its queue's head. */
#define BG_STARVE_SCAN		32
/* How many times starve_ns a background task waits before that guard. */
#define BG_STARVE_FACTOR	5
/* A task queued this long is served first (starvation guard); 0 = off. */
const volatile u64 starve_ns = 1000000000;
/* How often a CPU looks for such a task. */
const volatile u64 starve_check_ns = 100000000;
const volatile bool inherit_on_fork = true;
const volatile bool allow_all;
const volatile u32 nr_allow_uids = 1;
const volatile u32 allow_uids[HINTED_MAX_ALLOW_IDS];	/* uid 0 */
const volatile u32 nr_allow_gids;
const volatile u32 allow_gids[HINTED_MAX_ALLOW_IDS];

/* Weight of nice -20..19, nice 0 = 1024 (the kernel's own table). */
static const u32 nice_weight[40] = {
	88761, 71755, 56483, 46273, 36291,
	29154, 23254, 18705, 14949, 11916,
	9548, 7620, 6100, 4904, 3906,
	3121, 2501, 1991, 1586, 1277,
	1024, 820, 655, 526, 423,
	335, 272, 215, 172, 137,
	110, 87, 70, 56, 45,
	36, 29, 23, 18, 15,
};

static const char class_key[TLD_NAME_LEN] = SCX_HINT_KEY_LATENCY_CLASS;
static const char prio_key[TLD_NAME_LEN] = SCX_HINT_KEY_PRIORITY;

/* The system's virtual time: the largest vruntime seen starting to run. */
static u64 vtime_now;
/* Per LLC, on a cache line of its own: written by that LLC's CPUs. */
struct llc_ctx {
	u64 starve_checked_at;		/* when a CPU last looked for starving tasks */
	u64 pad[7];
};

static struct llc_ctx llc_ctxs[HINTED_MAX_LLCS];

/* What a task's effective hints are computed from; recomputed on change. */
struct hint_input {
	s32 own_class;
	s32 own_prio;
	u8 have_own_class;
	u8 have_own_prio;
	u8 policy;
	u8 valid;
	u8 registered;
	s32 static_prio;
};

struct task_ctx {
	struct tld_keys keys;		/* TLD key offsets, resolved once per task */
	struct hint_input in;		/* the inputs last seen */

	/* Hints inherited at fork, used for keys the task has not published. */
	s32 inh_class;			/* CLASS_NONE if none */
	s32 inh_prio;
	u8 have_inh_prio;

	struct rule_state rule;		/* the hints a rule gives it (rules.bpf.h) */

	/* Results: effective hints (after validation and policy), class, weight. */
	u8 registered;
	u8 demoted;			/* over budget for the rest of this burst */
	u8 hints_fresh;			/* read by select_cpu() for this wakeup */
	u8 yielded;			/* called sched_yield() in this slice */
	u32 stale_cookie;		/* cookie of the entry an exec could not delete */
	s32 hint_class;			/* CLASS_NONE if no class hint applies */
	s32 hint_prio;
	u8 have_hint_prio;
	u8 clamped;			/* a critical class or negative priority was refused */
	s32 cls;			/* class before demotion */
	s32 counted_class;		/* class counted in the tasks gauge */
	u32 base_weight;		/* from nice and priority */
	u32 weight;			/* base_weight scaled by the cgroup's share */
	struct cgw_task cgw;		/* its cgroup (cgroup_weight.bpf.h) */

	u64 vtime;			/* vruntime */
	u64 burst_ns;			/* CPU time since the task last woke */
	u64 run_start;
	u64 wake_at;
	u64 queued_at;			/* when it entered its LLC's queue */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctxs SEC(".maps");

struct cpu_ctx {
	s32 cur_class;			/* class of the running task, CLASS_NONE if none */
	u8 protected;			/* running a background guard slice */
	u8 guard_pending;		/* the next task started is a guard pick */
	u32 cur_weight;			/* weight of the running task */
	u32 claimed;			/* a waker chose to preempt the running task */
	u64 cur_vtime;			/* vruntime of the running task when it started */
	u64 cur_start;			/* when it started */
	u64 cur_dl;			/* its virtual deadline for this slice */
	u64 bg_last;			/* when background was last given its share here */
	u64 bg_ran;			/* background run time here since then */
	u32 rr;				/* rotates the start of bounded looks at other LLCs */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct cpu_ctx);
} cpu_ctxs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct hinted_stats);
} stats SEC(".maps");

static __always_inline struct hinted_stats *stats_get(void)
{
	u32 zero = 0;

	return bpf_map_lookup_elem(&stats, &zero);
}

static __always_inline struct hinted_class_stats *class_stats(struct hinted_stats *s, s32 cls)
{
	if (!s)
		return NULL;
	return MEMBER_VPTR(s->cls, [cls]);
}

static __always_inline struct cpu_ctx *this_cpu_ctx(void)
{
	u32 zero = 0;

	return bpf_map_lookup_elem(&cpu_ctxs, &zero);
}

/*
 * The context of the CPU a task is on. ops.running() and ops.stopping() run
 * on that CPU for slice changes, but the kernel also calls them from another
 * CPU (a nice, affinity or cgroup change dequeues and re-queues the task
 * there), so they must not assume the current CPU.
 */
static __always_inline struct cpu_ctx *task_cpu_ctx(const struct task_struct *p)
{
	u32 zero = 0;

	return bpf_map_lookup_percpu_elem(&cpu_ctxs, &zero, scx_bpf_task_cpu(p));
}

static __always_inline struct task_ctx *task_ctx_of(struct task_struct *p)
{
	return bpf_task_storage_get(&task_ctxs, p, 0, 0);
}

#include "task_view.bpf.h"

static __always_inline bool is_elevated(s32 cls)
{
	return cls == SCX_HINT_CLASS_CRITICAL || cls == SCX_HINT_CLASS_INTERACTIVE;
}

/* Preemption order: a waking task may preempt a running one of lower rank. */
static __always_inline s32 class_rank(s32 cls)
{
	switch (cls) {
	case SCX_HINT_CLASS_BACKGROUND:
		return 0;
	case SCX_HINT_CLASS_BATCH:
		return 1;
	case SCX_HINT_CLASS_NORMAL:
		return 2;
	case SCX_HINT_CLASS_INTERACTIVE:
		return 3;
	case SCX_HINT_CLASS_CRITICAL:
		return 4;
	}
	return 5;	/* nothing running, or unknown: never a victim */
}

/* The class a task is scheduled as right now. */
static __always_inline s32 sched_class(const struct task_ctx *tctx)
{
	if (tctx->demoted)
		return SCX_HINT_CLASS_NORMAL;
	return tctx->cls;
}

/*
 * Per-class tunables. MEMBER_VPTR() bounds the index in a way the verifier
 * can follow (clang would otherwise form the address before the check).
 */
static __always_inline u64 class_slice(s32 cls)
{
	const volatile u64 *v = MEMBER_VPTR(slice_ns, [cls]);

	return v ? *v : slice_ns[SCX_HINT_CLASS_NORMAL];
}

static __always_inline u64 class_lag(s32 cls)
{
	const volatile u64 *v = MEMBER_VPTR(lag_ns, [cls]);

	return v ? *v : 0;
}

static __always_inline u64 class_budget(s32 cls)
{
	const volatile u64 *v = MEMBER_VPTR(budget_ns, [cls]);

	return v ? *v : 0;
}

static __always_inline u64 scale_inv(u64 val, u32 weight)
{
	return val * NICE_0_WEIGHT / (weight ?: 1);
}

/* ---- Who may claim what ---------------------------------------------- */

static bool id_allowed(u32 id, const volatile u32 *ids, u32 nr)
{
	u32 i;

	bpf_for(i, 0, HINTED_MAX_ALLOW_IDS) {
		if (i >= nr)
			break;
		if (ids[i] == id)
			return true;
	}
	return false;
}

/*
 * A thread may claim the critical class or a negative priority if it runs
 * with an allowed effective uid, an allowed effective gid, or an allowed
 * supplementary group (the first HINTED_MAX_SUPP_GROUPS are checked).
 */
static bool task_privileged(struct task_struct *p)
{
	const struct cred *cred;
	struct group_info *gi;
	u32 uid, gid, i;
	int ngroups;

	if (allow_all)
		return true;
	cred = BPF_CORE_READ(p, cred);
	if (!cred)
		return false;
	uid = BPF_CORE_READ(cred, euid.val);
	if (id_allowed(uid, allow_uids, nr_allow_uids))
		return true;
	if (!nr_allow_gids)
		return false;
	gid = BPF_CORE_READ(cred, egid.val);
	if (id_allowed(gid, allow_gids, nr_allow_gids))
		return true;
	gi = BPF_CORE_READ(cred, group_info);
	if (!gi)
		return false;
	ngroups = BPF_CORE_READ(gi, ngroups);
	bpf_for(i, 0, HINTED_MAX_SUPP_GROUPS) {
		kgid_t g;

		if ((int)i >= ngroups)
			break;
		if (bpf_core_read(&g, sizeof(g), &gi->gid[i]))
			break;
		if (id_allowed(g.val, allow_gids, nr_allow_gids))
			return true;
	}
	return false;
}

/* ---- From hints to class and weight ---------------------------------- */

static __always_inline void set_registered(struct task_ctx *tctx, struct hinted_stats *s,
					   bool registered)
{
	if (tctx->registered == registered)
		return;
	tctx->registered = registered;
	if (s)
		s->registered += registered ? 1 : -1;
}

static __always_inline void count_class(struct task_ctx *tctx, struct hinted_stats *s, s32 cls)
{
	struct hinted_class_stats *cs;

	if (tctx->counted_class == cls)
		return;
	if ((cs = class_stats(s, tctx->counted_class)))
		cs->tasks--;
	if ((cs = class_stats(s, cls)))
		cs->tasks++;
	tctx->counted_class = cls;
}

/* A task's effective hints, before the policy turns them into a class. */
struct eff_hints {
	s32 cls;		/* CLASS_NONE if no class hint applies */
	s32 prio;
	bool have_prio;
	bool bad_class;		/* its own class was outside the vocabulary */
	bool bad_prio;		/* its own priority was, and was bounded */
	bool clamp_cls;		/* a critical class was refused */
	bool clamp_prio;	/* a negative priority was refused */
};

/*
 * The effective hints for `in`: the thread's own, else a rule's, else the
 * inherited ones. `creds_grant` says whether the task's credentials may
 * grant a privileged claim: not at an exec that raised them (setuid), where
 * the claim was made by the image before.
 */
static __always_inline void resolve_hints(struct task_struct *p, const struct task_ctx *tctx,
					  const struct hint_input *in, bool creds_grant,
					  struct eff_hints *e)
{
	bool rule_cls, rule_prio;

	e->cls = CLASS_NONE;
	e->prio = 0;
	e->have_prio = false;
	e->bad_class = false;
	e->bad_prio = false;
	if (in->have_own_class) {
		e->cls = in->own_class;
		if (e->cls < 0 || e->cls >= HINTED_NR_CLASSES) {
			e->bad_class = true;
			e->cls = CLASS_NONE;
		}
	} else {
		e->cls = tctx->inh_class;
	}

	if (in->have_own_prio) {
		e->prio = in->own_prio;
		e->have_prio = true;
		if (e->prio < SCX_HINT_PRIO_MIN || e->prio > SCX_HINT_PRIO_MAX) {
			e->bad_prio = true;
			e->prio = e->prio < SCX_HINT_PRIO_MIN ? SCX_HINT_PRIO_MIN : SCX_HINT_PRIO_MAX;
		}
	} else if (tctx->have_inh_prio) {
		e->prio = tctx->inh_prio;
		e->have_prio = true;
	}

	/* A rule beats an inherited hint, never the thread's own. */
	rule_cls = rule_sets_class(&tctx->rule, in->have_own_class);
	rule_prio = rule_sets_prio(&tctx->rule, in->have_own_prio);
	if (rule_cls)
		e->cls = tctx->rule.hint.cls;
	if (rule_prio) {
		e->prio = tctx->rule.hint.prio;
		e->have_prio = true;
	}

	/*
	 * Only privileged tasks get a critical class or a negative priority,
	 * whether they claim it, inherit it, or match a rule that names them
	 * by what anyone can fake (rules.bpf.h): only a trusted rule grants it.
	 */
	e->clamp_cls = e->cls == SCX_HINT_CLASS_CRITICAL && !(rule_cls && tctx->rule.hint.trusted);
	e->clamp_prio = e->prio < 0 && !(rule_prio && tctx->rule.hint.trusted);
	if ((e->clamp_cls || e->clamp_prio) && creds_grant && task_privileged(p))
		e->clamp_cls = e->clamp_prio = false;
	if (e->clamp_cls)
		e->cls = SCX_HINT_CLASS_INTERACTIVE;
	if (e->clamp_prio)
		e->prio = 0;
}

/*
 * Recompute the effective hints, class and weight from tctx->in. Runs only
 * when an input changed, so the privilege check and the counting of bad or
 * clamped values happen once per change, not once per scheduling event.
 * locked: the caller is serialised with p's runnable/quiescent/cgroup move
 * (holds its rq lock or, waking it, its pi_lock), so it may update p's part
 * of its cgroup's load; otherwise p's next locked refresh does.
 */
static __noinline void recompute(struct task_struct *p, struct task_ctx *tctx,
				 struct hinted_stats *s, bool locked)
{
	struct hinted_class_stats *cs;
	struct eff_hints e;
	s32 cls, nice;
	const u32 *weight;
	u32 idx;

	resolve_hints(p, tctx, &tctx->in, true, &e);
	if (s && e.bad_class)
		s->bad_class++;
	if (s && e.bad_prio)
		s->bad_prio++;
	if (e.clamp_cls && (cs = class_stats(s, SCX_HINT_CLASS_CRITICAL)))
		cs->clamped++;
	if (e.clamp_prio &&
	    (cs = class_stats(s, e.cls == CLASS_NONE ? SCX_HINT_CLASS_NORMAL : e.cls)))
		cs->clamped++;
	tctx->clamped = e.clamp_cls || e.clamp_prio;

	/* What a child inherits at fork. */
	tctx->hint_class = e.cls;
	tctx->hint_prio = e.prio;
	tctx->have_hint_prio = e.have_prio;

	if (tctx->in.policy == SCHED_IDLE)
		cls = SCX_HINT_CLASS_BACKGROUND;
	else if (e.cls != CLASS_NONE)
		cls = e.cls;
	else if (tctx->in.policy == SCHED_BATCH)
		cls = SCX_HINT_CLASS_BATCH;
	else
		cls = SCX_HINT_CLASS_NORMAL;
	tctx->cls = cls;
	count_class(tctx, s, cls);

	nice = tctx->in.static_prio - 120 + e.prio;
	if (nice < -20)
		nice = -20;
	if (nice > 19)
		nice = 19;
	idx = nice + 20;
	weight = MEMBER_VPTR(nice_weight, [idx]);
	tctx->base_weight = weight ? *weight : NICE_0_WEIGHT;
	if (locked)
		cgw_set_base(&tctx->cgw, tctx->base_weight);
	tctx->weight = cgw_weight(&tctx->cgw, tctx->base_weight);
	view_update(p, tctx, e.prio);
}

/*
 * Reads the thread's own hints into *in (its class and priority keys) and
 * returns tld_object_init()'s result: 0 registered, -ENOENT not registered
 * (or only the entry an exec could not delete), -EAGAIN throttled (the page
 * changed again too soon to search it: nothing new is known, so the hints
 * last read still hold; dropping them would schedule the thread as
 * unhinted), -EINVAL bad data (no own hints).
 */
static __always_inline int read_own_hints(struct task_struct *p, struct task_ctx *tctx,
					  struct hint_input *in)
{
	struct tld_object obj;
	s32 *v;
	int ret;

	in->have_own_class = 0;
	in->have_own_prio = 0;
	if (unlikely(tctx->stale_cookie)) {
		struct tld_map_value *val = bpf_task_storage_get(&scx_hints_tld, p, 0, 0);

		if (val && val->meta && TLD_READ_ONCE(val->meta->cookie) == tctx->stale_cookie)
			return -ENOENT;
		tctx->stale_cookie = 0;	/* the new image registered */
	}
	ret = tld_object_init(p, &tctx->keys, &obj);
	if (!ret) {
		v = tld_get(&obj, KEY_SLOT_CLASS, class_key, s32);
		if (v) {
			in->have_own_class = 1;
			in->own_class = READ_ONCE(*v);
		}
		v = tld_get(&obj, KEY_SLOT_PRIO, prio_key, s32);
		if (v) {
			in->have_own_prio = 1;
			in->own_prio = READ_ONCE(*v);
		}
	} else if (ret == -EAGAIN) {
		in->have_own_class = tctx->in.have_own_class;
		in->own_class = tctx->in.own_class;
		in->have_own_prio = tctx->in.have_own_prio;
		in->own_prio = tctx->in.own_prio;
	}
	return ret;
}

/*
 * Read the thread's hints through the TLD library and recompute if anything
 * changed. Cheap when nothing did: one task-storage lookup, two cached key
 * offsets, two loads.
 */
static __always_inline void refresh_hints(struct task_struct *p, struct task_ctx *tctx,
					  struct hinted_stats *s, bool locked)
{
	struct hint_input in = {};
	bool rule_changed;

#ifndef SCX_HINTED_NO_HINT_READS
	switch (read_own_hints(p, tctx, &in)) {
	case 0:
		set_registered(tctx, s, true);
		break;
	case -ENOENT:
		set_registered(tctx, s, false);
		break;
	}
#else
	/* Benchmark build (BPF_EXTRA_CFLAGS_POST_INCL=-DSCX_HINTED_NO_HINT_READS):
	 * no hint read, to measure what the reads cost. */
#endif
	in.policy = p->policy;
	in.static_prio = p->static_prio;
	in.valid = 1;
	in.registered = tctx->registered;	/* shown by the task view */
	rule_changed = rule_refresh(p, &tctx->rule);

	if (rule_changed || in.valid != tctx->in.valid || in.registered != tctx->in.registered ||
	    in.have_own_class != tctx->in.have_own_class ||
	    in.own_class != tctx->in.own_class || in.have_own_prio != tctx->in.have_own_prio ||
	    in.own_prio != tctx->in.own_prio || in.policy != tctx->in.policy ||
	    in.static_prio != tctx->in.static_prio) {
		tctx->in = in;
		recompute(p, tctx, s, locked);
	} else {
		/* A base weight changed by an unlocked recompute(). */
		if (locked)
			cgw_set_base(&tctx->cgw, tctx->base_weight);
		/* Its cgroup's share changes as other tasks come and go. */
		tctx->weight = cgw_weight(&tctx->cgw, tctx->base_weight);
	}
}

/* ---- Virtual time ----------------------------------------------------- */

/* A task's request: its class slice in virtual time. */
static __always_inline u64 task_req(const struct task_ctx *tctx, s32 cls)
{
	return scale_inv(class_slice(cls), tctx->weight);
}

/* Raise a vruntime that lags vtime_now by more than the class's wakeup credit. */
static __always_inline void raise_lagging(struct task_ctx *tctx, s32 cls)
{
	u64 lag = scale_inv(class_lag(cls), tctx->weight);
	u64 floor = vtime_now > lag ? vtime_now - lag : 0;

	if (time_before(tctx->vtime, floor))
		tctx->vtime = floor;
}

/*
 * Keep a task's vruntime within bounds of the current virtual time and
 * return its virtual deadline (vruntime + request), at every enqueue. A
 * lagging vruntime is raised to the class's wakeup credit below vtime_now.
 * A vruntime ahead of vtime_now by more than max_lead_ns is pulled back: time
 * charged while a task's CPU was stolen (a preempted vCPU, say) cannot starve
 * it later. vtime_now follows every class and every run, refilled slices
 * included, so a task is ahead of it only by what it ran since it last
 * started: its slice, plus up to a tick when the slice ends at a tick (a
 * critical thread's 0.75 ms slice runs 4 ms at HZ=250). The lead must stay
 * well above that: clamped at one request, a thread running 4 ms bursts
 * between 50 us naps was forgiven most of each burst and took twice its
 * share from a CPU hog.
 */
static __always_inline u64 task_deadline(struct task_ctx *tctx, s32 cls)
{
	u64 lead = scale_inv(max_lead_ns, tctx->weight);

	raise_lagging(tctx, cls);
	if (time_after(tctx->vtime, vtime_now + lead))
		tctx->vtime = vtime_now + lead;
	return tctx->vtime + task_req(tctx, cls);
}

static __always_inline void advance_vtime_now(u64 vtime)
{
	if (time_before(vtime_now, vtime))
		vtime_now = vtime;
}

/*
 * Charge the time a task ran since run_start to its vruntime. Called when
 * it stops, and when ops.dispatch() refills the slice of a task that keeps
 * its CPU: the kernel calls neither ops.stopping() nor ops.running() then,
 * and a task running alone for seconds would otherwise get that far ahead
 * of everyone's virtual time in one step when it finally stops.
 */
static __always_inline u64 charge(struct task_ctx *tctx, u64 now)
{
	u64 ran = now > tctx->run_start ? now - tctx->run_start : 0;

	tctx->vtime += scale_inv(ran, tctx->weight);
	tctx->burst_ns += ran;
	tctx->run_start = now;
	return ran;
}

/* What the CPU's context records about the task starting a slice on it. */
static __always_inline void set_current(struct cpu_ctx *cctx, const struct task_ctx *tctx,
					s32 cls, u64 now)
{
	cctx->cur_class = cls;
	cctx->cur_vtime = tctx->vtime;
	cctx->cur_weight = tctx->weight;
	cctx->cur_start = now;
	cctx->cur_dl = tctx->vtime + task_req(tctx, cls);
}

/*
 * Background's minimum share is run time, not picks: a CPU has given it its
 * due once background ran a background slice there in all (several short
 * runs count together). Counted per pick, a guard that picked a thread which
 * ran 50 us and slept would wait a whole period for the next: thousands of
 * such threads woken at once (a process creating them, say) waited for
 * seconds each, and one past the watchdog's 20 s ended the scheduler.
 * Called with the class the task ran as (cur_class) when it stops or keeps
 * its CPU.
 */
static __always_inline void account_background(struct cpu_ctx *cctx, u64 ran, u64 now)
{
	if (cctx->cur_class != SCX_HINT_CLASS_BACKGROUND)
		return;
	cctx->bg_ran += ran;
	if (cctx->bg_ran >= class_slice(SCX_HINT_CLASS_BACKGROUND)) {
		cctx->bg_last = now;
		cctx->bg_ran = 0;
	}
}

/*
 * How long the background guard of this CPU has run in this period, the
 * current pick included: a chain of short guard picks counts together, so
 * that critical and interactive wakers wait for bg_guard_min_ns of the whole
 * guard, not of each pick.
 */
static __always_inline u64 guard_ran(const struct cpu_ctx *cctx, u64 now)
{
	u64 start = READ_ONCE(cctx->cur_start);

	return READ_ONCE(cctx->bg_ran) + (now > start ? now - start : 0);
}

/*
 * A task keeps its CPU with a new slice (ops.dispatch() when its slice ran
 * out): charge what it ran so far, as if it had stopped and started again.
 * Its vruntime gets the same floor as at an enqueue: vtime_now is shared by
 * all LLCs, and in an LLC whose tasks advance slower than the busiest one's,
 * a task kept running would otherwise sort before every newcomer queued
 * there (which start near vtime_now) until the starvation guard.
 */
static __always_inline void refill(struct task_struct *p, struct task_ctx *tctx, s32 cls,
				   struct cpu_ctx *cctx, u64 now)
{
	account_background(cctx, charge(tctx, now), now);
	raise_lagging(tctx, cls);
	advance_vtime_now(tctx->vtime);
	scx_bpf_task_set_slice(p, class_slice(cls));
	set_current(cctx, tctx, cls, now);
	cctx->protected = 0;
	tctx->yielded = 0;
}

static __always_inline bool is_pcpu_kthread(const struct task_struct *p)
{
	return (p->flags & PF_KTHREAD) && p->nr_cpus_allowed == 1;
}

static __always_inline void demote(struct task_ctx *tctx, struct hinted_stats *s)
{
	struct hinted_class_stats *cs;

	tctx->demoted = 1;
	if ((cs = class_stats(s, tctx->cls)))
		cs->demotions++;
}

/* Has the running burst overrun the class budget? Demotes if so. */
static __always_inline bool check_budget(struct task_ctx *tctx, struct hinted_stats *s,
					 u64 burst)
{
	u64 budget;

	if (tctx->demoted || !is_elevated(tctx->cls))
		return false;
	budget = class_budget(tctx->cls);
	if (!budget || burst <= budget)
		return false;
	demote(tctx, s);
	return true;
}

/* A victim search in progress (see find_victim()). */
struct victim_search {
	u64 now;
	u64 dl;				/* the waker's virtual deadline */
	u64 peer_margin;
	s32 rank;			/* the waker's class rank */
	s32 best;			/* best CPU so far, -1 if none */
	s32 best_rank;			/* rank of the task running there */
	bool peer_ok;
	bool elevated;
};

/*
 * Whether the waker may preempt the task running on cpu, and if so whether
 * that CPU beats the best so far (it then becomes the best). Returns true
 * when the search can stop: background runs there, nothing ranks lower.
 */
static __always_inline bool consider_victim(struct victim_search *vs, struct task_struct *p,
					    const struct task_ctx *tctx, s32 cpu)
{
	struct cpu_ctx *cctx;
	u32 zero = 0;
	s32 vr;
	bool peer;

	if (cpu < 0 || !bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
		return false;
	cctx = bpf_map_lookup_percpu_elem(&cpu_ctxs, &zero, cpu);
	if (!cctx || READ_ONCE(cctx->claimed))
		return false;
	/*
	 * A background guard slice yields only to critical and interactive,
	 * and only once it has run bg_guard_min_ns: such a wakeup waits at
	 * most that long, and background still runs at least that long per
	 * period on every CPU.
	 */
	if (cctx->protected && (!vs->elevated || guard_ran(cctx, vs->now) < bg_guard_min_ns))
		return false;
	vr = class_rank(READ_ONCE(cctx->cur_class));
	peer = vs->peer_ok && vr == vs->rank && vs->best < 0;
	if (vr >= vs->best_rank && !peer)
		return false;
	if (peer) {
		u64 start = READ_ONCE(cctx->cur_start);
		u64 ran = vs->now > start ? vs->now - start : 0;
		u64 vnow = READ_ONCE(cctx->cur_vtime) + scale_inv(ran, READ_ONCE(cctx->cur_weight));

		if (ran < peer_min_run_ns || !time_before(tctx->vtime + vs->peer_margin, vnow))
			return false;
	} else if (vr > 0 && !time_before(vs->dl, READ_ONCE(cctx->cur_dl))) {
		u64 start = READ_ONCE(cctx->cur_start);
		u64 vnow = READ_ONCE(cctx->cur_vtime) +
			   scale_inv(vs->now > start ? vs->now - start : 0,
				     READ_ONCE(cctx->cur_weight));

		/* Not earlier in deadline: still preempt if behind it now. */
		if (!time_before(tctx->vtime, vnow))
			return false;
	}
	vs->best = cpu;
	vs->best_rank = vr;
	return !vr;
}

/*
 * On a wakeup with no idle CPU: a CPU whose running task the waker may
 * preempt, claimed for this waker (-1 if none). Lowest class first.
 *
 * Where it looks: the CPUs of the LLC of the task's CPU (at most
 * VICTIM_SCAN of them, starting at that CPU), so that the cost does not
 * grow with the machine. A critical or interactive task that finds none
 * there looks at up to VICTIM_SCAN CPUs of the other LLCs (from a random
 * start): a busy LLC must not hold up a thread hinted for latency while
 * another LLC runs lower classes. Other classes stay in their LLC (their
 * cache) and wait in its queue.
 *
 * - Background is always preemptible (guard slices excepted, see
 *   consider_victim()).
 * - A task of another lower class is preempted if the waker's virtual
 *   deadline is earlier than the running task's deadline for its current
 *   slice (as under EEVDF), or the waker is behind it in virtual time now. A
 *   class's short request gives its waking threads early deadlines, so a
 *   critical thread near its fair share preempts a batch or normal slice; a
 *   thread far ahead in virtual time (one using more than its share, whatever
 *   its class) has a late deadline and waits.
 * - Within the normal class a waker does not preempt by default: it waits in
 *   the queue until the running task's slice (3 ms) ends at a tick, behind
 *   any earlier deadlines queued, and an app that wants less marks the
 *   thread interactive. Preempting peers took hog throughput without hints
 *   to 0.50-0.86x EEVDF's in request serving (docs/benchmarks.md,
 *   "Preempting within the normal class").
 *   With peer_preemption, much as under EEVDF, a waker that is behind the
 *   running task by more than a normal slice of virtual time preempts it:
 *   a sleeper does not wait out a CPU hog's slice. The margin keeps two such
 *   tasks from preempting each other back and forth. The running task keeps
 *   its CPU for its first peer_min_run_ns (as EEVDF protects a slice it just
 *   started): with many tasks that wake each other (message passing), every
 *   waker is behind whoever runs, by up to its wakeup credit, and would
 *   otherwise preempt at every wakeup.
 *
 * The claim (cleared when the CPU starts its next task) keeps two wakers from
 * choosing the same CPU: the loser would wait behind the winner on that
 * CPU's local queue, which no other CPU serves. A waker that loses goes to
 * the shared queue instead.
 */
static s32 find_victim(struct task_struct *p, struct task_ctx *tctx, s32 cls, u64 dl)
{
	struct victim_search vs = {
		.now = scx_bpf_now(),
		.dl = dl,
		.peer_margin = scale_inv(class_slice(SCX_HINT_CLASS_NORMAL), tctx->weight),
		.rank = class_rank(cls),
		.best = -1,
		.best_rank = class_rank(cls),
		.peer_ok = peer_preemption && cls == SCX_HINT_CLASS_NORMAL,
		.elevated = is_elevated(cls),
	};
	s32 prev = scx_bpf_task_cpu(p);
	u32 llc = llc_of(prev), first, nr, start, rest, i, n;
	bool remote = false;
	struct hinted_stats *s;
	struct cpu_ctx *cctx;
	u32 zero = 0;

	llc_run(llc, &first, &nr);
	start = llc_pos_of(prev);
	if (start >= nr)
		start = 0;
	n = nr < VICTIM_SCAN ? nr : VICTIM_SCAN;
	bpf_for(i, 0, n) {
		u32 pos = start + i;

		if (pos >= nr)
			pos -= nr;
		if (consider_victim(&vs, p, tctx, listed_cpu(first + pos)))
			break;
	}

	/* The other LLCs' CPUs are the positions after this LLC's run, wrapping. */
	rest = nr_listed_cpus - nr;
	if (vs.best < 0 && vs.elevated && rest) {
		u32 off = bpf_get_prandom_u32() % rest;

		n = rest < VICTIM_SCAN ? rest : VICTIM_SCAN;
		bpf_for(i, 0, n) {
			u32 k = off + i, pos;

			if (k >= rest)
				k -= rest;
			pos = first + nr + k;
			if (pos >= nr_listed_cpus)
				pos -= nr_listed_cpus;
			if (consider_victim(&vs, p, tctx, listed_cpu(pos)))
				break;
		}
		remote = vs.best >= 0;
	}

	if (vs.best < 0)
		return -1;
	s = stats_get();
	cctx = bpf_map_lookup_percpu_elem(&cpu_ctxs, &zero, vs.best);
	if (!cctx || __sync_val_compare_and_swap(&cctx->claimed, 0, 1) != 0) {
		if (s)
			s->claim_lost++;
		return -1;
	}
	if (remote && s)
		s->remote_preemptions++;
	return vs.best;
}

/*
 * An idle CPU for a task queued without ops.select_cpu() (a slice that ran
 * out, an affinity change): the kernel's own choice where it can be called
 * from here (a whole idle core before an idle SMT sibling of a busy one, the
 * task's LLC before others), else an idle core, else any idle CPU. -1 if
 * none; the CPU returned is marked busy.
 */
static __always_inline s32 find_idle_cpu(struct task_struct *p)
{
	s32 cpu;

	if (__COMPAT_HAS_scx_bpf_select_cpu_and)
		return scx_bpf_select_cpu_and(p, scx_bpf_task_cpu(p), 0, p->cpus_ptr, 0);
	cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, SCX_PICK_IDLE_CORE);
	if (cpu < 0)
		cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	return cpu;
}

/* ---- The scheduling callbacks ----------------------------------------- */

s32 BPF_STRUCT_OPS(hinted_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	struct hinted_stats *s = stats_get();
	struct hinted_class_stats *cs;
	struct task_ctx *tctx;
	bool is_idle = false;
	s32 cpu, cls;

	tctx = task_ctx_of(p);
	if (!tctx)
		return prev_cpu;
	refresh_hints(p, tctx, s, true);
	tctx->hints_fresh = 1;
	cls = sched_class(tctx);

	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle) {
		/* Bound the vruntime as on any wakeup: others compare with it. */
		task_deadline(tctx, cls);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, class_slice(cls), 0);
		if ((cs = class_stats(s, cls))) {
			cs->enqueues++;
			cs->idle_picks++;
		}
	}
	return cpu;
}

void BPF_STRUCT_OPS(hinted_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct hinted_stats *s = stats_get();
	struct hinted_class_stats *cs;
	struct task_ctx *tctx;
	s32 cls, cpu;
	u64 slice, dl;
	u32 llc;

	tctx = task_ctx_of(p);
	if (!tctx) {
		if (s)
			s->no_task_ctx++;
		scx_bpf_dsq_insert_vtime(p, fg_dsq(llc_of(scx_bpf_task_cpu(p))),
					 class_slice(SCX_HINT_CLASS_NORMAL), vtime_now, enq_flags);
		return;
	}
	/*
	 * A wakeup's hints were just read by ops.select_cpu(): read them once
	 * per wakeup, not twice (the flag is cleared here or, after a direct
	 * dispatch that skips ops.enqueue(), in ops.running()).
	 */
	if (tctx->hints_fresh)
		tctx->hints_fresh = 0;
	else
		refresh_hints(p, tctx, s, true);
	cls = sched_class(tctx);
	slice = class_slice(cls);
	cs = class_stats(s, cls);
	if (cs)
		cs->enqueues++;

	if (is_pcpu_kthread(p)) {
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice, enq_flags);
		if (s)
			s->kthread_local++;
		return;
	}

	/*
	 * A migration-disabled task (SCX_OPS_ENQ_MIGRATION_DISABLED) can only
	 * run where it is: the shared queue would leave it to whichever CPU
	 * looks first, and only its own may take it.
	 */
	if (is_migration_disabled(p)) {
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice, enq_flags);
		if (s)
			s->pinned_local++;
		return;
	}

	dl = task_deadline(tctx, cls);

	/* An idle CPU first, when ops.select_cpu() did not already look. */
	if (!__COMPAT_is_enq_cpu_selected(enq_flags) && p->nr_cpus_allowed > 1) {
		cpu = find_idle_cpu(p);
		if (cpu >= 0) {
			scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, slice, enq_flags);
			scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
			if (cs)
				cs->idle_picks++;
			return;
		}
	}

	/* No idle CPU: a waking task may preempt a lower class. */
	if ((enq_flags & SCX_ENQ_WAKEUP) && cls != SCX_HINT_CLASS_BATCH &&
	    cls != SCX_HINT_CLASS_BACKGROUND) {
		cpu = find_victim(p, tctx, cls, dl);
		if (cpu >= 0) {
			scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, slice,
					   enq_flags | SCX_ENQ_PREEMPT);
			if (cs)
				cs->preemptions++;
			return;
		}
	}

	/* The queue of the LLC of the CPU it was placed on (or last ran on). */
	llc = llc_of(scx_bpf_task_cpu(p));
	tctx->queued_at = scx_bpf_now();
	scx_bpf_dsq_insert_vtime(p, cls == SCX_HINT_CLASS_BACKGROUND ? bg_dsq(llc) : fg_dsq(llc),
				 slice, dl, enq_flags);
}

/*
 * Starvation guard. Deadlines scale with the inverse of the weight, so a
 * low-weight task (nice 19: 1/68 of nice 0) that ran one tick sorts behind
 * every nice-0 task until they have all run about 68 ticks' worth: among N
 * CPU hogs it waits about N / CPUs x 0.3 s, which reaches the 20 s watchdog
 * near 130 hogs on two CPUs. So, at most every starve_check_ns, one CPU of
 * each LLC scans its LLC's foreground queue and runs the first task that has
 * waited starve_ns or longer. That task gets one slice more than its weight
 * gives it per starve_ns: a nice-19 task beside many hogs then gets about
 * one slice a second. After a pick the next dispatch looks again at once:
 * one pick per period would serve only ten starving tasks a second, and
 * some 200 of them would reach the watchdog.
 */
/*
 * Moves the first task of dsq that has waited wait_ns and may run on cpu to
 * this CPU, looking at no more than max_seen tasks (0: all).
 */
static __always_inline bool pick_starving(u64 dsq, s32 cpu, u64 now, u64 wait_ns, u32 max_seen)
{
	struct task_struct *p;
	u32 seen = 0;

	bpf_for_each(scx_dsq, p, dsq, 0) {
		struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);

		if (max_seen && ++seen > max_seen)
			break;
		/* Moving a task to a CPU it may not run on ends the scheduler. */
		if (!tctx || now - tctx->queued_at < wait_ns ||
		    !bpf_cpumask_test_cpu(cpu, p->cpus_ptr) || is_migration_disabled(p))
			continue;
		if (scx_bpf_dsq_move(BPF_FOR_EACH_ITER, p, SCX_DSQ_LOCAL, 0))
			return true;
	}
	return false;
}

static bool serve_starving(u32 llc, s32 cpu, u64 now)
{
	struct llc_ctx *lctx = MEMBER_VPTR(llc_ctxs, [llc]);
	struct hinted_stats *s;
	u64 last;

	if (!starve_ns || !lctx)
		return false;
	last = lctx->starve_checked_at;
	if (now - last < starve_check_ns ||
	    __sync_val_compare_and_swap(&lctx->starve_checked_at, last, now) != last)
		return false;
	/*
	 * Background too: its minimum share is a few percent of each CPU, and
	 * enough runnable background threads (hundreds per CPU) would each wait
	 * longer than the watchdog allows. After BG_STARVE_FACTOR times as long
	 * as foreground: each such pick runs background beyond its share (to
	 * the next tick), and the longer wait keeps that to crowds far past
	 * what the share serves in time. Its queue is in deadline order, about
	 * arrival order for background, so the longest waiters are near the
	 * head: a bounded look suffices.
	 */
	if (pick_starving(fg_dsq(llc), cpu, now, starve_ns, 0) ||
	    pick_starving(bg_dsq(llc), cpu, now, BG_STARVE_FACTOR * starve_ns, BG_STARVE_SCAN)) {
		if ((s = stats_get()))
			s->starve_picks++;
		lctx->starve_checked_at = now - starve_check_ns;
		return true;
	}
	return false;
}

/*
 * The i-th of up to REMOTE_PEEKS other LLCs (than own) to look at, from a
 * start that rotates with the CPU's counter, so that with many LLCs each
 * gets looked at in turn.
 */
static __always_inline u32 other_llc(u32 own, u32 start, u32 i)
{
	u32 n = nr_llcs, k = (start + i) % (n - 1);

	k = own + 1 + k;
	return k >= n ? k - n : k;
}

/* Whether llc's foreground queue starts with a critical or interactive task. */
static __always_inline bool elevated_head(u32 llc)
{
	struct task_struct *head = __COMPAT_scx_bpf_dsq_peek(fg_dsq(llc));
	struct task_ctx *tctx = head ? bpf_task_storage_get(&task_ctxs, head, 0, 0) : NULL;

	return tctx && is_elevated(sched_class(tctx));
}

/*
 * The first other LLC (of up to REMOTE_PEEKS) whose foreground queue starts
 * with a critical or interactive task that may run on cpu, -1 if none: such
 * a task should not wait for its own busy LLC while this CPU would serve a
 * lower class.
 */
static s32 elevated_elsewhere(u32 own, s32 cpu, struct cpu_ctx *cctx)
{
	u32 i, n, start;

	if (nr_llcs <= 1 || nr_llcs > HINTED_MAX_LLCS)
		return -1;
	n = nr_llcs - 1 < REMOTE_PEEKS ? nr_llcs - 1 : REMOTE_PEEKS;
	start = cctx->rr++;
	bpf_for(i, 0, n) {
		u32 llc = other_llc(own, start, i);
		struct task_struct *head = __COMPAT_scx_bpf_dsq_peek(fg_dsq(llc));
		struct task_ctx *tctx;

		if (!head)
			continue;
		tctx = bpf_task_storage_get(&task_ctxs, head, 0, 0);
		if (tctx && is_elevated(sched_class(tctx)) &&
		    bpf_cpumask_test_cpu(cpu, head->cpus_ptr))
			return llc;
	}
	return -1;
}

/*
 * Moves the first critical or interactive task of llc's foreground queue
 * that may run on cpu to this CPU. The queue is in deadline order and those
 * classes sort early: the walk stops at the first task of another class,
 * and after REMOTE_PEEKS tasks.
 */
static bool take_elevated(u32 llc, s32 cpu, struct hinted_stats *s)
{
	struct task_struct *p;
	u32 seen = 0;

	bpf_for_each(scx_dsq, p, fg_dsq(llc), 0) {
		struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);

		if (!tctx || !is_elevated(sched_class(tctx)) || ++seen > REMOTE_PEEKS)
			break;
		if (bpf_cpumask_test_cpu(cpu, p->cpus_ptr) &&
		    scx_bpf_dsq_move(BPF_FOR_EACH_ITER, p, SCX_DSQ_LOCAL, 0)) {
			if (s)
				s->llc_steals++;
			return true;
		}
	}
	return false;
}

/* Whether a CPU running background should yield: foreground work waits in
 * its LLC or (looking at up to REMOTE_PEEKS others) in another one. */
static bool fg_waiting(u32 own, struct cpu_ctx *cctx)
{
	u32 i, n, start;

	if (scx_bpf_dsq_nr_queued(fg_dsq(own)))
		return true;
	if (nr_llcs <= 1 || nr_llcs > HINTED_MAX_LLCS)
		return false;
	n = nr_llcs - 1 < REMOTE_PEEKS ? nr_llcs - 1 : REMOTE_PEEKS;
	start = cctx->rr++;
	bpf_for(i, 0, n) {
		if (scx_bpf_dsq_nr_queued(fg_dsq(other_llc(own, start, i))))
			return true;
	}
	return false;
}

/*
 * Moves the first task of this CPU's LLC's queue (base: HINTED_DSQ_FG_BASE
 * or HINTED_DSQ_BG_BASE) to this CPU; if that queue is empty, steals from the
 * other LLCs' queues, trying up to max_others of them from a rotating start.
 * Called with all of them when the CPU would otherwise go idle: no CPU idles
 * while another LLC has queued work.
 */
static bool move_from_llcs(u64 base, u32 own, u32 max_others, struct cpu_ctx *cctx,
			   struct hinted_stats *s)
{
	u32 i, n, start;

	if (scx_bpf_dsq_nr_queued(base + own) && scx_bpf_dsq_move_to_local(base + own, 0))
		return true;
	if (nr_llcs <= 1 || nr_llcs > HINTED_MAX_LLCS)
		return false;
	n = nr_llcs - 1 < max_others ? nr_llcs - 1 : max_others;
	start = cctx->rr++;
	bpf_for(i, 0, n) {
		u64 id = base + other_llc(own, start, i);

		if (scx_bpf_dsq_nr_queued(id) && scx_bpf_dsq_move_to_local(id, 0)) {
			if (s)
				s->llc_steals++;
			return true;
		}
	}
	return false;
}

void BPF_STRUCT_OPS(hinted_dispatch, s32 cpu, struct task_struct *prev)
{
	struct hinted_stats *s = stats_get();
	struct cpu_ctx *cctx = this_cpu_ctx();
	bool prev_runnable = prev && (prev->scx.flags & SCX_TASK_QUEUED);
	struct task_ctx *ptctx = NULL;
	s32 pcls = SCX_HINT_CLASS_NORMAL, remote;
	u64 now = scx_bpf_now();
	u32 llc = llc_of(cpu);

	if (!cctx)
		return;
	/*
	 * This CPU's local queue is empty: a waker that claimed it has run (or
	 * went elsewhere). Without this, a claim whose waker never ran here would
	 * keep other wakers away until the next task switch.
	 */
	WRITE_ONCE(cctx->claimed, 0);

	/*
	 * Background's minimum share: if this CPU has not run background for
	 * a whole period while it waited, serve it first, with a slice that
	 * wakeups do not preempt. (ops.stopping() of prev comes after this, so
	 * a CPU still running background now is not due.) Background waiting in
	 * another LLC counts too (a few LLCs looked at per dispatch). Once the
	 * guard has run bg_guard_min_ns in this period, a critical or
	 * interactive task first in this LLC's queue goes before further picks.
	 */
	if (cctx->cur_class != SCX_HINT_CLASS_BACKGROUND && now - cctx->bg_last >= bg_period_ns &&
	    !(cctx->bg_ran >= bg_guard_min_ns && elevated_head(llc)) &&
	    move_from_llcs(HINTED_DSQ_BG_BASE, llc, REMOTE_PEEKS, cctx, s)) {
		cctx->guard_pending = 1;
		if (s)
			s->bg_guard_picks++;
		return;
	}

	/* Critical or interactive work first in another LLC's queue. */
	remote = elevated_elsewhere(llc, cpu, cctx);

	/*
	 * The task whose slice ran out keeps the CPU if it would be picked
	 * next anyway: re-read its hints, since its class sets its request.
	 */
	if (prev_runnable && (ptctx = task_ctx_of(prev))) {
		refresh_hints(prev, ptctx, s, true);
		pcls = sched_class(ptctx);
		if (pcls != SCX_HINT_CLASS_BACKGROUND && (remote < 0 || is_elevated(pcls))) {
			struct task_struct *head = __COMPAT_scx_bpf_dsq_peek(fg_dsq(llc));
			u64 ran = now - ptctx->run_start;
			u64 dl;

			raise_lagging(ptctx, pcls);	/* as refill() would */
			dl = ptctx->vtime + scale_inv(ran + class_slice(pcls), ptctx->weight);

			/* A yield gives way to this LLC's queue only (not to other
			 * LLCs or to background, as EEVDF's stays on its CPU). */
			if (!head || (!ptctx->yielded && time_before(dl, head->scx.dsq_vtime))) {
				refill(prev, ptctx, pcls, cctx, now);
				return;
			}
		}
	}

	if (serve_starving(llc, cpu, now))
		return;

	/* The other LLC's critical or interactive task beats this LLC's lower
	 * classes (its own elevated tasks come first). */
	if (remote >= 0) {
		struct task_struct *head = __COMPAT_scx_bpf_dsq_peek(fg_dsq(llc));
		struct task_ctx *htctx = head ? bpf_task_storage_get(&task_ctxs, head, 0, 0) : NULL;

		if ((!htctx || !is_elevated(sched_class(htctx))) && take_elevated(remote, cpu, s))
			return;
	}

	/* This LLC's foreground, any LLC's foreground, then background. */
	if (move_from_llcs(HINTED_DSQ_FG_BASE, llc, HINTED_MAX_LLCS, cctx, s))
		return;
	if (move_from_llcs(HINTED_DSQ_BG_BASE, llc, HINTED_MAX_LLCS, cctx, s))
		return;

	/* Nothing else wants this CPU. */
	if (prev_runnable) {
		if (ptctx)
			refill(prev, ptctx, pcls, cctx, now);
		else
			scx_bpf_task_set_slice(prev, class_slice(SCX_HINT_CLASS_NORMAL));
	}
}

void BPF_STRUCT_OPS(hinted_runnable, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = task_ctx_of(p);

	if (!tctx)
		return;
	cgw_runnable(&tctx->cgw, tctx->base_weight);
	if (enq_flags & SCX_ENQ_WAKEUP)
		tctx->wake_at = scx_bpf_now();
}

void BPF_STRUCT_OPS(hinted_running, struct task_struct *p)
{
	struct hinted_stats *s = stats_get();
	struct cpu_ctx *cctx = task_cpu_ctx(p);
	struct hinted_class_stats *cs;
	struct task_ctx *tctx;
	u64 now = scx_bpf_now();
	s32 cls;

	tctx = task_ctx_of(p);
	if (!tctx)
		return;
	tctx->run_start = now;
	tctx->hints_fresh = 0;
	tctx->yielded = 0;
	cls = sched_class(tctx);
	/*
	 * Every class, background included: a background thread that ran
	 * alone for a long time must not end up far ahead of the threads that
	 * start (at vtime_now) after it.
	 */
	advance_vtime_now(tctx->vtime);

	if ((cs = class_stats(s, cls))) {
		cs->dispatches++;
		if (tctx->wake_at) {
			u64 lat = now > tctx->wake_at ? now - tctx->wake_at : 0;
			u64 x = lat, *bucket;
			u32 msb = 0, idx;

			if (x >> 32) { msb += 32; x >>= 32; }
			if (x >> 16) { msb += 16; x >>= 16; }
			if (x >> 8) { msb += 8; x >>= 8; }
			if (x >> 4) { msb += 4; x >>= 4; }
			if (x >> 2) { msb += 2; x >>= 2; }
			if (x >> 1) { msb += 1; }
			if (msb < HINTED_LAT_SUB_BITS)
				idx = lat;
			else
				idx = ((msb - HINTED_LAT_SUB_BITS + 1) << HINTED_LAT_SUB_BITS) |
				      ((lat >> (msb - HINTED_LAT_SUB_BITS)) &
				       ((1 << HINTED_LAT_SUB_BITS) - 1));
			if (idx >= HINTED_NR_LAT_BUCKETS)
				idx = HINTED_NR_LAT_BUCKETS - 1;
			bucket = MEMBER_VPTR(cs->lat, [idx]);
			if (bucket)
				(*bucket)++;
		}
	}
	tctx->wake_at = 0;

	if (cctx) {
		set_current(cctx, tctx, cls, now);
		cctx->protected = cls == SCX_HINT_CLASS_BACKGROUND && cctx->guard_pending;
		cctx->guard_pending = 0;
		WRITE_ONCE(cctx->claimed, 0);
	}
}

/*
 * sched_yield(). Without ops.yield the kernel ends the slice; with it, the
 * scheduler decides. End the slice, and have ops.dispatch() give the CPU to
 * the task first in this LLC's queue instead of back to the yielder: the
 * yielder is usually the earliest deadline (it has used little CPU), so it
 * would be picked again at once, and a thread spinning on sched_yield() (the
 * backoff of a lock or a channel before it sleeps) would burn its whole
 * slice while the task it waits for waits for the CPU. Unlike EEVDF (since
 * 6.19) the yielder keeps its virtual time: forfeiting the rest of its
 * request halved the request rate of a client and server pair beside CPU
 * hogs (channels spin and yield before they sleep; the yielder then waited
 * behind a hog's slice for a reply that came microseconds later). So two
 * yielders on one CPU can hand it to each other. yield_to() (a directed
 * yield) is not supported: false, and nothing done.
 */
bool BPF_STRUCT_OPS(hinted_yield, struct task_struct *from, struct task_struct *to)
{
	struct task_ctx *tctx;

	if (to)
		return false;
	tctx = task_ctx_of(from);
	if (tctx)
		tctx->yielded = 1;
	scx_bpf_task_set_slice(from, 0);
	return false;
}

void BPF_STRUCT_OPS(hinted_tick, struct task_struct *p)
{
	struct cpu_ctx *cctx = task_cpu_ctx(p);
	struct task_struct *head;
	struct task_ctx *tctx;
	u64 now = scx_bpf_now();
	u32 llc = llc_of(scx_bpf_task_cpu(p));
	s32 cls;

	tctx = task_ctx_of(p);
	if (!tctx)
		return;

	/* Demote an elevated thread within one tick of overrunning its budget. */
	if (check_budget(tctx, stats_get(), tctx->burst_ns + (now - tctx->run_start))) {
		/* Wakers now compare with a normal task's deadline, not its
		 * short elevated one. */
		if (cctx)
			set_current(cctx, tctx, SCX_HINT_CLASS_NORMAL, cctx->cur_start);
		if (scx_bpf_dsq_nr_queued(fg_dsq(llc)))
			scx_bpf_task_set_slice(p, 0);
		return;
	}

	if (!cctx)
		return;
	cls = sched_class(tctx);

	/*
	 * Background yields as soon as other work waits, in this LLC or
	 * another (whose CPUs may all be busy), guard slices excepted.
	 */
	if (cls == SCX_HINT_CLASS_BACKGROUND) {
		bool guard = cctx->protected &&
			     guard_ran(cctx, now) < class_slice(SCX_HINT_CLASS_BACKGROUND);

		if (!guard && fg_waiting(llc, cctx))
			scx_bpf_task_set_slice(p, 0);
		return;
	}
	if (!scx_bpf_dsq_nr_queued(fg_dsq(llc)))
		return;

	/*
	 * A slice longer than a normal one (batch) ends once it has run a normal
	 * slice if a queued task has an earlier deadline: a waker that found no
	 * CPU to preempt (another waker claimed it, or it was not ahead in
	 * deadline then) waits at most that long, not a whole batch slice.
	 */
	if (class_slice(cls) > class_slice(SCX_HINT_CLASS_NORMAL) &&
	    now - cctx->cur_start >= class_slice(SCX_HINT_CLASS_NORMAL) &&
	    (head = __COMPAT_scx_bpf_dsq_peek(fg_dsq(llc))) &&
	    time_before(head->scx.dsq_vtime, cctx->cur_dl)) {
		struct hinted_stats *s = stats_get();

		scx_bpf_task_set_slice(p, 0);
		if (s)
			s->slice_cuts++;
	}
}

/*
 * A higher sched class (RT, deadline, stop) takes this CPU: the tasks queued
 * on its local queue would wait for it to finish. Send them back through
 * ops.enqueue() so that another CPU can run them.
 *
 * Kernels whose local re-enqueue may be called from anywhere (6.19 on)
 * deprecate ops.cpu_release: there user space leaves it out and loads
 * hinted_rt_switch instead; older kernels keep ops.cpu_release.
 */
static __always_inline void count_cpu_release(void)
{
	struct hinted_stats *s = stats_get();

	if (s)
		s->cpu_releases++;
}

void BPF_STRUCT_OPS(hinted_cpu_release, s32 cpu, struct scx_cpu_release_args *args)
{
	scx_bpf_reenqueue_local();
	count_cpu_release();
}

#ifndef MAX_RT_PRIO
#define MAX_RT_PRIO		100
#endif

/* Loaded only where ops.cpu_release is left out (see above). */
SEC("?tp_btf/sched_switch")
int BPF_PROG(hinted_rt_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	/* RT and deadline tasks have prio below MAX_RT_PRIO; only the switch
	 * into them matters (the local queue is re-enqueued once). */
	if (next->prio >= MAX_RT_PRIO || prev->prio < MAX_RT_PRIO)
		return 0;
	if (!scx_bpf_reenqueue_local_from_anywhere())
		count_cpu_release();
	return 0;
}

void BPF_STRUCT_OPS(hinted_stopping, struct task_struct *p, bool runnable)
{
	struct cpu_ctx *cctx = task_cpu_ctx(p);
	struct task_ctx *tctx;
	u64 now = scx_bpf_now();
	u64 ran;

	tctx = task_ctx_of(p);
	if (!tctx)
		return;
	ran = charge(tctx, now);
	check_budget(tctx, stats_get(), tctx->burst_ns);

	if (cctx) {
		account_background(cctx, ran, now);
		cctx->cur_class = CLASS_NONE;
		cctx->protected = 0;
	}
}

void BPF_STRUCT_OPS(hinted_quiescent, struct task_struct *p, u64 deq_flags)
{
	struct task_ctx *tctx = task_ctx_of(p);

	if (!tctx)
		return;
	cgw_quiescent(&tctx->cgw);
	/* Going to sleep ends the burst, and with it any demotion. */
	if (!(deq_flags & SCX_DEQ_SLEEP))
		return;
	tctx->burst_ns = 0;
	tctx->demoted = 0;
}

void BPF_STRUCT_OPS(hinted_enable, struct task_struct *p)
{
	struct task_ctx *tctx = task_ctx_of(p);

	if (tctx)
		tctx->vtime = vtime_now;
}

s32 BPF_STRUCT_OPS(hinted_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	struct hinted_stats *s = stats_get();
	struct task_ctx *tctx = NULL;
	int i;

	/* Creating task storage can fail under contention: retry a little. */
	for (i = 0; i < 3 && !tctx; i++)
		tctx = bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tctx)
		return -ENOMEM;

	tctx->inh_class = CLASS_NONE;
	tctx->counted_class = CLASS_NONE;
	rule_state_init(&tctx->rule);
	tctx->cls = SCX_HINT_CLASS_NORMAL;
	tctx->weight = NICE_0_WEIGHT;
	cgw_task_init(&tctx->cgw, args);

	/*
	 * A forked task starts with its parent's effective hints, read afresh
	 * from the parent's TLD. The child's own keys are not resolved here:
	 * the new thread cannot have registered yet.
	 */
	if (args->fork && inherit_on_fork) {
		struct task_struct *parent = bpf_get_current_task_btf();
		struct task_ctx *ptctx = bpf_task_storage_get(&task_ctxs, parent, 0, 0);

		/* Not under the parent's rq lock: its load is left to its
		 * next locked refresh. */
		if (ptctx)
			refresh_hints(parent, ptctx, s, false);
		if (ptctx && (ptctx->hint_class != CLASS_NONE || ptctx->have_hint_prio)) {
			tctx->inh_class = ptctx->hint_class;
			tctx->inh_prio = ptctx->hint_prio;
			tctx->have_inh_prio = ptctx->have_hint_prio;
			if (s)
				s->inherited++;
		}
	}

	tctx->in.policy = p->policy;
	tctx->in.static_prio = p->static_prio;
	tctx->in.valid = 1;
	view_create(p);
	recompute(p, tctx, s, true);
	return 0;
}

void BPF_STRUCT_OPS(hinted_exit_task, struct task_struct *p, struct scx_exit_task_args *args)
{
	struct hinted_stats *s = stats_get();
	struct task_ctx *tctx = task_ctx_of(p);

	if (!tctx)
		return;
	cgw_quiescent(&tctx->cgw);
	count_class(tctx, s, CLASS_NONE);
	set_registered(tctx, s, false);
}

/*
 * exec() keeps the task but replaces its memory. The old image's TLD entry
 * would keep its pages pinned and be read as if the new image had written
 * them: drop it. Its effective hints carry over as inherited ones (as nice
 * and SCHED_IDLE survive exec) until the new image publishes its own.
 *
 * The hints are read here, not taken from the last decision: a launcher
 * that sets its class and execs at once (scx-hint run) hands that class
 * down. Only inherited hints, the key cache and the own-hint inputs are
 * written (no gauge: this runs without the locks a decision holds); the
 * next decision recomputes and counts. A privileged claim is judged by the
 * credentials it was made under: not those a setuid exec just installed. A
 * delete that fails (the storage busy) leaves an entry that decisions
 * ignore by its cookie until the new image registers its own.
 */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(hinted_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	struct tld_map_value *val;
	struct hint_input in;
	struct eff_hints e;
	u32 cookie = 0;

	if (tctx) {
		in = tctx->in;
		read_own_hints(p, tctx, &in);
		if (inherit_on_fork) {
			resolve_hints(p, tctx, &in, !BPF_CORE_READ_BITFIELD(bprm, secureexec), &e);
			tctx->inh_class = e.cls;
			tctx->inh_prio = e.prio;
			tctx->have_inh_prio = e.have_prio;
		} else {
			tctx->inh_class = CLASS_NONE;
			tctx->have_inh_prio = 0;
		}
	}
	val = bpf_task_storage_get(&scx_hints_tld, p, 0, 0);
	if (!val)
		goto new_image;
	if (val->meta)
		cookie = TLD_READ_ONCE(val->meta->cookie);
	if (bpf_task_storage_delete(&scx_hints_tld, p) && tctx)
		tctx->stale_cookie = cookie;
new_image:
	if (tctx) {
		__builtin_memset(&tctx->keys, 0, sizeof(tctx->keys));
		tctx->in.have_own_class = 0;
		tctx->in.have_own_prio = 0;
		tctx->in.valid = 0;	/* recompute at the next decision */
	}
	return 0;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(hinted_init)
{
	u32 zero = 0, i, nr_cpus = scx_bpf_nr_cpu_ids();
	int ret;

	/* User space always gives the topology (scheduler/src/topology.rs). */
	if (!nr_listed_cpus || !nr_llcs || nr_llcs > HINTED_MAX_LLCS) {
		scx_bpf_error("no CPU topology: %u CPUs in %u LLCs", nr_listed_cpus, nr_llcs);
		return -EINVAL;
	}
	bpf_for(i, 0, nr_cpus) {
		struct cpu_ctx *cctx = bpf_map_lookup_percpu_elem(&cpu_ctxs, &zero, i);

		if (cctx)
			cctx->cur_class = CLASS_NONE;
	}
	bpf_for(i, 0, nr_llcs) {
		ret = scx_bpf_create_dsq(fg_dsq(i), -1);
		if (!ret)
			ret = scx_bpf_create_dsq(bg_dsq(i), -1);
		if (ret)
			return ret;
	}
	return 0;
}

void BPF_STRUCT_OPS(hinted_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(hinted_cgroup_init, struct cgroup *cgrp,
			     struct scx_cgroup_init_args *args)
{
	return cgw_cgroup_init(cgrp, args, stats_get());
}

void BPF_STRUCT_OPS(hinted_cgroup_exit, struct cgroup *cgrp)
{
	cgw_cgroup_exit(cgrp);
}

void BPF_STRUCT_OPS(hinted_cgroup_set_weight, struct cgroup *cgrp, u32 weight)
{
	cgw_set_weight(cgrp, weight);
}

void BPF_STRUCT_OPS(hinted_cgroup_move, struct task_struct *p, struct cgroup *from,
		    struct cgroup *to)
{
	struct task_ctx *tctx = task_ctx_of(p);

	if (tctx)
		cgw_move(&tctx->cgw, to);
}

SCX_OPS_DEFINE(hinted_ops,
	       .select_cpu		= (void *)hinted_select_cpu,
	       .enqueue			= (void *)hinted_enqueue,
	       .dispatch		= (void *)hinted_dispatch,
	       .runnable		= (void *)hinted_runnable,
	       .running			= (void *)hinted_running,
	       .tick			= (void *)hinted_tick,
	       .cpu_release		= (void *)hinted_cpu_release,
	       .stopping		= (void *)hinted_stopping,
	       .quiescent		= (void *)hinted_quiescent,
	       .yield			= (void *)hinted_yield,
	       .enable			= (void *)hinted_enable,
	       .init_task		= (void *)hinted_init_task,
	       .exit_task		= (void *)hinted_exit_task,
	       .cgroup_init		= (void *)hinted_cgroup_init,
	       .cgroup_exit		= (void *)hinted_cgroup_exit,
	       .cgroup_set_weight	= (void *)hinted_cgroup_set_weight,
	       .cgroup_move		= (void *)hinted_cgroup_move,
	       .init			= (void *)hinted_init,
	       .exit			= (void *)hinted_exit,
	       .timeout_ms		= 20000,
	       .name			= "hinted");
