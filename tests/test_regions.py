"""Region maps and the one place foreign label codes are translated."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lungdamage import RegionMap
from lungdamage.errors import InputError
from lungdamage.regions import FOREIGN_CODES, LOBE_CODES, translate_labels


@pytest.mark.parametrize(
    "convention, codes",
    [
        ("lungmask", {1: "LUL", 2: "LLL", 3: "RUL", 4: "RML", 5: "RLL"}),
        ("totalsegmentator", {10: "LUL", 11: "LLL", 12: "RUL", 13: "RML", 14: "RLL"}),
        ("cip", {4 + 512: "RUL", 5: "RML", 6: "RLL", 7 + 256: "LUL", 8: "LLL"}),
    ],
)
def test_lobe_conventions_translate_to_canonical_codes(convention, codes):
    raw = np.array(list(codes) + [0, 99 if convention != "cip" else 1], dtype=np.int64).reshape(1, 1, -1)
    rm = translate_labels(raw, convention)
    assert rm.region_set == "lobes"
    inverse = {v: k for k, v in LOBE_CODES.items()}
    expected = [inverse[n] for n in codes.values()] + [0, 0]
    assert rm.labels.ravel().tolist() == expected


def test_lungmask_lung_codes_and_groups():
    rm = translate_labels(np.array([[[1, 2, 2, 0]]]), "lungmask-lungs")
    assert rm.region_set == "lungs"
    assert rm.voxel_counts() == {"right": 1, "left": 2}
    assert rm.groups() == {"right": (1,), "left": (2,), "total": (1, 2)}


def test_lobe_groups_aggregate_by_side_and_collapse_to_lungs():
    rm = RegionMap(np.array([[[1, 2, 3, 4, 5, 0]]], np.uint8), LOBE_CODES, region_set="lobes")
    g = rm.groups()
    assert list(g) == ["RUL", "RML", "RLL", "LUL", "LLL", "right", "left", "total"]
    assert g["right"] == (1, 2, 3) and g["left"] == (4, 5) and g["total"] == (1, 2, 3, 4, 5)
    lungs = rm.to_lungs()
    assert lungs.labels.ravel().tolist() == [1, 1, 1, 2, 2, 0]


def test_json_label_codes_and_bad_names(tmp_path):
    good = tmp_path / "codes.json"
    good.write_text(json.dumps({"7": "right", "9": "left"}))
    rm = translate_labels(np.array([[[7, 9, 3]]]), good)
    assert rm.labels.ravel().tolist() == [1, 2, 0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"1": "upper-left"}))
    with pytest.raises(InputError, match="unknown regions.*upper-left"):
        translate_labels(np.zeros((1, 1, 1)), bad)
    with pytest.raises(InputError, match="Unknown label-code convention 'slicer'"):
        translate_labels(np.zeros((1, 1, 1)), "slicer")
    assert "totalsegmentator" in FOREIGN_CODES


def test_cip_right_left_map_imports_as_lungs():
    # CIP: value = type*256 + region; regions 2 right, 3 left (512 = airway type)
    raw = np.array([[[2, 3, 2 + 512, 0, 1]]])
    rm = translate_labels(raw, "cip")
    assert rm.region_set == "lungs"
    assert rm.labels.ravel().tolist() == [1, 2, 1, 0, 0]


def test_cip_whole_lung_map_is_refused_not_emptied():
    with pytest.raises(InputError, match=r"codes present \(1\).*cannot be split"):
        translate_labels(np.array([[[1, 1, 0, 513]]]), "cip")


def test_cip_thirds_translate_to_zones():
    rm = translate_labels(np.array([[[9, 12, 14, 11, 0]]]), "cip")
    assert rm.region_set == "zones"
    assert [rm.names[c] if c else "-" for c in rm.labels.ravel()] == ["LUZ", "RUZ", "RLZ", "LLZ", "-"]


def test_float_hu_are_rounded_and_nan_refused():
    from lungdamage import CTVolume

    ct = CTVolume(np.array([[[-700.6, -300.4, 0.5]]]), (1, 1, 1))
    assert ct.hu.ravel().tolist() == [-701, -300, 0]
    with pytest.raises(ValueError, match="NaN"):
        CTVolume(np.array([[[np.nan]]]), (1, 1, 1))


@pytest.mark.parametrize("seed", range(4))
def test_collapse_to_lungs_equals_code_by_code_and_box_holds_every_label(seed):
    """Lobes collapsed to lungs (computed on the labels' bounding box) equal the code-by-code mapping on
    the whole array, also with labels on the array's faces; the box holds every labelled voxel."""
    from lungdamage.regions import labelled_box

    rng = np.random.default_rng(seed)
    labels = np.zeros((9, 11, 13), np.uint8)
    n = int(rng.integers(1, 12))
    idx = tuple(rng.integers(0, s, n) for s in labels.shape)
    labels[idx] = rng.integers(1, 6, n)
    if seed % 2:  # labels on opposite corners of the array
        labels[0, 0, 0], labels[-1, -1, -1] = 4, 1
    rm = RegionMap(labels, dict(LOBE_CODES), region_set="lobes")
    lungs = rm.to_lungs()
    expected = np.where(np.isin(labels, [1, 2, 3]), 1, np.where(np.isin(labels, [4, 5]), 2, 0))
    assert np.array_equal(lungs.labels, expected)
    box = labelled_box(labels)
    inside = np.zeros(labels.shape, bool)
    inside[box] = True
    assert not (labels.astype(bool) & ~inside).any()
    lo = [int(np.flatnonzero(labels.any(axis=tuple(k for k in range(3) if k != a)))[0]) for a in range(3)]
    hi = [int(np.flatnonzero(labels.any(axis=tuple(k for k in range(3) if k != a)))[-1]) + 1 for a in range(3)]
    assert [(s.start, s.stop) for s in box] == list(zip(lo, hi, strict=True))  # tight on every axis
    empty = labelled_box(np.zeros((2, 3, 4), np.uint8))
    assert np.zeros((2, 3, 4))[empty].size == 0
