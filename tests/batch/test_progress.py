"""Progress reporting: tqdm bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import fcntl
import io
import os
import select
import struct
import termios

from lungdamage.batch.progress import BarProgress, LineProgress, format_duration, make_progress
from lungdamage.batch.runner import Outcome, default_jobs, usable_cores
from lungdamage.batch.store import Failure


def _outcomes(n_ok: int, n_failed: int):
    return [Outcome(f"1.2.{i}", result=object()) for i in range(n_ok)] + [
        Outcome(f"1.3.{i}", failure=Failure("read", "DicomSeriesError", "bad")) for i in range(n_failed)
    ]


def test_lines_every_ten_percent_with_rate_and_eta():
    buf = io.StringIO()
    prog = make_progress(buf, interval_s=3600)
    assert isinstance(prog, LineProgress)
    prog.start(20, skipped=5)
    for o in _outcomes(17, 3):
        prog.advance(o)
    prog.close()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "batch: 20 series to score (5 already done or failed before, skipped)"
    # one line per 10 % step (2 series each), nothing in between
    assert len(lines) == 1 + 10
    assert lines[1].startswith("batch: 2/20 (10%), 0 failed, ")
    assert lines[-1].startswith("batch: 20/20 (100%), 3 failed, ") and "series/min" in lines[-1]
    assert "ETA 0s" in lines[-1]


def test_bar_on_a_terminal():
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    try:
        with open(slave, "w", closefd=True) as tty:
            prog = make_progress(tty)
            assert isinstance(prog, BarProgress)
            prog.start(4)
            for o in _outcomes(3, 1):
                prog.advance(o)
            assert prog._bar.n == 4 and prog.failed == 1
            prog.close()
        chunks = []
        while select.select([master], [], [], 0.2)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not data:
                break
            chunks.append(data)
        text = b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
    assert "4/4" in text and "failed=1" in text
    assert make_progress(io.StringIO(), enabled=False) is None


def test_format_duration_and_default_jobs():
    assert [format_duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]
    assert 1 <= default_jobs() <= usable_cores()
    assert default_jobs(per_scan_peak_mib=10**9) == 1  # memory-bound: never zero workers
