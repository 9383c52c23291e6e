"""Batch scoring of scan archives: catalog → select → analyze → store, resumable and parallel.

Flow (:func:`run_batch`)
------------------------
1. :func:`lungdamage.io.catalog.scan` lists every series under the root
   (headers only) and :func:`~lungdamage.io.catalog.select_series` keeps at
   most one CT series per study (its reasons are stored for the others).
2. The resume key of each selected series is ``(series_uid, run_hash,
   version)``; ``run_hash`` is :attr:`AnalysisOptions.run_hash`, a hash of the
   analysis options computed *before* anything is read.  Series already in the
   store are skipped; recorded failures are skipped unless ``retry_failed``;
   ``force`` recomputes everything.
3. An engine runs :func:`score_series` on the remaining series and yields
   one :class:`Outcome` per series as it finishes; the calling process, the
   only writer, stores each in its own transaction.  Failures (any exception,
   or a worker process that dies) become failure rows; the batch goes on.

Engines
-------
``InlineEngine``
    in the calling process (``--jobs 0``; debugging; no crash isolation).
``ProcessEngine(jobs)``
    local worker processes (``forkserver`` start, lungdamage pre-imported).  A
    worker that dies (segfault, out-of-memory kill) breaks the pool: the pool
    is rebuilt, the series that were in flight are retried one at a time, and
    the one that kills its worker again becomes a ``worker`` failure row.
``DaskEngine(address=... | n_workers=...)``
    a ``distributed`` cluster (``pip install 'lungdamage[dask]'``).  Workers
    must be able to import lungdamage and read the archive and weight paths.

All engines run the same function on the same inputs, so stored values are
identical whichever engine ran them.

Memory
------
One worker holds one series at a time.  Measured peak RSS of a fresh process
running ``analyze`` on the 512×512×400 phantom series of ``scripts/bench.py``
(threshold method, lungs): :data:`MEASURED_SCAN_PEAK_MIB` (about
:data:`PER_SCAN_PEAK_BYTES_PER_VOXEL` bytes per voxel above the interpreter
and imports; int16 HU are 2 of them, the rest are segmentation and QC work
arrays).  :func:`default_jobs` budgets :data:`TYPICAL_SCAN_PEAK_MIB` (the
measurement plus 20 % margin) per worker: ``jobs = min(cores, available
memory // budget)``, at least 1.  Peak memory grows with the voxel count
(``scripts/bench.py scaling``): a 512×512×800 series needs about twice as
much; lower ``--jobs`` for such archives.  lungmask segmentation needs more
(torch); pass ``--jobs`` explicitly there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import socket
import time
import traceback
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._procs import unguarded_main_call
from .._version import __version__
from ..errors import InputError, LungDamageError, MissingDependencyError
from ..pipeline import AnalysisOptions
from ..score.result import Analysis, ResultSet
from .store import Failure, ResultStore

__all__ = [
    "AnalysisOptions",
    "BatchParams",
    "SeriesTask",
    "Outcome",
    "BatchSummary",
    "score_series",
    "plan_batch",
    "run_batch",
    "InlineEngine",
    "ProcessEngine",
    "DaskEngine",
    "make_engine",
    "default_jobs",
    "TYPICAL_SCAN_PEAK_MIB",
]

log = logging.getLogger(__name__)

#: Measured peak RSS (MiB) of ``analyze`` on a 512×512×400 series in a fresh process (threshold
#: method, lungs; ``scripts/bench.py core`` and ``farm-bench``, 2026-11-29 after the second
#: segmentation round: 945 MiB, the process's own VmHWM; was 1.40-1.46 GiB; ``regions='lobes'``:
#: 1022 MiB; update after changes that move the peak).
MEASURED_SCAN_PEAK_MIB = 950
#: Memory budget (MiB) per worker used by :func:`default_jobs`: the measurement plus 20 % margin.
TYPICAL_SCAN_PEAK_MIB = int(round(1.2 * MEASURED_SCAN_PEAK_MIB))
#: The same measurement per voxel of the series (bytes), interpreter and imports (about 240 MiB) excluded.
PER_SCAN_PEAK_BYTES_PER_VOXEL = 7


def available_memory_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` (Linux), else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_jobs(*, per_scan_peak_mib: float = TYPICAL_SCAN_PEAK_MIB) -> int:
    """Safe default worker count: ``min(cores, available_memory // per_scan_peak)``, at least 1."""
    cores = usable_cores()
    avail = available_memory_bytes()
    if avail is None:
        return cores
    return max(1, min(cores, int(avail // (per_scan_peak_mib * 2**20))))


# ------------------------------------------------------------------------------- parameters
#: The analysis options of a batch (the same for every series): :class:`lungdamage.pipeline.AnalysisOptions`,
#: under the name this module has always used.  Its :attr:`~lungdamage.pipeline.AnalysisOptions.run_hash`
#: identifies the options in the store before anything is analysed.
BatchParams = AnalysisOptions


@dataclass(frozen=True)
class SeriesTask:
    """One series to score: its key and what to read (a catalog SeriesInfo or a file list)."""

    series_uid: str
    series: Any
    source: str = ""
    patient_id: str = ""
    study_date: str = ""

    @classmethod
    def from_info(cls, info: Any) -> SeriesTask:
        files = getattr(info, "files", ())
        source = getattr(info, "source_url", "") or (os.path.dirname(files[0]) if files else "")
        uid = info.series_uid or f"path:{source}"
        return cls(uid, info, source, info.patient_id, info.study_date)


@dataclass(frozen=True)
class Outcome:
    """What a worker returns for one series: a result or a failure (never both)."""

    series_uid: str
    result: Any = None
    failure: Failure | None = None
    elapsed_s: float = 0.0
    worker: str = ""
    hook_value: Any = None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.result is not None


# ---------------------------------------------------------------------------------- worker
_STAGE_OF_MODULE = (
    ("lungdamage.io", "read"),
    ("lungdamage.segment", "segment"),
    ("lungdamage.score", "score"),
)


def _stage_of(exc: BaseException, default: str) -> str:
    """Pipeline stage an exception came from (outermost lungdamage stage module in its traceback)."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        module = frame.f_globals.get("__name__", "")
        for prefix, stage in _STAGE_OF_MODULE:
            if module == prefix or module.startswith(prefix + "."):
                return stage
    return default


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or repr(exc)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def score_series(
    task: SeriesTask,
    params: AnalysisOptions,
    *,
    hook: Callable[[Any], Any] | None = None,
) -> Outcome:
    """Read, segment and score one series; never raises for a bad series.

    Runs in a worker.  Any exception becomes ``Outcome.failure`` with the
    stage (``read``, ``segment``, ``score``, ``analyze``), the
    exception type and its message.  Python warnings raised during the
    analysis are collected into ``Outcome.notes`` (reader warnings are also
    in the result's ``warnings``), so workers print nothing.

    Parameters
    ----------
    task : SeriesTask
    params : AnalysisOptions
    hook : callable, optional
        Called as ``hook(analysis)`` with the :class:`~lungdamage.pipeline.Analysis`
        (CT, regions, result) after a successful analysis, in the worker --
        e.g. to write QC images next to the archive.  Its return value (JSON-able)
        is stored in ``scans.hook_json``.  An exception in it does not fail the
        series: the result is kept and the hook value becomes
        ``{"series_uid", "source", "patient_id", "study_date", "review_error"}``
        (a hook may also return a dict with ``review_error`` itself).
    """
    from ..pipeline import analyze_scan, load_ct

    t0 = time.perf_counter()
    stage = "read"
    # a remote series (DICOMweb) is retrieved into a local cache first, kept until the hook is done
    fetch = getattr(task.series, "fetch", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if callable(fetch):
                stage = "retrieve"
            with fetch() if callable(fetch) else contextlib.nullcontext(task.series) as series:
                stage = "read"
                ct = load_ct(series)
                if series is not task.series and task.source:
                    ct = ct.with_meta(source=task.source)
                read_s = time.perf_counter() - t0
                stage = "analyze"
                analysis = _with_read_time(analyze_scan(ct, params), read_s)
                result = analysis.results
                hook_value = None
                if hook is not None:
                    try:
                        hook_value = hook(analysis)
                    except Exception as exc:  # a review output must never discard a valid score
                        hook_value = {
                            "series_uid": task.series_uid, "source": task.source, "patient_id": task.patient_id,
                            "study_date": task.study_date, "review_error": f"{type(exc).__name__}: {_one_line(exc)}",
                        }
        except Exception as exc:  # one bad series must never stop the batch
            if stage == "analyze":
                stage = _stage_of(exc, "analyze")
            return Outcome(
                task.series_uid,
                failure=Failure(stage, type(exc).__name__, _private(_one_line(exc), task, params)),
                elapsed_s=time.perf_counter() - t0,
                worker=_worker_name(),
                notes=tuple(_private(str(w.message), task, params) for w in caught),
            )
    return Outcome(
        task.series_uid,
        result=result,
        elapsed_s=time.perf_counter() - t0,
        worker=_worker_name(),
        hook_value=hook_value,
        notes=tuple(_private(str(w.message), task, params) for w in caught),
    )


def _private(text: str, task: SeriesTask, params: AnalysisOptions) -> str:
    """``text`` with the series' identifiers replaced when the batch is pseudonymized."""
    pz = params.pseudonymize
    return text if pz is None else pz.scrub(text, pz.terms_for(task))


def _with_read_time(analysis: Analysis, read_s: float) -> Analysis:
    """The analysis with ``timings_s["read_s"]`` set on every result (``analyze_scan`` got an already-read CT)."""
    results = ResultSet(dataclasses.replace(r, timings_s={**r.timings_s, "read_s": read_s}) for r in analysis.results)
    return dataclasses.replace(analysis, result=results[0], results=results)


def _crash_outcome(task: SeriesTask, exc: BaseException, *, alone: bool) -> Outcome:
    cause = (
        "the worker process died while scoring this series alone (killed, out of memory, or a crash in a "
        "native library)"
        if alone
        else "the worker process died"
    )
    msg = (
        f"{cause}: {_one_line(exc)} Series {task.series_uid} in {task.source or '?'}. "
        f"A 512x512x400 series needs about {TYPICAL_SCAN_PEAK_MIB / 1024:.1f} GiB per worker. "
        "Potential fix: lower --jobs, check the series with `lungdamage score`, then rerun with --retry-failed."
    )
    return Outcome(task.series_uid, failure=Failure("worker", type(exc).__name__, msg))


# --------------------------------------------------------------------------------- engines
class InlineEngine:
    """Run every series in the calling process, one after another."""

    name = "inline"
    workers = 1

    def __enter__(self) -> InlineEngine:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def run(self, tasks: Sequence[SeriesTask], fn: Callable[[SeriesTask], Outcome]) -> Iterator[Outcome]:
        for task in tasks:
            yield fn(task)


#: Modules imported once by the forkserver so that workers start warm.
_PRELOAD = [
    "lungdamage.batch.runner", "lungdamage.pipeline", "lungdamage.segment", "lungdamage.io.dicom", "lungdamage.score",
]


def _init_worker(n_threads: int, owner_pid: int | None = None, env: Mapping[str, str] | None = None) -> None:
    """Worker start-up: share the cores between workers (SimpleITK filters are multi-threaded),
    and exit when the batch process dies (:func:`lungdamage._procs.exit_with_parent`).

    ``env``: the caller's ``LUNGDAMAGE_DICOMWEB_*`` variables (DICOMweb credentials), which a
    forkserver started earlier in this session would not have; passed through the pool's pipe only.
    """
    if env:
        os.environ.update(env)
    if owner_pid is not None:
        from .._procs import exit_with_parent

        exit_with_parent(owner_pid)
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, n_threads))
    except ImportError:  # pragma: no cover - SimpleITK is a core dependency
        pass


class ProcessEngine:
    """Local worker processes (``concurrent.futures.ProcessPoolExecutor``, forkserver start).

    Each worker lets SimpleITK use ``cores // jobs`` threads.  At most
    ``2 × jobs`` series are in flight.  A dead worker breaks the pool;
    the pool is rebuilt and the series that were in flight are retried one at
    a time, so only the series that kills its worker again becomes a failure.
    """

    name = "processes"

    def __init__(self, jobs: int):
        if jobs < 1:
            raise InputError(f"--jobs must be at least 1 for worker processes, got {jobs}. Potential fix: --jobs 1.")
        self.workers = int(jobs)
        self._pool: Any = None  # a ProcessPoolExecutor while running

    def _new_pool(self):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        threads = max(1, usable_cores() // self.workers)
        return ProcessPoolExecutor(
            max_workers=self.workers, mp_context=ctx, initializer=_init_worker,
            initargs=(
                threads, os.getpid(), {k: v for k, v in os.environ.items() if k.startswith("LUNGDAMAGE_DICOMWEB_")}
            ),
        )

    def __enter__(self) -> ProcessEngine:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(self, tasks: Sequence[SeriesTask], fn: Callable[[SeriesTask], Outcome]) -> Iterator[Outcome]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        pending = deque(tasks)
        suspects: deque[SeriesTask] = deque()
        inflight: dict[Any, tuple[SeriesTask, bool]] = {}
        if self._pool is None and pending:
            self._pool = self._new_pool()
        while pending or suspects or inflight:
            if suspects:
                if not inflight:  # a series suspected of killing its worker runs alone
                    task = suspects.popleft()
                    inflight[self._pool.submit(fn, task)] = (task, True)
            else:
                while pending and len(inflight) < 2 * self.workers:
                    task = pending.popleft()
                    inflight[self._pool.submit(fn, task)] = (task, False)
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                task, alone = inflight.pop(fut)
                try:
                    yield fut.result()
                except BrokenProcessPool as exc:
                    broken = True
                    if alone:
                        yield _crash_outcome(task, exc, alone=True)
                    else:
                        suspects.append(task)
                except Exception as exc:  # e.g. the task could not be pickled
                    yield Outcome(task.series_uid, failure=Failure("worker", type(exc).__name__, _one_line(exc)))
            if broken:
                log.warning(
                    "a worker process died; restarting the pool and retrying %d series one at a time",
                    len(suspects) + len(inflight),
                )
                for fut, (task, _alone) in list(inflight.items()):
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        yield fut.result()
                    else:
                        suspects.append(task)
                inflight.clear()
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = self._new_pool()


class DaskEngine:
    """Run series on a Dask ``distributed`` cluster.

    Parameters
    ----------
    address : str, optional
        Scheduler address (``tcp://host:8786``) of a running cluster.
    n_workers : int, optional
        Start a local cluster with this many single-threaded worker processes
        (when no ``address``).
    """

    name = "dask"

    def __init__(self, address: str | None = None, *, n_workers: int | None = None, timeout_s: float = 30.0):
        if not address and not n_workers:
            raise InputError(
                "DaskEngine needs a scheduler address or n_workers. Potential fix: --scheduler or --dask-local N."
            )
        self.address = address
        self.n_workers = n_workers
        self.timeout_s = timeout_s
        self.workers = n_workers or 0
        self._client: Any = None
        self._cluster: Any = None

    def __enter__(self) -> DaskEngine:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise MissingDependencyError("Batch scoring on a Dask cluster", "distributed", "dask") from exc
        if self.address:
            try:
                self._client = Client(self.address, timeout=self.timeout_s)
            except OSError as exc:
                raise InputError(
                    f"Cannot connect to the Dask scheduler at {self.address} within {self.timeout_s:g} s ({exc}). "
                    "Potential fix: check the address (tcp://host:port) and that `dask scheduler` is running."
                ) from exc
        else:
            self._cluster = LocalCluster(
                n_workers=self.n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self._client = Client(self._cluster)
        self.workers = max(1, sum(self._client.nthreads().values()))
        return self

    def __exit__(self, *exc) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def run(self, tasks: Sequence[SeriesTask], fn: Callable[[SeriesTask], Outcome]) -> Iterator[Outcome]:
        from distributed import as_completed

        futures = {}
        for task in tasks:
            fut = self._client.submit(fn, task, pure=False, key=f"lungdamage-score-{task.series_uid}-{time.time_ns()}")
            futures[fut] = task
        for fut in as_completed(list(futures)):
            task = futures.pop(fut)
            try:
                outcome = fut.result()
            except Exception as exc:  # KilledWorker: the series killed its worker repeatedly
                outcome = _crash_outcome(task, exc, alone=True)
            fut.release()
            yield outcome


def make_engine(*, jobs: int | None = None, scheduler: str | None = None, dask_local: int | None = None):
    """Engine for the CLI options: ``scheduler`` / ``dask_local`` → Dask, ``jobs=0`` → inline, else processes."""
    if scheduler and dask_local:
        raise InputError("Give either --scheduler or --dask-local, not both. Potential fix: drop one of them.")
    if scheduler:
        return DaskEngine(scheduler)
    if dask_local:
        return DaskEngine(n_workers=dask_local)
    if jobs == 0:
        return InlineEngine()
    return ProcessEngine(jobs or default_jobs())


# ---------------------------------------------------------------------------------- planning
def _root_name(root: Any) -> str:
    """Printable name of a batch root: a path, or a DICOMweb source's URL."""
    if type(root).__name__ == "DicomwebSource":
        return str(root.name)
    return os.fspath(root)


def nothing_found_message(root: str | os.PathLike, summary: Mapping[str, Any]) -> str:
    """One line for an archive with no DICOM series: what was found instead and what to do."""
    if "n_studies" in summary:  # a DICOMweb server (io.dicomweb.scan)
        return (
            f"No study with a CT series on the DICOMweb server {summary.get('root') or _root_name(root)} matches "
            f"the query ({summary.get('query', 'no filters')}). Potential fix: check the filters (--patient-id, "
            "--study-date, --accession, --manifest), the URL (the DICOMweb root, e.g. .../dicom-web) and that "
            "the user may see these studies."
        )
    n_files = int(summary.get("n_files", 0))
    seen = "it is empty" if not n_files else (
        f"{n_files} file(s), none a readable DICOM image ({summary.get('n_non_dicom', 0)} not DICOM, "
        f"{summary.get('n_truncated', 0)} truncated)"
    )
    problems = summary.get("problems") or ()
    unread = (
        f" {len(problems)} input(s) could not be read, e.g. {problems[0][0]}: {problems[0][1]}." if problems else ""
    )
    return (
        f"No DICOM series under {_root_name(root)!r}: {seen}.{unread} Potential fix: point at the folder (or .zip) "
        "holding the CT's DICOM files; score a NIfTI / NRRD / MHA file with `lungdamage score FILE`."
    )


def plan_batch(
    root: str | os.PathLike,
    *,
    policy: Any = None,
    summary: dict | None = None,
    problems: list | None = None,
    pseudonymize: Any = None,
) -> tuple[list[SeriesTask], list[dict[str, Any]]]:
    """Catalog ``root`` and select the series to score.

    ``problems`` (a list, if given) receives ``(source, reason)`` of every input
    the catalog could not read (see :class:`lungdamage.io.catalog.ScanSummary`).
    With ``pseudonymize`` (a :class:`~lungdamage.privacy.Pseudonymizer`) the
    tasks' keys, sources, patients and dates and every exclusion row are
    pseudonymous (the tasks still read the original files).

    Returns
    -------
    tasks : list of SeriesTask
        Selected series (at most one per study), in catalog order.
    excluded : list of dict
        ``series_uid, reason, source, patient_id, study_date, modality`` of
        every series the selection policy left out.

    ``summary`` (optional dict) receives the catalog's file counts
    (see :func:`lungdamage.io.catalog.scan`).
    """
    from ..io.catalog import scan, select_series

    summary = {} if summary is None else summary
    infos = scan(root, summary=summary)
    if problems is not None:
        problems.extend(summary.get("problems", ()))
    tasks, excluded = [], []
    for sel in select_series(infos, policy):
        if sel.selected:
            tasks.append(SeriesTask.from_info(sel.series))
        else:
            t = SeriesTask.from_info(sel.series)
            excluded.append(
                {
                    "series_uid": t.series_uid,
                    "reason": sel.reason,
                    "source": t.source,
                    "patient_id": t.patient_id,
                    "study_date": t.study_date,
                    "modality": sel.series.modality,
                }
            )
    if pseudonymize is not None:
        by_uid = {SeriesTask.from_info(s).series_uid: s for s in infos}
        excluded = [pseudonymize.row(r, pseudonymize.terms_for(by_uid.get(r["series_uid"]))) for r in excluded]
        tasks = [pseudonymize.task(t) for t in tasks]
    return tasks, excluded


# ------------------------------------------------------------------------------------ summary
@dataclass
class BatchSummary:
    """Counts of one batch run (also stored in ``runs.counts_json``).

    ``scored`` counts analyses started by this run (0 on a complete resume);
    ``stored`` of them succeeded; ``failed`` maps ``"stage: error_type"`` to
    counts of this run's failures; ``skipped_failed`` counts series skipped
    because an earlier run recorded a failure (retry with ``retry_failed``).
    """

    root: str = ""
    store: str = ""
    run_hash: str = ""
    version: str = __version__
    engine: str = ""
    workers: int = 0
    series_found: int = 0
    selected: int = 0
    excluded: Counter = field(default_factory=Counter)
    skipped_done: int = 0
    skipped_failed: int = 0
    scored: int = 0
    stored: int = 0
    failed: Counter = field(default_factory=Counter)
    review_failed: int = 0
    elapsed_s: float = 0.0
    #: Inputs under the root that could not be read at all (also counted in ``failed`` as
    #: ``catalog: UnreadableInput``, with one failure row each).
    unreadable: int = 0

    @property
    def n_failed(self) -> int:
        return sum(self.failed.values())

    @property
    def exit_code(self) -> int:
        """0 when every selected series is stored, 1 when any failed (now or in an earlier run) or an
        input could not be read."""
        return 1 if (self.n_failed or self.skipped_failed) else 0

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["excluded"] = dict(self.excluded)
        d["failed"] = dict(self.failed)
        return d

    def _by_whom(self) -> str:
        """`` by 2 worker processes`` / `` in this process`` / `` by 3 Dask workers`` (empty if none ran)."""
        if not self.scored or not self.engine:
            return ""
        if self.engine == "inline":
            return " in this process"
        n, plural = self.workers, "" if self.workers == 1 else "es"
        if self.engine == "processes":
            return f" by {n} worker process{plural}"
        return f" by {n} {'Dask' if self.engine == 'dask' else self.engine} worker{'' if n == 1 else 's'}"

    def text(self) -> str:
        """Human-readable summary (several lines)."""
        rate = 60.0 * self.scored / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [
            f"batch {self.root} -> {self.store} (options {self.run_hash}, lungdamage {self.version})",
            f"series found {self.series_found}, selected {self.selected}, excluded {sum(self.excluded.values())}",
            f"done {self.stored}, skipped {self.skipped_done + self.skipped_failed} "
            f"(already stored {self.skipped_done}, failed before {self.skipped_failed}), "
            f"failed {self.n_failed}; {self.scored} series analysed in this run{self._by_whom()} "
            f"in {self.elapsed_s:.1f} s ({rate:.1f} series/min)",
        ]
        for reason, n in sorted(self.failed.items()):
            lines.append(f"  failed {n}: {reason}")
        if self.unreadable:
            lines.append(
                f"  {self.unreadable} input(s) could not be read (FIFOs/devices, unreadable folders, damaged or "
                "nested zips, damaged or truncated files): see the failures table (stage 'catalog')"
            )
        if self.review_failed:
            lines.append(
                f"  review outputs incomplete for {self.review_failed} series (their scores are stored; "
                "the index page says what is missing)"
            )
        if self.skipped_failed:
            lines.append(f"  {self.skipped_failed} series failed in an earlier run; rerun with --retry-failed to retry")
        for reason, n in sorted(self.excluded.items()):
            lines.append(f"  excluded {n}: {reason}")
        return "\n".join(lines)


def _exclusion_group(reason: str) -> str:
    """Group key for exclusion reasons (drop per-series numbers after the first clause)."""
    head = reason.split(";")[0]
    return head.split(" (")[0] if head.startswith("rejected") else head.split(":")[0]


class _NullProgress:
    def start(self, total: int, *, skipped: int = 0) -> None:
        pass

    def advance(self, outcome: Outcome) -> None:
        pass

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------- running
def run_batch(
    root: str | os.PathLike | None,
    store: str | os.PathLike | ResultStore,
    *,
    params: AnalysisOptions | None = None,
    engine: Any = None,
    tasks: Sequence[SeriesTask] | None = None,
    excluded: Sequence[Mapping[str, Any]] = (),
    policy: Any = None,
    retry_failed: bool = False,
    force: bool = False,
    hook: Callable[[Any], Any] | None = None,
    progress: Any = None,
) -> BatchSummary:
    """Score every selected series under ``root`` into ``store``; resumable.

    Parameters
    ----------
    root : path or None
        Archive folder (or zip) to catalog; None when ``tasks`` are given.
    store : path or ResultStore
        SQLite result store (created if missing).  Only this process writes it.
    params : AnalysisOptions, optional
        Analysis options (default: covid scheme, threshold lungs).
    engine : InlineEngine, ProcessEngine or DaskEngine, optional
        Default ``ProcessEngine(default_jobs())``.  Not started when nothing is to do.
    tasks, excluded : optional
        A ready plan instead of cataloguing ``root`` (see :func:`plan_batch`).
    policy : SelectionPolicy, optional
        Series selection policy of :func:`lungdamage.io.catalog.select_series`.
    retry_failed, force : bool
        Score again series whose earlier attempt failed; score everything again, replacing stored results.
    hook : callable, optional
        ``hook(analysis)`` run in the worker after each successful analysis
        (QC outputs); must be picklable for process and Dask engines.
    progress : object, optional
        Has ``start(total, skipped=)``, ``advance(outcome)`` and ``close()``
        (see :mod:`lungdamage.batch.progress`).

    Returns
    -------
    BatchSummary
        ``exit_code`` is 1 when any series failed.

    Raises
    ------
    InputError
        ``root`` holds no DICOM series, or none the selection policy accepts
        (raised before the store is created); or worker processes were asked
        for from a script's top-level code outside ``if __name__ == "__main__":``
        (see :func:`unguarded_main_call`).
    """
    t_start_s = time.perf_counter()
    problems: list[tuple[str, str]] = []
    _refuse_unguarded_workers(engine)
    params, progress = params or AnalysisOptions(), progress or _NullProgress()
    tasks, excluded = _batch_plan(root, tasks, excluded, policy, params, problems)
    owns_store = not isinstance(store, ResultStore)
    db = store if isinstance(store, ResultStore) else ResultStore(store)
    try:
        summary = _new_summary(root, db, params, tasks, excluded)
        todo = _pending(tasks, db, params.run_hash, force=force, retry_failed=retry_failed, summary=summary)
        engine = engine if engine is not None else (ProcessEngine(default_jobs()) if todo else InlineEngine())
        summary.engine = engine.name
        run_id = db.begin_run(root=summary.root, run_hash=summary.run_hash, version=summary.version,
                              params=params.identity(), engine=engine.name)
        db.save_excluded(excluded, run_id=run_id)
        _store_unreadable(db, _private_problems(problems, params), summary, summary.run_hash, summary.version, run_id)
        try:
            _score_pending(todo, engine, db, run_id, summary, params=params, hook=hook, progress=progress)
        finally:
            progress.close()
            summary.elapsed_s = time.perf_counter() - t_start_s
            db.end_run(run_id, summary.as_dict())
    finally:
        if owns_store:
            db.close()
    log.info("batch finished: %s", summary.text().replace("\n", " | "))
    return summary


def _refuse_unguarded_workers(engine: Any) -> None:
    """Worker processes import the calling script again: refuse a call from unguarded top-level code."""
    if isinstance(engine, InlineEngine) or (isinstance(engine, DaskEngine) and engine.address):
        return
    where = unguarded_main_call()
    if where is not None:
        raise InputError(
            f"run_batch was called at the top level of {where[0]} (line {where[1]}) without an "
            "`if __name__ == \"__main__\":` guard: each worker process imports that script again and would "
            "start the batch once more. Potential fix: put the call under `if __name__ == \"__main__\":`, "
            "or pass engine=InlineEngine() to score in this process."
        )


def _batch_plan(
    root: Any,
    tasks: Sequence[SeriesTask] | None,
    excluded: Sequence[Mapping[str, Any]],
    policy: Any,
    params: AnalysisOptions,
    problems: list[tuple[str, str]],
) -> tuple[list[SeriesTask], list[Mapping[str, Any]]]:
    """The series to score (each once) and the excluded ones: catalogued under ``root``, or the given plan.

    Raises :class:`InputError` when there is nothing to score, before any store is created (an empty store
    would look like success).
    """
    if tasks is None:
        if root is None:
            raise InputError("run_batch needs a root folder or a list of tasks. Potential fix: pass root=ARCHIVE.")
        found: dict = {}
        tasks, excluded = plan_batch(root, policy=policy, summary=found, problems=problems,
                                     pseudonymize=params.pseudonymize)
        if not tasks and not excluded:
            raise InputError(nothing_found_message(root, found))
        if not tasks:
            raise InputError(_none_selected_message(root, excluded))
    elif params.pseudonymize is not None:
        tasks = [params.pseudonymize.task(t) for t in tasks]
        excluded = [params.pseudonymize.row(r) for r in excluded]
    seen: set[str] = set()
    unique = []
    for t in tasks:  # one series listed twice is scored once
        if t.series_uid not in seen:
            seen.add(t.series_uid)
            unique.append(t)
    return unique, list(excluded)


def _none_selected_message(root: Any, excluded: Sequence[Mapping[str, Any]]) -> str:
    reasons = Counter(_exclusion_group(r["reason"]) for r in excluded)
    example = excluded[0]
    return (
        f"Nothing to score under {_root_name(root)!r}: {len(excluded)} series found, none selected ("
        + "; ".join(f"{n}x {reason}" for reason, n in reasons.most_common())
        + f"; e.g. {example['source'] or example['series_uid']}: {example['reason']}). Potential fix: "
        "`lungdamage index` lists each series and why; relax the selection (--min-extent-mm, --allow-derived, ...)."
    )


def _new_summary(
    root: Any, db: ResultStore, params: AnalysisOptions, tasks: Sequence[SeriesTask],
    excluded: Sequence[Mapping[str, Any]],
) -> BatchSummary:
    """The summary of a run that has not started (root name pseudonymized when the batch is)."""
    root_name = getattr(root, "name", None) if type(root).__name__ == "DicomwebSource" else None
    summary = BatchSummary(
        root=root_name or (os.fspath(root) if root is not None else ""), store=str(db.path), run_hash=params.run_hash
    )
    if params.pseudonymize is not None:
        summary.root = params.pseudonymize.token(summary.root)
    summary.series_found = len(tasks) + len(excluded)
    summary.selected = len(tasks)
    summary.excluded = Counter(_exclusion_group(r["reason"]) for r in excluded)
    return summary


def _pending(
    tasks: Sequence[SeriesTask], db: ResultStore, run_hash: str, *, force: bool, retry_failed: bool,
    summary: BatchSummary,
) -> list[SeriesTask]:
    """The tasks to score now: not stored yet, and (unless ``retry_failed``) not failed before; counts the rest."""
    done = set() if force else db.done_keys(run_hash, summary.version)
    failed_before = {} if (force or retry_failed) else db.failed_keys(run_hash, summary.version)
    todo = []
    for t in tasks:
        if t.series_uid in done:
            summary.skipped_done += 1
        elif t.series_uid in failed_before:
            summary.skipped_failed += 1
        else:
            todo.append(t)
    return todo


def _private_problems(problems: Sequence[tuple[str, str]], params: AnalysisOptions) -> list[tuple[str, str]]:
    """Unreadable inputs, by keyed tokens only when the batch is pseudonymized (paths hold folder names)."""
    pz = params.pseudonymize
    if pz is None:
        return list(problems)
    return [(pz.token(source), pz.scrub(reason, {os.fspath(source): pz.token(source)})) for source, reason in problems]


def _score_pending(
    todo: Sequence[SeriesTask], engine: Any, db: ResultStore, run_id: int, summary: BatchSummary, *,
    params: AnalysisOptions, hook: Callable[[Any], Any] | None, progress: Any,
) -> None:
    """Run ``todo`` on ``engine`` and store each outcome as it arrives (this process is the only writer)."""
    progress.start(len(todo), skipped=summary.skipped_done + summary.skipped_failed)
    if not todo:
        return
    by_uid = {t.series_uid: t for t in todo}
    fn = functools.partial(score_series, params=params, hook=hook)
    with engine:
        summary.workers = engine.workers
        log.info("scoring %d series (%s engine, %d worker%s)", len(todo), engine.name, engine.workers,
                 "" if engine.workers == 1 else "s")
        for outcome in engine.run(todo, fn):
            summary.scored += 1
            _store_outcome(db, outcome, by_uid[outcome.series_uid], summary, summary.run_hash, summary.version,
                           run_id)
            progress.advance(outcome)


#: Failure stage of inputs the catalog could not read (no series to name: keyed ``file:<source>``).
UNREADABLE_STAGE = "catalog"


def _store_unreadable(
    db: ResultStore, problems: Sequence[tuple[str, str]], summary: BatchSummary, run_hash: str, version: str,
    run_id: int,
) -> None:
    """One failure row per input the catalog could not read; they make the exit code 1."""
    for source, reason in problems:
        failure = Failure(UNREADABLE_STAGE, "UnreadableInput", f"{source}: {reason}")
        db.save_failure(
            f"file:{source}", failure, run_hash=run_hash, version=version, source=source, run_id=run_id
        )
        summary.failed[failure.reason] += 1
        summary.unreadable += 1


def _store_outcome(
    db: ResultStore, outcome: Outcome, task: SeriesTask, summary: BatchSummary, run_hash: str, version: str, run_id: int
) -> None:
    for note in outcome.notes:
        log.info("%s: %s", task.series_uid, note)
    review_error = outcome.hook_value.get("review_error") if isinstance(outcome.hook_value, dict) else None
    if outcome.result is not None and review_error:
        log.warning("%s: scored and stored, but review outputs failed: %s", task.series_uid, review_error)
        summary.review_failed += 1
    if outcome.result is not None:
        try:
            db.save_result(
                outcome.result,
                run_hash=run_hash,
                version=version,
                source=task.source,
                elapsed_s=outcome.elapsed_s,
                worker=outcome.worker,
                run_id=run_id,
                hook_value=outcome.hook_value,
                series_uid=task.series_uid,
            )
            summary.stored += 1
            return
        except LungDamageError as exc:
            outcome = dataclasses.replace(outcome, failure=Failure("store", type(exc).__name__, _one_line(exc)))
    failure = outcome.failure or Failure(
        "analyze", "UnknownError", "the worker returned neither a result nor a failure"
    )
    log.warning("%s failed at %s: %s: %s", task.series_uid, failure.stage, failure.error_type, failure.message)
    db.save_failure(
        task.series_uid,
        failure,
        run_hash=run_hash,
        version=version,
        source=task.source,
        patient_id=task.patient_id,
        study_date=task.study_date,
        run_id=run_id,
    )
    summary.failed[failure.reason] += 1
