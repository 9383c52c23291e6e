"""``run_batch`` from a script without ``if __name__ == "__main__":`` (issue 15, item 8): one clear error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lungdamage.phantom import make_phantom, write_dicom_series

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def one_series(tmp_path_factory):
    ph = make_phantom(matrix=64, n_slices=40, slice_thickness_mm=5.0, vessels=False, truth_samples=2**10)
    root = tmp_path_factory.mktemp("guard")
    write_dicom_series(ph.ct, root / "P1" / "s1", patient_id="P1", study_date="2020-04-01")
    return root


def _script(tmp_path: Path, root: Path, *, guarded: bool, thread: bool = False) -> subprocess.CompletedProcess:
    run = f"run_batch({str(root)!r}, {str(tmp_path / 'r.sqlite')!r}, engine=ProcessEngine(1))"
    if thread:  # the batch started from a thread of the script's top-level code
        run = f"ThreadPoolExecutor(1).submit(lambda: {run}).result()"
    call = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from lungdamage.batch.runner import ProcessEngine, run_batch\n"
        f"summary = {run}\n"
        "print('STORED', summary.stored)\n"
    )
    body = ("if __name__ == '__main__':\n" + textwrap.indent(call, "    ")) if guarded else call
    script = tmp_path / "my_batch.py"
    script.write_text(body)
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)


def test_unguarded_script_gets_one_clear_error(one_series, tmp_path):
    res = _script(tmp_path, one_series, guarded=False)
    assert res.returncode != 0
    assert "BrokenProcessPool" not in res.stderr and "bootstrapping phase" not in res.stderr
    assert res.stderr.count("Traceback") == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("lungdamage.errors.InputError: run_batch was called at the top level of")
    assert "my_batch.py (line 3)" in last and 'if __name__ == "__main__":' in last
    assert not (tmp_path / "r.sqlite").exists()


def test_unguarded_script_starting_the_batch_from_a_thread_gets_the_same_error(one_series, tmp_path):
    """The calling thread's stack has no top-level frame of the script; the main thread's has."""
    res = _script(tmp_path, one_series, guarded=False, thread=True)
    assert res.returncode != 0
    assert "BrokenProcessPool" not in res.stderr and "bootstrapping phase" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("lungdamage.errors.InputError: run_batch was called at the top level of")
    assert "my_batch.py (line 3)" in last
    assert not (tmp_path / "r.sqlite").exists()


@pytest.mark.slow
def test_guarded_script_runs(one_series, tmp_path):
    res = _script(tmp_path, one_series, guarded=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "STORED 1" in res.stdout
