/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * scx_hinted's view of the CPU topology: which last-level cache (LLC) each
 * CPU shares. User space reads the topology (scx_utils, see
 * scheduler/src/topology.rs) and writes these tables before load; they do
 * not change while the scheduler runs (a CPU going on- or offline makes the
 * kernel ask for a restart, which reads the topology again).
 *
 * Each LLC has its own foreground and background queue (intf.h). CPUs are
 * listed grouped by LLC, so that "the CPUs of an LLC" is a run of
 * llc_cpus[] and a scan of them costs what the LLC's size costs, not what
 * the machine's does.
 */
#ifndef __SCX_HINTED_TOPOLOGY_BPF_H
#define __SCX_HINTED_TOPOLOGY_BPF_H

/*
 * CPUs a waking task looks at for a CPU to preempt when none is idle: at
 * most this many of its own LLC, then, for critical and interactive tasks
 * that found none there, at most this many of the other LLCs.
 */
#define VICTIM_SCAN		16
/*
 * Other LLCs a CPU looks at where it only needs a hint, not an answer for
 * every LLC: whether critical or interactive work waits elsewhere, whether
 * foreground work waits for a CPU running background. From a rotating start.
 */
#define REMOTE_PEEKS		4

const volatile u32 nr_llcs = 1;
const volatile u32 nr_listed_cpus;			/* entries of llc_cpus[] */
const volatile u32 cpu_llc[HINTED_MAX_CPUS];		/* LLC index of each CPU */
const volatile u32 cpu_llc_pos[HINTED_MAX_CPUS];	/* its position in its LLC's run */
const volatile u32 llc_first[HINTED_MAX_LLCS];		/* start of each LLC's run */
const volatile u32 llc_nr[HINTED_MAX_LLCS];		/* length of each LLC's run */
const volatile u32 llc_cpus[HINTED_MAX_CPUS];		/* CPU ids grouped by LLC */

static __always_inline u32 llc_of(s32 cpu)
{
	const volatile u32 *v;

	if (cpu < 0 || cpu >= HINTED_MAX_CPUS)
		return 0;
	v = MEMBER_VPTR(cpu_llc, [cpu]);
	return v && *v < nr_llcs ? *v : 0;
}

static __always_inline u64 fg_dsq(u32 llc)
{
	return HINTED_DSQ_FG_BASE + llc;
}

static __always_inline u64 bg_dsq(u32 llc)
{
	return HINTED_DSQ_BG_BASE + llc;
}

/* The CPU at position pos of llc_cpus[], -1 past the end. */
static __always_inline s32 listed_cpu(u32 pos)
{
	const volatile u32 *v;

	if (pos >= nr_listed_cpus || pos >= HINTED_MAX_CPUS)
		return -1;
	v = MEMBER_VPTR(llc_cpus, [pos]);
	return v ? *v : -1;
}

/* The run of llc_cpus[] that holds the CPUs of llc. */
static __always_inline void llc_run(u32 llc, u32 *first, u32 *nr)
{
	const volatile u32 *f = NULL, *n = NULL;

	if (llc < HINTED_MAX_LLCS) {
		f = MEMBER_VPTR(llc_first, [llc]);
		n = MEMBER_VPTR(llc_nr, [llc]);
	}
	*first = f ? *f : 0;
	*nr = n ? *n : 0;
	if (*first > nr_listed_cpus)
		*first = nr_listed_cpus;
	if (*nr > nr_listed_cpus - *first)
		*nr = nr_listed_cpus - *first;
}

/* Where cpu is in its LLC's run (0 if unknown). */
static __always_inline u32 llc_pos_of(s32 cpu)
{
	const volatile u32 *v;

	if (cpu < 0 || cpu >= HINTED_MAX_CPUS)
		return 0;
	v = MEMBER_VPTR(cpu_llc_pos, [cpu]);
	return v ? *v : 0;
}

#endif /* __SCX_HINTED_TOPOLOGY_BPF_H */
