"""Right / left split where the two lungs touch (anterior and posterior junction)."""

from __future__ import annotations

import numpy as np
import pytest
from _segdata import dice

from lungdamage.segment import segment_lungs

phantom = pytest.importorskip("lungdamage.phantom")


@pytest.fixture(scope="module")
def adult():
    """The adult-lobe phantom with visible fissures: its lungs touch at the
    anterior junction with no tissue between them (truth: ``truth.lungs``)."""
    ph = phantom.make_phantom(slice_thickness_mm=5.0, vessels=False, seed=0, fissures=True, adult_lobes=True)
    return ph, segment_lungs(ph.ct).labels


def test_junction_voxels_go_to_their_own_lung(adult):
    """Where the lungs touch, the cut falls between the two columns flanking
    the contact: before, one whole column of the left lung went right in
    every junction slice (422 voxels, 0.32 % of the lungs; now 193)."""
    ph, labels = adult
    truth = ph.truth.lungs
    wrong = int((((truth == 2) & (labels == 1)) | ((truth == 1) & (labels == 2))).sum())
    both = int(((truth > 0) & (labels > 0)).sum())
    assert wrong / both <= 0.0025, f"{wrong} of {both} lung voxels on the wrong side"
    assert dice(labels == 1, truth == 1) >= 0.99
    assert dice(labels == 2, truth == 2) >= 0.99


def test_subpixel_cut_between_columns():
    """The parabola's vertex through (best - 1, best, best + 1): a profile
    sampled from a parabola with its minimum at 10.3 gives 10.3; a two-column
    tie gives the midpoint; a symmetric minimum and an image edge stay on
    the best column."""
    from lungdamage.segment.lungs import _subpixel_cut

    pos = np.arange(20, dtype=np.float64)
    prof = np.stack([(pos - 10.3) ** 2 + 5.0, np.r_[[9.0] * 9, 2.0, 2.0, [9.0] * 9],
                     np.abs(pos - 7.0), pos])
    best = np.argmin(prof, axis=1)
    np.testing.assert_allclose(_subpixel_cut(prof, best), [10.3, 9.5, 7.0, 0.0])
