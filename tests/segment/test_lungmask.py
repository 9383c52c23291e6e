"""Tests of the lungmask adapter (skipped when torch or lungmask is absent).

No real weights are used or downloaded: weight files are state dicts of
lungmask's own U-Net, either seeded random (with batch-norm statistics
calibrated on seeded noise, so the output varies over the image) or
"constant" (last layer zeroed, bias selecting one class), whose output is
known: that class over lungmask's body crop box of every slice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lungmask")

import lungmask.mask as lm_mask  # noqa: E402
from lungmask.resunet import UNet  # noqa: E402

from lungdamage.errors import InputError, MissingDependencyError, SegmentationError  # noqa: E402
from lungdamage.regions import LOBE_CODES, LUNG_CODES  # noqa: E402
from lungdamage.segment.lungmask import (  # noqa: E402
    MissingWeightsError,
    lungmask_labels_to_regions,
    segment_lungmask,
)
from lungdamage.volume import CTVolume  # noqa: E402

# lungmask's published label semantics (README), written out independently of
# lungdamage.regions: lungmask code -> canonical name.
LUNGMASK_LUNGS = {1: "right", 2: "left"}
LUNGMASK_LOBES = {1: "LUL", 2: "LLL", 3: "RUL", 4: "RML", 5: "RLL"}

N_SLICES, N_ROWS, N_COLS = 2, 96, 128
BODY = dict(row0=50, col0=60, half_rows=40, half_cols=56)  # body ellipse, off-centre


def _unet(n_classes: int):
    # Same constructor arguments as lungmask.mask.get_model.
    return UNet(n_classes=n_classes, padding=True, depth=5, up_mode="upsample",
                batch_norm=True, residual=False)


def _random_weights(path: Path, n_classes: int, seed: int) -> Path:
    """Seeded random U-Net whose batch-norm statistics come from seeded noise.

    With untouched statistics (mean 0, var 1) a random net predicts one class
    everywhere; calibrated statistics make the prediction vary over the image.
    """
    torch.manual_seed(seed)
    net = _unet(n_classes)
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None  # cumulative average
    gen = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.rand(4, 1, 64, 64, generator=gen))
    torch.save(net.eval().state_dict(), path)
    return path


def _constant_weights(path: Path, n_classes: int, cls: int) -> Path:
    """U-Net that predicts class ``cls`` at every pixel."""
    torch.manual_seed(0)
    net = _unet(n_classes)
    with torch.no_grad():
        net.last.weight.zero_()
        net.last.bias.zero_()
        net.last.bias[cls] = 10.0
    torch.save(net.state_dict(), path)
    return path


def _phantom(n_slices: int = N_SLICES) -> CTVolume:
    """Small asymmetric chest: off-centre body, unequal lungs, one dense lesion."""
    rr, cc = np.mgrid[:N_ROWS, :N_COLS]
    hu = np.full((n_slices, N_ROWS, N_COLS), -1000, np.int16)
    body = ((rr - BODY["row0"]) / BODY["half_rows"]) ** 2 + ((cc - BODY["col0"]) / BODY["half_cols"]) ** 2 < 1
    hu[:, body] = 40
    hu[:, ((rr - 50) / 28) ** 2 + ((cc - 36) / 16) ** 2 < 1] = -860  # right lung (image left)
    hu[:, ((rr - 46) / 22) ** 2 + ((cc - 84) / 13) ** 2 < 1] = -840  # left lung, smaller
    hu[-1, 40:52, 28:40] = -250  # consolidation in the right lung of the last slice
    return CTVolume(hu, (2.5, 0.9, 0.9), origin_lps=(-50.0, -40.0, 100.0))


@pytest.fixture(scope="module")
def ct() -> CTVolume:
    return _phantom()


@pytest.fixture(scope="module")
def ct1() -> CTVolume:
    """One slice: the network costs about a second per slice on a CPU."""
    return _phantom(1)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lungmask_weights")


@pytest.fixture(autouse=True)
def _never_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"lungmask tried to download weights: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def _logging_state():
    lm = logging.getLogger("lungmask")
    root = logging.getLogger()
    return (root.handlers[:], root.level, lm.handlers[:], lm.level, lm.propagate, lm.disabled)


# -- pure label translation ---------------------------------------------------------


def test_translate_lobe_codes_exact():
    codes = np.arange(8, dtype=np.uint8).reshape(1, 2, 4)  # 6 and 7 are not lungmask codes
    rm = lungmask_labels_to_regions(codes, model="LTRCLobes")
    inverse = {v: k for k, v in LOBE_CODES.items()}
    expected = [0] + [inverse[LUNGMASK_LOBES[c]] for c in range(1, 6)] + [0, 0]
    assert rm.labels.ravel().tolist() == expected
    assert rm.labels.ravel().tolist() == [0, 4, 5, 1, 2, 3, 0, 0]
    assert rm.region_set == "lobes" and rm.method == "lungmask:LTRCLobes"
    assert rm.names == LOBE_CODES and rm.info["model"] == "LTRCLobes"
    fused = lungmask_labels_to_regions(codes, model="LTRCLobes_R231")
    assert fused.labels.ravel().tolist() == expected and fused.region_set == "lobes"


@pytest.mark.parametrize("model", ["R231", "R231CovidWeb"])
def test_translate_lung_codes_exact(model):
    codes = np.array([[[0, 1, 2, 3, 5]]], np.uint8)
    rm = lungmask_labels_to_regions(codes, model=model)
    inverse = {v: k for k, v in LUNG_CODES.items()}
    assert rm.labels.ravel().tolist() == [0, inverse["right"], inverse["left"], 0, 0]
    assert rm.region_set == "lungs" and rm.names == LUNG_CODES and rm.method == f"lungmask:{model}"


# -- inference through lungmask's code ----------------------------------------------------


@pytest.mark.parametrize(
    ("model", "n_classes", "lungmask_code", "from_hub"),
    [("R231CovidWeb", 3, 2, True), ("LTRCLobes", 6, 4, False)],
)
def test_constant_network_labels_body_box(ct1, weights_dir, tmp_path, monkeypatch,
                                          model, n_classes, lungmask_code, from_hub):
    name = Path(lm_mask.MODEL_URLS[model][0]).name
    if from_hub:
        # weights found in the torch hub cache under lungmask's own file name
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
        (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
        path = _constant_weights(tmp_path / "hub" / "checkpoints" / name, n_classes, lungmask_code)
        weights = None
    else:
        path = weights = _constant_weights(weights_dir / f"const_{model}_{lungmask_code}.pth",
                                           n_classes, lungmask_code)
    filters_before = warnings.filters[:]
    logging_before = _logging_state()

    ct = ct1
    rm = segment_lungmask(ct, model=model, weights=weights)

    assert warnings.filters == filters_before
    assert _logging_state() == logging_before
    expected_name = (LUNGMASK_LUNGS if n_classes == 3 else LUNGMASK_LOBES)[lungmask_code]
    (code,) = [c for c, n in rm.names.items() if n == expected_name]
    assert rm.labels.dtype == np.uint8 and rm.shape == ct.shape
    assert np.unique(rm.labels).tolist() == [0, code]
    assert rm.method == f"lungmask:{model}"
    assert rm.region_set == ("lungs" if n_classes == 3 else "lobes")
    assert rm.info["model"] == model
    (entry,) = rm.info["weights"].values()
    assert entry["path"] == str(path.resolve())
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # The labelled area of each slice is lungmask's crop box around the body:
    # it must sit on the body's bounding box on our (row, column) grid.
    body_rows = (BODY["row0"] - BODY["half_rows"], BODY["row0"] + BODY["half_rows"])
    body_cols = (BODY["col0"] - BODY["half_cols"], BODY["col0"] + BODY["half_cols"])
    for k in range(ct.shape[0]):
        rows = np.flatnonzero(rm.labels[k].any(axis=1))
        cols = np.flatnonzero(rm.labels[k].any(axis=0))
        assert abs(rows[0] - body_rows[0]) <= 4 and abs(rows[-1] - body_rows[1]) <= 4
        assert abs(cols[0] - body_cols[0]) <= 4 and abs(cols[-1] - body_cols[1]) <= 4
        box = np.zeros(ct.shape[1:], bool)
        box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
        assert np.array_equal(rm.labels[k] > 0, box)


def _reoriented(ct: CTVolume, *, flip_slices=False, flip_rows=False, transpose=False) -> CTVolume:
    """The same physical image stored with another axis order / direction."""
    hu, d = ct.hu, ct.direction.copy()
    spacing = list(ct.spacing_mm)
    corner = [0, 0, 0]
    if flip_slices:
        hu, d[:, 0], corner[0] = hu[::-1], -d[:, 0], ct.shape[0] - 1
    if flip_rows:
        hu, d[:, 1], corner[1] = hu[:, ::-1], -d[:, 1], ct.shape[1] - 1
    origin = tuple(ct.index_to_lps(np.array(corner)))
    if transpose:
        hu, d, spacing = hu.transpose(0, 2, 1), d[:, [0, 2, 1]], [spacing[0], spacing[2], spacing[1]]
    return CTVolume(np.ascontiguousarray(hu), tuple(spacing), origin, d)


@pytest.fixture(scope="module")
def random_r231(weights_dir) -> Path:
    return _random_weights(weights_dir / "random_r231.pth", 3, seed=1)


@pytest.fixture(scope="module")
def random_r231_result(ct, random_r231):
    return segment_lungmask(ct, model="R231", weights=random_r231)


def test_random_weights_match_lungmask_public_api(ct, random_r231, random_r231_result):
    rm = random_r231_result
    assert rm.shape == ct.shape and rm.labels.dtype == np.uint8
    present = set(np.unique(rm.labels).tolist())
    assert 0 in present and present - {0} and present <= {0, *LUNG_CODES}
    # lungmask's own public pipeline, loading the same file itself.
    inferer = lm_mask.LMInferer(modelname="R231", modelpath=str(random_r231), force_cpu=True,
                                tqdm_disable=True)
    ref = inferer.apply(ct.to_sitk())
    inverse = {v: k for k, v in LUNG_CODES.items()}
    lut = np.zeros(256, np.uint8)
    for code, name in LUNGMASK_LUNGS.items():
        lut[code] = inverse[name]
    assert np.array_equal(rm.labels, lut[ref])


@pytest.mark.parametrize(
    "how", [dict(flip_slices=True, flip_rows=True), dict(transpose=True)], ids=["flipped", "transposed"]
)
def test_labels_come_back_on_the_ct_grid(ct, random_r231, random_r231_result, how):
    other = _reoriented(ct, **how)
    assert other.orientation != ct.orientation
    rm = segment_lungmask(other, model="R231", weights=random_r231)
    assert rm.shape == other.shape
    back = rm.labels
    if how.get("transpose"):
        back = back.transpose(0, 2, 1)
    if how.get("flip_rows"):
        back = back[:, ::-1]
    if how.get("flip_slices"):
        back = back[::-1]
    assert np.array_equal(back, random_r231_result.labels)


@pytest.mark.slow
def test_fusion_uses_lungmask_fusion(ct1, weights_dir, random_r231):
    ct = ct1
    lobes_w = _random_weights(weights_dir / "random_lobes.pth", 6, seed=3)
    rm = segment_lungmask(ct, model="LTRCLobes_R231", weights={"LTRCLobes": lobes_w, "R231": random_r231})
    assert rm.shape == ct.shape and rm.labels.dtype == np.uint8
    assert rm.region_set == "lobes" and rm.method == "lungmask:LTRCLobes_R231"
    assert set(np.unique(rm.labels).tolist()) - {0} and set(np.unique(rm.labels).tolist()) <= {0, *LOBE_CODES}
    assert set(rm.info["weights"]) == {"LTRCLobes", "R231"}
    assert rm.info["weights"]["R231"]["path"] == str(random_r231.resolve())
    # lungmask's own public fusion with the same two files
    inferer = lm_mask.LMInferer(modelname="LTRCLobes", modelpath=str(lobes_w), fillmodel="R231",
                                fillmodel_path=str(random_r231), force_cpu=True, tqdm_disable=True)
    ref = inferer.apply(ct.to_sitk())
    inverse = {v: k for k, v in LOBE_CODES.items()}
    lut = np.zeros(256, np.uint8)
    for code, name in LUNGMASK_LOBES.items():
        lut[code] = inverse[name]
    assert np.array_equal(rm.labels, lut[ref])
    # a pair is read in the order (LTRCLobes, R231): swapped files are refused
    with pytest.raises(InputError, match="3 output classes but network 'LTRCLobes'"):
        segment_lungmask(ct, model="LTRCLobes_R231", weights=(random_r231, lobes_w))


# -- errors ----------------------------------------------------------------------------------


def test_missing_weights_names_file_and_folder(ct, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    hub = tmp_path / "hub" / "checkpoints"
    expected = Path(lm_mask.MODEL_URLS["R231"][0]).name
    with pytest.raises(MissingWeightsError) as info:
        segment_lungmask(ct, model="R231")
    msg = str(info.value)
    assert expected == "unet_r231-d5d2fc3d.pth"
    assert expected in msg and str(hub) in msg and "--weights" in msg and "Potential fix" in msg
    assert info.value.expected == expected and info.value.directory == hub
    assert isinstance(info.value, SegmentationError)
    # fusion with only the R231 file: the lobe file is named
    r231 = _constant_weights(tmp_path / "r231.pth", 3, 1)
    with pytest.raises(MissingWeightsError, match="unet_ltrclobes-3a07043d.pth"):
        segment_lungmask(ct, model="LTRCLobes_R231", weights={"R231": r231})
    with pytest.raises(MissingWeightsError, match="nope.pth"):
        segment_lungmask(ct, model="R231", weights=tmp_path / "nope.pth")
    # a folder is searched for lungmask's own file name
    with pytest.raises(MissingWeightsError, match="unet_r231covid-0de78a7e.pth") as info:
        segment_lungmask(ct, model="R231CovidWeb", weights=tmp_path)
    assert info.value.directory == tmp_path


def test_bad_weights_and_arguments(ct, tmp_path):
    lobes = _constant_weights(tmp_path / "lobes.pth", 6, 1)
    with pytest.raises(InputError, match="6 output classes"):
        segment_lungmask(ct, model="R231", weights=lobes)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a state dict")
    with pytest.raises(InputError, match="junk.pth"):
        segment_lungmask(ct, model="R231", weights=junk)
    with pytest.raises(InputError, match="LTRCLobes_R231"):
        segment_lungmask(ct, model="R232", weights=lobes)
    with pytest.raises(InputError, match="one weight file"):
        segment_lungmask(ct, model="LTRCLobes_R231", weights=lobes)
    with pytest.raises(InputError, match="batch_size"):
        segment_lungmask(ct, model="R231", weights=lobes, batch_size=0)


def test_system_exit_inside_lungmask_becomes_segmentation_error(ct, tmp_path, monkeypatch):
    import lungmask.utils

    def exits(*args, **kwargs):
        sys.exit("No dicoms found!")  # what lungmask.utils.load_input_image does

    monkeypatch.setattr(lungmask.utils, "preprocess", exits)
    w = _constant_weights(tmp_path / "w.pth", 3, 1)
    with pytest.raises(SegmentationError, match="No dicoms found!") as info:
        segment_lungmask(ct, model="R231", weights=w)
    assert isinstance(info.value.__cause__, SystemExit)


def test_no_lung_found_is_an_error(ct1, tmp_path):
    w = _constant_weights(tmp_path / "background.pth", 3, 0)
    with pytest.raises(SegmentationError, match="found no lung"):
        segment_lungmask(ct1, model="R231", weights=w)


def test_missing_dependency(ct, monkeypatch):
    for mod in ("lungmask", "lungmask.mask", "lungmask.resunet"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(MissingDependencyError, match=r"lungdamage\[lungmask\]"):
        segment_lungmask(ct, model="R231", weights="x.pth")


_FRESH_PROCESS = r"""
import json, logging, sys, warnings
import numpy as np
from lungdamage.volume import CTVolume
from lungdamage.segment.lungmask import segment_lungmask

def state():
    lm = logging.Logger.manager.loggerDict.get("lungmask")
    lm_handlers = [type(h).__name__ for h in lm.handlers] if isinstance(lm, logging.Logger) else []
    root = logging.getLogger()
    return {"filters": repr(warnings.filters), "root": [type(h).__name__ for h in root.handlers],
            "root_level": root.level, "lungmask_handlers": lm_handlers}

hu = np.full((1, 96, 128), -1000, np.int16)
hu[:, 10:90, 8:120] = 40
hu[:, 25:75, 20:55] = -850
hu[:, 25:75, 70:105] = -850
before = state()
rm = segment_lungmask(CTVolume(hu, (2.5, 0.9, 0.9)), model="R231", weights=sys.argv[1])
after = state()
print(json.dumps({"before": before, "after": after, "labelled": int(rm.lung_mask.sum()),
                  "lungmask_imported": "lungmask" in sys.modules}))
"""


@pytest.mark.slow
def test_first_import_leaves_warnings_logging_and_stdout_alone(tmp_path):
    """In a fresh process lungmask's import-time filter and stdout handler are undone."""
    w = _constant_weights(tmp_path / "w.pth", 3, 1)
    proc = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, str(w)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # lungmask would print "lungmask <time> Postprocessing"
    out = json.loads(lines[0])
    assert out["lungmask_imported"] and out["labelled"] > 0
    assert out["after"] == out["before"]
    assert out["after"]["lungmask_handlers"] == []
