"""QC montage: lesion colours land exactly on the truth lesions; radiological orientation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from lungdamage.regions import RegionMap
from lungdamage.report.qc import plan_panels, render_montage, render_qc, voxel_to_pixel
from lungdamage.score import score
from lungdamage.volume import CTVolume


def classify(rgb) -> str:
    """'ggo' (yellow), 'consolidation' (red), 'grey' or 'other' from the channel differences.

    Overlays are alpha-blended over grey, so the channel *differences* identify
    the colour whatever the underlying grey level.
    """
    r, g, b = (int(v) for v in rgb[:3])
    if r - b > 60 and g - b > 50 and abs(r - g) < 40:
        return "ggo"
    if r - g > 60 and r - b > 60 and abs(g - b) < 15:
        return "consolidation"
    if max(r, g, b) - min(r, g, b) <= 3:
        return "grey"
    return "other"


def load_png(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def sample(png, sidecar, mask, *, limit=400):
    """Classes of the PNG pixels showing voxels of ``mask`` on every panel plane."""
    out = []
    for p in sidecar["panels"]:
        vox = np.argwhere(mask)
        vox = vox[vox[:, p["fixed_axis"]] == p["index"]]
        for v in vox[: limit]:
            px = voxel_to_pixel(p, v)
            if px is not None:
                out.append(classify(png[px]))
    return out


def test_qc_colours_match_truth_lesions(tmp_path, synth_analysis, synth):
    a = synth_analysis
    files = render_qc(a.ct, a.regions, a.result, tmp_path / "qc.png", thumbnail=tmp_path / "t.png")
    png = load_png(files["qc_png"])
    side = json.loads(files["qc_json"].read_text())
    assert list(png.shape[:2]) == side["size"]
    # lesion interiors (1 voxel from the edge: outlines and nearest-neighbour edges excluded)
    ggo = ndimage.binary_erosion(synth.ggo, iterations=1)
    cons = ndimage.binary_erosion(synth.consolidation, iterations=1)
    lesions = ndimage.binary_dilation(synth.ggo | synth.consolidation, iterations=2)
    healthy = ndimage.binary_erosion(synth.lungs > 0, iterations=2) & ~lesions
    got = {name: sample(png, side, m) for name, m in (("ggo", ggo), ("consolidation", cons), ("grey", healthy))}
    for name, classes in got.items():
        assert len(classes) >= 30, f"too few {name} voxels on the montage planes ({len(classes)})"
        share = classes.count(name) / len(classes)
        assert share >= 0.99, f"{name}: {share:.3f} of pixels coloured as {name}; seen {set(classes)}"
    # the lesion centres themselves, on every panel that passes through them
    for name, centre in synth.centres.items():
        hits = [voxel_to_pixel(p, centre) for p in side["panels"]]
        hits = [h for h in hits if h is not None]
        assert hits, f"{name} centre {centre} on no panel"
        assert all(classify(png[h]) == name for h in hits), [png[h] for h in hits]
    assert load_png(files["thumbnail"]).shape[1] <= 160


def test_qc_radiological_orientation(synth_analysis):
    """Axial: anterior (low row index, +y = posterior) at top, patient right (low column, +x = left) at
    image left; coronal: superior (high slice index here) at top."""
    a = synth_analysis
    assert a.ct.orientation == "SPL"
    panels = plan_panels(a.ct, a.regions)
    axial = [p for p in panels if p.kind == "axial"]
    coronal = [p for p in panels if p.kind == "coronal"]
    assert len(axial) == 5 and len(coronal) == 1
    for p in axial:
        assert p.fixed_axis == 0 and p.row_axis == 1 and p.col_axis == 2
        assert np.all(np.diff(p.row_index) >= 0) and np.all(np.diff(p.col_index) >= 0)
    c = coronal[0]
    assert c.fixed_axis == 1 and c.row_axis == 0 and c.col_axis == 2
    assert np.all(np.diff(c.row_index) <= 0)
    # slices at fractions of the lung height, apex first: decreasing slice index (slice index grows superiorly)
    idx = [p.index for p in axial]
    assert idx == sorted(idx, reverse=True)
    lung_slices = np.flatnonzero((a.regions.labels > 0).any(axis=(1, 2)))
    assert lung_slices[0] < idx[-1] < idx[0] < lung_slices[-1]
    # the right lung (code 1) is displayed left of the left lung
    lab = axial[2].take(a.regions.labels)
    assert np.argwhere(lab == 1)[:, 1].mean() < np.argwhere(lab == 2)[:, 1].mean()


def _flip(ct: CTVolume, regions: RegionMap, axes):
    """Same patient, array stored with ``axes`` reversed (geometry updated)."""
    sl = tuple(slice(None, None, -1) if a in axes else slice(None) for a in range(3))
    corner = [ct.shape[a] - 1 if a in axes else 0 for a in range(3)]
    origin = ct.index_to_lps(np.array(corner))
    direction = ct.direction.copy()
    for a in axes:
        direction[:, a] *= -1
    ct2 = CTVolume(ct.hu[sl].copy(), ct.spacing_mm, tuple(origin), direction, ct.meta)
    return ct2, dataclasses.replace(regions, labels=regions.labels[sl].copy())


@pytest.mark.parametrize("axes", [(0,), (2,), (0, 1, 2)])
def test_montage_invariant_to_storage_order(synth_analysis, axes):
    """Feet-first / mirrored storage displays identically: the montage follows patient axes, not array axes."""
    a = synth_analysis
    ref, _, _ = render_montage(a.ct, a.regions, a.result, plan_panels(a.ct, a.regions))
    ct2, reg2 = _flip(a.ct, a.regions, axes)
    res2 = score(ct2, reg2)
    got, _, _ = render_montage(ct2, reg2, res2, plan_panels(ct2, reg2))
    assert np.array_equal(ref, got)


def test_qc_on_phantom_lesion_centres(tmp_path):
    """Phantom lesions (analytic centres in LPS mm): axial planes through each centre show its colour there,
    and a healthy lung location on the same plane is grey."""
    from lungdamage.phantom import make_phantom

    ph = make_phantom(matrix=96, slice_thickness_mm=5.0, noise_hu=15, vessels=False, truth_samples=2**12)
    ct, truth = ph.ct, ph.truth
    regions = truth.lobe_regions()
    result = score(ct, regions)
    lps_to_index = np.linalg.inv(ct.direction * np.asarray(ct.spacing_mm))
    centres = {}
    for les in truth.lesions:
        k = np.rint(lps_to_index @ (np.asarray(les.center_mm) - np.asarray(ct.origin_lps))).astype(int)
        if all(0 <= k[i] < ct.shape[i] for i in range(3)) and truth.lungs[tuple(k)]:
            centres.setdefault(int(k[0]), []).append((les.kind, tuple(int(v) for v in k)))
    assert len(centres) >= 4
    lung_z = np.flatnonzero(truth.lungs.any(axis=(1, 2)))
    apex, base = lung_z[-1], lung_z[0]
    fractions = [(apex - z) / (apex - base) for z in sorted(centres)]
    files = render_qc(ct, regions, result, tmp_path / "ph.png", fractions=fractions, coronal=False)
    png = load_png(files["qc_png"])
    side = json.loads(files["qc_json"].read_text())
    assert sorted(p["index"] for p in side["panels"]) == sorted(centres)
    far = ndimage.distance_transform_edt(~(truth.ggo | truth.consolidation), sampling=ct.spacing_mm) > 15
    healthy = ndimage.binary_erosion(truth.lungs > 0, iterations=2) & far
    n_checked = 0
    for p in side["panels"]:
        for kind, k in centres[p["index"]]:
            assert classify(png[voxel_to_pixel(p, k)]) == kind, (kind, k)
            n_checked += 1
        h = np.argwhere(healthy[p["index"]])
        assert h.size, "no healthy lung on this plane"
        v = (p["index"], *h[len(h) // 2])
        assert classify(png[voxel_to_pixel(p, v)]) == "grey"
    assert n_checked == len(truth.lesions)
