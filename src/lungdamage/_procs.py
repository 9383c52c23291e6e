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
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["exit_with_parent", "thread_budget", "unguarded_main_call", "may_start_processes"]

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


def _is_main_test(test: Any) -> bool:
    """``__name__ == "__main__"`` (either order) as an AST node."""
    import ast

    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [n.id for n in sides if isinstance(n, ast.Name)]
    consts = [n.value for n in sides if isinstance(n, ast.Constant)]
    return names == ["__name__"] and consts == ["__main__"]


def _main_script() -> tuple[Any, str] | None:
    """``(module, path)`` of the main script that worker processes would import again; None for
    ``python -m pkg`` (``pkg.__main__``), ``python -c``, interactive sessions and notebooks."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec_name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if not path or spec_name == "__main__" or spec_name.endswith(".__main__"):
        return None
    return main, str(path)


def _top_level_line(main: Any, frame: FrameType | None) -> int | None:
    """Line of the outermost top-level frame of ``main`` on the stack ending at ``frame`` (None: not on it)."""
    line = None
    while frame is not None:
        if frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            line = frame.f_lineno
        frame = frame.f_back
    return line


def _calling_line(main: Any) -> int | None:
    """The main script's top-level line the current work runs under: on this thread's stack, or, from
    another thread, on the main thread's (None: on neither)."""
    line = _top_level_line(main, sys._getframe(1))
    if line is None and threading.current_thread() is not threading.main_thread():
        line = _top_level_line(main, sys._current_frames().get(threading.main_thread().ident or 0))
    return line


def _guarded(path: str, line: int) -> bool | None:
    """Whether ``line`` of the script at ``path`` lies under ``if __name__ == "__main__":`` (None: unreadable)."""
    import ast

    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    return any(
        isinstance(node, ast.If) and _is_main_test(node.test) and node.lineno <= line <= (node.end_lineno or line)
        for node in ast.walk(tree)
    )


def unguarded_main_call() -> tuple[str, int] | None:
    """``(script, line)`` when the caller runs in a script's top-level code outside ``if __name__ == "__main__":``.

    Worker processes (``spawn`` / ``forkserver``, also Dask's local cluster)
    import the main script again; top-level code that starts a batch would
    start it once more in every worker.  Called from another thread, the main
    thread's stack is the one looked at.  Scripts run with ``python -m pkg``
    (``pkg.__main__``), interactive sessions and notebooks are not re-imported
    and give None.
    """
    found = _main_script()
    if found is None:
        return None
    main, path = found
    line = _calling_line(main)
    if line is None or _guarded(path, line) is not False:
        return None
    return path, int(line)


def may_start_processes() -> bool:
    """Whether this process may start a pool of worker processes for its own work.

    Not in a daemonic process (Dask's workers; they may have no children), not
    without the ``forkserver`` start method, and, when a main script would be
    imported again by each worker, only with positive evidence that the work
    runs under its ``if __name__ == "__main__":`` guard: in this thread's stack,
    or, called from another thread, in the main thread's stack.  A script whose
    top-level code is unguarded, or has already finished, gets no processes.
    """
    import multiprocessing

    if multiprocessing.current_process().daemon:
        return False
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    found = _main_script()
    if found is None:
        return True
    main, path = found
    line = _calling_line(main)
    return line is not None and _guarded(path, line) is True
