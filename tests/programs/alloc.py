"""Allocates until its memory cgroup OOM-kills it, from named functions (tests/tests/stacks.rs
looks for make_block, fill and main with their files and lines in the oom_kill record).

Modes (argv[1]): "main" (default: the main thread allocates), "thread" (a worker thread
allocates while the main thread waits in join), "numpy" (numpy.ones in a loop).
"""
import sys
import threading


def make_block(n):
    return b"\x01" * n  # the allocation: touches every page


def fill(blocks):
    while True:
        blocks.append(make_block(4 << 20))


def fill_numpy(blocks):
    import numpy as np

    while True:
        blocks.append(np.ones(1 << 19))  # 4 MiB of float64, written


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "main"
    blocks = []
    if mode == "thread":
        t = threading.Thread(target=fill, args=(blocks,), name="allocator")
        t.start()
        t.join()
    elif mode == "numpy":
        fill_numpy(blocks)
    else:
        fill(blocks)


main()
