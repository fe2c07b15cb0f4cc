/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Rules: hints that an administrator gives to programs that publish none
 * (scx_hinted --rules FILE, docs/operators.md "Rules").
 *
 * Matching is done in user space (scheduler/src/rules.rs): it reads /proc,
 * writes the hints of the first matching rule into rule_hints for each
 * matching thread (by pidfd), deletes the entries of threads that stopped
 * matching, and then bumps rules_gen. A task looks its entry up only when
 * rules_gen moved since it last looked, so the cost per scheduling decision
 * is one load of a global and a compare; the lookup itself happens about
 * once per task per batch of changes.
 *
 * A rule beats an inherited hint but never the thread's own (the
 * application knows its threads better than a pattern does). What it gives
 * is handed down at fork and exec like any effective hint, so that the
 * children of `exe=/usr/bin/make class=batch` are batch from their start;
 * user space then matches each child itself, and its own rule, if any, beats
 * the inherited class. An entry survives exec (the task is the same) until
 * user space matches the new image at its next scan: deleting it here would
 * leave user space believing it is still there.
 * A rule is clamped like the thread's own claim (no critical class, no
 * negative priority for an unprivileged task) unless it matches on user and
 * group only: a thread name, a cgroup name and an executable path can all be
 * chosen by any user, so `comm=pipewire class=critical` would otherwise hand
 * the critical class to whoever names a thread pipewire.
 */
#ifndef __SCX_HINTED_RULES_BPF_H
#define __SCX_HINTED_RULES_BPF_H

/* Bumped by user space after each batch of rule_hints updates. */
volatile u64 rules_gen;

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct hinted_rule_hint);
} rule_hints SEC(".maps");

/* A task's copy of its rule entry, part of its context. */
struct rule_state {
	u64 gen;			/* rules_gen when the entry was last looked up */
	struct hinted_rule_hint hint;	/* cls == -1 and !have_prio: no rule */
};

static __always_inline void rule_state_init(struct rule_state *rs)
{
	rs->gen = 0;
	rs->hint.cls = -1;
	rs->hint.have_prio = 0;
	rs->hint.trusted = 0;
	rs->hint.rule_id = 0;
}

/*
 * Looks the task's rule entry up if rules changed since it last looked.
 * Returns true if the task's rule hints changed (the caller recomputes).
 */
static __always_inline bool rule_refresh(struct task_struct *p, struct rule_state *rs)
{
	struct hinted_rule_hint *h, cur = { .cls = -1 };
	u64 gen = rules_gen;

	if (gen == rs->gen)
		return false;
	/*
	 * The entries user space wrote before bumping rules_gen (with release
	 * order) must be seen: this load needs acquire order. clang 19 cannot
	 * emit a BPF load-acquire, and a plain load may pass the entry's loads
	 * on arm64, leaving the task with an old entry until the next bump. A
	 * fully ordered atomic (adding 0) gives the order, and costs a locked
	 * operation only here, once per task per batch, not per decision.
	 */
	gen = __sync_fetch_and_add(&rules_gen, 0);
	rs->gen = gen;
	h = bpf_task_storage_get(&rule_hints, p, 0, 0);
	if (h) {
		cur.cls = h->cls;
		cur.prio = h->prio;
		cur.have_prio = h->have_prio;
		cur.trusted = h->trusted;
		cur.rule_id = h->rule_id;
	}
	if (cur.cls == rs->hint.cls && cur.have_prio == rs->hint.have_prio &&
	    cur.prio == rs->hint.prio && cur.trusted == rs->hint.trusted &&
	    cur.rule_id == rs->hint.rule_id)
		return false;
	rs->hint = cur;
	return true;
}

/* Whether the rule's class applies: a rule class beats all but the own hint. */
static __always_inline bool rule_sets_class(const struct rule_state *rs, bool own_class)
{
	return !own_class && rs->hint.cls >= 0 && rs->hint.cls < HINTED_NR_CLASSES;
}

static __always_inline bool rule_sets_prio(const struct rule_state *rs, bool own_prio)
{
	return !own_prio && rs->hint.have_prio && rs->hint.prio >= SCX_HINT_PRIO_MIN &&
	       rs->hint.prio <= SCX_HINT_PRIO_MAX;
}

#endif /* __SCX_HINTED_RULES_BPF_H */
