"""Worker processes that never outlive the process that started them.

A pool worker blocks forever on its task queue when its parent is killed (kill -9, or SIGTERM
without a handler), and holds the multiprocessing resource tracker open with it. Every pool of
this project starts its workers with :func:`exit_with_parent`.
"""

from __future__ import annotations

import os
import threading
import time

#: How often a worker checks that its parent is alive.
PARENT_CHECK_SECONDS = 0.5


def exit_with_parent(parent_pid: int) -> None:
    """Call in a worker process (a pool initializer) with the pid of the process that made the pool
    (passed in, since it may already be gone when a slow-starting worker gets here): a daemon
    thread ends the worker as soon as that parent is gone (the worker is re-parented)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
