/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * libscx_hints: per-thread scheduler hints for sched_ext.
 *
 * A thread says how soon it wants the CPU (its latency class) and how much
 * of it (a nice-like priority); a sched_ext scheduler such as scx_hinted
 * reads both on every scheduling decision. Setting a hint is a plain store
 * into the calling thread's own memory (task local data): no syscall per
 * hint. Without a scheduler, hints are kept and cost the same store.
 *
 * Every function acts on the calling thread. Functions that can fail return
 * 0 or a negative errno. Link with `pkg-config --cflags --libs scx_hints`.
 *
 * The library shares its keys and each thread's values with every other
 * user of the same task local data in the process (the Rust crate, another
 * build of this library, a plugin's copy): a class set through one is the
 * class read through the others and by the scheduler.
 */
#ifndef SCX_HINTS_H
#define SCX_HINTS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Latency classes: how soon a thread wants the CPU once it is runnable. */
enum scx_hints_class {
	SCX_HINTS_CLASS_NORMAL = 0,      /* no preference: fair sharing (default) */
	SCX_HINTS_CLASS_CRITICAL = 1,    /* must run as soon as it wakes (audio, control loops) */
	SCX_HINTS_CLASS_INTERACTIVE = 2, /* a person or a peer waits for it */
	SCX_HINTS_CLASS_BATCH = 3,       /* throughput work: long slices, never preempts */
	SCX_HINTS_CLASS_BACKGROUND = 4,  /* runs when nothing else wants the CPU */
};

/* Priority range: nice-like, lower gets more CPU; 0 is the default. */
#define SCX_HINTS_PRIO_MIN (-20)
#define SCX_HINTS_PRIO_MAX 19

/* Longest key name, in bytes, without the terminating NUL. */
#define SCX_HINTS_KEY_NAME_MAX 61

/* Sets the latency class: 0, or -EINVAL if it is not a class. */
int scx_hints_set_latency_class(int latency_class);
/* The latency class (SCX_HINTS_CLASS_NORMAL until set). */
int scx_hints_latency_class(void);

/* Sets the priority: 0, or -ERANGE outside SCX_HINTS_PRIO_MIN..MAX. Whether a
 * thread may claim a negative priority is the scheduler's policy. */
int scx_hints_set_priority(int priority);
/* The priority (0 until set). */
int scx_hints_priority(void);

/* Scoped hints: save, set, and restore on every way out of the scope. */
struct scx_hints_saved {
	int32_t latency_class;
	int32_t priority;
};
struct scx_hints_saved scx_hints_save(void);
/* 0, or -EINVAL if `saved` holds values that are not hints (nothing invalid
 * is applied). */
int scx_hints_restore(struct scx_hints_saved saved);

/*
 * Keys of one's own: a named value of a fixed size in every thread's block,
 * readable by a BPF program through the TLD reader (docs/tld-abi.md). Create
 * keys early (before threads use hints) so that they size every block; keys
 * created later share a small budget (at least 64 bytes per thread).
 * Names and the budget are shared by every user of task local data in the
 * process: a library loaded late (dlopen) must fit its keys into what is
 * left of the budget, and a name another user created with another size
 * fails with -EEXIST (the built-in hint keys keep their names and sizes
 * across versions).
 */
typedef struct scx_hints_key {
	uint16_t offset; /* of the value in a thread's block */
	uint16_t size;   /* of the value, in bytes */
} scx_hints_key;

/* 0; -EEXIST (the name exists), -E2BIG (does not fit), -ENOSPC (all 63 slots
 * taken), -ENOMEM, -EINVAL (name empty or longer than SCX_HINTS_KEY_NAME_MAX,
 * size 0, or a NULL pointer). */
int scx_hints_key_create(const char *name, size_t size, scx_hints_key *key);
/* 0, -ENOENT, or -EINVAL. */
int scx_hints_key_find(const char *name, scx_hints_key *key);
/* Creates the key or finds one of that name and size: how two libraries
 * share a key. -EEXIST if the size differs; else as scx_hints_key_create.
 * *key is written only on success. */
int scx_hints_key_get_or_create(const char *name, size_t size, scx_hints_key *key);
/* The calling thread's value: key.size bytes, 8-byte aligned, zeroed until
 * written, valid until the thread exits. NULL if the thread has no block
 * (out of memory), the key does not fit it, or `key` was not filled by a
 * create or find (a zeroed struct gets NULL). Write values of at most 8
 * bytes with one aligned store so that a reader never sees half of one. */
void *scx_hints_key_ptr(scx_hints_key key);

/* Typed helpers: SCX_HINTS_KEY_CREATE("app.frame", uint64_t, &key), then
 * *SCX_HINTS_VALUE(key, uint64_t) = 3 (check for NULL first). */
#define SCX_HINTS_KEY_CREATE(name, type, keyp) scx_hints_key_create((name), sizeof(type), (keyp))
#define SCX_HINTS_VALUE(key, type) ((type *)scx_hints_key_ptr(key))

/* Whether the thread's hints reach a scheduler. */
enum scx_hints_registration {
	SCX_HINTS_REG_NONE = 0,       /* the thread has not touched a hint yet */
	SCX_HINTS_REG_NO_MAP = 1,     /* no scheduler map pinned: hints are kept locally */
	SCX_HINTS_REG_FAILED = 2,     /* opening the map or registering failed: errno in *err */
	SCX_HINTS_REG_REGISTERED = 3, /* the scheduler sees this thread's hints */
	SCX_HINTS_REG_NOT_ALLOWED = 4, /* a map is pinned but this process may not use it: errno in *err */
};
/* The state; *err (if err is not NULL) gets the errno of a failure, else 0. */
int scx_hints_registration(int *err);
/* Allocates and registers the thread's block now rather than at its first
 * hint, so that the one-time cost is paid up front; returns the state. */
int scx_hints_register_thread(int *err);

#ifdef __cplusplus
}
#endif

#endif /* SCX_HINTS_H */
