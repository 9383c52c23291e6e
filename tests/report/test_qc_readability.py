"""QC montage readability (issue 15, item 12): outline width, lobe palette, single-slice layout."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, rgb2lab

from lungdamage.regions import LUNG_CODES, RegionMap
from lungdamage.report._colors import DAMAGE_COLORS, region_color
from lungdamage.report.qc import plan_panels, render_montage, render_qc
from lungdamage.score import score
from lungdamage.volume import CTVolume


def _lab(rgb) -> np.ndarray:
    return rgb2lab(np.asarray([[rgb]], float) / 255.0)[0, 0]


def _delta_e(a, b) -> float:
    return float(deltaE_ciede2000(_lab(a), _lab(b)))


@pytest.mark.parametrize(
    "names, across_lungs",
    [(("RUL", "RML", "RLL", "LUL", "LLL"), 24.0), (("RUZ", "RMZ", "RLZ", "LUZ", "LMZ", "LLZ"), 15.0)],
)
def test_region_colours_are_told_apart(names, across_lungs):
    """Regions of one lung differ by CIEDE2000 >= 30 (today's lobes: 22), every region from the damage
    colours by >= 25; across lungs >= 24 for the five lobes (six bright zone colours cannot all be)."""
    for a, b in itertools.combinations(names, 2):
        same_lung = a[0] == b[0]
        de = _delta_e(region_color(a), region_color(b))
        assert de >= (30.0 if same_lung else across_lungs), (a, b, round(de, 1))
    for n in names:
        for d in DAMAGE_COLORS[:3]:  # GGO yellow, consolidation red, third band orange
            assert _delta_e(region_color(n), d) >= 25.0, (n, d)


def _runs(row: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean array."""
    padded = np.concatenate([[False], row, [False]]).astype(np.int8)
    d = np.diff(padded)
    return list(np.flatnonzero(d == -1) - np.flatnonzero(d == 1))


def test_outlines_are_at_least_two_pixels_wide(synth_analysis, synth):
    a = synth_analysis
    panels = plan_panels(a.ct, a.regions, coronal=False)
    canvas, placed, _ = render_montage(a.ct, a.regions, a.result, panels)
    p = placed[2]  # the middle axial panel
    y0, x0, h, w = p.box
    img = canvas[y0: y0 + h, x0: x0 + w].astype(int)
    right = np.all(img == np.asarray(region_color("right")), axis=-1)
    # rows of the panel crossing the right lung's widest part: the outline is crossed twice per row
    rows = [r for r in range(h) if right[r].sum() >= 2]
    assert len(rows) >= 20
    widths = [min(_runs(right[r])) for r in rows[len(rows) // 3: 2 * len(rows) // 3]]
    assert min(widths) >= 2, widths
    # the outline never covers the lung interior: a pixel 6 voxels inside the lung edge keeps its grey
    assert (right.sum(axis=1) < 0.3 * w).all()


def _single_slice(a, k: int) -> tuple[CTVolume, RegionMap]:
    ct = a.ct
    one = CTVolume(ct.hu[k: k + 1].copy(), ct.spacing_mm, tuple(ct.index_to_lps(np.array([k, 0, 0]))),
                   ct.direction, ct.meta)
    return one, RegionMap(a.regions.labels[k: k + 1].copy(), dict(LUNG_CODES), method="truth", region_set="lungs")


def test_single_slice_gives_one_large_panel(synth_analysis, tmp_path):
    ct, regions = _single_slice(synth_analysis, 20)
    files = render_qc(ct, regions, score(ct, regions), tmp_path / "one.png")
    side = json.loads(files["qc_json"].read_text())
    assert [p["kind"] for p in side["panels"]] == ["axial"]
    _, _, h, w = side["panels"][0]["box"]
    assert max(h, w) >= 600  # twice the usual 320 px panel
    assert side["panels"][0]["index"] == 0


def test_thin_slab_shows_each_slice_once_and_no_coronal_strip(synth_analysis):
    a = synth_analysis
    ct = CTVolume(a.ct.hu[19:21].copy(), a.ct.spacing_mm, tuple(a.ct.index_to_lps(np.array([19, 0, 0]))),
                  a.ct.direction, a.ct.meta)
    regions = RegionMap(a.regions.labels[19:21].copy(), dict(LUNG_CODES), method="truth", region_set="lungs")
    panels = plan_panels(ct, regions)
    assert sorted(p.index for p in panels) == [0, 1] and all(p.kind == "axial" for p in panels)
    # a full volume keeps the 5 axial planes and the coronal one
    full = plan_panels(a.ct, a.regions)
    assert [p.kind for p in full].count("axial") == 5 and [p.kind for p in full].count("coronal") == 1
