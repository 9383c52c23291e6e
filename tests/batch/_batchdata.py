"""A synthetic scan archive for the batch tests, written once per session with pydicom.

Layout (``ARCHIVE``):

- 4 patients × 3 visits = 12 CT phantom series (64×64, 40 slices of 5 mm);
  each visit has its own lesion burden (``DAMAGE_SCALE``) and noise seed, so
  every series has distinct values.  Patient P04 is stored in a zip archive.
- one MR series (a phantom written as CT, then Modality/SOP class changed):
  the selection policy must exclude it;
- one broken CT series: JPEG-Lossless transfer syntax with garbage pixel
  fragments (the headers are fine, so the catalog selects it; decoding fails);
- one CT series of a water cylinder (no lungs): segmentation must fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1, MRImageStorage

from lungdamage.volume import CTVolume

REPO = Path(__file__).resolve().parents[2]
PATIENTS = ("P01", "P02", "P03", "P04")
VISITS = (("20200401", 1.6), ("20200415", 1.0), ("20200801", 0.4))  # (study date, damage scale)
N_CT_GOOD = len(PATIENTS) * len(VISITS)
MATRIX, N_SLICES, SLICE_MM = 64, 40, 5.0


def _noisy(ct: CTVolume, seed: int, sigma_hu: float = 12.0) -> CTVolume:
    rng = np.random.default_rng(seed)
    hu = ct.hu.astype(np.int32) + np.rint(rng.normal(0.0, sigma_hu, ct.shape)).astype(np.int32)
    return ct.with_array(np.clip(hu, -1024, 3071).astype(np.int16))


def build_archive(root: Path) -> dict:
    """Write the archive; return ``{"good": {uid: (patient, date, scale)}, "mr": uid, "broken": uid, "nolung": uid}``."""
    from lungdamage.phantom import make_phantom, write_dicom_series

    root.mkdir(parents=True, exist_ok=True)
    bases = {
        scale: make_phantom(
            matrix=MATRIX, slice_thickness_mm=SLICE_MM, n_slices=N_SLICES, noise_hu=0.0, vessels=False,
            damage_scale=scale, truth_samples=2**10,
        ).ct
        for _, scale in VISITS
    }
    info: dict = {"good": {}}
    seed = 0
    for pid in PATIENTS:
        for date, scale in VISITS:
            seed += 1
            ct = _noisy(bases[scale], seed)
            files = write_dicom_series(ct, root / pid / date / "CT", patient_id=pid, study_date=date)
            uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
            info["good"][uid] = (pid, date, scale)
    # P04 lives in a zip archive
    zpath = root / "P04.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_STORED) as zf:
        for f in sorted((root / "P04").rglob("*.dcm")):
            zf.write(f, f.relative_to(root).as_posix())
    shutil.rmtree(root / "P04")

    # non-CT: an MR series of patient P01, own study
    mr = _noisy(bases[1.0], 101)
    files = write_dicom_series(mr, root / "P01" / "MR", patient_id="P01", study_date="20200402", series_description="MR")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.SOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.save_as(f)
    info["mr"] = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID

    # broken: valid headers, garbage JPEG Lossless fragments
    br = _noisy(bases[1.0], 202)
    files = write_dicom_series(br, root / "P05" / "20200401", patient_id="P05", study_date="20200401")
    rng = np.random.default_rng(7)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = encapsulate([rng.integers(0, 255, 200, dtype=np.uint8).tobytes()])
        ds["PixelData"].VR = "OB"
        ds.save_as(f, enforce_file_format=True)
    info["broken"] = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID

    # no lungs: a water cylinder in air -> segmentation fails
    k, i, j = np.ogrid[:N_SLICES, :MATRIX, :MATRIX]
    water = np.where((i - MATRIX / 2) ** 2 + (j - MATRIX / 2) ** 2 < (0.4 * MATRIX) ** 2, 0, -1000) + 0 * k
    nolung = bases[1.0].with_array(water.astype(np.int16))
    files = write_dicom_series(nolung, root / "P06" / "20200401", patient_id="P06", study_date="20200401")
    info["nolung"] = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    return info


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("archive")
    return root, build_archive(root)


def run_cli(*args: str, timeout: float = 300.0, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m lungdamage ARGS`` in a fresh process (text output captured)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "lungdamage", *args], capture_output=True, text=True, timeout=timeout, env=env, **kw
    )


@pytest.fixture(scope="session")
def reference_store(archive, tmp_path_factory) -> Path:
    """An uninterrupted run over the archive (in this process), shared by the tests."""
    from lungdamage.batch import BatchParams, InlineEngine, run_batch

    root, _ = archive
    store = tmp_path_factory.mktemp("ref") / "reference.sqlite"
    summary = run_batch(root, store, params=BatchParams(), engine=InlineEngine())
    assert summary.scored == N_CT_GOOD + 2
    return store
