/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The BPF side of task local data (TLD): read the values an application
 * published for one of its threads (see tld_abi.h and docs/tld-abi.md).
 *
 * Include after vmlinux.h and <bpf/bpf_helpers.h>. The including object gets
 * the task-storage map `scx_hints_tld`; whoever loads it pins the map where
 * applications look for it (TLD_MAP_PIN_PATH).
 *
 * Usage, per program invocation:
 *
 *	static const char prio_name[TLD_NAME_LEN] = SCX_HINT_KEY_PRIORITY;
 *	struct tld_object obj;
 *	if (!tld_object_init(task, &taskc->tld_keys, &obj)) {
 *		int *prio = tld_get(&obj, 0, prio_name, int);
 *		if (prio) ... READ_ONCE(*prio) ...
 *	}
 *
 * Key names are resolved once per task and cached in a struct tld_keys that
 * the caller keeps per task: in its own task context (a scheduler's task_ctx,
 * which saves a map lookup) or in tld_keys_map (define TLD_WANT_KEYS_MAP).
 *
 * Everything read here is user memory the application may scribble on at any
 * time: every count, size and offset is bounded before use, and data that
 * makes no sense is counted in tld_stats and otherwise ignored.
 */
#ifndef __SCX_HINTS_TLD_BPF_H
#define __SCX_HINTS_TLD_BPF_H

#include "tld_abi.h"

#ifndef TLD_CACHED_KEYS
#define TLD_CACHED_KEYS 8
#endif

/*
 * A metadata page whose cookie differs from the one the key cache holds drops
 * the cache (a new page, after exec) at most once per this interval per
 * task; a decision in between reads no hints (-EAGAIN, counted). This bounds
 * the full key searches an application can force by rewriting its cookie.
 */
#ifndef TLD_RESET_INTERVAL_NS
#define TLD_RESET_INTERVAL_NS 10000000ULL	/* 10 ms */
#endif

#ifndef TLD_KEYS_CREATE_RETRIES
#define TLD_KEYS_CREATE_RETRIES 3
#endif

#ifndef ENOENT
#define ENOENT 2
#endif
#ifndef EINVAL
#define EINVAL 22
#endif
#ifndef EAGAIN
#define EAGAIN 11
#endif

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tld_map_value);
} scx_hints_tld SEC(".maps");

/*
 * Clang emits a struct that is only reached through a pointer member as a
 * forward declaration, and the kernel ignores the uptr tag of a pointer to an
 * incomplete type. This global names both pointed-to structs as array
 * elements so that the object's BTF describes them in full (checked by a
 * host-kernel test); zero-length arrays keep it one byte of .bss.
 */
struct tld_btf_anchor {
	struct tld_meta_page meta[0];
	struct tld_data_page data[0];
	char present;
};
struct tld_btf_anchor tld_btf_anchor SEC(".bss");

/* Per-task key cache. off[i] > 0: key i's offset in the thread's block;
 * off[i] <= 0: key i not found among the first -off[i] entries of the
 * metadata page, so the next search only compares newer entries, and none
 * at all while the page has no newer entry. cookie is the metadata page's:
 * a new page (after exec) drops the cache, at most once per
 * TLD_RESET_INTERVAL_NS (reset_ns: when it last did; the first fill of a
 * zeroed, never-filled cache does not count). Zeroed is empty. */
struct tld_keys {
	__u32 cookie;
	__s16 off[TLD_CACHED_KEYS];
	__u64 reset_ns;
};

/*
 * Read by user space from .bss. Each decision (tld_object_init and one
 * tld_get) adds at most 1 to one counter: a decision that counted nothing
 * read a value or found no such key in sound data.
 */
struct tld_stats {
	__u64 bad_magic;	/* metadata page without TLD_MAGIC / TLD_VERSION */
	__u64 bad_meta;		/* absurd count or size, unterminated name, size mismatch */
	__u64 bad_offset;	/* block or key outside its page or capacity */
	__u64 throttled;	/* cookie changed again within TLD_RESET_INTERVAL_NS */
#ifdef TLD_COUNT_WORK
	/* Work of the key searches, for tests of its bound. */
	__u64 searches;		/* tld_resolve calls */
	__u64 entries;		/* entries walked */
	__u64 names;		/* names compared */
#endif
};
struct tld_stats tld_stats SEC(".bss");

/* One invocation's view of a thread's data. */
struct tld_object {
	struct tld_meta_page *meta;
	struct tld_data_page *data;
	struct tld_keys *keys;
	__u32 start;		/* block offset in *data */
	__u32 end;		/* block-relative end of key data */
};

#define TLD_READ_ONCE(x) (*(volatile typeof(x) *)&(x))

#ifdef TLD_COUNT_WORK
#define TLD_COUNT_WORK_ADD(field, n) __sync_fetch_and_add(&tld_stats.field, n)
#else
#define TLD_COUNT_WORK_ADD(field, n) do { } while (0)
#endif

/*
 * Looks up the thread's registration and checks the header of its pages.
 * Returns 0, -ENOENT when the thread published nothing (use defaults),
 * -EINVAL for bad data (counted), or -EAGAIN when the page's cookie changed
 * again too soon to search its keys anew (counted; use defaults).
 */
static __always_inline int tld_object_init(struct task_struct *task, struct tld_keys *keys,
					   struct tld_object *obj)
{
	struct tld_map_value *val;
	struct tld_data_hdr *hdr;
	__u32 start, cap, cookie;
	int i;

	val = bpf_task_storage_get(&scx_hints_tld, task, 0, 0);
	if (!val)
		return -ENOENT;
	obj->meta = val->meta;
	obj->data = val->data;
	if (!obj->meta || !obj->data)
		return -ENOENT;

	if (TLD_READ_ONCE(obj->meta->magic) != TLD_MAGIC ||
	    TLD_READ_ONCE(obj->meta->version) != TLD_VERSION) {
		__sync_fetch_and_add(&tld_stats.bad_magic, 1);
		return -EINVAL;
	}

	start = val->start;
	if (start > TLD_PAGE_SIZE - TLD_DATA_HDR_SIZE || (start & (TLD_ALIGN - 1))) {
		__sync_fetch_and_add(&tld_stats.bad_offset, 1);
		return -EINVAL;
	}
	hdr = (void *)obj->data->bytes + start;
	cap = TLD_READ_ONCE(hdr->capacity);
	if (cap > TLD_PAGE_SIZE - TLD_DATA_HDR_SIZE - start) {
		__sync_fetch_and_add(&tld_stats.bad_offset, 1);
		return -EINVAL;
	}
	obj->start = start;
	obj->end = TLD_DATA_HDR_SIZE + cap;

	cookie = TLD_READ_ONCE(obj->meta->cookie);
	if (keys->cookie != cookie) {
		__u64 now = bpf_ktime_get_ns();

		if (keys->reset_ns && now - keys->reset_ns < TLD_RESET_INTERVAL_NS) {
			__sync_fetch_and_add(&tld_stats.throttled, 1);
			return -EAGAIN;
		}
		/* The first fill of a never-filled cache starts no interval:
		 * else an exec soon after it would go unseen for 10 ms. */
		if (keys->cookie || keys->reset_ns)
			keys->reset_ns = now;
		for (i = 0; i < TLD_CACHED_KEYS; i++)
			keys->off[i] = 0;
		keys->cookie = cookie;
	}
	obj->keys = keys;
	return 0;
}

/* Compares a metadata entry's name with `name` (TLD_NAME_LEN bytes
 * readable): 1 equal, 0 different, -1 equal for TLD_NAME_LEN bytes without a
 * NUL (not a valid name). */
static __noinline int tld_name_cmp(const char *entry, const char *name)
{
	int j;

	bpf_for(j, 0, TLD_NAME_LEN) {
		char a = entry[j];

		if (a != name[j])
			return 0;
		if (!a)
			return 1;
	}
	return -1;
}

/*
 * Finds `name` among the entries of the metadata page, comparing names from
 * entry `from` on (earlier entries were compared by a previous search).
 * Returns the key's offset in the block (> 0), or minus the number of entries
 * known not to hold it. The search stops at the first entry whose size is
 * still 0: that slot is being written, and caching a miss past it would hide
 * its key for good. Bad data (an absurd count or size, an unterminated name,
 * or the key at a size other than `want`, which would read a neighbour's
 * bytes) ends the search, counted once.
 *
 * Cost: nothing when the page has no entry past `from`; otherwise one pass
 * over at most TLD_MAX_KEYS entries (a size load each) that compares only
 * the names from `from` on.
 *
 * Ordering: the name is written before the size is published (release).
 * Here the size is read first, then the name, with a compiler barrier in
 * between, which orders the loads on x86 (TSO). Weakly ordered CPUs would
 * need a load-acquire (BPF ISA v4, clang >= 21), not yet required here.
 */
static __noinline int tld_resolve(struct tld_meta_page *meta, const char *name, int from,
				  __u32 want)
{
	__u32 off = TLD_DATA_HDR_SIZE;
	int i, cnt;

	cnt = TLD_READ_ONCE(meta->cnt);
	if (cnt > TLD_MAX_KEYS) {
		__sync_fetch_and_add(&tld_stats.bad_meta, 1);
		return -from;
	}
	if (cnt <= from)
		return -from;
	TLD_COUNT_WORK_ADD(searches, 1);
	bpf_for(i, 0, cnt) {
		__u32 size;
		int eq;

		if (i >= TLD_MAX_KEYS)
			break;
		TLD_COUNT_WORK_ADD(entries, 1);
		size = TLD_READ_ONCE(meta->entries[i].size);
		if (!size)
			return -i;
		/* The name is written before the size is published. */
		asm volatile("" ::: "memory");
		if (size > TLD_MAX_KEY_SIZE)
			goto bad;
		if (i >= from) {
			TLD_COUNT_WORK_ADD(names, 1);
			eq = tld_name_cmp(meta->entries[i].name, name);
			if (eq < 0)
				goto bad;
			if (eq) {
				if (size != want)
					goto bad;
				return off;
			}
		}
		off += (size + TLD_ALIGN - 1) & ~(TLD_ALIGN - 1);
		if (off >= TLD_PAGE_SIZE)
			goto bad;
		continue;
bad:
		__sync_fetch_and_add(&tld_stats.bad_meta, 1);
		return -i;
	}
	return -cnt;
}

/*
 * Returns a pointer to `size` bytes of the thread's value for the key cached
 * in slot `idx` of the task's key cache, resolving `name` on first use; NULL
 * if there is no such key (yet) or the data is bad. `size` must be a
 * compile-time constant: use tld_get().
 */
static __always_inline void *tld_get_data(struct tld_object *obj, __u32 idx, const char *name,
					  __u32 size)
{
	__u32 pos;
	int off;

	if (idx >= TLD_CACHED_KEYS)
		return NULL;
	off = obj->keys->off[idx];
	if (off <= 0) {
		off = tld_resolve(obj->meta, name, -off, size);
		obj->keys->off[idx] = off;
		if (off <= 0)
			return NULL;
	}
	if (off + size > obj->end) {
		__sync_fetch_and_add(&tld_stats.bad_offset, 1);
		return NULL;
	}
	pos = obj->start + off;
	if (pos > TLD_PAGE_SIZE - size)
		return NULL;
	return (void *)obj->data->bytes + pos;
}

#define tld_get(obj, idx, name, type) ((type *)tld_get_data(obj, idx, name, sizeof(type)))

#ifdef TLD_WANT_KEYS_MAP
/* A key cache per task, for programs that have no per-task context of their own. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tld_keys);
} tld_keys_map SEC(".maps");

/* Creating a task-storage entry can fail under contention (-EBUSY): retry. */
static __always_inline struct tld_keys *tld_keys_of(struct task_struct *task)
{
	struct tld_keys *keys = NULL;
	int i;

	for (i = 0; i < TLD_KEYS_CREATE_RETRIES && !keys; i++)
		keys = bpf_task_storage_get(&tld_keys_map, task, 0,
					    BPF_LOCAL_STORAGE_GET_F_CREATE);
	return keys;
}
#endif

#endif /* __SCX_HINTS_TLD_BPF_H */
