"""Progress reporting of a batch run (created by the CLI; the library never prints).

:func:`make_progress` returns a tqdm bar (count, rate, ETA, failures) when the
stream is a terminal, else a :class:`LineProgress` writing one plain line every
``interval_s`` seconds or every 10 % of the series, whichever comes first --
readable in log files of cluster jobs.  Both implement ``start(total,
skipped=)``, ``advance(outcome)`` and ``close()`` as :func:`run_batch` expects.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["make_progress", "LineProgress", "BarProgress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``"1h02m"``, ``"3m05s"`` or ``"12s"``."""
    s = int(round(max(seconds, 0.0)))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class LineProgress:
    """Plain progress lines: ``batch: 12/40 (30%), 1 failed, 4.2 series/min, ETA 6m40s``.

    Parameters
    ----------
    stream : text stream
    interval_s : float
        Longest time between two lines while series finish.
    step_fraction : float
        Also write a line each time this fraction of the series is done.
    """

    def __init__(self, stream: TextIO, *, interval_s: float = 30.0, step_fraction: float = 0.1):
        self.stream = stream
        self.interval_s = interval_s
        self.step_fraction = step_fraction
        self.total = 0
        self.done = 0
        self.failed = 0
        self._t0 = time.monotonic()
        self._last_t = self._t0
        self._last_step = 0

    def start(self, total: int, *, skipped: int = 0) -> None:
        self.total = total
        self._t0 = self._last_t = time.monotonic()
        note = f" ({skipped} already done or failed before, skipped)" if skipped else ""
        self._write(f"batch: {total} series to score{note}")

    def advance(self, outcome: Any) -> None:
        self.done += 1
        if getattr(outcome, "failure", None) is not None:
            self.failed += 1
        now = time.monotonic()
        step = int(self.done / max(self.total, 1) / self.step_fraction) if self.step_fraction > 0 else 0
        if now - self._last_t >= self.interval_s or step > self._last_step or self.done == self.total:
            self._last_t, self._last_step = now, step
            self._write(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self._t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta_text = format_duration(eta) if eta == eta else "?"
        return (
            f"batch: {self.done}/{self.total} ({pct:.0f}%), {self.failed} failed, "
            f"{60 * rate:.1f} series/min, elapsed {format_duration(elapsed)}, ETA {eta_text}"
        )

    def close(self) -> None:
        pass

    def _write(self, text: str) -> None:
        # the stream is the one the CLI handed in (stderr); the library itself never prints
        self.stream.write(text + "\n")
        self.stream.flush()


class BarProgress:
    """tqdm progress bar (count, rate, ETA) with the failure count as postfix."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._bar: Any = None  # a tqdm bar between start() and close()
        self.failed = 0

    def start(self, total: int, *, skipped: int = 0) -> None:
        from tqdm import tqdm

        desc = f"scoring ({skipped} skipped)" if skipped else "scoring"
        self._bar = tqdm(total=total, file=self.stream, unit="series", desc=desc, dynamic_ncols=True, smoothing=0.1)

    def advance(self, outcome: Any) -> None:
        if getattr(outcome, "failure", None) is not None:
            self.failed += 1
            self._bar.set_postfix(failed=self.failed, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def make_progress(stream: TextIO | None = None, *, interval_s: float = 30.0, enabled: bool = True):
    """Progress reporter for ``stream`` (default stderr): a bar on a terminal, lines otherwise.

    Returns None when ``enabled`` is False.
    """
    if not enabled:
        return None
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", lambda: False)
    if isatty():
        return BarProgress(stream)
    return LineProgress(stream, interval_s=interval_s)
