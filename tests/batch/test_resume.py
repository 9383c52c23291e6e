"""Resume: a rerun does no scoring work; --retry-failed and --force."""

from __future__ import annotations

import shutil
import time

import pandas as pd
from _batchdata import N_CT_GOOD

from lungdamage.batch import InlineEngine, ResultStore, load_failures, load_results, plan_batch, run_batch
from lungdamage.cli import main


class MustNotScore(InlineEngine):
    """An engine that fails the test if the batch tries to score anything."""

    def __enter__(self):
        raise AssertionError("the engine was started on a complete resume")

    def run(self, tasks, fn):
        raise AssertionError(f"{len(tasks)} series sent to scoring on a complete resume")


def _copy(store, tmp_path):
    dst = tmp_path / "store.sqlite"
    shutil.copy(store, dst)
    return dst


def test_resume_does_no_work(archive, reference_store, tmp_path):
    root, _ = archive
    store = _copy(reference_store, tmp_path)
    before = load_results(store)
    t0 = time.perf_counter()
    summary = run_batch(root, store, engine=MustNotScore())
    elapsed = time.perf_counter() - t0
    assert summary.scored == 0 and summary.stored == 0
    assert (summary.skipped_done, summary.skipped_failed) == (N_CT_GOOD, 2)
    assert summary.exit_code == 1  # two series failed in the earlier run
    assert elapsed < 5.0  # catalog only: no pixel is read
    pd.testing.assert_frame_equal(load_results(store), before)
    with ResultStore(store, readonly=True) as s:
        assert s.counts()["runs"] == 2


def test_resume_cli_reports_skipped(archive, reference_store, tmp_path, capsys):
    root, _ = archive
    store = _copy(reference_store, tmp_path)
    code = main(["-q", "batch", str(root), "--store", str(store), "--jobs", "0"])
    out = capsys.readouterr().out
    assert code == 1
    assert f"done 0, skipped {N_CT_GOOD + 2} (already stored {N_CT_GOOD}, failed before 2), failed 0; 0 series analysed in this run in" in out
    assert "--retry-failed" in out


def test_retry_failed_and_force(archive, reference_store, tmp_path):
    root, info = archive
    store = _copy(reference_store, tmp_path)
    summary = run_batch(root, store, engine=InlineEngine(), retry_failed=True)
    assert (summary.scored, summary.stored, summary.skipped_done) == (2, 0, N_CT_GOOD)
    assert summary.failed == {"read: DicomSeriesError": 1, "segment: SegmentationError": 1}
    fails = load_failures(store)
    assert len(fails) == 2 and fails.attempts.eq(2).all()

    # --force recomputes (here on two planned series) and replaces, never duplicates
    tasks, _ = plan_batch(root)
    some = [t for t in tasks if t.series_uid in info["good"]][:2]
    before = load_results(store)
    summary = run_batch(None, store, tasks=some, engine=InlineEngine(), force=True)
    assert (summary.scored, summary.stored) == (2, 2)
    after = load_results(store)
    assert len(after) == len(before) == 3 * N_CT_GOOD
    key = ["series_uid", "region"]
    pd.testing.assert_frame_equal(
        after.drop(columns="scan_id").sort_values(key).reset_index(drop=True),
        before.drop(columns="scan_id").sort_values(key).reset_index(drop=True),
    )
    assert set(after.scan_id) != set(before.scan_id)  # the two series were rewritten


def test_options_change_the_key(archive, reference_store, tmp_path):
    """Other analysis options are a different run: nothing is skipped."""
    from lungdamage.batch import BatchParams

    root, _ = archive
    tasks, _ = plan_batch(root)
    store = _copy(reference_store, tmp_path)
    assert BatchParams(regions="zones").run_hash != BatchParams().run_hash
    assert BatchParams(scheme="covid").run_hash == BatchParams(scheme=["covid"]).run_hash
    summary = run_batch(None, store, tasks=tasks[:1], params=BatchParams(regions="zones"), engine=InlineEngine())
    assert (summary.skipped_done, summary.scored, summary.stored) == (0, 1, 1)
    df = load_results(store)
    assert df.run_hash.nunique() == 2
    assert set(df[df.region_set == "zones"].region) == {"RUZ", "RMZ", "RLZ", "LUZ", "LMZ", "LLZ", "right", "left", "total"}
