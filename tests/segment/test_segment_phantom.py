"""Acceptance of the classical segmentation on the synthetic thorax (known truth)."""

from __future__ import annotations

import numpy as np
import pytest
from _segdata import dice

from lungdamage.segment import segment_lungs

phantom = pytest.importorskip("lungdamage.phantom")


@pytest.fixture(scope="module")
def ph125():
    return phantom.make_phantom(slice_thickness_mm=1.25, vessels=False, seed=0)


@pytest.fixture(scope="module")
def seg125(ph125):
    return segment_lungs(ph125.ct)


def test_lung_dice_per_side(ph125, seg125):
    t = ph125.truth.lungs
    assert dice(seg125.labels == 1, t == 1) >= 0.98
    assert dice(seg125.labels == 2, t == 2) >= 0.98


def test_right_left_never_mixed(ph125, seg125):
    t = ph125.truth.lungs
    # tolerance: the anterior junction line where the phantom lungs touch (measured 0.28 % / 0.71 %)
    assert ((seg125.labels == 2) & (t == 1)).sum() <= 0.01 * (t == 1).sum()
    assert ((seg125.labels == 1) & (t == 2)).sum() <= 0.01 * (t == 2).sum()


def test_chest_wall_consolidation_kept(ph125, seg125):
    cw = np.asarray(ph125.truth.chest_wall_consolidation, bool)
    assert cw.sum() > 0
    assert (seg125.labels[cw] > 0).mean() >= 0.95


def test_trachea_and_main_bronchi_excluded(ph125, seg125):
    aw = np.asarray(ph125.truth.airways, bool)
    assert aw.sum() > 0
    assert (seg125.labels[aw] > 0).mean() <= 0.01


def test_thick_slices(ph125):
    ph = phantom.make_phantom(slice_thickness_mm=5.0, vessels=False, seed=1)
    rm = segment_lungs(ph.ct)
    t = ph.truth.lungs
    assert dice(rm.labels == 1, t == 1) >= 0.95
    assert dice(rm.labels == 2, t == 2) >= 0.95


def test_lobes_approx_dice_on_phantom(ph125, seg125):
    """The original phantom's lobes (small lower lobes) against the original fixed-height model."""
    from lungdamage.segment import approx_lobes

    lobes = approx_lobes(ph125.ct, seg125, lobe_shares=None)
    t = ph125.truth.lobes
    ds = {c: dice(lobes.labels == c, t == c) for c in range(1, 6)}
    assert min(ds.values()) >= 0.7, ds  # measured 0.77 (RML) .. 0.94 (LUL)


@pytest.mark.slow
@pytest.mark.parametrize("matrix, slice_mm, n_slices", [(128, 0.5, None), (96, 0.32, 1000)])
def test_very_thin_slices_and_a_thousand_slices(matrix, slice_mm, n_slices):
    ph = phantom.make_phantom(matrix=matrix, slice_thickness_mm=slice_mm, n_slices=n_slices, vessels=False,
                              truth_samples=2**12)
    assert n_slices is None or ph.ct.shape[0] == n_slices
    regions = segment_lungs(ph.ct)
    for code in (1, 2):
        assert dice(regions.labels == code, ph.truth.lungs == code) >= 0.98


@pytest.fixture(scope="module")
def ph192():
    return phantom.make_phantom(matrix=192, slice_thickness_mm=1.25, vessels=False, seed=0)


def test_patchy_dependent_consolidation_kept(ph192):
    """Dense dependent lung that is not in a concavity of the aerated lung stays in the mask
    (issue 4; the air threshold plus hull fill alone keep 22 % of it)."""
    ct, dep = phantom.dependent_consolidation(ph192, air_fraction=0.25, seed=7)
    air = (ct.hu[dep] < -500).mean()
    assert 0.2 <= air <= 0.3  # as built
    assert dep.sum() > 0.1 * (ph192.truth.lungs > 0).sum()
    rm = segment_lungs(ct)
    t = ph192.truth.lungs
    # measured 0.62 (0.22 without the partly-aerated step): the lowest
    # sections, consolidated throughout, have no aerated lung in their own
    # slice to grow from and stay out (documented)
    assert (rm.labels[dep] > 0).mean() >= 0.5
    assert dice(rm.labels == 1, t == 1) >= 0.965  # measured 0.977 (0.956 without)
    assert dice(rm.labels == 2, t == 2) >= 0.965  # measured 0.977 (0.954 without)
    # little far from the lungs (measured 0.02 % of the lung volume more than
    # 5 mm out); the heart or a chest wall taken in would be several %
    from scipy import ndimage

    far = ndimage.distance_transform_edt(t == 0, sampling=ct.spacing_mm) > 5.0
    assert ((rm.labels > 0) & far).sum() <= 0.005 * (t > 0).sum()


@pytest.fixture(scope="module")
def ph_fissures():
    return phantom.make_phantom(slice_thickness_mm=1.25, vessels=False, seed=0, fissures=True, adult_lobes=True)


def test_lobes_approx_refined_onto_visible_fissures(ph_fissures):
    """Thin-slice fissures visible: the model surfaces move onto them (issue 4)."""
    from lungdamage.segment import approx_lobes

    regions = segment_lungs(ph_fissures.ct)
    t = ph_fissures.truth.lobes
    model = approx_lobes(ph_fissures.ct, regions, refine=False)
    lobes = approx_lobes(ph_fissures.ct, regions)
    before = [dice(model.labels == c, t == c) for c in range(1, 6)]
    after = [dice(lobes.labels == c, t == c) for c in range(1, 6)]
    assert min(before) < 0.95  # the plane model alone (measured 0.933 RML .. 0.984 RLL)
    # measured 0.9872 (RML) .. 0.9973 (RUL); the original phantom's fissures, found by the original
    # model, gave 0.988 .. 0.997
    assert min(after) >= 0.98, after
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    assert lobes.region_set == "lobes-approx"
    assert "refined onto the visible right oblique, right horizontal, left oblique" in lobes.info["lobes"]


def test_lobes_approx_not_refined_without_visible_fissures(ph125, seg125):
    """No fissures drawn: noise and vessel walls must not move the model."""
    from lungdamage.segment import approx_lobes

    model = approx_lobes(ph125.ct, seg125, refine=False)
    lobes = approx_lobes(ph125.ct, seg125)
    assert np.array_equal(model.labels, lobes.labels)
    assert "refined" not in lobes.info["lobes"]


def test_lobes_approx_thin_slab_keeps_the_model(ph_fissures, monkeypatch):
    """Fewer than MIN_REFINE_SLICES slices: too little of a fissure to fit a surface to."""
    from lungdamage.segment import approx_lobes
    from lungdamage.segment import lobes as lobes_mod

    ct = ph_fissures.ct
    n = lobes_mod.MIN_REFINE_SLICES - 1
    k = ct.shape[0] // 2 + int(35.0 / ct.spacing_mm[0])  # where both right fissures cross (z 35-54 mm)
    slab = type(ct)(ct.hu[k:k + n], ct.spacing_mm, tuple(ct.index_to_lps([k, 0, 0])), ct.direction, ct.meta)
    regions = segment_lungs(slab)
    model = approx_lobes(slab, regions, refine=False, allow_partial=True).labels
    assert np.array_equal(approx_lobes(slab, regions, allow_partial=True).labels, model)
    monkeypatch.setattr(lobes_mod, "MIN_REFINE_SLICES", 1)  # the guard is what keeps it
    assert not np.array_equal(approx_lobes(slab, regions, allow_partial=True).labels, model)


def test_single_slices_keep_lung_pieces_by_the_midline():
    """The single-slice airway rule (no vertical chain to follow) takes pure-air sections only:
    a 3 cm² piece of left lung beside the mediastinum (z = -9 .. -11 mm) stays lung."""
    from scipy import ndimage

    ph = phantom.make_phantom(matrix=256, slice_thickness_mm=2.5, vessels=True, seed=0)
    ct, t = ph.ct, ph.truth.lungs
    for k in range(58, 63):
        one = type(ct)(ct.hu[k:k + 1], ct.spacing_mm, tuple(ct.index_to_lps([k, 0, 0])), ct.direction, ct.meta)
        labels = segment_lungs(one).labels[0]
        pieces, n = ndimage.label(t[k] > 0)
        for i in range(1, n + 1):
            piece = pieces == i
            if piece.sum() > 50:
                assert (labels[piece] > 0).mean() >= 0.5, (k, int(piece.sum()))
