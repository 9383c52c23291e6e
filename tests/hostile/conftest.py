"""Fixtures of the hostile-input tests (issue 14)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _build import write_good_series  # noqa: E402


@pytest.fixture(scope="session")
def good_series(tmp_path_factory) -> Path:
    """A small scorable phantom series (64 x 64, 40 slices of 5 mm), written once."""
    folder = tmp_path_factory.mktemp("hostile-good") / "good"
    write_good_series(folder)
    return folder
