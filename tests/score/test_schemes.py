"""Presets, example scheme files, and the messages of broken scheme files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lungdamage import CTVolume, RegionMap
from lungdamage.errors import SchemeError
from lungdamage.score import PRESETS, get_scheme, get_schemes, score

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "schemes"
EXAMPLE_FILES = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".toml", ".yaml", ".yml", ".json"))

# Edges stated in the issue / DESIGN.md, independent of the preset definitions.
EXPECTED_EDGES = {
    "covid": [-950, -700, -300, 100],
    "lcta": [-950, -750, -400, 0, 3000],
    "aeration": [-900, -500, -100, 100],
}


def test_example_files_exist():
    assert {p.name for p in EXAMPLE_FILES} >= {"covid.toml", "lcta.yaml", "aeration.yaml", "emphysema_copd.toml"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_with_the_documented_edges(name):
    s = get_scheme(name)
    finite = sorted({e for b in s.bands for e in (b.lo_hu, b.hi_hu) if math.isfinite(e)})
    assert finite == EXPECTED_EDGES[name]
    assert s.damage and all(d in s.band_names for d in s.damage)
    lut = s.band_index_of_hu()
    for b in s.bands:  # half-open: lo is in the band, hi is not
        if math.isfinite(b.lo_hu):
            assert s.band_names[lut[int(b.lo_hu) + 32768]] == b.name
        if math.isfinite(b.hi_hu) and b.hi_hu <= 32767:
            assert s.band_names[lut[int(b.hi_hu) + 32768]] != b.name


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_scheme_file_loads_and_scores(path):
    s = get_scheme(path)
    assert s.source == str(path)
    hu = np.arange(-1100, 400, 7, dtype=np.int16).reshape(1, 1, -1)
    df = score(CTVolume(hu, (1, 1, 1)), RegionMap(np.ones(hu.shape, np.uint8), {1: "right"}), s).to_frame()
    assert df[[f"{b}_pct" for b in s.band_names]].sum(axis=1).iloc[0] == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("path", "preset"), [("covid.toml", "covid"), ("lcta.yaml", "lcta"), ("aeration.yaml", "aeration")]
)
def test_example_files_equal_their_presets(path, preset):
    f, p = get_scheme(EXAMPLES / path), PRESETS[preset]
    assert f.edges() == p.edges() and f.damage == p.damage


def test_several_schemes_by_list_or_commas():
    assert [s.name for s in get_schemes("covid, lcta,aeration")] == ["covid", "lcta", "aeration"]
    assert [s.name for s in get_schemes(["covid", EXAMPLES / "lcta.yaml"])] == ["covid", "lcta-file"]
    with pytest.raises(SchemeError, match=r"repeat the name\(s\) \['covid'\]"):
        get_schemes("covid,covid")


def test_unknown_scheme_lists_the_presets():
    with pytest.raises(SchemeError, match=r"Unknown scheme 'covd'. Allowed: covid, lcta, aeration"):
        get_scheme("covd")


BROKEN = [
    # (file name, content, [expected fragments of the message])
    ("syntax.toml", 'name = "x"\n[[bands]\n', [r"not valid TOML", r"line 2"]),
    ("syntax.yaml", "name: x\nbands:\n  - {name: a, lo_hu: -inf\n", [r"not valid YAML", r"line 3"]),
    (
        "overlap.toml",
        'name = "x"\ndamage = ["ggo", "consolidaton"]\n\n[[bands]]\nname = "aerated"\nlo_hu = "-inf"\nhi_hu = -700\n\n'
        '[[bands]]\nname = "ggo"\nlo_hu = -750\nhi_hu = -300\ncolour = "red"\n',
        [
            r"bands\[1\]\.colour \(line 13\): unknown field; allowed band fields: \['name', 'lo_hu', 'hi_hu'\]",
            r"bands\[1\]\.lo_hu \(line 11\): band 'ggo' starts at -750, below the end -700 of band 'aerated'",
            r"damage \(line 2\): damage\[1\] = 'consolidaton' is not a band; bands: \['aerated', 'ggo'\]",
        ],
    ),
    (
        "edge.yaml",
        "name: x\nbands:\n  - {name: a, lo_hu: -inf, hi_hu: -700}\n  - name: b\n    lo_hu: minus 700\n"
        "    hi_hu: -300\n",
        [r"bands\[1\]\.lo_hu \(line 5\): expected a number or '-inf'/'inf', got 'minus 700'"],
    ),
    (
        "order.yaml",
        "name: x\nbandz: []\nbands:\n  - {name: other, lo_hu: 0, hi_hu: -10}\n",
        [
            r"bandz \(line 2\): unknown field; allowed fields: "
            r"\['name', 'bands', 'damage', 'description', 'reference'\]",
            r"bands\[0\]\.name \(line 4\): band name 'other' is reserved",
            r"bands\[0\] \(line 4\): needs lo_hu < hi_hu, got \[0, -10\)",
        ],
    ),
    (
        "missing.toml", 'name = "x"\n[[bands]]\nname = "a"\nlo_hu = 0\n',
        [r"bands\[0\] \(line 2\): missing field 'hi_hu'"],
    ),
    ("nobands.json", '{"name": "x"}', [r"bands: missing"]),
]


@pytest.mark.parametrize(("name", "text", "fragments"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_scheme_file_names_the_line_or_field(tmp_path, name, text, fragments):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SchemeError) as info:
        get_scheme(path)
    msg = str(info.value)
    assert str(path) in msg
    for frag in fragments:
        assert __import__("re").search(frag, msg), (frag, msg)


def test_missing_scheme_file():
    with pytest.raises(SchemeError, match="does not exist"):
        get_scheme("/nonexistent/scheme.toml")


def test_band_names_that_collide_with_derived_columns_are_refused():
    from lungdamage.errors import SchemeError
    from lungdamage.score.schemes import Band, Scheme

    with pytest.raises(SchemeError, match="'vessel' is reserved"):
        Scheme("m", (Band("air", float("-inf"), -300), Band("vessel", -300, float("inf"))))


def test_numpy_edges_are_numbers():
    import numpy as np

    from lungdamage.score.schemes import Band, Scheme

    s = Scheme("m", (Band("b0", np.int64(-1000), np.int64(-700)),))
    assert s.bands[0].lo_hu == -1000.0 and type(s.bands[0].lo_hu) is float


def test_invalid_smoothing_sigma_is_an_input_error():
    import numpy as np

    import lungdamage as ld
    from lungdamage.errors import InputError

    ct = ld.CTVolume(np.full((1, 4, 4), -800, np.int16), (1, 1, 1))
    regions = ld.RegionMap(np.ones((1, 4, 4), np.uint8), {1: "right"})
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(InputError, match="smooth_sigma_mm"):
            ld.score(ct, regions, smooth_sigma_mm=bad)
