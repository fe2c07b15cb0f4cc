/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The hint vocabulary of scx-hints, defined once. BPF includes this file;
 * hints/src/vocab.rs mirrors it and a unit test checks every value against it.
 * docs/policy.md says what the scheduler does with each hint.
 */
#ifndef __SCX_HINTS_HINTS_H
#define __SCX_HINTS_HINTS_H

/* TLD key names (see tld_abi.h). Both keys hold a signed 32-bit value. */
#define SCX_HINT_KEY_LATENCY_CLASS	"scx_hints.latency_class"
#define SCX_HINT_KEY_PRIORITY		"scx_hints.priority"

/* Latency classes. 0 is the default so that a fresh, zeroed block means "normal". */
#define SCX_HINT_CLASS_NORMAL		0
#define SCX_HINT_CLASS_CRITICAL		1
#define SCX_HINT_CLASS_INTERACTIVE	2
#define SCX_HINT_CLASS_BATCH		3
#define SCX_HINT_CLASS_BACKGROUND	4
#define SCX_HINT_NR_CLASSES		5

/* Priority: nice-like, lower runs more. 0 is the default. */
#define SCX_HINT_PRIO_MIN		(-20)
#define SCX_HINT_PRIO_MAX		19
#define SCX_HINT_PRIO_DEFAULT		0

#endif /* __SCX_HINTS_HINTS_H */
