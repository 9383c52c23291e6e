"""Batch scoring of scan archives: resumable SQLite result store, local or Dask workers.

>>> from lungdamage.batch import run_batch, BatchParams, load_results   # doctest: +SKIP
>>> summary = run_batch("archive/", "results.sqlite", params=BatchParams(regions="zones"))  # doctest: +SKIP
>>> load_results("results.sqlite")                                   # doctest: +SKIP

See :mod:`lungdamage.batch.runner` (flow, engines, memory) and
:mod:`lungdamage.batch.store` (schema, resume key).
"""

from __future__ import annotations

from .runner import (
    TYPICAL_SCAN_PEAK_MIB,
    BatchParams,
    BatchSummary,
    DaskEngine,
    InlineEngine,
    Outcome,
    ProcessEngine,
    SeriesTask,
    default_jobs,
    make_engine,
    plan_batch,
    run_batch,
    score_series,
)
from .store import Failure, ResultStore, load_failures, load_results

__all__ = [
    "run_batch",
    "plan_batch",
    "score_series",
    "BatchParams",
    "BatchSummary",
    "SeriesTask",
    "Outcome",
    "Failure",
    "InlineEngine",
    "ProcessEngine",
    "DaskEngine",
    "make_engine",
    "default_jobs",
    "TYPICAL_SCAN_PEAK_MIB",
    "ResultStore",
    "load_results",
    "load_failures",
]
