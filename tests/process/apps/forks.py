"""A forwarder started before fork, used by the parent and by children made the way argv[1] says.

    python forks.py MODE N
    MODE: os_fork | mp_fork_process | mp_fork_sys_exit | mp_fork_pool | mp_spawn_process | mp_spawn_pool

The parent buffers N rows before the children exist (they must not be sent twice), each of 2 children
forwards N rows, and the parent forwards N more; then the parent exits normally. Prints the expected total.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

from _common import rows, start

forwarder = start()  # at import: a spawn child runs this too, and gets its own forwarder


def child_work(tag: str, n: int, exit_via_sys_exit: bool = False) -> int:
    for entry in rows(n, tag):
        forwarder.forward(entry)
    if exit_via_sys_exit:
        sys.exit(0)
    return n


def main(mode: str, n: int) -> None:
    for entry in rows(n, "parent-before"):
        forwarder.forward(entry)
    if mode == "os_fork":
        pids = []
        for c in range(2):
            pid = os.fork()
            if pid == 0:
                child_work(f"child-{c}", n)
                sys.exit(0)  # a normal exit: atexit runs
            pids.append(pid)
        for pid in pids:
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    else:
        method = "spawn" if "spawn" in mode else "fork"
        ctx = multiprocessing.get_context(method)
        if mode.endswith("_pool"):
            with ctx.Pool(2) as pool:
                assert pool.starmap(child_work, [(f"child-{c}", n) for c in range(2)]) == [n, n]
                pool.close()
                pool.join()
        else:
            procs = [
                ctx.Process(target=child_work, args=(f"child-{c}", n, mode == "mp_fork_sys_exit"))
                for c in range(2)
            ]
            for p in procs:
                p.start()
            for p in procs:
                p.join(120)
                assert p.exitcode == 0, p.exitcode
    for entry in rows(n, "parent-after"):
        forwarder.forward(entry)
    print(4 * n, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
