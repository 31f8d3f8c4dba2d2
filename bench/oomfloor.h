/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * oomfloor: the smallest useful eBPF OOM-kill tracer, the floor `cargo xtask bench` measures
 * oomtrace's in-kernel cost against. The record both sides share.
 */
#ifndef OOMFLOOR_H
#define OOMFLOOR_H

#define FLOOR_COMM_LEN 16
/* The same depths oomtrace captures (oomtrace-common: KSTACK_DEPTH, USTACK_DEPTH,
 * USTACK_BUILD_ID_DEPTH), so that the kstack and stacks variants cost what those captures cost
 * there. */
#define FLOOR_KSTACK_DEPTH 32
#define FLOOR_USTACK_DEPTH 32
#define FLOOR_UBUILD_DEPTH 16
/* sizeof(struct bpf_stack_build_id) */
#define FLOOR_BUILD_ID_FRAME 32
/* Memory-cgroup levels read from the trigger's upwards (oomtrace-common: MEMCG_LEVELS). */
#define FLOOR_MEMCG_LEVELS 8

/* Which program wrote a record (--variant). */
enum floor_variant {
	FLOOR_PLAIN = 1,
	FLOOR_KSTACK = 2,
	FLOOR_STACKS = 3,
	FLOOR_NOWAKE = 4,
	FLOOR_MEMCG = 5,
	FLOOR_LIKE = 6,
};

struct floor_event {
	__u64 boot_ns; /* bpf_ktime_get_boot_ns() at mark_victim */
	__u32 tid;     /* the victim's task->pid */
	__u32 tgid;    /* the victim's task->tgid; 0 from the classic tracepoint (it carries only pid) */
	__u32 variant; /* enum floor_variant */
	__u32 _pad;
	char comm[FLOOR_COMM_LEN];
};

/* One memory cgroup's page counters (in pages), as oomtrace reads them for each level. */
struct floor_memcg_level {
	__u64 id; /* the cgroup's kernfs id */
	__u64 usage;
	__u64 max;
	__u64 watermark;
	__u64 swap_usage; /* v1: memory+swap */
	__u64 swap_max;
};

/* What the kstack, memcg, stacks and like variants reserve: the plain record plus what oomtrace
 * captures, about the size of oomtrace's own record (1.5 KiB; oomtrace's is 1.6 KiB). */
struct floor_stack_event {
	struct floor_event base;
	__s64 kstack_bytes;
	__s64 ustack_bytes;
	__s64 ubuild_bytes;
	__u64 kstack[FLOOR_KSTACK_DEPTH];
	__u64 ustack[FLOOR_USTACK_DEPTH];
	__u8 ubuild[FLOOR_UBUILD_DEPTH * FLOOR_BUILD_ID_FRAME];
	__u32 memcg_depth;
	__u32 _pad;
	struct floor_memcg_level memcg[FLOOR_MEMCG_LEVELS];
};

#endif /* OOMFLOOR_H */
