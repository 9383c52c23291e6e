"""read_series with several reader threads: blocks of slices read in parallel into one array."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from lungdamage.io.dicom import OUTSIDE_FIELD_HU, read_series

N_SLICES = 53  # several blocks of 16 slices and a short last block


@pytest.mark.parametrize("threads", ["1", "3"])
def test_threads_give_the_same_volume(tmp_path, series_writer, phantom, monkeypatch, threads):
    """Files in reverse order, one RLE-compressed slice and outside-field values in one block only:
    every slice lands at its position and the per-block value ranges still trigger the air fix."""
    monkeypatch.setenv("LUNGDAMAGE_READ_THREADS", threads)
    hu = phantom(shape=(N_SLICES, 7, 5), seed=3)
    hu[40, 2:4, 1:3] = -3024  # outside the reconstruction field, in the third block only
    series_writer(tmp_path, hu[::-1], origin=(-100, -120, -50 + (N_SLICES - 1) * 2.5), spacing=(-2.5, 0.7, 0.8),
                  intercept=-3072.0)
    ds = pydicom.dcmread(tmp_path / "IM0020.dcm")
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "IM0020.dcm")
    ct = read_series(tmp_path)
    want = np.where(hu <= OUTSIDE_FIELD_HU, -1024, hu)
    np.testing.assert_array_equal(ct.hu, want)


def test_decoder_error_in_a_thread_is_one_clear_line(tmp_path, series_writer, phantom, monkeypatch):
    monkeypatch.setenv("LUNGDAMAGE_READ_THREADS", "2")
    series_writer(tmp_path, phantom(shape=(40, 7, 5)))
    ds = pydicom.dcmread(tmp_path / "IM0033.dcm")
    ds.compress(RLELossless)
    ds.PixelData = ds.PixelData[:40]  # a truncated RLE stream
    ds.save_as(tmp_path / "IM0033.dcm")
    from lungdamage.errors import DicomSeriesError

    with pytest.raises(DicomSeriesError, match="cannot decode pixel data of .*IM0033.dcm"):
        read_series(tmp_path)
