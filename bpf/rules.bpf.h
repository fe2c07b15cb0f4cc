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
 * application knows its threads better than a pattern does); it is not
 * handed down at fork, since user space matches each task itself. An entry
 * survives exec (the task is the same) until user space matches the new
 * image at its next scan: deleting it here would leave user space believing
 * it is still there.
 * Rules come from root, so they are not clamped like unprivileged claims.
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
	rs->gen = gen;
	h = bpf_task_storage_get(&rule_hints, p, 0, 0);
	if (h) {
		cur.cls = h->cls;
		cur.prio = h->prio;
		cur.have_prio = h->have_prio;
		cur.rule_id = h->rule_id;
	}
	if (cur.cls == rs->hint.cls && cur.have_prio == rs->hint.have_prio &&
	    cur.prio == rs->hint.prio && cur.rule_id == rs->hint.rule_id)
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

/* Applies the rule to the effective class and priority (after clamping). */
static __always_inline void rule_apply(const struct rule_state *rs, bool own_class, bool own_prio,
				       s32 *cls, s32 *prio, bool *have_prio)
{
	if (rule_sets_class(rs, own_class))
		*cls = rs->hint.cls;
	if (rule_sets_prio(rs, own_prio)) {
		*prio = rs->hint.prio;
		*have_prio = true;
	}
}

#endif /* __SCX_HINTED_RULES_BPF_H */
