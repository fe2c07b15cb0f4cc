// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * A minimal TLD writer in C, written from docs/tld-abi.md ("One state per
 * process") alone: it joins the process's hub, creates a key in the shared
 * metadata page and uses the calling thread's shared block. The test that
 * loads it checks that the Rust crate sees the same state.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/uio.h>
#include <unistd.h>

struct hub_header {
	uint64_t magic;
	uint32_t version;
	uint32_t size;
	uint32_t thread_key;
	uint32_t record_size;
};

struct thread_record {
	uint64_t block;
	uint32_t users;
	uint32_t flags;
};

#define META_STATE_OFF 8
#define ENTRIES_OFF 64
#define ENTRY_SIZE 64
#define NAME_LEN 62
#define MAX_KEYS 63
#define DATA_HDR 8

static uint64_t hub_address(void)
{
	const unsigned char *rnd = (const unsigned char *)getauxval(AT_RANDOM);
	const char *name = "scx_hints_tld";
	uint64_t h = 0xcbf29ce484222325ULL;

	for (const char *c = name; *c; c++)
		h = (h ^ (unsigned char)*c) * 0x100000001b3ULL;
	for (int i = 0; i < 16; i++)
		h = (h ^ rnd[i]) * 0x100000001b3ULL;
	return (1ULL << 36) + (h >> 43) * 65536;
}

/* Joins the hub: its metadata page, or NULL (-errno in *err). */
static unsigned char *join(pthread_key_t *key, int *err)
{
	uint64_t addr = hub_address();
	struct hub_header h;
	struct iovec local = { &h, sizeof(h) }, remote = { (void *)(addr + 4096), sizeof(h) };

	if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != sizeof(h)) {
		*err = -errno;
		return NULL;
	}
	if (memcmp(&h.magic, "TLDSHARE", 8) || h.version != 1 || h.size != 8192 ||
	    h.record_size != sizeof(struct thread_record)) {
		*err = -EPROTO;
		return NULL;
	}
	*key = h.thread_key;
	/* Step 3: make both pages the process's private copies. */
	__atomic_fetch_add((uint64_t *)(addr + META_STATE_OFF), 0, __ATOMIC_ACQ_REL);
	__atomic_fetch_add((uint32_t *)(addr + 4096 + 16), 0, __ATOMIC_ACQ_REL);
	return (unsigned char *)addr;
}

static uint16_t entry_size(unsigned char *meta, int i)
{
	uint16_t s;

	/* Size 0: the slot is being written; wait for it. */
	while (!(s = __atomic_load_n((uint16_t *)(meta + ENTRIES_OFF + i * ENTRY_SIZE + NAME_LEN),
				     __ATOMIC_ACQUIRE)))
		sched_yield();
	return s;
}

/*
 * Creates key `name` of `size` bytes in the shared page (the claim
 * protocol) and returns its offset, or -errno.
 */
static int create_key(unsigned char *meta, const char *name, uint16_t size)
{
	uint64_t *state = (uint64_t *)(meta + META_STATE_OFF);
	uint64_t w = __atomic_load_n(state, __ATOMIC_ACQUIRE);
	uint16_t rounded = (size + 7) & ~7;

	for (;;) {
		uint16_t cnt = w, data_size = w >> 16, capacity = w >> 32;
		int off = DATA_HDR;

		for (int i = 0; i < cnt && i < MAX_KEYS; i++) {
			uint16_t s = entry_size(meta, i);

			if (!strncmp((char *)meta + ENTRIES_OFF + i * ENTRY_SIZE, name, NAME_LEN))
				return -EEXIST;
			off += (s + 7) & ~7;
		}
		if (cnt >= MAX_KEYS)
			return -ENOSPC;
		if (data_size + rounded > (capacity ? capacity : 4088))
			return -E2BIG;
		uint64_t next = (uint64_t)(cnt + 1) | (uint64_t)(data_size + rounded) << 16 |
				(uint64_t)capacity << 32;
		if (__atomic_compare_exchange_n(state, &w, next, 0, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE)) {
			unsigned char *e = meta + ENTRIES_OFF + cnt * ENTRY_SIZE;

			strncpy((char *)e, name, NAME_LEN - 1);
			__atomic_store_n((uint16_t *)(e + NAME_LEN), size, __ATOMIC_RELEASE);
			return DATA_HDR + data_size;
		}
	}
}

/*
 * Joins the hub, creates key `name` (8 bytes), stores `value` in the calling
 * thread's block (which the Rust crate made) and returns the key's offset,
 * or -errno. *meta_out and *block_out receive the addresses used.
 */
int tld_join_and_set(const char *name, uint64_t value, uint64_t *meta_out, uint64_t *block_out)
{
	pthread_key_t key;
	int err = 0;
	unsigned char *meta = join(&key, &err);
	struct thread_record *rec;
	int off;

	if (!meta)
		return err;
	rec = pthread_getspecific(key);
	if (!rec)
		return -ENOENT; /* this test's thread always has one already */
	rec->users++;
	off = create_key(meta, name, 8);
	if (off < 0)
		return off;
	if (off + 8 > DATA_HDR + *(uint16_t *)rec->block)
		return -E2BIG;
	__atomic_store_n((uint64_t *)(rec->block + off), value, __ATOMIC_RELAXED);
	*meta_out = (uint64_t)meta;
	*block_out = rec->block;
	/* This writer is done with the block: the thread's record stays the crate's. */
	rec->users--;
	return off;
}
