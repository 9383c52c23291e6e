"""QC montage with the lesion measure: lesion voxels in damage colours, excluded band voxels distinct."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from lungdamage import CTVolume, RegionMap
from lungdamage.report.qc import (
    EXCLUDED_OTHER_RGB,
    EXCLUDED_TUBE_RGB,
    render_qc,
    voxel_to_pixel,
)
from lungdamage.score import score


def _volume():
    shape, spacing = (40, 96, 96), (1.5, 1.0, 1.0)
    Z, Y, X = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing, strict=True)), indexing="ij", sparse=True)
    hu = np.full(shape, -1000.0, np.float32)
    body = (Y - 48) ** 2 / 46**2 + (X - 48) ** 2 / 46**2 <= 1
    hu[np.broadcast_to(body, shape)] = 40
    lung = np.broadcast_to(((Y - 48) ** 2 + (X - 30) ** 2 <= 20**2) | ((Y - 48) ** 2 + (X - 70) ** 2 <= 20**2), shape)
    lung = lung & (Z > 3) & (Z < 55)
    hu[lung] = -850
    vessel = lung & ((Y - 48) ** 2 + (X - 70) ** 2 <= 1.6**2)  # through-plane vessel, left lung
    ggo = lung & ((Z - 30) ** 2 + (Y - 48) ** 2 + (X - 28) ** 2 <= 10**2)  # right lung
    hu[vessel] = 40
    hu[ggo] = -550
    hu += np.random.default_rng(0).normal(0, 10, shape).astype(np.float32)
    labels = np.where(lung, np.where(X < 48, 1, 2), 0).astype(np.uint8)
    ct = CTVolume(np.rint(hu).astype(np.int16), spacing)
    return ct, RegionMap(labels, {1: "right", 2: "left"}), vessel, ggo


def test_lesion_and_excluded_voxels_have_distinct_colours(tmp_path):
    ct, regions, vessel, ggo = _volume()
    result = score(ct, regions)
    files = render_qc(ct, regions, result, tmp_path / "qc.png", fractions=(0.5,), coronal=False)
    side = json.loads(files["qc_json"].read_text())
    assert side["lesion_overlay"] and side["excluded_colors"]["tubular"] == list(EXCLUDED_TUBE_RGB)
    with Image.open(files["qc_png"]) as im:
        png = np.asarray(im.convert("RGB")).astype(int)
    panel = side["panels"][0]
    k = panel["index"]
    seen = {"vessel": [], "ggo": []}
    for name, mask in (("vessel", vessel), ("ggo", ggo)):
        for v in np.argwhere(mask[k])[:200]:
            px = voxel_to_pixel(panel, (k, *v))
            if px is not None:
                seen[name].append(png[px])
    ggo_px, ves_px = np.array(seen["ggo"]), np.array(seen["vessel"])
    assert len(ggo_px) > 50 and len(ves_px) > 3
    # GGO lesion: the damage yellow (red and green over blue)
    assert ((ggo_px[:, 0] - ggo_px[:, 2] > 60) & (ggo_px[:, 1] - ggo_px[:, 2] > 50)).mean() >= 0.95
    # the vessel is in the consolidation band but not lesion: a cool colour (blue over red), not damage red
    assert (ves_px[:, 2] - ves_px[:, 0] > 40).mean() >= 0.9, ves_px[:10]
    assert EXCLUDED_OTHER_RGB != EXCLUDED_TUBE_RGB
    # without the lesion overlay the vessel is drawn as consolidation (red): the overlay is what differs
    plain = render_qc(ct, regions, result, tmp_path / "plain.png", fractions=(0.5,), coronal=False, lesions=False)
    with Image.open(plain["qc_png"]) as im:
        png2 = np.asarray(im.convert("RGB")).astype(int)
    red = [png2[voxel_to_pixel(panel, (k, *v))] for v in np.argwhere(vessel[k])[:50]]
    assert np.mean([r[0] - r[2] > 60 for r in red]) >= 0.9


def _ggo_yellow(files, ggo) -> float:
    side = json.loads(files["qc_json"].read_text())
    panel = side["panels"][0]
    k = panel["index"]
    with Image.open(files["qc_png"]) as im:
        png = np.asarray(im.convert("RGB")).astype(int)
    px = np.array([png[q] for v in np.argwhere(ggo[k])[:200] if (q := voxel_to_pixel(panel, (k, *v))) is not None])
    return float(((px[:, 0] - px[:, 2] > 60) & (px[:, 1] - px[:, 2] > 50)).mean())


def test_carried_lesion_map_is_drawn_without_recomputing(tmp_path):
    import dataclasses

    from lungdamage.score import scan_lesions

    ct, regions, _vessel, ggo = _volume()
    lm = scan_lesions(ct, regions)
    result = score(ct, regions, lesion_map=lm)
    assert result.to_frame().set_index("region").loc["total", "lesion_pct"] > 0
    kw = {"fractions": (0.5,), "coronal": False}
    carried = render_qc(ct, regions, result, tmp_path / "carried.png", lesion_map=lm, **kw)
    fallback = render_qc(ct, regions, result, tmp_path / "fallback.png", **kw)
    with Image.open(carried["qc_png"]) as a, Image.open(fallback["qc_png"]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # the same picture as the recomputed overlay
    assert _ggo_yellow(carried, ggo) >= 0.95
    # the carried map is what is drawn: a map with no lesion voxels leaves the GGO uncoloured as lesion
    emptied = dataclasses.replace(lm, lesion=np.zeros_like(lm.lesion))
    none = render_qc(ct, regions, result, tmp_path / "none.png", lesion_map=emptied, **kw)
    assert _ggo_yellow(none, ggo) <= 0.05
    # ... unless it was made with other parameters than the result's: then it is recomputed
    other = dataclasses.replace(emptied, params=dataclasses.replace(lm.params, min_fraction=0.6))
    again = render_qc(ct, regions, result, tmp_path / "again.png", lesion_map=other, **kw)
    assert _ggo_yellow(again, ggo) >= 0.95


def test_analysis_keeps_the_lesion_map_it_scored_with():
    from lungdamage.pipeline import analyze_scan

    ct, _regions, _vessel, ggo = _volume()
    analysis = analyze_scan(ct)
    lm = analysis.lesions
    assert lm is not None and lm.params.to_dict() == analysis.result.params["lesion"]
    lung = analysis.regions.lung_mask
    # the map is the one the lesion columns were counted from
    total = analysis.result.to_frame().set_index("region").loc["total"]
    assert np.isclose(total["lesion_pct"], 100.0 * lm.lesion.sum() / lung.sum())
    assert lm.lesion[ggo & lung].mean() >= 0.9
