"""Tests of the synthetic thorax phantom and its DICOM writer.

The band-count checks count voxels with numpy directly (independently of
``lungdamage.score``): inside the true lung mask, HU in [-700, -300) is GGO
and [-300, 100) consolidation, compared with the truth fractions that the
phantom computes from its continuous geometry.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from lungdamage.errors import InputError
from lungdamage.phantom import (
    COVERAGE_MM,
    FOV_MM,
    Lesion,
    default_n_slices,
    make_phantom,
    write_dicom_series,
)
from lungdamage.regions import LOBE_CODES, LUNG_CODES

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom"


def band_percents(hu: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """GGO / consolidation / damage % of ``mask`` by half-open HU bands."""
    h = hu[mask].astype(np.int32)
    ggo = np.count_nonzero((h >= -700) & (h < -300))
    cons = np.count_nonzero((h >= -300) & (h < 100))
    return {
        "ggo_pct": 100.0 * ggo / h.size,
        "consolidation_pct": 100.0 * cons / h.size,
        "damage_pct": 100.0 * (ggo + cons) / h.size,
    }


@pytest.fixture(scope="module")
def thin():
    """1.25 mm slices, default noise, no vessels: the accuracy phantom."""
    return make_phantom(matrix=160, slice_thickness_mm=1.25, vessels=False, seed=1)


@pytest.fixture(scope="module")
def thick():
    return make_phantom(matrix=128, slice_thickness_mm=5.0, vessels=False, seed=2)


@pytest.fixture(scope="module")
def clean():
    """Noise-free, with vessels, for tissue HU checks."""
    return make_phantom(matrix=128, slice_thickness_mm=2.5, noise_hu=0.0, vessels=True, seed=3)


# -- truth vs counting -----------------------------------------------------------
@pytest.mark.parametrize("side,code", [("right", 1), ("left", 2)])
def test_band_counts_match_truth_at_1p25mm(thin, side, code):
    got = band_percents(thin.ct.hu, thin.truth.lungs == code)
    truth = thin.truth.fractions[side]
    assert truth["ggo_pct"] > 3 and truth["consolidation_pct"] > 0.5  # something to measure
    for key in ("ggo_pct", "consolidation_pct", "damage_pct"):
        assert got[key] == pytest.approx(truth[key], abs=1.0), key


@pytest.mark.parametrize("side,code", [("right", 1), ("left", 2)])
def test_band_counts_match_truth_at_5mm(thick, side, code):
    got = band_percents(thick.ct.hu, thick.truth.lungs == code)
    assert got["damage_pct"] == pytest.approx(thick.truth.fractions[side]["damage_pct"], abs=2.0)


def test_total_fraction_is_volume_weighted(thin):
    fr = thin.truth.fractions
    for key in ("ggo_ml", "consolidation_ml", "volume_ml"):
        assert fr["total"][key] == pytest.approx(fr["right"][key] + fr["left"][key])
    assert fr["total"]["damage_pct"] == pytest.approx(
        100 * (fr["total"]["ggo_ml"] + fr["total"]["consolidation_ml"]) / fr["total"]["volume_ml"]
    )


def test_voxel_masks_agree_with_continuous_truth(thin):
    t = thin.truth
    vox_ml = thin.ct.voxel_volume_ml
    for code, side in LUNG_CODES.items():
        lung = t.lungs == code
        fr = t.fractions[side]
        assert 1800 < fr["volume_ml"] < 3500  # adult lung
        assert np.count_nonzero(lung) * vox_ml == pytest.approx(fr["volume_ml"], rel=0.01)
        assert 100 * np.count_nonzero(t.ggo & lung) / lung.sum() == pytest.approx(fr["ggo_pct"], abs=0.3)
        assert 100 * np.count_nonzero(t.consolidation & lung) / lung.sum() == pytest.approx(
            fr["consolidation_pct"], abs=0.3
        )


def test_truth_fractions_do_not_depend_on_the_grid():
    a = make_phantom(matrix=96, slice_thickness_mm=5.0, noise_hu=0, vessels=False)
    b = make_phantom(matrix=112, slice_thickness_mm=2.5, noise_hu=0, vessels=False)
    for side in ("right", "left"):
        assert a.truth.fractions[side]["volume_ml"] == pytest.approx(b.truth.fractions[side]["volume_ml"], rel=1e-3)
        assert a.truth.fractions[side]["damage_pct"] == pytest.approx(
            b.truth.fractions[side]["damage_pct"], abs=0.1
        )


def test_partial_volume_at_lung_surface_is_the_known_confounder():
    # opt-in: blending lung with chest wall puts wall/lung voxels into the GGO band
    ph = make_phantom(matrix=96, slice_thickness_mm=5.0, vessels=False, lung_partial_volume=True, seed=5)
    got = band_percents(ph.ct.hu, ph.truth.lungs == 1)
    assert got["ggo_pct"] - ph.truth.fractions["right"]["ggo_pct"] > 2.0


# -- anatomy ------------------------------------------------------------------------
def test_grid_geometry(thin):
    ct = thin.ct
    assert ct.shape == (default_n_slices(1.25), 160, 160)
    assert default_n_slices(1.25) == 256 and default_n_slices(5.0) == 64
    assert ct.spacing_mm == pytest.approx((1.25, FOV_MM / 160, FOV_MM / 160))
    assert ct.orientation == "SPL"  # slices superior, rows posterior, columns left
    assert np.allclose(ct.direction, [[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    # slice 0 is the most inferior: trachea (air, top of the scan) is in the last slice
    assert thin.truth.airways[-1].any() and not thin.truth.airways[0].any()
    assert ct.shape[0] * ct.spacing_mm[0] >= COVERAGE_MM
    big = make_phantom(matrix=32, slice_thickness_mm=10.0, n_slices=7, pixel_mm=2.0, noise_hu=0, truth_samples=2**12)
    assert big.ct.shape == (7, 32, 32) and big.ct.spacing_mm == (10.0, 2.0, 2.0)
    assert ct.meta.manufacturer == "lungdamage-phantom" and ct.meta.slice_thickness_mm == 1.25


def test_airways_outside_lungs_and_connected(thin):
    t = thin.truth
    aw = t.airways
    assert aw.sum() * thin.ct.voxel_volume_ml > 20  # trachea + main bronchi
    assert not (aw & (t.lungs > 0)).any()
    labels, n = ndimage.label(aw)
    assert n == 1  # trachea and both main bronchi form one tree
    # both bronchi reach into the hila: airway voxels with lung of each side next to them
    near = ndimage.binary_dilation(aw, iterations=2)
    assert (near & (t.lungs == 1)).any() and (near & (t.lungs == 2)).any()
    # air HU in the lumen
    core = ndimage.binary_erosion(aw)
    assert np.median(thin.ct.hu[core]) < -950
    # runs up out of the lungs: airway present above the highest lung slice
    top_lung = np.nonzero((t.lungs > 0).any(axis=(1, 2)))[0].max()
    assert aw[top_lung + 1 :].any()


def test_lungs_nearly_touch_anteriorly(thin):
    t = thin.truth
    right, left = t.lungs == 1, t.lungs == 2
    # somewhere (anterior junction) the lungs are at most one voxel apart along a row (~2 mm)
    touching = (right[:, :, :-1] & left[:, :, 1:]).any() or (right[:, :, :-2] & left[:, :, 2:]).any()
    assert touching
    # ... but they are separate lungs, with a mediastinum between them in the middle
    mid = t.lungs[t.lungs.shape[0] // 2]
    assert (mid == 1).any() and (mid == 2).any()
    cols_r = np.nonzero((mid == 1).any(axis=0))[0]
    cols_l = np.nonzero((mid == 2).any(axis=0))[0]
    assert cols_r.max() < cols_l.min() + 1  # right lung on the image left (patient right)


def test_lobes_split_each_lung(thin):
    t = thin.truth
    assert set(np.unique(t.lobes)) == {0, *LOBE_CODES}
    assert np.array_equal(t.lobes > 0, t.lungs > 0)
    assert np.isin(t.lobes[t.lungs == 1], [1, 2, 3]).all()
    assert np.isin(t.lobes[t.lungs == 2], [4, 5]).all()
    k, i, _ = np.indices(t.lobes.shape, sparse=True)
    for code in LOBE_CODES:
        share = (t.lobes == code).sum() / (t.lungs == (1 if code <= 3 else 2)).sum()
        assert share > 0.05, LOBE_CODES[code]

    def mean_of(axis_index, code):
        return float(np.mean(np.broadcast_to(axis_index, t.lobes.shape)[t.lobes == code]))

    # upper lobes above lower lobes; middle lobe anterior (smaller row) to the lower lobe
    assert mean_of(k, 1) > mean_of(k, 3) and mean_of(k, 4) > mean_of(k, 5)
    assert mean_of(i, 2) < mean_of(i, 3)
    lr, lo = t.lung_regions(), t.lobe_regions()
    assert lr.region_set == "lungs" and lo.region_set == "lobes"
    assert np.array_equal(lo.to_lungs().labels, lr.labels)


def test_lesions_inside_lungs(thin):
    t = thin.truth
    inside = t.lungs > 0
    for m in (t.ggo, t.consolidation, t.chest_wall_consolidation):
        assert m.any() and not (m & ~inside).any()
    assert not (t.ggo & t.consolidation).any()
    assert not (t.chest_wall_consolidation & ~t.consolidation).any()


def test_chest_wall_consolidation_touches_chest_wall(thin):
    t, hu = thin.truth, thin.ct.hu
    cw = t.chest_wall_consolidation
    assert cw.sum() * thin.ct.voxel_volume_ml > 10  # large
    ring = ndimage.binary_dilation(cw, iterations=2) & ~cw & (t.lungs == 0) & ~t.airways
    wall = ring & (hu > -200)
    assert wall.sum() > 50
    # the neighbouring tissue is chest wall (lateral/posterior, far from the midline), not mediastinum
    x = thin.ct.origin_lps[0] + np.nonzero(wall)[2] * thin.ct.spacing_mm[2]
    assert np.median(np.abs(x)) > 80


def test_tissue_hu_ranges(clean):
    hu, t, ct = clean.ct.hu, clean.truth, clean.ct
    lesion = t.ggo | t.consolidation | t.vessels
    parenchyma = ndimage.binary_erosion(t.lungs > 0, iterations=2) & ~ndimage.binary_dilation(lesion, iterations=3)
    assert -870 <= np.median(hu[parenchyma]) <= -830
    assert np.percentile(hu[parenchyma], 99) < -800
    ggo_core = ndimage.binary_erosion(t.ggo, iterations=2)
    assert -580 <= np.median(hu[ggo_core]) <= -520
    cons_core = ndimage.binary_erosion(t.consolidation, iterations=1)
    assert -80 <= np.median(hu[cons_core]) <= -20
    assert t.vessels.any() and np.median(hu[t.vessels]) > -500
    assert hu.max() > 300  # bone
    # body: fat layer and muscle along the anterior midline column
    col = hu[ct.shape[0] // 2, :, ct.shape[2] // 2]
    assert (col == -1000).any() and ((col > -130) & (col < -70)).sum() >= 2 and ((col > 20) & (col < 60)).any()
    # table below (posterior to) the patient, separated from the body by air
    y = ct.origin_lps[1] + np.arange(ct.shape[1]) * ct.spacing_mm[1]
    x = ct.origin_lps[0] + np.arange(ct.shape[2]) * ct.spacing_mm[2]
    col = hu[ct.shape[0] // 2, :, int(np.argmin(np.abs(x - 40.0)))]
    assert (col[(y > 70) & (y < 85)] > -200).all()  # back muscles
    assert (col[(y > 93) & (y < 98)] == -1000).any()  # air gap
    assert (col[(y > 100) & (y < 116)] > -500).all() and col[(y > 100) & (y < 116)].max() > -200  # table
    assert (col[y > 125] == -1000).all()  # air below the table


def test_noise_level_and_correlation():
    kw = dict(matrix=96, slice_thickness_mm=5.0, vessels=False, lesions="none", truth_samples=2**12)
    a = make_phantom(noise_hu=20.0, seed=11, **kw).ct.hu.astype(np.float64)
    b = make_phantom(noise_hu=0.0, seed=11, **kw).ct.hu.astype(np.float64)
    inside = (b > -950) & (b < 2000)  # avoid clipping at -1024
    n = np.where(inside, a - b, np.nan)
    assert np.nanstd(n) == pytest.approx(20.0, rel=0.08)
    lag_col = np.nanmean(n[:, :, 1:] * n[:, :, :-1]) / np.nanvar(n)
    lag_slice = np.nanmean(n[1:] * n[:-1]) / np.nanvar(n)
    assert 0.5 < lag_col < 0.8  # in-plane correlated
    assert abs(lag_slice) < 0.1  # slices independent


def test_seed_and_determinism():
    kw = dict(matrix=64, slice_thickness_mm=10.0, truth_samples=2**16)
    a, b, c = make_phantom(seed=4, **kw), make_phantom(seed=4, **kw), make_phantom(seed=5, **kw)
    assert np.array_equal(a.ct.hu, b.ct.hu)
    assert not np.array_equal(a.ct.hu, c.ct.hu)
    assert a.truth.fractions == b.truth.fractions


def test_damage_scale_plants_less_damage():
    kw = dict(matrix=96, slice_thickness_mm=5.0, vessels=False)
    full = make_phantom(damage_scale=1.0, **kw).truth.fractions["total"]["damage_pct"]
    less = make_phantom(damage_scale=0.4, **kw).truth.fractions["total"]["damage_pct"]
    none = make_phantom(damage_scale=0.0, **kw)
    assert 0 < less < 0.7 * full
    assert none.truth.fractions["total"]["damage_pct"] == 0.0
    assert not none.truth.ggo.any() and not none.truth.consolidation.any()
    assert band_percents(none.ct.hu, none.truth.lungs > 0)["damage_pct"] < 0.5


def test_custom_lesions_and_vessel_switch():
    les = [Lesion("consolidation", (-70.0, 0.0, 30.0), (20.0, 20.0, 20.0), halo_mm=6.0)]
    ph = make_phantom(matrix=96, slice_thickness_mm=5.0, lesions=les, vessels=False, noise_hu=0)
    fr = ph.truth.fractions
    assert fr["left"]["damage_pct"] == 0.0 and fr["right"]["consolidation_pct"] > 0
    # sphere fully inside the right lung: volume is analytic
    assert fr["right"]["consolidation_ml"] == pytest.approx(4 / 3 * np.pi * 20**3 / 1000, rel=0.03)
    assert not ph.truth.vessels.any() and not ph.truth.chest_wall_consolidation.any()
    with_v = make_phantom(matrix=96, slice_thickness_mm=5.0, lesions="none", vessels=True, noise_hu=0)
    assert with_v.truth.vessels.sum() > 100
    assert not (with_v.truth.vessels & (with_v.truth.lungs == 0)).any()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(matrix=4), "matrix"),
        (dict(slice_thickness_mm=0), "slice_thickness_mm"),
        (dict(noise_hu=-1), "noise_hu"),
        (dict(lesions="many"), "lesions"),
        (dict(damage_scale=-1), "damage_scale"),
        (dict(lesions=[("ggo", (0, 0, 0))]), "Lesion"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(InputError, match=match):
        make_phantom(**kwargs)


def test_bad_lesion_raises():
    with pytest.raises(InputError, match="kind"):
        Lesion("nodule", (0, 0, 0), (1, 1, 1))
    with pytest.raises(InputError, match="radii"):
        Lesion("ggo", (0, 0, 0), (1, 0, 1))


# -- DICOM -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    return make_phantom(matrix=64, slice_thickness_mm=10.0, seed=7, patient_id="P9", truth_samples=2**12)


def test_dicom_round_trip(small, tmp_path):
    ct = small.ct
    paths = write_dicom_series(ct, tmp_path / "s", study_date="2020-04-01", series_number=3,
                               kernel="B30f", series_description="baseline")
    assert [p.name for p in paths[:2]] == ["IM0001.dcm", "IM0002.dcm"] and len(paths) == ct.shape[0]
    dss = [pydicom.dcmread(p) for p in paths]
    ds = dss[0]
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == pydicom.uid.CTImageStorage and ds.Modality == "CT"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert ds.PatientID == "P9" and ds.StudyDate == "20200401" and ds.PatientPosition == "HFS"
    assert ds.ConvolutionKernel == "B30f" and ds.SeriesNumber == 3 and ds.BodyPartExamined == "CHEST"
    assert ds.Manufacturer == "lungdamage-phantom" and ds.SeriesDescription == "baseline"
    assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
    assert ds.BitsAllocated == 16 and ds.PixelRepresentation in (0, 1)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx(ct.spacing_mm[1:])
    assert float(ds.SliceThickness) == pytest.approx(10.0)
    assert [float(v) for v in ds.ImageOrientationPatient] == pytest.approx([1, 0, 0, 0, 1, 0])
    assert len({d.SeriesInstanceUID for d in dss}) == 1 and len({d.SOPInstanceUID for d in dss}) == len(dss)
    assert len({d.FrameOfReferenceUID for d in dss}) == 1
    hu = np.stack([d.pixel_array.astype(np.int32) * int(d.RescaleSlope) + int(d.RescaleIntercept) for d in dss])
    assert np.array_equal(hu, ct.hu)
    normal = np.cross(*np.asarray(ds.ImageOrientationPatient, float).reshape(2, 3))
    pos = np.array([np.asarray(d.ImagePositionPatient, float) @ normal for d in dss])
    assert np.all(np.diff(pos) == pytest.approx(10.0))
    assert [d.InstanceNumber for d in dss] == list(range(1, len(dss) + 1))
    assert np.asarray(dss[0].ImagePositionPatient, float) == pytest.approx(ct.origin_lps)


def test_dicom_geometry_read_by_simpleitk(small, tmp_path):
    import SimpleITK as sitk

    write_dicom_series(small.ct, tmp_path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    img = reader.Execute()
    assert small.ct.same_grid(img)
    assert np.array_equal(sitk.GetArrayFromImage(img), small.ct.hu)


def test_dicom_is_deterministic_and_signed_when_needed(small, tmp_path):
    a = write_dicom_series(small.ct, tmp_path / "a")
    b = write_dicom_series(small.ct, tmp_path / "b")
    assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a, b, strict=True))
    other = write_dicom_series(small.ct, tmp_path / "c", patient_id="OTHER")
    assert pydicom.dcmread(other[0]).SeriesInstanceUID != pydicom.dcmread(a[0]).SeriesInstanceUID
    # HU below -1024 need a signed representation
    hu = small.ct.hu.copy()
    hu[0, 0, 0] = -2000
    p = write_dicom_series(small.ct.with_array(hu), tmp_path / "d")[0]
    d = pydicom.dcmread(p)
    assert d.PixelRepresentation == 1 and int(d.pixel_array[0, 0]) - 1024 == -2000
    with pytest.raises(InputError, match="study_date"):
        write_dicom_series(small.ct, tmp_path / "e", study_date="April 1")


# -- sample data ---------------------------------------------------------------------------
@pytest.mark.skipif(not (SAMPLE / "visits.csv").is_file(), reason="sample_dicom not generated")
def test_sample_dicom_matches_visits_csv():
    rows = list(csv.DictReader((SAMPLE / "visits.csv").read_text().splitlines()))
    assert {r["visit"] for r in rows} == {"baseline", "month4"}
    assert {r["arm"] for r in rows} == {"treated", "placebo"}
    truth = {(r["patient_id"], r["visit"]): float(r["damage_pct"])
             for r in csv.DictReader((SAMPLE / "truth.csv").read_text().splitlines()) if r["region"] == "total"}
    for r in rows:
        folder = SAMPLE / r["patient_id"] / f"{r['study_date']}_{r['visit']}"
        files = sorted(folder.glob("IM*.dcm"))
        assert len(files) > 20
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        assert ds.PatientID == r["patient_id"] and ds.StudyDate == r["study_date"].replace("-", "")
    for pid in {r["patient_id"] for r in rows}:
        assert truth[(pid, "month4")] < truth[(pid, "baseline")]
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size <= 15 * 2**20
