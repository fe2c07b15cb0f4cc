/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Readers for the host-kernel TLD tests: SEC("syscall") programs that a test
 * thread runs with BPF_PROG_TEST_RUN, so that "current" is the thread whose
 * data they read. They use only tld.bpf.h, never the sched_ext headers, so
 * the object loads on a kernel without sched_ext.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define TLD_CACHED_KEYS 64
#define TLD_WANT_KEYS_MAP
#define TLD_COUNT_WORK
#include "tld.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* In and out of tld_read; mirrored in src/lib.rs. */
struct tld_read_args {
	char name[TLD_NAME_LEN];	/* in: the key's name */
	__u16 size;			/* in: bytes to read: 1, 2, 4 or 8 */
	__u32 slot;			/* in: key-cache slot to use */
	__s32 init_err;			/* out: tld_object_init's result */
	__s32 cached;			/* out: the slot's cache value after the read */
	__s32 found;			/* out: 1 if a value was read */
	__u32 pad;
	__u64 value;			/* out: the value, zero-extended */
};

SEC("syscall")
int tld_read(struct tld_read_args *args)
{
	struct task_struct *task = bpf_get_current_task_btf();
	char name[TLD_NAME_LEN];
	struct tld_object obj;
	struct tld_keys *keys;
	__u32 slot = args->slot;
	__u64 value = 0;
	bool found = false;
	int err;

	__builtin_memcpy(name, args->name, TLD_NAME_LEN);
	args->found = 0;
	args->value = 0;
	keys = tld_keys_of(task);
	if (!keys)
		return 1;
	err = tld_object_init(task, keys, &obj);
	args->init_err = err;
	if (err)
		return 0;

	switch (args->size) {
	case 1: {
		__u8 *p = tld_get(&obj, slot, name, __u8);
		if (p) { value = *p; found = true; }
		break;
	}
	case 2: {
		__u16 *p = tld_get(&obj, slot, name, __u16);
		if (p) { value = *p; found = true; }
		break;
	}
	case 4: {
		__u32 *p = tld_get(&obj, slot, name, __u32);
		if (p) { value = *p; found = true; }
		break;
	}
	default: {
		__u64 *p = tld_get(&obj, slot, name, __u64);
		if (p) { value = *p; found = true; }
		break;
	}
	}
	args->found = found;
	args->value = value;
	if (slot < TLD_CACHED_KEYS)
		args->cached = keys->off[slot];
	return 0;
}

/* In and out of tld_fuzz_read; one fuzz case. */
struct tld_fuzz_args {
	char name[TLD_NAME_LEN];	/* in: the key's name (may lack a NUL) */
	__u16 size;			/* in: bytes to read: 1, 2, 4 or 8 */
	__u32 fresh;			/* in: 1: an empty key cache; 0: the task's own */
	__s32 init_err;			/* out: tld_object_init's result */
	__s32 found;			/* out: 1 if a value was read */
	__s32 cached;			/* out: key-cache slot 0 after the read */
	__u32 pad;
	__u64 value;			/* out: the value, zero-extended */
};

/*
 * One decision as a scheduler makes it, on whatever the test wrote into the
 * calling thread's pages: tld_object_init() and one tld_get() (slot 0).
 */
SEC("syscall")
int tld_fuzz_read(struct tld_fuzz_args *args)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct tld_keys fresh = {};
	char name[TLD_NAME_LEN];
	struct tld_object obj;
	struct tld_keys *keys;
	__u64 value = 0;
	bool found = false;
	int err;

	__builtin_memcpy(name, args->name, TLD_NAME_LEN);
	keys = args->fresh ? &fresh : tld_keys_of(task);
	if (!keys)
		return 1;
	err = tld_object_init(task, keys, &obj);
	if (err)
		goto out;
	switch (args->size) {
	case 1: {
		__u8 *p = tld_get(&obj, 0, name, __u8);
		if (p) { value = *p; found = true; }
		break;
	}
	case 2: {
		__u16 *p = tld_get(&obj, 0, name, __u16);
		if (p) { value = *p; found = true; }
		break;
	}
	case 4: {
		__u32 *p = tld_get(&obj, 0, name, __u32);
		if (p) { value = *p; found = true; }
		break;
	}
	default: {
		__u64 *p = tld_get(&obj, 0, name, __u64);
		if (p) { value = *p; found = true; }
		break;
	}
	}
out:
	/* One store per field, in one place: the verifier refuses a context
	 * store through an offset the compiler computed from merged paths. */
	args->init_err = err;
	args->found = found;
	args->value = value;
	args->cached = keys->off[0];
	return 0;
}

/* Forgets the calling thread's key cache (a new search starts from entry 0). */
SEC("syscall")
int tld_forget(void *ctx)
{
	bpf_task_storage_delete(&tld_keys_map, bpf_get_current_task_btf());
	return 0;
}

/*
 * The cost of reading hints as a scheduler does per decision: look up the
 * task's key cache (standing in for the scheduler's own task context), then,
 * with_reads set, tld_object_init() and two cached tld_get()s. Run in a loop
 * of n iterations so that the syscall's cost is spread thin; the bench times
 * both variants and reports the difference per iteration.
 *
 * Adversarial variants (with_reads set): adversary & TLD_BENCH_NEW_COOKIE
 * rewrites the metadata page's cookie before every decision (as an
 * application may), adversary & TLD_BENCH_ABSENT_KEY reads a third key that
 * never exists.
 */
#include "hints.h"

#define TLD_BENCH_NEW_COOKIE	1
#define TLD_BENCH_ABSENT_KEY	2

static const char bench_class_key[TLD_NAME_LEN] = SCX_HINT_KEY_LATENCY_CLASS;
static const char bench_prio_key[TLD_NAME_LEN] = SCX_HINT_KEY_PRIORITY;
static const char bench_absent_key[TLD_NAME_LEN] = "bench.never.created";

struct tld_bench_args {
	__u32 n;
	__u32 with_reads;
	__s64 sum;		/* out: keeps the reads from being dropped */
	__u32 adversary;
	__u32 pad;
};

SEC("syscall")
int tld_bench(struct tld_bench_args *args)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 n = args->n, with_reads = args->with_reads, adversary = args->adversary;
	__s64 sum = 0;
	int i, err;

	bpf_for(i, 0, n) {
		struct tld_map_value *val;
		struct tld_object obj;
		struct tld_keys *keys;
		int *v;

		keys = tld_keys_of(task);
		if (!keys)
			return 1;
		if (!with_reads)
			continue;
		if (adversary & TLD_BENCH_NEW_COOKIE) {
			val = bpf_task_storage_get(&scx_hints_tld, task, 0, 0);
			if (val && val->meta)
				val->meta->cookie += 1;
		}
		err = tld_object_init(task, keys, &obj);
		/* Only a rewritten cookie may make a decision read nothing:
		 * any other failure would time a bench that reads no hint. */
		if (err == -EAGAIN && (adversary & TLD_BENCH_NEW_COOKIE))
			continue;
		if (err)
			return 2;
		v = tld_get(&obj, 0, bench_class_key, int);
		if (v)
			sum += TLD_READ_ONCE(*v);
		v = tld_get(&obj, 1, bench_prio_key, int);
		if (v)
			sum += TLD_READ_ONCE(*v);
		if (adversary & TLD_BENCH_ABSENT_KEY) {
			v = tld_get(&obj, 2, bench_absent_key, int);
			if (v)
				sum += TLD_READ_ONCE(*v);
		}
	}
	args->sum = sum;
	return 0;
}
