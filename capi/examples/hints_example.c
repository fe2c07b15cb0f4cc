/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * libscx_hints from C: a thread's class and priority, a scoped change, a key
 * of one's own, and whether the hints reach a scheduler. It checks what it
 * shows and exits non-zero if anything is off, so it doubles as a test.
 *
 *   cc hints_example.c $(pkg-config --cflags --libs scx_hints) -pthread
 *   ./a.out [no-map|registered]   (the registration state to expect)
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <scx_hints.h>

static int failures;

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #cond);                          \
			failures++;                                        \
		}                                                          \
	} while (0)

static scx_hints_key frames;

/* Work done in the background class, whatever the caller's class was. */
static void compact_cache(void)
{
	struct scx_hints_saved saved = scx_hints_save();

	scx_hints_set_latency_class(SCX_HINTS_CLASS_BACKGROUND);
	scx_hints_set_priority(10);
	CHECK(scx_hints_latency_class() == SCX_HINTS_CLASS_BACKGROUND);
	/* ... the work ... */
	CHECK(scx_hints_restore(saved) == 0);
}

static void *other_thread(void *arg)
{
	uint64_t *mine = SCX_HINTS_VALUE(frames, uint64_t);

	(void)arg;
	/* Hints and key values are per thread: a new thread starts at defaults. */
	CHECK(scx_hints_latency_class() == SCX_HINTS_CLASS_NORMAL);
	CHECK(mine != NULL && *mine == 0);
	return NULL;
}

int main(int argc, char **argv)
{
	const char *expect = argc > 1 ? argv[1] : NULL;
	scx_hints_key again;
	uint64_t *value;
	pthread_t t;
	int state, err;

	/* Keys first: keys created before threads use hints size every block. */
	CHECK(SCX_HINTS_KEY_CREATE("example.frames", uint64_t, &frames) == 0);
	CHECK(scx_hints_key_create("example.frames", 8, &again) == -EEXIST);
	CHECK(scx_hints_key_get_or_create("example.frames", 8, &again) == 0);
	CHECK(again.offset == frames.offset && again.size == 8);
	CHECK(scx_hints_key_find("example.absent", &again) == -ENOENT);

	CHECK(scx_hints_set_latency_class(SCX_HINTS_CLASS_INTERACTIVE) == 0);
	CHECK(scx_hints_set_priority(-2) == 0);
	CHECK(scx_hints_set_latency_class(42) == -EINVAL);
	CHECK(scx_hints_set_priority(20) == -ERANGE);
	CHECK(scx_hints_latency_class() == SCX_HINTS_CLASS_INTERACTIVE);
	CHECK(scx_hints_priority() == -2);

	compact_cache();
	CHECK(scx_hints_latency_class() == SCX_HINTS_CLASS_INTERACTIVE);
	CHECK(scx_hints_priority() == -2);

	value = SCX_HINTS_VALUE(frames, uint64_t);
	CHECK(value != NULL);
	if (value)
		*value = 3;
	CHECK(pthread_create(&t, NULL, other_thread, NULL) == 0);
	pthread_join(t, NULL);
	CHECK(value && *value == 3);

	state = scx_hints_registration(&err);
	printf("latency class %d, priority %d, registration %d (errno %d: %s)\n",
	       scx_hints_latency_class(), scx_hints_priority(), state, err,
	       err ? strerror(err) : "none");
	if (expect && strcmp(expect, "registered") == 0)
		CHECK(state == SCX_HINTS_REG_REGISTERED);
	else if (expect && strcmp(expect, "no-map") == 0)
		CHECK(state == SCX_HINTS_REG_NO_MAP);

	if (failures) {
		fprintf(stderr, "%d checks failed\n", failures);
		return 1;
	}
	printf("all checks passed\n");
	return 0;
}
