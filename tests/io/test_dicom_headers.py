"""The two places that lean on pydicom internals or on a file layout, checked against pydicom's public API.

``stored_element`` reads pydicom's private ``Dataset._dict`` / ``RawDataElement``;
``seek_trailing_pixel_data`` finds pixel bytes from the end of the file.  If a pydicom
release changes either, these tests fail here (not as wrong numbers elsewhere).
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.uid import ImplicitVRLittleEndian

from lungdamage.io._dicom_headers import header_from_dataset, read_header, stored_element
from lungdamage.io.dicom import read_series, seek_trailing_pixel_data

#: Every attribute the header reader decodes itself, with a value that is not a default.
ATTRS = {
    "PatientName": "Doe^Jane",
    "SeriesDate": "20200402",
    "StudyDescription": "CT chest",
    "AcquisitionNumber": 3,
    "SpacingBetweenSlices": "2.5",
    "GantryDetectorTilt": "0",
    "ContrastBolusAgent": "IOMEPROL",
    "PixelPaddingValue": 63536,
}


def _public_header(ds: pydicom.Dataset) -> dict:
    """What the header says, through pydicom's public API only."""
    return {
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "series_uid": str(ds.SeriesInstanceUID),
        "study_uid": str(ds.StudyInstanceUID),
        "patient_id": str(ds.PatientID),
        "patient_name": str(ds.PatientName),
        "series_date": ds.SeriesDate,
        "series_number": int(ds.SeriesNumber),
        "instance_number": int(ds.InstanceNumber),
        "acquisition_number": int(ds.AcquisitionNumber),
        "modality": ds.Modality,
        "image_type": tuple(ds.ImageType),
        "series_description": ds.SeriesDescription,
        "study_description": ds.StudyDescription,
        "kernel": str(ds.ConvolutionKernel),
        "slice_thickness_mm": float(ds.SliceThickness),
        "spacing_between_slices_mm": float(ds.SpacingBetweenSlices),
        "manufacturer": ds.Manufacturer,
        "contrast_agent": ds.ContrastBolusAgent,
        "rows": ds.Rows,
        "columns": ds.Columns,
        "bits_allocated": ds.BitsAllocated,
        "bits_stored": ds.BitsStored,
        "pixel_representation": ds.PixelRepresentation,
        "photometric": ds.PhotometricInterpretation,
        "samples_per_pixel": ds.SamplesPerPixel,
        "padding_value": ds.PixelPaddingValue,
        "gantry_tilt_deg": float(ds.GantryDetectorTilt),
    }


@pytest.mark.parametrize("pixel_representation", [0, 1])
def test_header_fast_path_matches_public_api(tmp_path, series_writer, phantom, pixel_representation):
    attrs = dict(ATTRS)
    if pixel_representation:
        attrs["PixelPaddingValue"] = -2000
    path = series_writer(tmp_path, phantom()[:1], pixel_representation=pixel_representation, **attrs)[0]
    fast = read_header(str(path))
    assert fast is not None
    public = pydicom.dcmread(path)
    for name, value in _public_header(public).items():
        assert getattr(fast, name) == value, name
    np.testing.assert_allclose(fast.positions[0], [float(v) for v in public.ImagePositionPatient])
    np.testing.assert_allclose(fast.orientations[0], [float(v) for v in public.ImageOrientationPatient])
    np.testing.assert_allclose(fast.pixel_spacing[0], [float(v) for v in public.PixelSpacing])
    assert fast.slope[0] == float(public.RescaleSlope)
    assert fast.intercept[0] == float(public.RescaleIntercept)


def test_stored_element_is_raw_before_conversion_and_agrees_with_public_value(tmp_path, series_writer, phantom):
    path = series_writer(tmp_path, phantom()[:1], **ATTRS)[0]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    # the fast path is taken: a freshly read element is still raw bytes
    rows = stored_element(ds, "Rows")
    assert type(rows) is RawDataElement
    assert int.from_bytes(rows.value[:2], "little" if rows.is_little_endian else "big") == ds.Rows
    name = stored_element(ds, "SeriesDescription")
    assert type(name) is RawDataElement and name.value.decode().strip() == ds.SeriesDescription
    # once converted by the public API, the converted value comes back
    _ = ds.SeriesDescription
    assert stored_element(ds, "SeriesDescription") == "test series"
    assert stored_element(ds, "PixelPaddingRangeLimit") is None
    # a header read back from the dataset is the same whichever elements were converted
    again = header_from_dataset(ds, str(path), path.stat().st_size)
    assert again.series_description == "test series" and again.rows == ds.Rows


def test_non_ascii_text_goes_through_pydicom_character_sets(tmp_path, series_writer, phantom):
    path = series_writer(tmp_path, phantom()[:1], SpecificCharacterSet="ISO_IR 100", SeriesDescription="Thorax ära")[0]
    assert read_header(str(path)).series_description == pydicom.dcmread(path).SeriesDescription == "Thorax ära"


@pytest.mark.parametrize("implicit", [False, True])
def test_trailing_pixel_data_matches_pydicom(tmp_path, series_writer, phantom, implicit):
    path = series_writer(tmp_path, phantom()[:1])[0]
    if implicit:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(path, implicit_vr=True, little_endian=True)
    public = pydicom.dcmread(path).PixelData
    size = path.stat().st_size
    with open(path, "rb") as fh:
        offset = seek_trailing_pixel_data(fh, size, len(public), implicit=implicit)
        assert offset is not None and fh.tell() == offset
        assert fh.read() == public
    # a wrong length or the wrong VR flavour is not taken for pixel data
    with open(path, "rb") as fh:
        assert seek_trailing_pixel_data(fh, size, len(public) - 2, implicit=implicit) is None
        assert seek_trailing_pixel_data(fh, size, len(public), implicit=not implicit) is None


def test_element_after_pixel_data_falls_back_to_pydicom(tmp_path, series_writer, phantom):
    """A file whose Pixel Data is not its last element: not found from the end, read right through pydicom."""
    paths = series_writer(tmp_path, phantom())
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 8)  # Data Set Trailing Padding
        ds.save_as(p)
    ds = pydicom.dcmread(paths[0])
    with open(paths[0], "rb") as fh:
        assert seek_trailing_pixel_data(fh, paths[0].stat().st_size, len(ds.PixelData), implicit=False) is None
    np.testing.assert_array_equal(read_series(tmp_path).hu, phantom())


def test_header_of_a_huge_zip_member_is_streamed(tmp_path, series_writer, phantom):
    """``read_source_header`` (patient-name scrubbing, SEG import) on a zip member of 512 MiB
    (a slice followed by zeros, about 0.5 MB deflated) reads the header only: before, the whole
    member was inflated into memory twice (2.1 GiB peak for a 1 GiB member)."""
    import tracemalloc
    import zipfile

    from lungdamage.io.sources import read_source_header

    first = series_writer(tmp_path, phantom()[:1], patient_id="HUGE1")[0]
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("big/IM0001.dcm", "w", force_zip64=True) as fh:
            fh.write(first.read_bytes())
            zeros = bytes(1 << 22)
            for _ in range(128):  # 512 MiB of zeros after the slice
                fh.write(zeros)
    # Python-level allocations (the inflated member would be one bytes object); a child's
    # ru_maxrss is no measure here: Linux carries the parent's peak across exec
    tracemalloc.start()
    try:
        ds = read_source_header(f"{archive}::big/IM0001.dcm", tags=["PatientID"])
        peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert str(ds.PatientID) == "HUGE1"
    assert peak_mib < 64, peak_mib  # measured under 1 MiB (before: 1072 MiB)
