"""A small synthetic thorax with known lesions, written as a real DICOM series.

Used until/alongside :mod:`lungdamage.phantom`: body ellipse (40 HU), two lung
ellipsoids (-860 HU), one ground-glass lesion (-500 HU) in the right lung and
one consolidation (-40 HU) in the left lung, Gaussian noise.  The truth masks
come from the construction, not from any code under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from lungdamage.phantom import write_dicom_series
from lungdamage.volume import CTVolume, ScanMeta

SPACING = (2.5, 1.25, 1.25)  # slice, row, column (mm)
SHAPE = (40, 72, 88)
ORIGIN = (-55.0, -45.0, -120.0)  # LPS of voxel (0, 0, 0); slices go superior (+z)


@dataclass
class Synth:
    hu: np.ndarray  # int16 (slice, row, column)
    lungs: np.ndarray  # uint8, 1 right, 2 left
    ggo: np.ndarray  # bool
    consolidation: np.ndarray  # bool
    centres: dict  # name -> voxel index of the lesion centre


def make_synth(seed: int = 0, noise_hu: float = 12.0) -> Synth:
    k, i, j = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    zmm, ymm, xmm = k * SPACING[0], i * SPACING[1], j * SPACING[2]
    hu = np.full(SHAPE, -1000.0)
    body = ((ymm - 45) / 40) ** 2 + ((xmm - 55) / 52) ** 2 <= 1
    hu[body] = 40
    lungs = np.zeros(SHAPE, np.uint8)
    # column index grows to patient Left (+x): the right lung has the smaller columns
    for code, cx in ((1, 33.0), (2, 77.0)):
        ell = ((zmm - 50) / 38) ** 2 + ((ymm - 45) / 27) ** 2 + ((xmm - cx) / 18) ** 2 <= 1
        lungs[ell] = code
    hu[lungs > 0] = -860
    centres = {"ggo": (24, 36, 26), "consolidation": (16, 36, 62)}

    def ball(c, r_mm):
        distance2_mm2 = (zmm - c[0] * SPACING[0]) ** 2 + (ymm - c[1] * SPACING[1]) ** 2 + (xmm - c[2] * SPACING[2]) ** 2
        return distance2_mm2 <= r_mm**2

    ggo = ball(centres["ggo"], 11.0) & (lungs == 1)
    cons = ball(centres["consolidation"], 9.0) & (lungs == 2)
    hu[ggo] = -500
    hu[cons] = -40
    rng = np.random.default_rng(seed)
    hu += rng.normal(0, noise_hu, SHAPE)
    hu = np.rint(hu).astype(np.int16)
    return Synth(hu, lungs, ggo, cons, centres)


def write_dicom(
    folder: Path, hu: np.ndarray, *, patient_id: str = "SYN-001", study_date: str = "20200415"
) -> list[Path]:
    """One CT file per slice, written by the phantom's writer (the suite's one writer of ordinary CT series)."""
    ct = CTVolume(hu, SPACING, ORIGIN, meta=ScanMeta(source="synthetic"))
    return write_dicom_series(
        ct, folder, patient_id=patient_id, patient_name="Synthetic^Thorax", study_date=study_date,
        study_time="101500", series_number=3, series_description="synthetic thorax", kernel="B30f",
        manufacturer="lungdamage-tests",
    )


@pytest.fixture(scope="session")
def synth() -> Synth:
    return make_synth()


@pytest.fixture(scope="session")
def synth_dicom(tmp_path_factory, synth):
    """(folder, files) of the synthetic thorax as a DICOM series."""
    folder = tmp_path_factory.mktemp("synth_dicom")
    files = write_dicom(folder, synth.hu)
    return folder, files


@pytest.fixture(scope="session")
def synth_analysis(synth_dicom, synth):
    """Analysis of the DICOM series read back by lungdamage, with the truth lungs as regions."""
    from lungdamage.io.dicom import read_series
    from lungdamage.pipeline import Analysis
    from lungdamage.regions import LUNG_CODES, RegionMap
    from lungdamage.score import score

    folder, _ = synth_dicom
    ct = read_series(folder)
    assert ct.shape == SHAPE and np.array_equal(ct.hu, synth.hu)
    regions = RegionMap(synth.lungs, dict(LUNG_CODES), method="truth", region_set="lungs")
    return Analysis(ct, regions, score(ct, regions, "covid"))


def read_header(path: Path) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)
