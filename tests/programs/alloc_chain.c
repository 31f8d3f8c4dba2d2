/* A C program that allocates until its memory cgroup OOM-kills it, through a chain of calls whose
 * names the tests look for in allocation.user_stack: main -> fill_cache -> grow_buffer ->
 * touch_pages (where the page faults that charge the memcg happen).
 *
 * Built by tests/tests/stacks.rs the way distributions build: -O2 -g, PIE, and no
 * -fno-omit-frame-pointer (GCC omits frame pointers at -O2), so the kernel's frame-pointer walk
 * cannot get past the first frame; or with -fno-omit-frame-pointer for the cross-check.
 * noinline keeps the chain a chain (a real program's functions are larger than these).
 *
 * Arguments: the number of threads to allocate from (default 0: the main thread allocates); or
 * `hold MIB`: allocate and touch MIB MiB, print "held" and wait (a bigger, idle victim for
 * another process's OOM).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (1 << 20)

static volatile size_t touched;

/* Not a leaf (it calls counted() first, so not as a tail call either), so that a build with -fno-omit-frame-pointer gives it a frame:
 * GCC sets none up in a leaf even with -mno-omit-leaf-frame-pointer, and the kernel's
 * frame-pointer walk would then skip its caller. */
__attribute__((noinline)) void counted(size_t n) {
    touched += n;
}

__attribute__((noinline)) void touch_pages(volatile char *p, size_t n) {
    counted(n);
    for (size_t i = 0; i < n; i += 4096)
        p[i] = (char)i;
}

__attribute__((noinline)) char *grow_buffer(size_t n) {
    char *p = malloc(n);
    if (!p)
        abort();
    touch_pages(p, n);
    return p;
}

__attribute__((noinline)) void fill_cache(void) {
    for (;;) {
        char *volatile keep = grow_buffer(CHUNK);
        (void)keep;
    }
}

static void *worker(void *arg) {
    (void)arg;
    fill_cache();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "hold") == 0) {
        size_t mib = (size_t)atoi(argv[2]);
        for (size_t i = 0; i < mib; i++)
            grow_buffer(CHUNK);
        printf("held\n");
        fflush(stdout);
        for (;;)
            pause();
    }
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    if (threads <= 0)
        fill_cache();
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        pthread_create(&t, NULL, worker, NULL);
    }
    for (;;)
        pause();
}
