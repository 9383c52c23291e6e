"""The hostile-input table (issue 14): every case through ``lungdamage score`` and ``lungdamage batch``.

Each case is built by the tests (``_cases.py``), run through both commands in
subprocesses with a timeout (a hang fails the case instead of stalling the
suite), and checked against the outcome its row names.  No row may show a
traceback, a hang, an abort (death by signal) or a silently wrong number.
Declared-size cases must also stay under 1 GiB peak RSS while being refused
(the child's own ``VmHWM``, written at its exit; ``batch --jobs 0`` and, for those
cases, ``LUNGDAMAGE_READ_THREADS=1`` (no decoder processes) keep the work in that child).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from _build import cli
from _cases import CASES, Case

pytestmark = pytest.mark.slow

#: Seconds before a run counts as hung (generous: 2 contended cores; a normal run takes 2-10 s).
TIMEOUT_S = float(os.environ.get("LUNGDAMAGE_HOSTILE_TIMEOUT", "150"))
MEMORY_LIMIT_MIB = 1024.0


def _build_case(case: Case, base: Path, good: Path) -> tuple[Path, Path]:
    root = base / case.name / "root"
    shutil.copytree(good, root / "good")
    with warnings.catch_warnings():  # not thread-safe: cases are built one by one, in this thread
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values these builders write on purpose
        score_input = case.build(root)
    return root, score_input


def _run_case(case: Case, root: Path, score_input: Path) -> dict:
    work = root.parent
    env = dict(case.env)
    if case.memory:  # the peak is the CLI process's own: keep decoding in it (no decoder processes)
        env.setdefault("LUNGDAMAGE_READ_THREADS", "1")
    score = cli(["score", str(score_input), "-o", "score.csv", *case.score_args], cwd=work, timeout_s=TIMEOUT_S, env=env)
    batch = cli(
        ["batch", str(root), "--store", str(root / "store.sqlite") if case.name.startswith(("lock", "store")) else
         "store.sqlite", "--jobs", "0", "--progress-interval", "1000", *case.batch_args],
        cwd=work, timeout_s=TIMEOUT_S, env=env,
    )
    return {"root": root, "work": work, "score": score, "batch": batch}


@pytest.fixture(scope="module")
def table(tmp_path_factory, good_series) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("hostile-table")
    only = set(filter(None, os.environ.get("LUNGDAMAGE_HOSTILE_ONLY", "").split(",")))  # debugging aid
    runnable = [c for c in CASES if not (c.skip_if_root and os.geteuid() == 0) and (not only or c.name in only)]
    built = {c.name: _build_case(c, base, good_series) for c in runnable}
    with ThreadPoolExecutor(3) as pool:  # the subprocesses run three at a time
        futures = {c.name: pool.submit(_run_case, c, *built[c.name]) for c in runnable}
        return {name: f.result() for name, f in futures.items()}


def test_table_size():
    assert len(CASES) >= 40
    assert {c.defect for c in CASES} >= {"1", "2", "3", "4", "5", "6", "7", "8", "10", "11", "12"}


def _no_crash(run, command: str) -> None:
    assert not run.timed_out, f"{command} hung (killed after {TIMEOUT_S} s): {run.args}"
    assert run.signal is None, f"{command} died by signal {run.signal} (abort/crash): {run.stderr[-2000:]}"
    assert "Traceback" not in run.stderr, f"{command} printed a traceback:\n{run.stderr[-3000:]}"


def _one_error_line(run, command: str, pattern: str) -> None:
    assert run.rc == 2, f"{command}: exit {run.rc}, expected 2; stderr:\n{run.stderr[-2000:]}"
    lines = run.error_lines(command)
    assert len(lines) == 1, f"{command}: expected one error line, got {lines!r}\n{run.stderr[-2000:]}"
    assert re.search(pattern, lines[0]), f"{command}: error line does not match {pattern!r}: {lines[0][:600]}"


def _store_frames(store: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from lungdamage.batch import load_failures, load_results

    return load_results(store), load_failures(store)


def _checked_run(case: Case, table, command: str):
    """The case's recorded results and its run of ``command``, checked for crashes and memory (skips cases not run)."""
    if case.name not in table:
        pytest.skip("case not run: needs a non-root user (root reads every folder), or filtered out")
    r = table[case.name]
    run = r[command]
    _no_crash(run, command)
    if case.memory:
        assert run.maxrss_mib < MEMORY_LIMIT_MIB, f"{command} peaked at {run.maxrss_mib:.0f} MiB"
    return r, run


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_score(case: Case, table):
    r, run = _checked_run(case, table, "score")
    if case.score == "error":
        _one_error_line(run, "score", case.expect)
        return
    assert run.rc == 0, f"score: exit {run.rc}; stderr:\n{run.stderr[-2000:]}"
    rows = pd.read_csv(r["work"] / "score.csv", keep_default_na=False)
    if case.score == "warn":
        assert rows["warnings"].str.contains(case.expect, regex=True).all(), rows["warnings"].iloc[0][:500]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_batch(case: Case, table):
    r, run = _checked_run(case, table, "batch")
    if case.batch == "error":
        _one_error_line(run, "batch", case.batch_pattern)
        return
    results, failures = _store_frames(r["work"] / "store.sqlite")
    patients = set(results["patient_id"]) if len(results) else set()
    if case.batch in ("failrow", "failed"):
        assert run.rc == 1, f"batch: exit {run.rc}, expected 1 (something could not be read)\n{run.stderr[-2000:]}"
        hits = failures[failures["message"].str.contains(case.batch_pattern, regex=True)]
        assert len(hits), f"no failure row matches {case.batch_pattern!r}: {failures['message'].tolist()}"
        if case.batch == "failrow":
            assert "GOOD" in patients, "the batch did not go on: the good series was not stored"
        return
    assert run.rc == 0, f"batch: exit {run.rc}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    assert len(failures) == 0, failures["message"].tolist()
    assert "GOOD" in patients
    if case.batch == "warn":
        mine = results[results["patient_id"] == "HOSTILE"]
        assert len(mine) and mine["warnings"].str.contains(case.batch_pattern, regex=True).all()
    if case.batch == "ok" and case.name not in ("lock_symlink",):
        assert "HOSTILE" in patients or "'@SUM(1+1)" in patients or "@SUM(1+1)" in patients, patients


# ------------------------------------------------------------------ case-specific numbers
def _case(table, name):
    if name not in table:
        pytest.skip(f"case {name} not run")
    return table[name]


def _total(frame: pd.DataFrame, patient: str) -> pd.Series:
    rows = frame[(frame["patient_id"] == patient) & (frame["region"] == "total")]
    assert len(rows) == 1
    return rows.iloc[0]


def test_duplicate_member_names_read_every_copy(table):
    """Every copy of a repeated member name is read: the zipped series scores exactly as the folder."""
    r = _case(table, "duplicate_member_names")
    results, _ = _store_frames(r["work"] / "store.sqlite")
    good, dup = _total(results, "GOOD"), _total(results, "HOSTILE")
    score = pd.read_csv(r["work"] / "score.csv")
    score_total = score[score["region"] == "total"].iloc[0]
    for col in ("voxels", "damage_pct", "ggo_pct", "consolidation_pct"):
        assert dup[col] == pytest.approx(good[col], abs=1e-9)
        assert score_total[col] == pytest.approx(good[col], abs=1e-9)


def test_formula_text_is_escaped(table):
    """DICOM text starting with = + @ reaches CSV cells escaped; numbers (also negative) stay numbers."""
    r = _case(table, "formula_text")
    text = (r["work"] / "score.csv").read_text()
    assert "'@SUM(1+1)" in text and "'+B30f" in text
    cells = [c for line in text.splitlines() for c in line.split(",")]
    assert not any(c.lstrip('"').startswith(("=", "@", "+")) for c in cells)
    score = pd.read_csv(r["work"] / "score.csv")
    assert (score["mean_hu"] < 0).all()  # a negative number is still a number
    out = cli(["export", "--store", "store.sqlite", "-o", "export.csv"], cwd=r["work"])
    assert out.rc == 0, out.stderr
    exported = (r["work"] / "export.csv").read_text()
    assert "'@SUM(1+1)" in exported and "\n@SUM" not in exported and ",@SUM" not in exported
    assert ",=HYPERLINK" not in exported and ',"=HYPERLINK' not in exported


def test_lock_symlink_target_intact(table):
    r = _case(table, "lock_symlink")
    assert (r["root"] / "victim.txt").read_text() == "precious\n"


def test_qc_symlinks_replaced_not_followed(table):
    r = _case(table, "qc_symlink")
    for victim in r["root"].glob("victim-*.txt"):
        assert victim.read_text() == "precious\n", victim
    for qc in ("qc", "qcb"):
        for p in (r["work"] / qc).iterdir():
            assert not p.is_symlink(), f"{p} is still a link"
    assert (r["work"] / "qcb" / "index.html").is_file()


def test_long_text_cut_in_outputs(table):
    """A 2 MB SeriesDescription is cut in every rendered output (HTML stays small)."""
    r = _case(table, "description_2mb_qc")
    for qc in ("qc", "qcb"):
        pages = list((r["work"] / qc).glob("*.html"))
        assert pages
        for page in pages:
            assert page.stat().st_size < 2**20, page
            assert "x" * 2000 not in page.read_text()


def test_store_errors_keep_store(table):
    for name in ("store_not_sqlite", "store_is_directory"):
        store = _case(table, name)["root"] / "store.sqlite"
        assert store.exists()
    assert (table["store_not_sqlite"]["root"] / "store.sqlite").read_bytes().startswith(b"this is not")
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(table["store_not_sqlite"]["root"] / "store.sqlite").execute("select 1 from sqlite_master")
