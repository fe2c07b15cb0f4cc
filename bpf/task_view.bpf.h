/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The per-task view: what the scheduler applies to each task and why
 * (struct hinted_task_view in intf.h), for `scx-hint show`.
 *
 * It lives in its own task-storage map, apart from task_ctxs, because user
 * space pins it readable by every user who can enter the pin directory: it
 * holds nothing more secret than /proc/PID/stat does, while task_ctxs holds
 * scheduling state nobody outside should read or depend on. recompute()
 * refreshes it, and recompute() runs only when an input of the task changed,
 * so keeping the view costs nothing per scheduling decision.
 *
 * Included after struct task_ctx, whose inputs and results it reads.
 */
#ifndef __SCX_HINTED_TASK_VIEW_BPF_H
#define __SCX_HINTED_TASK_VIEW_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct hinted_task_view);
} task_views SEC(".maps");

/* Where the class comes from, in the order recompute() applies them. */
static __always_inline u8 view_class_source(const struct task_ctx *tctx)
{
	if (tctx->in.policy == SCHED_IDLE)
		return HINTED_SRC_POLICY;
	if (tctx->in.have_own_class)
		return tctx->hint_class == CLASS_NONE ? HINTED_SRC_DEFAULT : HINTED_SRC_OWN;
	if (rule_sets_class(&tctx->rule, false))
		return HINTED_SRC_RULE;
	if (tctx->hint_class != CLASS_NONE)
		return HINTED_SRC_INHERITED;
	if (tctx->in.policy == SCHED_BATCH)
		return HINTED_SRC_POLICY;
	return HINTED_SRC_DEFAULT;
}

static __always_inline u8 view_prio_source(const struct task_ctx *tctx)
{
	if (tctx->in.have_own_prio)
		return HINTED_SRC_OWN;
	if (rule_sets_prio(&tctx->rule, false))
		return HINTED_SRC_RULE;
	if (tctx->have_inh_prio)
		return HINTED_SRC_INHERITED;
	return HINTED_SRC_DEFAULT;
}

/* Creates the task's view (init_task). Fails only without memory. */
static __always_inline void view_create(struct task_struct *p)
{
	int i;

	for (i = 0; i < 3; i++)
		if (bpf_task_storage_get(&task_views, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE))
			break;
}

/* Called at the end of recompute(), once class and weight are known. */
static __always_inline void view_update(struct task_struct *p, const struct task_ctx *tctx,
					s32 prio)
{
	struct hinted_task_view *v;
	u8 psrc;

	/* Created by init_task (view_create): recompute() may run under the
	 * rq lock, where allocating is best avoided. */
	v = bpf_task_storage_get(&task_views, p, 0, 0);
	if (!v)
		return;	/* none: show reports the task as not seen */
	psrc = view_prio_source(tctx);
	v->cls = tctx->cls;
	v->prio = psrc == HINTED_SRC_DEFAULT ? 0 : prio;
	v->weight = tctx->base_weight;
	v->class_source = view_class_source(tctx);
	v->prio_source = psrc;
	v->rule_id = (v->class_source == HINTED_SRC_RULE || psrc == HINTED_SRC_RULE) ?
		     tctx->rule.hint.rule_id : 0;
	v->registered = tctx->registered;
	v->clamped = tctx->clamped;
	v->own_class = tctx->in.have_own_class ? tctx->in.own_class : -1;
}

#endif /* __SCX_HINTED_TASK_VIEW_BPF_H */
