// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * oomfloor: the cost floor for `cargo xtask bench`. Loads oomfloor.bpf.c with libbpf, attaches
 * one program to oom:mark_victim and prints one line per OOM victim:
 *
 *   oomfloor [--attach tp_btf|tracepoint] [--variant plain|nowake|kstack|memcg|stacks|like|like-nowake]
 *
 *   start <boot_ns>                          once the program is attached
 *   kill <boot_ns> <tid> <tgid> <comm>       per victim; boot_ns is the kernel's, at mark_victim
 *
 * --variant nowake submits without waking this reader, which polls the ring buffer every 10 ms
 * instead: the wakeup's price. kstack, memcg and stacks (all without the wakeup) add what oomtrace
 * captures, part by part: the trigger's kernel stack; that and the trigger's memory-cgroup
 * ancestry with its page counters; the kernel, user and user build-id stacks. like is the
 * like-for-like floor: what oomtrace captures at mark_victim (kernel stack, one user stack, the
 * memcg walk) in one record, waking this reader as plain does; like-nowake the same without the
 * wakeup.
 * The variants need --attach tp_btf. Lines are flushed one by one. Stops on SIGINT/SIGTERM.
 * Exit codes: 0 clean stop, 1 failure (libbpf says why on stderr), 2 usage.
 *
 * Built by `cargo xtask bench` (xtask/src/bench/build.rs): bpftool btf dump -> vmlinux.h,
 * clang -target bpf, bpftool gen skeleton, cc ... -lbpf.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <linux/types.h>
#include <bpf/libbpf.h>

#include "oomfloor.h"
#include "oomfloor.skel.h"

static volatile sig_atomic_t exiting;

static void on_signal(int sig)
{
	(void)sig;
	exiting = 1;
}

static unsigned long long boot_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_DEBUG && !getenv("OOMFLOOR_DEBUG"))
		return 0;
	return vfprintf(stderr, fmt, args);
}

static int on_event(void *ctx, void *data, size_t len)
{
	const struct floor_event *e = data;
	char comm[FLOOR_COMM_LEN + 1];

	(void)ctx;
	if (len < sizeof(*e))
		return 0;
	memcpy(comm, e->comm, FLOOR_COMM_LEN);
	comm[FLOOR_COMM_LEN] = '\0';
	printf("kill %llu %u %u %s\n", (unsigned long long)e->boot_ns, e->tid, e->tgid, comm);
	/* A reader that went away ends the run. */
	return fflush(stdout) == 0 ? 0 : -EPIPE;
}

static int usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [--attach tp_btf|tracepoint]\n"
		"       [--variant plain|nowake|kstack|memcg|stacks|like|like-nowake]\n",
		argv0);
	return 2;
}

static int attach(struct bpf_program *prog, struct bpf_link **link)
{
	*link = bpf_program__attach(prog);
	if (!*link) {
		fprintf(stderr, "oomfloor: error: failed to attach %s: %s\n", bpf_program__name(prog),
			strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = "tp_btf", *variant = "plain";
	bool nowake;
	struct oomfloor_bpf *skel = NULL;
	struct bpf_program *prog;
	struct bpf_link **link;
	struct ring_buffer *rb = NULL;
	struct sigaction sa;
	int i, err, rc = 1;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--attach") && i + 1 < argc)
			mode = argv[++i];
		else if (!strcmp(argv[i], "--variant") && i + 1 < argc)
			variant = argv[++i];
		else
			return usage(argv[0]);
	}
	if (strcmp(mode, "tp_btf") && strcmp(mode, "tracepoint"))
		return usage(argv[0]);
	if (strcmp(variant, "plain") && strcmp(variant, "kstack") && strcmp(variant, "stacks") &&
	    strcmp(variant, "nowake") && strcmp(variant, "memcg") && strcmp(variant, "like") &&
	    strcmp(variant, "like-nowake"))
		return usage(argv[0]);
	/* plain and like wake this reader; the others submit without a wakeup. */
	nowake = strcmp(variant, "plain") && strcmp(variant, "like");
	if (strcmp(variant, "plain") && strcmp(mode, "tp_btf")) {
		fprintf(stderr, "oomfloor: error: --variant %s needs --attach tp_btf\n", variant);
		return 2;
	}

	libbpf_set_print(libbpf_log);
	skel = oomfloor_bpf__open();
	if (!skel) {
		fprintf(stderr, "oomfloor: error: failed to open the BPF object: %s\n", strerror(errno));
		return 1;
	}
	/* Exactly one program: the one asked for. */
	if (!strcmp(mode, "tracepoint")) {
		prog = skel->progs.floor_tp;
		link = &skel->links.floor_tp;
	} else if (!strcmp(variant, "kstack")) {
		prog = skel->progs.floor_kstack;
		link = &skel->links.floor_kstack;
	} else if (!strcmp(variant, "stacks")) {
		prog = skel->progs.floor_stacks;
		link = &skel->links.floor_stacks;
	} else if (!strcmp(variant, "memcg")) {
		prog = skel->progs.floor_memcg;
		link = &skel->links.floor_memcg;
	} else if (!strcmp(variant, "like")) {
		prog = skel->progs.floor_like;
		link = &skel->links.floor_like;
	} else if (!strcmp(variant, "like-nowake")) {
		prog = skel->progs.floor_like_nowake;
		link = &skel->links.floor_like_nowake;
	} else if (!strcmp(variant, "nowake")) {
		prog = skel->progs.floor_nowake;
		link = &skel->links.floor_nowake;
	} else {
		prog = skel->progs.floor_btf;
		link = &skel->links.floor_btf;
	}
	bpf_program__set_autoload(skel->progs.floor_btf, prog == skel->progs.floor_btf);
	bpf_program__set_autoload(skel->progs.floor_tp, prog == skel->progs.floor_tp);
	bpf_program__set_autoload(skel->progs.floor_kstack, prog == skel->progs.floor_kstack);
	bpf_program__set_autoload(skel->progs.floor_stacks, prog == skel->progs.floor_stacks);
	bpf_program__set_autoload(skel->progs.floor_nowake, prog == skel->progs.floor_nowake);
	bpf_program__set_autoload(skel->progs.floor_memcg, prog == skel->progs.floor_memcg);
	bpf_program__set_autoload(skel->progs.floor_like, prog == skel->progs.floor_like);
	bpf_program__set_autoload(skel->progs.floor_like_nowake, prog == skel->progs.floor_like_nowake);
	err = oomfloor_bpf__load(skel);
	if (err) {
		fprintf(stderr, "oomfloor: error: failed to load the BPF program: %s\n", strerror(-err));
		goto out;
	}
	if (attach(prog, link))
		goto out;

	rb = ring_buffer__new(bpf_map__fd(skel->maps.events), on_event, NULL, NULL);
	if (!rb) {
		fprintf(stderr, "oomfloor: error: failed to open the ring buffer: %s\n", strerror(errno));
		goto out;
	}

	/* No SA_RESTART: a signal interrupts the poll below. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	printf("start %llu\n", boot_ns());
	if (fflush(stdout))
		goto out;
	rc = 0;
	while (!exiting) {
		err = ring_buffer__poll(rb, nowake ? 10 : 1000);
		/* Nothing wakes the poll but the first record: read what is there when it times out. */
		if (nowake && err >= 0)
			err = ring_buffer__consume(rb);
		if (err == -EINTR)
			continue;
		if (err == -EPIPE)
			break;
		if (err < 0) {
			fprintf(stderr, "oomfloor: error: failed to poll the ring buffer: %s\n", strerror(-err));
			rc = 1;
			break;
		}
	}
	fprintf(stderr, "oomfloor: stopped: %llu records dropped (ring buffer full)\n",
		(unsigned long long)skel->bss->dropped);
out:
	ring_buffer__free(rb);
	oomfloor_bpf__destroy(skel);
	return rc;
}
