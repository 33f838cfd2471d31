"""What every pool worker process does (the render pool, the reindex tokenizers)."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """Call in a worker process: it exits within ``interval`` s once ``parent`` (the pid of the process
    that started it, sent by that process) is no longer its parent.

    A pool tells its workers to stop when it shuts down, but a parent killed with SIGKILL (by an
    operator, a supervisor's timeout or the OOM killer) cannot, and its spawned workers would wait
    on their task queue for ever, each holding its memory (about 250 MB for a renderer). The parent
    is watched by its pid, not with ``PR_SET_PDEATHSIG``: that fires when the *thread* that started
    the worker ends, and pools start workers from whichever thread submits first.

    The pid comes from the parent (the pool's ``initargs``), not from ``os.getppid()`` here: a
    parent killed while the worker was still starting (interpreter, imports) has already handed it
    to PID 1 or a subreaper, which the worker would then take for its parent and never leave.
    """
    if os.getppid() != parent:
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
