"""HTML report and batch index: self-contained, numbers from the result, render in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from lungdamage.report import index_row, write_index, write_review

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def review(tmp_path_factory, synth_analysis):
    out = tmp_path_factory.mktemp("review")
    files = write_review(synth_analysis, out)
    rows = [
        index_row(synth_analysis, files),
        {"source": "/data/broken_series", "stage": "read", "error": "DicomSeriesError: 3 slices missing <gap>"},
    ]
    files["index"] = write_index(rows, out)
    return files


def test_report_is_self_contained_and_shows_the_numbers(review, synth_analysis, synth):
    text = review["html"].read_text()
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in text and "http://" not in text and "https://" not in text
    # damage % of the right lung from the truth masks (independent of the scorer)
    right = synth.lungs == 1
    truth_pct = 100.0 * (synth.ggo & right).sum() / right.sum()
    assert f"<b>{truth_pct:.1f}</b>" in text
    assert synth_analysis.ct.meta.series_uid in text


def test_index_lists_scans_and_failures(review):
    text = review["index"].read_text()
    assert text.count("<tr class=\"ok\">") == 1 and text.count("<tr class=\"fail\">") == 1
    assert "failed at read" in text and "3 slices missing &lt;gap&gt;" in text
    assert 'href="' + review["html"].name + '"' in text
    assert re.search(r'src="data:image/png;base64,', text)


def _chromium(*args, tmp_path):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
@pytest.mark.parametrize("page", ["html", "index"])
def test_pages_render_in_headless_chromium(review, tmp_path, page):
    url = review[page].resolve().as_uri()
    dom = _chromium("--dump-dom", url, tmp_path=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    sizes = re.search(r'<body data-images="([^"]*)"', dom.stdout)
    assert sizes, "load handler did not run"
    dims = [tuple(int(v) for v in s.split("x")) for s in sizes.group(1).split(",")]
    assert dims and all(w > 0 and h > 0 for w, h in dims), dims
    shot = tmp_path / "shot.png"
    res = _chromium(f"--screenshot={shot}", "--window-size=1200,1600", url, tmp_path=tmp_path)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    with Image.open(shot) as im:
        px = np.asarray(im.convert("RGB")).astype(int)
    assert px.std() > 5  # not blank
    # the GGO overlay colour (yellow over grey) is visible: the embedded image was drawn
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    assert ((r - b > 60) & (g - b > 50) & (abs(r - g) < 40)).sum() > (50 if page == "html" else 5)


@pytest.mark.slow
def test_scan_report_and_index_fit_1400px(tmp_path, synth_analysis, page_width):
    """Long unbroken text (a deep archive path, a long error) must not widen the page past 1400 px."""
    import dataclasses

    deep = "/archive/" + "/".join(f"level{i:02d}_of_a_very_deep_folder_tree" for i in range(8))
    ct = synth_analysis.ct.with_meta(source=deep)
    analysis = dataclasses.replace(synth_analysis, ct=ct)
    files = write_review(analysis, tmp_path / "qc", seg=False)
    rows = [index_row(analysis, files)] * 3 + [
        {"source": deep, "stage": "read", "error": "DicomSeriesError: slices missing in " + deep + "/IM0001.dcm"},
    ]
    index = write_index(rows, tmp_path / "qc")
    for page in (files["html"], index):
        doc_w, view_w, shot = page_width(page)
        assert doc_w <= view_w, (page.name, doc_w, view_w)
        with Image.open(shot) as im:
            px = np.asarray(im.convert("RGB")).astype(int)
        assert im.size[0] == 1400 and px.std() > 5
