/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The task local data (TLD) ABI of scx-hints: the one definition of the
 * bytes shared by an application (the scx_hints crate writes them) and BPF
 * programs (tld.bpf.h reads them). docs/tld-abi.md explains every field; the
 * Rust mirror is hints/src/tld/abi.rs, checked against this file by a test.
 *
 * All multi-byte fields are little-endian. Offsets are fixed; do not reorder.
 */
#ifndef __SCX_HINTS_TLD_ABI_H
#define __SCX_HINTS_TLD_ABI_H

#define TLD_MAGIC		0x31444c54	/* "TLD1" read as a little-endian u32 */
#define TLD_VERSION		1
#define TLD_PAGE_SIZE		4096	/* both structs below are one such page */
#define TLD_NAME_LEN		62	/* NUL-terminated: 61 visible bytes at most */
#define TLD_ENTRY_SIZE		64
#define TLD_META_HDR_SIZE	64
#define TLD_MAX_KEYS		63	/* (TLD_PAGE_SIZE - TLD_META_HDR_SIZE) / TLD_ENTRY_SIZE */
#define TLD_DATA_HDR_SIZE	8
#define TLD_ALIGN		8	/* every key's offset and rounded size */
#define TLD_DYN_BUDGET		64	/* bytes reserved for keys created after the first block */
#define TLD_MAX_KEY_SIZE	(TLD_PAGE_SIZE - TLD_DATA_HDR_SIZE)

/* Default bpffs pin of the task-storage map; SCX_HINTS_TLD_MAP overrides it. */
#define TLD_MAP_PIN_DIR		"/sys/fs/bpf/scx_hints"
#define TLD_MAP_PIN_PATH	TLD_MAP_PIN_DIR "/tld"
#define TLD_MAP_NAME		"scx_hints_tld"

/* One per key, written once: name first, size last (release). Size 0 means
 * the slot is claimed but still being written. */
struct tld_meta_entry {
	char name[TLD_NAME_LEN];
	__u16 size;		/* the key's size in bytes, unrounded */
};

/*
 * One per process. cnt, data_size and capacity form one 64-bit word that user
 * space updates with compare-and-swap, so that creating a key and freezing the
 * per-thread block size can never interleave.
 */
struct tld_meta_page {
	__u32 magic;		/* TLD_MAGIC */
	__u16 version;		/* TLD_VERSION */
	__u16 hdr_size;		/* TLD_META_HDR_SIZE */
	__u16 cnt;		/* slots claimed, at most TLD_MAX_KEYS */
	__u16 data_size;	/* sum of the claimed keys' rounded sizes */
	__u16 capacity;		/* bytes of key data per thread block; 0 until the first block */
	__u16 reserved0;
	__u32 cookie;		/* random, nonzero, new per page: lets BPF drop key caches after exec */
	__u8 reserved[TLD_META_HDR_SIZE - 20];
	struct tld_meta_entry entries[TLD_MAX_KEYS];
};

/* The first bytes of each thread's block; key data follows. */
struct tld_data_hdr {
	__u16 capacity;		/* bytes of key data after this header */
	__u16 reserved0;
	__u32 reserved1;
};

/* The page holding a thread's block; the block starts at map value .start. */
struct tld_data_page {
	__u8 bytes[TLD_PAGE_SIZE];
};

/*
 * The task-storage map value, written only by user space with
 * BPF_MAP_UPDATE_ELEM (key: a thread pidfd). The kernel pins the page behind
 * each __uptr pointer; the pointed-to struct must not cross a page, hence
 * whole-page structs and a separate offset. Outside BPF, __uptr is empty.
 */
#ifndef __uptr
#define __uptr
#endif
struct tld_map_value {
	struct tld_data_page __uptr *data;	/* page base of this thread's block */
	struct tld_meta_page __uptr *meta;	/* the process's metadata page */
	__u16 start;				/* block offset within *data */
	__u16 reserved[3];
};

#endif /* __SCX_HINTS_TLD_ABI_H */
