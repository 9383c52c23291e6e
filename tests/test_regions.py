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
