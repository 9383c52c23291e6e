"""Measure segmentation accuracy on the phantom and on real CT with independent references.

Usage::

    python scripts/validate.py DATA_DIR [--out docs/validation.md]

``DATA_DIR`` is the real-data folder (``../shared/realdata``: CIP, lungmask
LIDC slice, TotalSegmentator references, COVID-19-NY-SBU slices).  Prints a
Markdown table and writes it to ``docs/validation.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

#: Yamada et al. 2020 (Respiration 99(7):598, PMC7490509, Table 3): range of each lobe's share of
#: the total lung volume, supine inspiratory CT, 32 healthy adults.
ADULT_RANGE = "adult range 11.8–22.7 / 6.6–13.8 / 22.3–34.0 / 18.1–26.6 / 19.4–28.7 % (Yamada 2020)"


def lobe_pct(labels) -> str:
    """Each lobe's percent of the total lung volume, 'RUL / RML / RLL / LUL / LLL'."""
    counts = np.bincount(np.asarray(labels).ravel(), minlength=6)[1:6].astype(float)
    return " / ".join(f"{100 * c / counts.sum():.1f}" for c in counts)


def dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def _labels(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _slice(path: Path):
    from lungdamage.io.dicom import read_series

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_series(path)


def phantom_rows() -> list[tuple[str, str, str, str]]:
    from lungdamage.phantom import make_phantom
    from lungdamage.segment import approx_lobes, segment_lungs

    rows = []
    for th in (1.25, 5.0):
        # adult_lobes only moves the lobe truth (no fissures drawn: the CT is the same)
        ph = make_phantom(slice_thickness_mm=th, vessels=False, seed=0, adult_lobes=True)
        t0 = time.perf_counter()
        rm = segment_lungs(ph.ct)
        dt = time.perf_counter() - t0
        L, t = rm.labels, ph.truth.lungs
        name = f"phantom {th} mm slices, vessels off ({ph.ct.shape[0]}×{ph.ct.shape[1]}×{ph.ct.shape[2]})"
        rows.append((name, "lung Dice right / left", f"{dice(L == 1, t == 1):.4f} / {dice(L == 2, t == 2):.4f}",
                     "≥ 0.98 (1.25 mm); 5 mm: works (test ≥ 0.95)"))
        cw = np.asarray(ph.truth.chest_wall_consolidation, bool)
        aw = np.asarray(ph.truth.airways, bool)
        rows.append((name, "chest-wall consolidation inside mask", f"{100 * (L[cw] > 0).mean():.1f} %", "≥ 95 %"))
        rows.append((name, "trachea + main bronchi inside mask", f"{100 * (L[aw] > 0).mean():.2f} %", "≤ 1 %"))
        mix_r = ((L == 2) & (t == 1)).sum() / (t == 1).sum()
        mix_l = ((L == 1) & (t == 2)).sum() / (t == 2).sum()
        rows.append((name, "right→left / left→right mislabelled", f"{100 * mix_r:.2f} % / {100 * mix_l:.2f} %",
                     "tiny (test: ≤ 1 %)"))
        lobes = approx_lobes(ph.ct, rm)
        ds = " / ".join(f"{dice(lobes.labels == c, ph.truth.lobes == c):.2f}" for c in range(1, 6))
        rows.append((name, "lobes-approx Dice RUL/RML/RLL/LUL/LLL (adult-lobe truth)", ds, "report"))
        rows.append((name, "lobes-approx % of lung RUL/RML/RLL/LUL/LLL (truth)",
                     f"{lobe_pct(lobes.labels)} ({lobe_pct(ph.truth.lobes)})", ADULT_RANGE))
        rows.append((name, "segmentation time", f"{dt:.2f} s", "report"))
    # visible fissures: the plane model, then refined onto them (adult-lobe phantom; last row: the
    # original phantom and the original fixed-height model, lobe_shares=None)
    for vessels, refine, adult in ((False, False, True), (False, True, True), (True, True, True),
                                   (True, True, False)):
        ph = make_phantom(slice_thickness_mm=1.25, vessels=vessels, seed=0, fissures=True, adult_lobes=adult)
        rm = segment_lungs(ph.ct)
        name = (f"phantom 1.25 mm, visible fissures (1 mm sheets), vessels {'on' if vessels else 'off'}"
                + (", adult lobes" if adult else ", original lobes, original model"))
        t0 = time.perf_counter()
        lobes = approx_lobes(ph.ct, rm, refine=refine, **({} if adult else {"lobe_shares": None}))
        dt = time.perf_counter() - t0
        ds = " / ".join(f"{dice(lobes.labels == c, ph.truth.lobes == c):.3f}" for c in range(1, 6))
        what = "refined onto the fissures" if refine else "plane model only"
        rows.append((name, f"lobes-approx Dice RUL/RML/RLL/LUL/LLL, {what}", f"{ds} ({dt:.2f} s)", "report"))
        if adult and refine and vessels:
            rows.append((name, "lobes-approx % of lung RUL/RML/RLL/LUL/LLL, refined", lobe_pct(lobes.labels),
                         ADULT_RANGE))
    # ARDS-like dependent consolidation with air bronchograms
    from lungdamage.phantom import dependent_consolidation

    ph = make_phantom(matrix=192, slice_thickness_mm=1.25, vessels=False, seed=0)
    name = "phantom 1.25 mm, 192² + dependent consolidation (posterior 40 %, lower 40 % of the lungs)"
    kept, dice_25 = [], ""
    for air in (0.10, 0.15, 0.25, 0.35, 0.45):
        ct, dep = dependent_consolidation(ph, air_fraction=air, seed=7)
        L, t = segment_lungs(ct).labels, ph.truth.lungs
        kept.append(f"{100 * air:.0f} %: {100 * (L[dep] > 0).mean():.0f} %")
        if air == 0.25:
            dice_25 = f"{dice(L == 1, t == 1):.4f} / {dice(L == 2, t == 2):.4f}"
    rows.append((name, "consolidated lung inside mask, by share of air pockets", ", ".join(kept),
                 "report (test at 25 %: ≥ 50 %)"))
    rows.append((name, "lung Dice right / left, 25 % air pockets", dice_25, "test ≥ 0.965"))
    return rows


def real_rows(data: Path) -> list[tuple[str, str, str, str]]:
    from lungdamage import SegmentationError
    from lungdamage.io.images import read_image
    from lungdamage.segment import segment_lungs

    rows = []
    cip = data / "cip"
    ct = read_image(cip / "ct-64.nrrd")
    L = segment_lungs(ct).labels
    whole = (_labels(cip / "wholeLung-64.nrrd") & 255) > 0
    rl = _labels(cip / "leftLungRightLung_on_ct64.nrrd") & 255
    rows.append(("CIP ct-64 (COPDGene 10002K)", "lung Dice vs wholeLung-64", f"{dice(L > 0, whole):.4f}", "≥ 0.97"))
    rows.append(("CIP ct-64 (COPDGene 10002K)", "Dice right / left vs leftLungRightLung",
                 f"{dice(L == 1, rl == 2):.4f} / {dice(L == 2, rl == 3):.4f}", "≥ 0.95 each"))

    lob = segment_lungs(ct, regions="lobes")
    rows.append(("CIP ct-64 (COPDGene 10002K)", "lobes-approx % of lung RUL/RML/RLL/LUL/LLL", lobe_pct(lob.labels),
                 ADULT_RANGE))
    from lungdamage.io.dicom import read_series

    sample = read_series(REPO / "sample_dicom" / "P001" / "2020-04-01_baseline")
    rows.append(("sample_dicom P001 baseline (phantom series)", "lobes-approx % of lung RUL/RML/RLL/LUL/LLL",
                 lobe_pct(segment_lungs(sample, regions="lobes").labels), ADULT_RANGE))

    crop = read_image(cip / "crop_ct_2slices.nrrd")
    lob = segment_lungs(crop, regions="lobes", partial_lobes=True)
    ref = _labels(cip / "crop_ct_interactiveLobeSegmentation.nrrd")[60:62] & 255
    dc = _labels(cip / "crop_ct_2slices_dcnnLungSegmentationLabelmap.nrrd") & 255
    lungs = lob.to_lungs().labels
    rows.append(("CIP crop_ct_2slices (16021S)", "lung Dice right / left vs CIP dcnn",
                 f"{dice(lungs == 1, dc == 2):.4f} / {dice(lungs == 2, dc == 3):.4f}", "report"))
    ds = " / ".join(f"{dice(lob.labels == c, ref == c + 3):.2f}" for c in range(1, 6))
    rows.append(("CIP crop_ct_2slices (16021S)", "lobes-approx Dice RUL/RML/RLL/LUL/LLL (2 slices, --partial-lobes)",
                 ds, "report (refused without --partial-lobes)"))

    lidc = _slice(data / "lungmask_slice" / "dicom" / "0.dcm")
    L = segment_lungs(lidc).labels
    r, lft = int((L == 1).sum()), int((L == 2).sum())
    rows.append(("LIDC slice (lungmask test data)", "area vs R231 right / left",
                 f"{r} ({100 * (r / 32376 - 1):+.1f} %) / {lft} ({100 * (lft / 18268 - 1):+.1f} %)", "±3 %"))

    ts = data / "totalsegmentator"
    ct = read_image(ts / "example_ct_sm.nii.gz")
    rm = segment_lungs(ct, regions="lobes", regions_from=ts / "example_seg_fast.nii.gz",
                       label_codes="totalsegmentator")
    stats = json.loads((ts / "example_seg_fast_statistics.json").read_text())
    key = {"RUL": "lung_upper_lobe_right", "RML": "lung_middle_lobe_right", "RLL": "lung_lower_lobe_right",
           "LUL": "lung_upper_lobe_left", "LLL": "lung_lower_lobe_left"}
    vox = float(np.prod(ct.spacing_mm))
    worst_v, worst_i = 0.0, 0.0
    for code, name in rm.names.items():
        m = rm.labels == code
        worst_v = max(worst_v, abs(m.sum() * vox - stats[key[name]]["volume"]))
        if m.any():
            worst_i = max(worst_i, abs(float(ct.hu[m].mean()) - stats[key[name]]["intensity"]))
    rows.append(("TotalSegmentator example_ct_sm + seg_fast", "max abs(volume − json) / max abs(mean HU − json)",
                 f"{worst_v:.3g} mm³ / {worst_i:.2g} HU", "0 / ~1e-4"))
    try:
        segment_lungs(ct, regions="lobes")
        res = "lobes-approx (wrong)"
    except SegmentationError as exc:
        res = f"{type(exc).__name__} ({str(exc).split(' the ', 1)[1].split(' (', 1)[0]})"
    rows.append(("TotalSegmentator example_ct_sm (lung bases only)", "--regions lobes without a lobe model", res,
                 "LobeCoverageError"))

    covid = data / "covid19_ny_sbu"

    def dmg(p):
        c = _slice(p)
        m = segment_lungs(c).labels > 0
        h = c.hu[m]
        return 100.0 * float(((h >= -700) & (h < 100)).mean())

    for pid, f, what in [("A048383", "19001231-30.dcm", "clear"), ("A048383", "19010410-30.dcm", "clear"),
                         ("A002304", "19001231-076.dcm", "mild GGO"), ("A002304", "19010112-135.dcm", "extensive GGO"),
                         ("A046441", "19001111-045.dcm", "bilateral GGO"),
                         ("A046441", "19010101-23.dcm", "dense consolidation"),
                         ("A072894", "19001203-066.dcm", "left consolidation/effusion"),
                         ("A072894", "19010103-40.dcm", "left consolidation, right GGO")]:
        rows.append((f"COVID-19-NY-SBU {pid} {f}", f"damage % [-700, 100) HU ({what})",
                     f"{dmg(covid / pid / 'axial' / f):.1f} %", "sick > clear"))
    boxes = json.loads((REPO / "tests" / "segment" / "reader_boxes.json").read_text())
    for name, regions in boxes.items():
        if name.startswith("_"):
            continue
        L = segment_lungs(_slice(covid / name)).labels[0]
        inside = []
        for what, (r0, r1, c0, c1) in regions.items():
            box = L[r0:r1, c0:c1]
            inside.append(f"{what} {100 * ((box == (1 if what == 'right' else 2)) if what in ('right', 'left') else (box > 0)).mean():.0f} %")
        rows.append((f"COVID-19-NY-SBU {name.split('/')[0]} {name.split('/')[-1]}",
                     "reader boxes inside mask: dependent consolidation / controls", ", ".join(inside),
                     "consolidation ≥ 90 %, controls 0 %"))
    for f in ("19001231-084.dcm", "19010108-078.dcm"):
        try:
            segment_lungs(_slice(covid / "A058062" / "axial" / f))
            res = "segmented (wrong)"
        except SegmentationError:
            res = "SegmentationError"
        rows.append((f"COVID-19-NY-SBU A058062 {f}", "abdominal slice (no lung)", res, "SegmentationError"))
    return rows


def lesion_rows(data: Path) -> list[tuple[str, str, str, str]]:
    """The lesion measure (issue 13) on the real normal and diseased scans."""
    from lungdamage.io.images import read_image
    from lungdamage.score import score
    from lungdamage.segment import segment_lungs

    def lesion(ct):
        row = score(ct, segment_lungs(ct)).to_frame().set_index("region").loc["total"]
        return f"{row['lesion_pct']:.1f} % (band {row['damage_pct']:.1f} %)"

    rows = [("CIP ct-64 (COPDGene 10002K)", "lesion_pct (no opacities)", lesion(read_image(data / "cip" / "ct-64.nrrd")),
             "≤ 3 %"),
            ("LIDC slice (lungmask test data)", "lesion_pct (normal)",
             lesion(_slice(data / "lungmask_slice" / "dicom" / "0.dcm")), "≤ 3 %")]
    covid = data / "covid19_ny_sbu"
    for pid, f, what, need in [("A048383", "19001231-30.dcm", "clear", "≤ 8 %, < every sick slice"),
                               ("A048383", "19010410-30.dcm", "clear", "≤ 8 %, < every sick slice"),
                               ("A002304", "19001231-076.dcm", "mild GGO", "> every clear slice"),
                               ("A002304", "19010112-135.dcm", "extensive GGO", "> every clear slice"),
                               ("A046441", "19001111-045.dcm", "bilateral GGO", "> every clear slice"),
                               ("A046441", "19010101-23.dcm", "dense consolidation", "> every clear slice"),
                               ("A072894", "19001203-066.dcm", "left consolidation/effusion", "> every clear slice"),
                               ("A072894", "19010103-40.dcm", "left consolidation, right GGO", "> every clear slice")]:
        rows.append((f"COVID-19-NY-SBU {pid} {f}", f"lesion_pct ({what})", lesion(_slice(covid / pid / "axial" / f)),
                     need))
    return rows


def noise_rows() -> list[tuple[str, str, str, str]]:
    """Low-dose (noisy) phantoms and a coarse grid, built as in ``tests/segment/test_segment_noise.py``."""
    sys.path.insert(0, str(REPO / "tests" / "segment"))
    from test_segment_field import resample
    from test_segment_noise import _with_white_noise

    from lungdamage.phantom import make_phantom
    from lungdamage.segment import segment_lungs
    from lungdamage.segment.plausibility import qc_flags

    rows = []
    clean = make_phantom(matrix=256, slice_thickness_mm=2.5, vessels=True, seed=0, noise_hu=0.0)
    cases = [(f"phantom 256² 2.5 mm + white noise SD {sd:.0f} HU (sharp kernel)", clean,
              _with_white_noise(clean.ct, sd), "≥ 0.97 each; airways ≤ 1 %; noisy_image") for sd in (60.0, 120.0)]
    corr = make_phantom(slice_thickness_mm=2.5, vessels=True, seed=0, noise_hu=120.0)
    cases.append(("phantom 128² 2.5 mm, its correlated noise SD 120 HU (about 8 mm grain)", corr, corr.ct,
                  "≥ 0.97 each; airways report; noisy_image"))
    for name, ph, ct, target in cases:
        rm = segment_lungs(ct)
        lab, t = rm.labels, ph.truth.lungs
        cw = np.asarray(ph.truth.chest_wall_consolidation, bool)
        aw = np.asarray(ph.truth.airways, bool)
        rows.append((name, "noise measured (HU); lung Dice right / left; chest-wall consolidation / airways in mask; "
                     "qc_flags",
                     f"{rm.info['noise_hu']:.0f}; {dice(lab == 1, t == 1):.4f} / {dice(lab == 2, t == 2):.4f}; "
                     f"{100 * (lab[cw] > 0).mean():.0f} % / {100 * (lab[aw] > 0).mean():.1f} %; "
                     f"{';'.join(qc_flags(ct, rm)) or '-'}", target))
    ph = make_phantom(matrix=160, slice_thickness_mm=2.5, seed=0)
    ct, t = resample(ph.ct, ph.truth.lungs, spacing_mm=(3.0, 3.0, 3.0))
    lab = segment_lungs(ct).labels
    rind = (lab > 0) & (t == 0) & (ct.hu > -200)
    rows.append(("phantom resampled to 3 mm isotropic", "lung Dice right / left; tissue (> -200 HU) outside the lungs "
                 "in the mask", f"{dice(lab == 1, t == 1):.4f} / {dice(lab == 2, t == 2):.4f}; "
                 f"{100 * rind.sum() / max((lab > 0).sum(), 1):.2f} % of the mask", "≥ 0.97 each; ≤ 0.6 %"))
    return rows


def thin_rows(data: Path) -> list[tuple[str, str, str, str]]:
    """Sub-millimetre slices (pooled by the classical segmentation), as in ``tests/segment/test_segment_noise.py``."""
    sys.path.insert(0, str(REPO / "tests" / "segment"))
    from test_segment_field import resample

    from lungdamage.io.images import read_image
    from lungdamage.phantom import make_phantom
    from lungdamage.segment import segment_lungs

    rows = []
    ph = make_phantom(matrix=128, slice_thickness_mm=0.625, vessels=True, seed=0)
    rm = segment_lungs(ph.ct)
    lab, t = rm.labels, ph.truth.lungs
    rows.append(("phantom 128², 512 slices of 0.625 mm", "slices pooled; lung Dice right / left",
                 f"{rm.info['slices_pooled']}; {dice(lab == 1, t == 1):.4f} / {dice(lab == 2, t == 2):.4f}",
                 "≥ 0.995 each"))
    ct = read_image(data / "cip" / "ct-64.nrrd")
    ref = _labels(data / "cip" / "leftLungRightLung_on_ct64.nrrd") & 255
    truth = np.where(ref == 2, 1, np.where(ref == 3, 2, 0)).astype(np.uint8)
    thin, t = resample(ct, truth, spacing_mm=(0.8, ct.spacing_mm[1], ct.spacing_mm[2]), pad_hu=-1024)
    rm = segment_lungs(thin)
    rows.append(("CIP ct-64 interpolated to 0.8 mm slices", "slices pooled; lung Dice right / left vs CIP",
                 f"{rm.info['slices_pooled']}; {dice(rm.labels == 1, t == 1):.4f} / {dice(rm.labels == 2, t == 2):.4f}",
                 "≥ 0.98 each (unpooled: 0.9863 / 0.9833)"))
    return rows


def field_rows(data: Path) -> list[tuple[str, str, str, str]]:
    """Fields of view, gas below the diaphragm, coarse grids and qc_flags (issue 12).

    The cases are built as in ``tests/segment/test_segment_field.py``.
    """
    sys.path.insert(0, str(REPO / "tests" / "segment"))
    from test_segment_field import circular_field, crop, resample

    from lungdamage.io.images import read_image
    from lungdamage.phantom import make_phantom
    from lungdamage.segment import segment_lungs
    from lungdamage.segment.plausibility import qc_flags

    rows = []

    def both(L, t):
        return f"{dice(L == 1, t == 1):.4f} / {dice(L == 2, t == 2):.4f}"

    ph = make_phantom(matrix=160, slice_thickness_mm=2.5, seed=0)
    c = ph.ct.shape[2]
    for what, cols in (("right half (one-sided crop)", slice(0, c // 2 - 6)),
                       ("left half (one-sided crop)", slice(c // 2 + 6, c)),
                       ("crop at 60 % of the width", slice(0, int(0.6 * c)))):
        ct = crop(ph.ct, (slice(None), slice(None), cols))
        rm = segment_lungs(ct)
        rows.append((f"phantom 160² 2.5 mm, {what}", "lung Dice right / left; qc_flags",
                     f"{both(rm.labels, ph.truth.lungs[:, :, cols])}; {';'.join(qc_flags(ct, rm)) or '-'}",
                     "≥ 0.97 per present lung"))
    for pad in (-2048, -1024):
        ct, t = circular_field(ph.ct, ph.truth.lungs, 0.36, pad)
        rm = segment_lungs(ct)
        rows.append((f"phantom 160², reconstruction circle r = 0.36 FOV, padding {pad}", "lung Dice right / left",
                     both(rm.labels, t), "≥ 0.97 each"))
    ph192 = make_phantom(matrix=192, slice_thickness_mm=1.25, seed=0)
    ct, t = resample(*circular_field(ph192.ct, ph192.truth.lungs, 0.36, -3024))
    rm = segment_lungs(ct)
    rows.append(("phantom circle resampled to 3 mm / 5 mm (linear, undershoot < -1024)", "lung Dice right / left",
                 both(rm.labels, t), "≥ 0.97 each"))
    g = make_phantom(matrix=128, slice_thickness_mm=5.0, seed=0, stomach_gas=True, colon_gas=True)
    z = g.ct.index_to_lps(np.c_[np.arange(g.ct.shape[0]), np.zeros((g.ct.shape[0], 2))])[:, 2]
    sl = (slice(0, int((z < -60.0).sum())), slice(None), slice(None))
    rm = segment_lungs(crop(g.ct, sl))
    gas = g.truth.gas_below_diaphragm[sl]
    rows.append(("phantom 5 mm bases + stomach and colon gas (abdomen-first)", "lung Dice right / left; gas voxels in mask",
                 f"{both(rm.labels, g.truth.lungs[sl])}; {int((rm.labels[gas] > 0).sum())} of {int(gas.sum())}",
                 "≥ 0.97 each; 0"))
    rows += noise_rows()

    ct64 = read_image(data / "cip" / "ct-64.nrrd")
    ref = _labels(data / "cip" / "leftLungRightLung_on_ct64.nrrd") & 255
    truth = np.where(ref == 2, 1, np.where(ref == 3, 2, 0)).astype(np.uint8)
    rm = segment_lungs(ct64)
    rows.append(("CIP ct-64", "qc_flags", ";".join(qc_flags(ct64, rm)) or "- (none)", "none"))
    for what, cols in (("right side (columns 0-29)", slice(0, 30)), ("left side (columns 34-63)", slice(34, 64))):
        ct = crop(ct64, (slice(None), slice(None), cols))
        rm = segment_lungs(ct)
        rows.append((f"CIP ct-64 one-sided crop, {what}", "lung Dice right / left vs CIP",
                     both(rm.labels, truth[:, :, cols]), "≥ 0.95 for the present lung, other absent"))
    for r in (0.40, 0.36):
        ct, t = circular_field(ct64, truth, r)
        rm = segment_lungs(ct)
        rows.append((f"CIP ct-64, reconstruction circle r = {r:.2f} FOV", "lung Dice right / left vs CIP",
                     both(rm.labels, t), "≥ 0.95 each" if r == 0.40 else "report"))
    ts = data / "totalsegmentator"
    ct = read_image(ts / "example_ct_sm.nii.gz")
    lab = _labels(ts / "example_seg.nii.gz")
    lung = (lab >= 10) & (lab <= 14)
    m = segment_lungs(ct).labels > 0
    bowel = int((m & np.isin(lab, [6, 18, 19, 20])).sum())
    rows.append(("TotalSegmentator example_ct_sm (lung bases, upper abdomen)",
                 "lung Dice vs lobes 10-14; mask voxels in stomach/bowel labels",
                 f"{dice(m, lung):.4f}; {bowel}", "≥ 0.95; 0"))
    return rows


REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "validation.md")
    ap.add_argument("--readme", type=Path, default=REPO / "README.md", help="README whose validation section is refreshed")
    args = ap.parse_args(argv)
    rows = (phantom_rows() + real_rows(args.data_dir) + lesion_rows(args.data_dir) + field_rows(args.data_dir)
            + thin_rows(args.data_dir))
    lines = [
        "# Segmentation validation",
        "",
        "Written by `scripts/validate.py` (classical `threshold` method unless stated).",
        "",
        "| data | measure | value | requirement |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        "## Lobar volume reference (lobes-approx)",
        "",
        "`lobes-approx` places its fissure planes so each lobe has the adult share of its lung, and the",
        "rows above check every lobe against the observed adult range, from Yamada Y, Yamada M, Yokoyama Y,",
        "et al. *Differences in lung and lobe volumes between supine and standing positions scanned with",
        "conventional and newly developed 320-detector-row upright CT: intra-individual comparison.*",
        "Respiration 2020;99(7):598, doi:10.1159/000507265 (PMC7490509), Table 3: 32 asymptomatic",
        "volunteers, inspiratory CT, supine, percent of the total lung volume, mean ± SD (range):",
        "",
        "| lobe | mean ± SD | range |",
        "|---|---|---|",
        "| RUL | 17.9 ± 2.4 | 11.8–22.7 |",
        "| RML | 9.3 ± 1.6 | 6.6–13.8 |",
        "| RLL | 26.5 ± 2.6 | 22.3–34.0 |",
        "| LUL (with lingula) | 23.1 ± 2.1 | 18.1–26.6 |",
        "| LLL | 23.2 ± 2.4 | 19.4–28.7 |",
        "| right / left lung | 53.6 ± 1.5 / 46.4 ± 1.5 | 50.6–57.4 / 42.6–49.4 |",
        "",
        "The `% of lung` rows are percent of the segmented total lung volume; the model matches the means",
        "within each lung, so a lobe can leave its range only through the right/left split of the lung mask",
        "or where a visible fissure moves it.  The phantom's original fissures (`make_phantom()` default)",
        "give small lower lobes (RLL 10.5 %, LLL 12.3 %); `make_phantom(adult_lobes=True)` places them at",
        "adult shares and is the lobe truth used above.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    update_readme(args.readme, "\n".join(lines[4:6 + len(rows)]).strip())  # the table only
    return 0


def update_readme(readme: Path, table: str) -> None:
    """Replace the table between the README's validation-table markers (if present)."""
    if not readme.is_file():
        return
    text = readme.read_text()
    begin, end = "<!-- validation-table -->", "<!-- /validation-table -->"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        readme.write_text(f"{head}{begin}\n{table}\n{end}{rest.split(end, 1)[1]}")


if __name__ == "__main__":
    sys.exit(main())
