"""A forwarder started before fork, used by the parent and by children made the way argv[1] says.

    python forks.py MODE N
    MODE: os_fork | os_fork_flush_first | os_fork_bound_method | os_fork_closed_in_parent
          | mp_fork_process | mp_fork_sys_exit | mp_fork_pool | mp_spawn_process | mp_spawn_pool

The parent buffers N rows before the children exist (they must not be sent twice), each of 2 children
forwards N rows, and the parent forwards N more; then the parent exits normally. Prints the expected total.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Any

from _common import rows, start

forwarder = start()  # at import: a spawn child runs this too, and gets its own forwarder


def child_work(tag: str, n: int, exit_via_sys_exit: bool = False, forward: Any = None) -> int:
    forward = forward or forwarder.forward
    for entry in rows(n, tag):
        assert forward(entry) is True

    if exit_via_sys_exit:
        sys.exit(0)
    return n


def main(mode: str, n: int) -> None:
    for entry in rows(n, "parent-before"):
        forwarder.forward(entry)
    if mode == "os_fork_closed_in_parent":
        forwarder.close()  # delivers the parent's rows; a child's rows are then refused and counted
        pid = os.fork()
        if pid == 0:
            refused = [forwarder.forward(e) for e in rows(n, "child")]
            stats = forwarder.statistics()
            os._exit(0 if refused == [False] * n and stats.dropped == {"closed": n} else 3)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        print(n, flush=True)
        return
    if mode.startswith("os_fork"):
        bound = forwarder.forwarder.forward  # a bound method taken before the fork must work in the child
        pids = []
        for c in range(2):
            pid = os.fork()
            if pid == 0:
                if mode == "os_fork_flush_first":
                    assert forwarder.flush(timeout=30) == 0  # nothing buffered yet, and no thread: no wait
                child_work(f"child-{c}", n, forward=bound if mode == "os_fork_bound_method" else None)
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
