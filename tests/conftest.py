"""Fixtures shared by every test folder: the headless-Chromium page check of the HTML outputs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

# set once the page has loaded: the document's full width and the width of the viewport without its scrollbar
_PROBE = (
    "<script>window.addEventListener('load',function(){var d=document.documentElement;"
    "d.setAttribute('data-page-width',d.scrollWidth+'/'+d.clientWidth);});</script>"
)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def page_width(tmp_path):
    """``check(page, width_px=1400) -> (document width, viewport width, screenshot PNG)`` in headless Chromium.

    The page is copied next to a probe script (same folder, so relative links still resolve) and
    screenshot at ``width_px``.  Skips when Chromium is not installed.
    """
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium)")

    def check(page: Path, width_px: int = 1400) -> tuple[int, int, Path]:
        page = Path(page)
        probe = page.with_name(f".probe_{page.name}")
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
        try:
            dom = chromium(f"--window-size={width_px},1000", "--dump-dom", probe.resolve().as_uri(),
                           profile=tmp_path / "chromium-profile")
            m = re.search(r'data-page-width="(\d+)/(\d+)"', dom.stdout)
            assert m, f"probe did not run: {dom.stderr[-1500:]}"
            shot = tmp_path / f"{page.stem}_{width_px}.png"
            res = chromium(f"--window-size={width_px},1600", f"--screenshot={shot}", probe.resolve().as_uri(),
                           profile=tmp_path / "chromium-profile")
            assert res.returncode == 0 and shot.is_file(), res.stderr[-1500:]
        finally:
            probe.unlink(missing_ok=True)
        return int(m.group(1)), int(m.group(2)), shot

    return check
