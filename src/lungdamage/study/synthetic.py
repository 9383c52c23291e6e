"""A synthetic two-arm trial of phantom CT series with a planted treatment effect.

SYNTHETIC DATA: every scan is the :mod:`lungdamage.phantom` thorax; nothing
here comes from a patient.  The generator exists to test and demonstrate
``lungdamage batch`` + ``lungdamage study`` end to end with a known answer.

Lesion burden model (``damage_scale`` of :func:`~lungdamage.phantom.make_phantom`,
which multiplies every lesion's volume) for patient ``i`` at day ``d``::

    scale(d) = b_i * (r_i + (1 - r_i) * exp(-d / tau_days))

with baseline burden ``b_i ~ U(baseline_scale)`` in both arms and residual
fraction ``r_i ~ U(residual_placebo)`` or ``U(residual_treated)``: the planted
effect is a smaller residual fraction -- less damage at month 4 -- in the
treated arm.  The true damage of every scan is the phantom's exact truth
(``truth.fractions["total"]``), written to ``truth.csv``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["make_trial", "TRIAL_README"]

logger = logging.getLogger(__name__)

TRIAL_README = """\
SYNTHETIC TRIAL -- NOT PATIENT DATA
===================================
Every CT series in this folder is the lungdamage software phantom
(lungdamage.phantom.make_phantom), written as DICOM by
lungdamage.study.synthetic.make_trial.  Patients, dates and arms are invented.
A treatment effect was planted on purpose: the treated arm keeps a smaller
fraction of its baseline lesion burden at month 4.

Files:
  dicom/<patient>/<date>/   one CT series per scan
  arms.csv                  manifest: patient_id, arm (input of `lungdamage study`)
  truth.csv                 per scan: planted lesion scale and the phantom's true
                            damage/GGO/consolidation % of the total lung

Parameters: {params}

Score and analyse:
  lungdamage batch {root}/dicom --store {root}/results.sqlite
  lungdamage study --store {root}/results.sqlite --manifest {root}/arms.csv --out {root}/study
"""


def make_trial(
    out_dir: str | Path,
    *,
    n_treated: int = 11,
    n_placebo: int = 6,
    visit_days: Sequence[int] = (0, 7, 14, 60, 120),
    extra_days: Mapping[str, Sequence[int]] | None = None,
    matrix: int = 96,
    slice_thickness_mm: float = 5.0,
    n_slices: int | None = None,
    noise_hu: float = 15.0,
    vessels: bool = False,
    baseline_scale: tuple[float, float] = (2.5, 3.5),
    residual_placebo: tuple[float, float] = (0.25, 0.40),
    residual_treated: tuple[float, float] = (0.03, 0.12),
    tau_days: float = 30.0,
    day_jitter: int = 2,
    start_date: str = "2020-04-01",
    truth_samples: int = 2**16,
    seed: int = 0,
) -> pd.DataFrame:
    """Write a synthetic trial (DICOM series, manifest, truth) and return its truth table.

    Parameters
    ----------
    out_dir : path
        Receives ``dicom/``, ``arms.csv``, ``truth.csv`` and ``README.txt``.
    n_treated, n_placebo : int
        Patients per arm (arms are randomised over patient numbers with ``seed``).
    visit_days : sequence of int
        Nominal scan days after baseline; each scan but day 0 is jittered by
        up to ``± day_jitter`` days (keep it inside the protocol windows).
    extra_days : mapping, optional
        ``{patient_id: [day, ...]}`` extra scans on exactly these days (e.g.
        an out-of-window scan), same burden model.
    matrix, slice_thickness_mm, n_slices, noise_hu, vessels : phantom options
        (see :func:`~lungdamage.phantom.make_phantom`); small values keep it fast.
    baseline_scale, residual_placebo, residual_treated : (low, high)
        Uniform ranges of the burden model (module docstring).
    tau_days : float
        Recovery time constant (days).
    start_date : str
        Enrolment date of the first patient (``YYYY-MM-DD``); patient ``k``
        enrols ``3k`` days later.
    truth_samples : int
        Monte-Carlo samples per lung for the phantom truth.
    seed : int

    Returns
    -------
    DataFrame
        One row per scan: ``patient_id, arm, day, planned_visit_day,
        study_date (YYYYMMDD), series_uid, damage_scale, true_damage_pct,
        true_ggo_pct, true_consolidation_pct, true_volume_ml, folder``;
        ``planned_visit_day`` is NaN for ``extra_days`` scans.
    """
    out = Path(out_dir)
    (out / "dicom").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_treated + n_placebo
    arms = np.array(["treated"] * n_treated + ["placebo"] * n_placebo)
    arms = arms[rng.permutation(n)]
    extra_days = dict(extra_days or {})
    pids = _patient_ids(n, extra_days)
    start = pd.Timestamp(start_date)
    phantom_options = dict(matrix=matrix, slice_thickness_mm=slice_thickness_mm, n_slices=n_slices,
                           noise_hu=noise_hu, vessels=vessels, truth_samples=truth_samples)
    rows = []
    for k, pid in enumerate(pids):
        arm = str(arms[k])
        baseline = rng.uniform(*baseline_scale)
        residual = rng.uniform(*(residual_treated if arm == "treated" else residual_placebo))
        base_date = start + pd.Timedelta(days=3 * k)
        scans: list[tuple[int, int | None]] = [
            (int(d) + (int(rng.integers(-day_jitter, day_jitter + 1)) if d else 0), int(d)) for d in visit_days
        ]
        scans += [(int(d), None) for d in extra_days.pop(pid, ())]
        for day, planned in scans:
            scale = baseline * (residual + (1.0 - residual) * math.exp(-day / tau_days))
            date = (base_date + pd.Timedelta(days=day)).strftime("%Y%m%d")
            row = _write_scan(out, pid, date, day, scale, rng, phantom_options, seed)
            rows.append(dict(patient_id=pid, arm=arm, day=day, planned_visit_day=planned, **row))
    truth = pd.DataFrame(rows)
    truth["planned_visit_day"] = truth["planned_visit_day"].astype("Int64")
    truth[["patient_id", "arm"]].drop_duplicates().to_csv(out / "arms.csv", index=False)
    truth.to_csv(out / "truth.csv", index=False)
    params = dict(n_treated=n_treated, n_placebo=n_placebo, visit_days=list(visit_days), matrix=matrix,
                  slice_thickness_mm=slice_thickness_mm, n_slices=n_slices, noise_hu=noise_hu,
                  baseline_scale=baseline_scale, residual_placebo=residual_placebo,
                  residual_treated=residual_treated, tau_days=tau_days, seed=seed)
    (out / "README.txt").write_text(TRIAL_README.format(params=params, root=out), encoding="utf-8")
    return truth


def _patient_ids(n: int, extra_days: Mapping[str, Sequence[int]]) -> list[str]:
    """``SYN01`` ... ``SYNnn``; refuses ``extra_days`` of other patients."""
    from ..errors import InputError

    width = max(2, len(str(n)))
    pids = [f"SYN{k + 1:0{width}d}" for k in range(n)]
    unknown = sorted(set(extra_days) - set(pids))
    if unknown:
        raise InputError(
            f"make_trial: extra_days names unknown patients {unknown}. Potential fix: use ids {pids[0]}..{pids[-1]}."
        )
    return pids


def _write_scan(out: Path, pid: str, date: str, day: int, scale: float, rng: np.random.Generator,
                phantom_options: dict, seed: int) -> dict:
    """Render and write one scan; its truth-table columns from ``study_date`` on."""
    from pydicom.uid import generate_uid

    from ..phantom import make_phantom, write_dicom_series

    ph = make_phantom(damage_scale=scale, seed=int(rng.integers(2**31)), patient_id=pid, study_date=date,
                      **phantom_options)
    uid = generate_uid(entropy_srcs=["lungdamage-synthetic-trial", str(seed), pid, date, str(day)])
    folder = out / "dicom" / pid / date
    write_dicom_series(ph.ct, folder, patient_id=pid, study_date=date, series_uid=uid,
                       series_description="SYNTHETIC phantom (not patient data)")
    t = ph.truth.fractions["total"]
    logger.debug("synthetic scan %s day %d scale %.2f damage %.1f %%", pid, day, scale, t["damage_pct"])
    return dict(
        study_date=date, series_uid=uid, damage_scale=scale, true_damage_pct=t["damage_pct"],
        true_ggo_pct=t["ggo_pct"], true_consolidation_pct=t["consolidation_pct"], true_volume_ml=t["volume_ml"],
        folder=str(folder.relative_to(out)),
    )
