"""Worker processes that never outlive the process that started them.

:func:`exit_with_parent` is the ``initializer`` of every process pool
lungdamage starts.  Pool workers are forked from a forkserver, so their
parent is not the batch process itself: a batch killed with SIGTERM or
SIGKILL would leave them running (and holding memory) until their queue
closed, or forever.  Two guards, both cheap:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker
  when its parent (the forkserver, which exits when the batch process dies)
  goes away;
- a daemon thread that checks once per second that the batch process
  (``owner_pid``) still exists and calls ``os._exit`` when it does not (any
  platform; also covers a forkserver that outlives the batch).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

__all__ = ["exit_with_parent", "thread_budget"]

_PR_SET_PDEATHSIG = 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _watch(owner_pid: int, parent_pid: int, interval_s: float) -> None:
    while True:
        time.sleep(interval_s)
        if not _alive(owner_pid) or os.getppid() != parent_pid:
            os._exit(1)


def exit_with_parent(owner_pid: int, interval_s: float = 1.0) -> None:
    """Make this (worker) process exit when ``owner_pid`` or its own parent dies.

    Parameters
    ----------
    owner_pid : int
        Process id of the batch (the process that created the pool).
    interval_s : float
        Seconds between liveness checks of the watchdog thread.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the thread still guards
            pass
    parent = os.getppid()
    if not _alive(owner_pid) or parent == 1:
        os._exit(1)
    threading.Thread(target=_watch, args=(owner_pid, parent, interval_s), daemon=True, name="exit-with-parent").start()


def thread_budget() -> int:
    """Threads one scan may use: SimpleITK's global thread count when SimpleITK is loaded
    (batch workers set it to ``cores // jobs``, so workers share the cores), else the
    usable cores."""
    sitk = sys.modules.get("SimpleITK")
    if sitk is not None:
        return max(1, int(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
