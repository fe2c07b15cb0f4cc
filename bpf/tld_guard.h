/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* Counters of the TLD map's ownership guard (tld_guard.bpf.c). */
#ifndef __SCX_HINTS_TLD_GUARD_H
#define __SCX_HINTS_TLD_GUARD_H

struct tld_guard_stats {
	__u64 own;		/* updates/deletes of the caller's own threads, let through */
	__u64 privileged;	/* calls with CAP_SYS_NICE, let through unchecked */
	__u64 refused;		/* calls refused with an error */
	__u64 foreign_writes;	/* writes the kernel applied to another process's thread
				 * for an unprivileged caller: a raced check (fexit) */
	__u64 undone;		/* of those, entries deleted right after the write */
};

#endif /* __SCX_HINTS_TLD_GUARD_H */
