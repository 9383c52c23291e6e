"""Shared helpers for the segmentation tests (real data paths, loaders, Dice)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
needs_realdata = [
    pytest.mark.realdata,
    pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata not present"),
]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def read_dicom_slice(path: Path):
    """One DICOM file as a CTVolume via the project's reader (its one-slice warning is expected)."""
    from lungdamage.io.dicom import read_series

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_series(path)


def read_labels(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
