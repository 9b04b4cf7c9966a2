"""Forward N rows with add_sentinel_forwarder() and leave the way argv[1] says; print READY first if waiting.

python exits.py MODE N
MODE: return | sys_exit | os_exit | wait_for_signal | wait_for_signal_drain
"""

from __future__ import annotations

import os
import sys
import threading

from _common import rows, start

mode, n = sys.argv[1], int(sys.argv[2])
forwarder = start(drain_on_sigterm=mode == "wait_for_signal_drain", max_batch_size=10_000)
for entry in rows(n, mode):
    forwarder.forward(entry)
if mode == "sys_exit":
    sys.exit(0)
if mode == "os_exit":
    os._exit(0)  # documented: nothing runs, buffered rows are lost
if mode.startswith("wait_for_signal"):
    print("READY", flush=True)
    threading.Event().wait(600)  # until the test sends SIGTERM (bounded)
