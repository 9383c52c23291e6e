"""Foundation acceptance: GGO / consolidation / damage % of the whole pipeline against phantom truth.

Segmentation by the default classical method (not the truth mask), scoring with
the default ``covid`` scheme, vessels switched off (vessels are the topic of the
scoring tests), default noise.  The truth is the continuous lesion volume
fraction of each lung, independent of any voxel counting.
"""

from __future__ import annotations

import numpy as np
import pytest

import lungdamage as ld
from lungdamage.phantom import make_phantom


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def thin():
    ph = make_phantom(matrix=192, slice_thickness_mm=1.25, vessels=False, seed=11)
    return ph, ld.segment_lungs(ph.ct)


@pytest.mark.slow
@pytest.mark.parametrize("side", ["right", "left"])
def test_thin_slices_band_percentages_within_one_point(thin, side):
    ph, regions = thin
    df = ld.score(ph.ct, regions).to_frame().set_index("region")
    truth = ph.truth.fractions[side]
    for measure in ("ggo_pct", "consolidation_pct", "damage_pct"):
        assert df.loc[side, measure] == pytest.approx(truth[measure], abs=1.0), measure
    code = {"right": 1, "left": 2}[side]
    assert _dice(regions.labels == code, ph.truth.lungs == code) >= 0.98


@pytest.mark.slow
def test_thin_slices_keep_chest_wall_consolidation_and_drop_trachea(thin):
    ph, regions = thin
    lung = regions.labels > 0
    wall = ph.truth.chest_wall_consolidation
    assert np.count_nonzero(lung & wall) >= 0.90 * np.count_nonzero(wall)
    assert np.count_nonzero(lung & ph.truth.airways) <= 0.01 * np.count_nonzero(ph.truth.airways)


@pytest.mark.parametrize("seed", [0, 5])
def test_thick_slices_damage_within_two_points(seed):
    ph = make_phantom(matrix=160, slice_thickness_mm=5.0, vessels=False, seed=seed)
    df = ld.analyze(ph.ct).to_frame().set_index("region")
    for side in ("right", "left", "total"):
        assert df.loc[side, "damage_pct"] == pytest.approx(ph.truth.fractions[side]["damage_pct"], abs=2.0), side
