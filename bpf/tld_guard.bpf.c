/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The ownership guard of the TLD map (docs/security.md).
 *
 * The kernel lets whoever holds a writable fd of a task-storage map update
 * or delete the entry of any task it has a pidfd for. The guard narrows that
 * for the TLD map: a registration, update or deletion of a thread's entry is
 * accepted only from that thread's own process (same thread group) or from a
 * privileged caller (CAP_SYS_NICE in the initial user namespace, which root
 * normally holds). Freezing the map, which would stop every later registration,
 * is privileged too.
 *
 * It runs on the bpf() syscall's LSM hook, before the kernel resolves the
 * key, so it reads the pidfd from user memory and resolves it through the
 * caller's fd table itself. Another thread of the caller can change the key
 * or the fd between this check and the kernel's own lookup; fexit on
 * bpf_local_storage_update() sees the task the kernel actually resolved,
 * counts every write that got past the check to another process's thread,
 * and has it deleted as soon as the syscall's update returns
 * (docs/security.md, "Known limits").
 *
 * Only vmlinux.h and libbpf headers, no sched_ext ones: the guard does not
 * depend on the scheduler and stays attached while none runs.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "tld_abi.h"
#include "tld_guard.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define EPERM		1
#define EBADF		9
#define EFAULT		14
#define CAP_SYS_NICE	23
#define MAX_ERRNO	4095

struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
void bpf_task_release(struct task_struct *p) __ksym;

/* The id of the TLD map to guard; set before load. */
const volatile __u32 tld_map_id;

struct tld_guard_stats guard_stats SEC(".bss");

static __always_inline void count(__u64 *counter)
{
	__sync_fetch_and_add(counter, 1);
}

/* CAP_SYS_NICE in the initial user namespace: the privilege that may also
 * set another user's nice value. Not euid 0 alone: a root process that
 * dropped CAP_SYS_NICE (a container's root in the initial namespace, a
 * sandboxed service) cannot renice others' threads, so it may not rewrite
 * their hints either. */
static bool caller_privileged(struct task_struct *cur)
{
	const struct cred *cred = BPF_CORE_READ(cur, cred);
	__u64 caps;

	if (BPF_CORE_READ(cred, user_ns, level) != 0)
		return false;
	caps = BPF_CORE_READ(cred, cap_effective.val);
	return caps & (1ULL << CAP_SYS_NICE);
}

/* The file behind the caller's fd, or NULL. Every read is a probe read: the
 * table may change under us, and a stale answer is caught by the fexit
 * record, never by a fault. */
static struct file *caller_file(struct task_struct *cur, int fd)
{
	struct fdtable *fdt = BPF_CORE_READ(cur, files, fdt);
	struct file **fds;
	struct file *file = NULL;

	if (!fdt || fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]))
		return NULL;
	return file;
}

static bool is_tld_map(struct task_struct *cur, int fd)
{
	struct file *file = caller_file(cur, fd);
	struct bpf_map *map;

	if (!file)
		return false;
	/* A map fd's private data is the map; for any other file the id read
	 * is garbage that matches only by chance, and then the checks below
	 * merely refuse a call the kernel would have refused anyway. */
	map = BPF_CORE_READ(file, private_data);
	return map && BPF_CORE_READ(map, id) == tld_map_id;
}

/* The thread group of the task a pidfd names, or 0. A pidfd's inode keeps
 * the struct pid; the pid's first PIDTYPE_PID link is the task. */
static __u32 pidfd_tgid(struct task_struct *cur, int fd)
{
	struct file *file = caller_file(cur, fd);
	struct hlist_node *link;
	struct pid *pid;

	if (!file)
		return 0;
	pid = BPF_CORE_READ(file, f_inode, i_private);
	if (!pid)
		return 0;
	link = BPF_CORE_READ(pid, tasks[PIDTYPE_PID].first);
	if (!link)
		return 0;
	return BPF_CORE_READ((struct task_struct *)((void *)link -
			bpf_core_field_offset(struct task_struct, pid_links)), tgid);
}

SEC("lsm.s/bpf")
int BPF_PROG(tld_guard_bpf, int cmd, union bpf_attr *attr, unsigned int size,
	     bool kernel)
{
	struct task_struct *cur;
	__u32 tgid;
	int pidfd;

	/* Calls from BPF programs (bpf_sys_bpf) come from privileged loaders. */
	if (kernel)
		return 0;
	if (cmd != BPF_MAP_UPDATE_ELEM && cmd != BPF_MAP_DELETE_ELEM &&
	    cmd != BPF_MAP_FREEZE)
		return 0;
	cur = bpf_get_current_task_btf();
	if (!is_tld_map(cur, attr->map_fd))
		return 0;
	if (caller_privileged(cur)) {
		count(&guard_stats.privileged);
		return 0;
	}
	if (cmd == BPF_MAP_FREEZE) {
		count(&guard_stats.refused);
		return -EPERM;
	}
	if (bpf_copy_from_user(&pidfd, sizeof(pidfd), (void *)attr->key)) {
		count(&guard_stats.refused);
		return -EFAULT;
	}
	tgid = pidfd_tgid(cur, pidfd);
	if (!tgid) {
		/* Not a live thread's pidfd: the kernel would refuse it too, but
		 * it must not become one before the kernel looks. */
		count(&guard_stats.refused);
		return -EBADF;
	}
	if (tgid != BPF_CORE_READ(cur, tgid)) {
		count(&guard_stats.refused);
		return -EPERM;
	}
	count(&guard_stats.own);
	return 0;
}

/*
 * The TLD map itself, reused from scx_hinted's pin (same definition as in
 * tld.bpf.h), so that a raced foreign write can be undone.
 */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tld_map_value);
} scx_hints_tld SEC(".maps");

/* Raced foreign writes waiting to be undone: caller's tid -> owner's tid. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} tld_guard_undo SEC(".maps");

/*
 * Runs after the kernel applied a task-storage update, with the owner task it
 * resolved itself. BPF programs never create TLD entries (only the syscall
 * sets user pointers), so every successful update of the TLD map here is a
 * bpf() call; one by an unprivileged caller for a thread of another process
 * means the pidfd or the key changed after the LSM check. The storage lock is
 * still held here, so the undo happens when the syscall's update returns.
 */
SEC("fexit/bpf_local_storage_update")
int BPF_PROG(tld_guard_record)
{
	struct task_struct *owner, *cur;
	struct bpf_local_storage_map *smap;
	__u64 arg = 0, ret = 0;
	__u32 tid, owner_tid;

	if (bpf_get_func_ret(ctx, &ret) || ret >= (__u64)-MAX_ERRNO)
		return 0;
	if (bpf_get_func_arg(ctx, 1, &arg))
		return 0;
	smap = (void *)arg;
	if (BPF_CORE_READ(smap, map.id) != tld_map_id)
		return 0;
	if (bpf_get_func_arg(ctx, 0, &arg))
		return 0;
	owner = (void *)arg;
	cur = bpf_get_current_task_btf();
	if (BPF_CORE_READ(owner, tgid) == BPF_CORE_READ(cur, tgid) ||
	    caller_privileged(cur))
		return 0;
	count(&guard_stats.foreign_writes);
	tid = BPF_CORE_READ(cur, pid);
	owner_tid = BPF_CORE_READ(owner, pid);
	bpf_map_update_elem(&tld_guard_undo, &tid, &owner_tid, BPF_ANY);
	return 0;
}

/* The syscall's update returned: delete the entry a raced write just set. */
SEC("fexit/bpf_pid_task_storage_update_elem")
int BPF_PROG(tld_guard_undo_raced)
{
	struct task_struct *owner;
	__u32 tid = bpf_get_current_pid_tgid();
	__u32 *owner_tid;

	owner_tid = bpf_map_lookup_elem(&tld_guard_undo, &tid);
	if (!owner_tid)
		return 0;
	owner = bpf_task_from_pid(*owner_tid);
	bpf_map_delete_elem(&tld_guard_undo, &tid);
	if (!owner)
		return 0;
	if (bpf_task_storage_delete(&scx_hints_tld, owner) == 0)
		count(&guard_stats.undone);
	bpf_task_release(owner);
	return 0;
}
