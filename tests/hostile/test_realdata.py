"""The new input checks of issue 14 hold on every real scan in ``../shared/realdata``.

Every real DICOM series is catalogued without a problem (no file reported
unreadable) and read without error (orthonormal orientation, finite rescale,
declared sizes within the files and the voxel budget, JPEG 2000 codestreams
matching Rows x Columns); every real NIfTI/NRRD volume passes the size,
truncation and non-finite checks.  Skipped when the folder is absent.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent"),
]

DICOM_FOLDERS = ["cip/ct-64Dicom", "lungmask_slice/dicom", "totalsegmentator/example_ct_dicom", "covid19_ny_sbu"]
IMAGES = ["cip/ct-64.nrrd", "cip/crop_ct_2slices.nrrd", "totalsegmentator/example_ct_sm.nii.gz",
          "totalsegmentator/pulmonary_report/ct_cropped.nii.gz"]


@pytest.mark.parametrize("folder", DICOM_FOLDERS)
def test_real_dicom_passes_the_new_checks(folder):
    from lungdamage.io.catalog import scan
    from lungdamage.io.dicom import read_series

    root = REALDATA / folder
    if not root.exists():
        pytest.skip(f"{folder} absent")
    summary: dict = {}
    series = scan(root, summary=summary)
    assert summary["problems"] == (), summary["problems"]
    assert series
    for s in series:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ct = read_series(s)
        assert ct.hu.dtype == np.int16 and ct.hu.size == s.n_slices * s.rows * s.columns
        assert not any("could not be read" in w or "chars cut" in w for w in ct.meta.warnings)


@pytest.mark.parametrize("name", IMAGES)
def test_real_images_pass_the_new_checks(name):
    from lungdamage.io.images import read_image

    path = REALDATA / name
    if not path.exists():
        pytest.skip(f"{name} absent")
    ct = read_image(path)
    assert ct.hu.size > 0
