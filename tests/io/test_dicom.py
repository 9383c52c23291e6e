"""read_series on real DICOM files written with pydicom (and GDCM / pydicom-data for codecs)."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from lungdamage.errors import DicomSeriesError, InputError, MultipleSeriesError
from lungdamage.io.dicom import DicomReadWarning, read_series
from lungdamage.volume import CTVolume

AXIAL_DIR = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)  # columns: normal, IOP[3:6], IOP[0:3]
SPACING = (2.5, 0.7, 0.8)
ORIGIN = (-100.0, -120.0, -50.0)


def _geom(ct, spacing=SPACING, origin=ORIGIN, direction=AXIAL_DIR):
    np.testing.assert_allclose(ct.spacing_mm, spacing, atol=1e-4)
    np.testing.assert_allclose(ct.origin_lps, origin, atol=1e-3)
    np.testing.assert_allclose(ct.direction, direction, atol=1e-6)


# --------------------------------------------------------------------------- case builders
# Each builder gets (tmp_path, write_series, hu) and returns (source, expectation) where the
# expectation is ("ok", check), ("warn", message_fragment, check) or ("raise", ErrorType, fragment).
# ``check(ct, hu)`` asserts the resulting HU and geometry against the truth the builder wrote.


def _exact(ct, hu):
    np.testing.assert_array_equal(ct.hu, hu)
    _geom(ct)


def c_reverse_file_order(tmp, w, hu):
    # files and InstanceNumbers run head-to-feet (reverse of position): order must come from positions
    w(tmp, hu[::-1], origin=(-100, -120, -50 + 5 * 2.5), spacing=(-2.5, 0.7, 0.8), instance_numbers=range(6))
    return tmp, ("ok", _exact)


def c_shuffled_instance_numbers(tmp, w, hu):
    w(tmp, hu, instance_numbers=[5, 2, 6, 1, 4, 3])
    return tmp, ("ok", _exact)


def c_coronal(tmp, w, hu):
    iop = (1, 0, 0, 0, 0, -1)  # rows go feet-ward, normal = row x col = (0, 1, 0)
    w(tmp, hu, iop=iop)
    d = np.column_stack([[0, 1, 0], [0, 0, -1], [1, 0, 0]])

    def check(ct, hu):
        np.testing.assert_array_equal(ct.hu, hu)
        _geom(ct, direction=d)

    return tmp, ("ok", check)


def c_feet_first_rotated(tmp, w, hu):
    # feet-first prone-like in-plane orientation rotated by 30 degrees; normal points -z
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    iop = (-c, -s, 0, -s, c, 0)
    w(tmp, hu, iop=iop)
    row, col = np.array(iop[:3]), np.array(iop[3:])
    n = np.cross(row, col)
    d = np.column_stack([n, col, row])

    def check(ct, hu):
        np.testing.assert_array_equal(ct.hu, hu)
        _geom(ct, direction=d)
        assert n[2] < 0

    return tmp, ("ok", check)


def c_duplicate_identical(tmp, w, hu):
    paths = w(tmp, hu)
    ds = pydicom.dcmread(paths[2])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(tmp / "copy.dcm")
    return tmp, ("warn", "dropped 1 duplicate slice", _exact)


def c_duplicate_conflicting(tmp, w, hu):
    paths = w(tmp, hu)
    ds = pydicom.dcmread(paths[2])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PixelData = (ds.pixel_array + 7).astype(np.uint16).tobytes()
    ds.save_as(tmp / "other.dcm")
    return tmp, ("raise", DicomSeriesError, "occur twice with different pixel data")


def c_missing_slice(tmp, w, hu):
    w(tmp, hu)[3].unlink()
    return tmp, ("raise", DicomSeriesError, r"gap\(s\) in slice positions: largest 5.000 mm")


def c_missing_slice_allowed(tmp, w, hu):
    w(tmp, hu)[3].unlink()

    def check(ct, hu):
        _geom(ct)
        assert ct.shape == hu.shape
        np.testing.assert_array_equal(ct.hu[[0, 1, 2, 4, 5]], hu[[0, 1, 2, 4, 5]])
        expected = np.rint((hu[2].astype(float) + hu[4]) / 2)  # interpolated across the gap
        np.testing.assert_allclose(ct.hu[3], expected, atol=1)

    return (tmp, {"allow_gaps": True}), ("warn", r"about 1 slice\(s\) missing", check)


def c_jitter_within_tolerance(tmp, w, hu):
    pos = np.array(ORIGIN) + np.outer(np.arange(6) * 2.5 + [0, 0.02, -0.02, 0.01, 0, 0], [0, 0, 1])
    w(tmp, hu, positions=pos)
    return tmp, ("ok", _exact)


def _irregular(tmp, w, hu):
    steps = [2.5, 2.0, 3.0, 2.5, 2.5]
    pos = np.array(ORIGIN) + np.outer(np.concatenate([[0], np.cumsum(steps)]), [0, 0, 1])
    w(tmp, hu, positions=pos)
    return tmp


def c_irregular_resampled(tmp, w, hu):
    tmp = _irregular(tmp, w, hu)

    def check(ct, hu):
        _geom(ct)
        assert ct.shape == hu.shape  # 12.5 mm / 2.5 mm + 1
        np.testing.assert_array_equal(ct.hu[[0, 1, 4, 5]], hu[[0, 1, 4, 5]])
        # target z = 5.0 lies between 4.5 (slice 2) and 7.5 (slice 3): weight 1/6
        np.testing.assert_allclose(ct.hu[2], np.rint(hu[2] * 5 / 6 + hu[3] / 6), atol=1)

    return tmp, ("warn", "irregular slice spacing: steps from 2.000 to 3.000 mm", check)


def c_irregular_refused(tmp, w, hu):
    return (_irregular(tmp, w, hu), {"irregular": "error"}), ("raise", DicomSeriesError, "irregular slice spacing")


def _tilted(tmp, w, hu):
    # slices step 2.5 mm along z and 0.7 mm (one row) along +y: ~15.6 degrees of gantry tilt
    pos = np.array(ORIGIN) + np.outer(np.arange(6), [0, 0.7, 2.5])
    w(tmp, hu, positions=pos, GantryDetectorTilt="15.6")
    return tmp


def c_gantry_tilt_corrected(tmp, w, hu):
    tmp = _tilted(tmp, w, hu)

    def check(ct, hu):
        _geom(ct)
        # slice k was shifted k rows: output row i of slice k = input row i - k
        for k in (1, 3, 5):
            np.testing.assert_array_equal(ct.hu[k, k:], hu[k, : 7 - k])
            assert (ct.hu[k, :k] == -1024).all()

    return tmp, ("warn", "gantry tilt of 15.64 degrees corrected", check)


def c_gantry_tilt_refused(tmp, w, hu):
    return (_tilted(tmp, w, hu), {"tilt": "error"}), ("raise", DicomSeriesError, "acquired with gantry tilt")


def c_mixed_matrix(tmp, w, hu):
    w(tmp, hu)
    w(tmp, np.zeros((1, 9, 9)), origin=(-100, -120, 0), series_uid=_series_uid(tmp), frame_uid=_frame(tmp), prefix="X")
    return tmp, ("raise", DicomSeriesError, r"mixes 2 matrix sizes \(rows x columns\): 7x5 \(6 frames")


def c_mixed_orientation(tmp, w, hu):
    w(tmp, hu)
    w(tmp, hu[:2], iop=(1, 0, 0, 0, 0, -1), series_uid=_series_uid(tmp), frame_uid=_frame(tmp), prefix="C")
    return tmp, ("raise", DicomSeriesError, "mixes image orientations")


def c_mixed_frame_of_reference(tmp, w, hu):
    w(tmp, hu)
    w(tmp, hu[:2], origin=(-100, -120, 100), series_uid=_series_uid(tmp), prefix="F")
    return tmp, ("raise", DicomSeriesError, "mixes 2 frames of reference")


def c_two_series(tmp, w, hu):
    w(tmp, hu, series_uid="1.2.3.4.1", SeriesDescription="thin lung")
    w(tmp, hu[:3], series_uid="1.2.3.4.2", prefix="S", SeriesDescription="thick soft")
    return tmp, ("raise", MultipleSeriesError,
                 r"1.2.3.4.1 \(6 files, 'thin lung'\); 1.2.3.4.2 \(3 files, 'thick soft'\)")


def c_two_series_chosen(tmp, w, hu):
    w(tmp, hu, series_uid="1.2.3.4.1")
    w(tmp, hu[:3] + 5, series_uid="1.2.3.4.2", prefix="S")
    return (tmp, {"series_uid": "1.2.3.4.1"}), ("ok", _exact)


def c_unknown_series_uid(tmp, w, hu):
    w(tmp, hu, series_uid="1.2.3.4.1")
    return (tmp, {"series_uid": "9.9"}), ("raise", DicomSeriesError, r"Series '9.9' not found .*1.2.3.4.1 \(6 files\)")


def c_per_slice_rescale(tmp, w, hu):
    w(tmp, hu, slope=[1, 2, 0.5, 1, 1, 4], intercept=[-1024, -1000, -2048, -1100, -1024.5, -3000])

    def check(ct, hu):
        # stored = rint((hu - b) / m); HU back = rint(stored * m + b)
        m = np.array([1, 2, 0.5, 1, 1, 4.0])[:, None, None]
        b = np.array([-1024, -1000, -2048, -1100, -1024.5, -3000])[:, None, None]
        expected = np.rint(np.rint((hu - b) / m) * m + b)
        expected[expected <= -2000] = -1024
        np.testing.assert_array_equal(ct.hu, expected)
        _geom(ct)

    return tmp, ("ok", check)


def c_signed_pixels(tmp, w, hu):
    w(tmp, hu, pixel_representation=1, intercept=0)
    return tmp, ("ok", _exact)


def c_unsigned_12bit_dirty_high_bits(tmp, w, hu):
    stored = (hu + 1024).astype(np.int64) | (0b1010 << 12)  # garbage above BitsStored
    w(tmp, hu, bits_stored=12, stored=stored)
    return tmp, ("ok", _exact)


def c_signed_12bit(tmp, w, hu):
    # 12-bit two's complement with the unused high bits left zero: needs sign extension
    clipped = np.clip(hu, -2048, 2047)
    w(tmp, clipped, bits_stored=12, pixel_representation=1, intercept=0, stored=clipped.astype(np.int64) & 0x0FFF)

    def check(ct, hu):
        np.testing.assert_array_equal(ct.hu, np.clip(hu, -2048, 2047))
        _geom(ct)

    return tmp, ("ok", check)


def c_padding_value(tmp, w, hu):
    hu = hu.copy()
    hu[:, -1, :] = 500  # stored 1524 is declared padding
    w(tmp, hu, PixelPaddingValue=1524)

    def check(ct, truth):
        assert (ct.hu[:, -1, :] == -1024).all()
        np.testing.assert_array_equal(ct.hu[:, :-1], hu[:, :-1])

    return tmp, ("ok", check)


def c_padding_range(tmp, w, hu):
    hu = np.clip(hu, -900, None)
    hu[:, :2, :] = -1000  # stored 24
    hu[:, 2, :] = -990  # stored 34
    w(tmp, hu, PixelPaddingValue=0, PixelPaddingRangeLimit=40)

    def check(ct, truth):
        assert (ct.hu[:, :3] == -1024).all()
        np.testing.assert_array_equal(ct.hu[:, 3:], hu[:, 3:])

    return tmp, ("ok", check)


def c_outside_field(tmp, w, hu):
    hu = hu.copy()
    hu[:3, 0, :] = -3024
    hu[3:, 0, :] = -2048
    w(tmp, hu, pixel_representation=1, intercept=-1024)

    def check(ct, truth):
        assert (ct.hu[:, 0, :] == -1024).all()
        np.testing.assert_array_equal(ct.hu[:, 1:], hu[:, 1:])

    return tmp, ("ok", check)


def c_monochrome1(tmp, w, hu):
    w(tmp, hu, PhotometricInterpretation="MONOCHROME1")
    return tmp, ("warn", "MONOCHROME1: that only inverts the display", _exact)


def c_single_slice(tmp, w, hu):
    w(tmp, hu[:1], SpacingBetweenSlices="3.0")

    def check(ct, hu1):
        np.testing.assert_array_equal(ct.hu, hu[:1])
        _geom(ct, spacing=(3.0, 0.7, 0.8))

    return tmp, ("warn", "single slice; slice spacing 3 mm taken from SpacingBetweenSlices", check)


def c_single_slice_thickness(tmp, w, hu):
    w(tmp, hu[:1])

    def check(ct, hu1):
        _geom(ct, spacing=(2.5, 0.7, 0.8))

    return tmp, ("warn", "slice spacing 2.5 mm taken from SliceThickness", check)


def c_thin_slab(tmp, w, hu):
    w(tmp, hu[:3])

    def check(ct, truth):
        np.testing.assert_array_equal(ct.hu, hu[:3])
        _geom(ct)

    return tmp, ("warn", "thin slab: 3 slices covering 7.5 mm", check)


def c_no_dicom(tmp, w, hu):
    tmp.mkdir(exist_ok=True)
    (tmp / "notes.txt").write_text("not dicom")
    (tmp / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    return tmp, ("raise", DicomSeriesError, r"No DICOM image found in .*2 non-DICOM\).*lungdamage index")


def c_missing_path(tmp, w, hu):
    return tmp / "nope", ("raise", InputError, "does not exist")


def c_non_dicom_ignored(tmp, w, hu):
    w(tmp, hu)
    (tmp / "README.txt").write_text("scanner export")
    (tmp / "DICOMDIR.bak").write_bytes(bytes(300))
    return tmp, ("ok", _exact)


def c_no_position(tmp, w, hu):
    w(tmp, hu, per_slice=lambda k, ds: delattr(ds, "ImagePositionPatient") if k == 2 else None)
    return tmp, ("raise", DicomSeriesError, r"IM0002.dcm has no ImagePositionPatient")


def c_zip_members(tmp, w, hu):
    paths = w(tmp / "src", hu)
    with zipfile.ZipFile(tmp / "series.zip", "w") as zf:
        for p in paths:
            zf.write(p, f"patient/{p.name}")
    shutil.rmtree(tmp / "src")
    return tmp / "series.zip", ("ok", _exact)


def c_float_slope(tmp, w, hu):
    w(tmp, hu, slope=0.25, intercept=-1024.0, stored=np.rint((hu + 1024) / 0.25).astype(np.int64) + 1)

    def check(ct, truth):
        # stored+1 at slope 0.25 adds 0.25 HU: rounds back to hu
        np.testing.assert_array_equal(ct.hu, hu)

    return tmp, ("ok", check)


def _series_uid(tmp):
    return pydicom.dcmread(sorted(Path(tmp).glob("IM*.dcm"))[0], stop_before_pixels=True).SeriesInstanceUID


def _frame(tmp):
    return pydicom.dcmread(sorted(Path(tmp).glob("IM*.dcm"))[0], stop_before_pixels=True).FrameOfReferenceUID


CASES = [
    c_reverse_file_order, c_shuffled_instance_numbers, c_coronal, c_feet_first_rotated,
    c_duplicate_identical, c_duplicate_conflicting, c_missing_slice, c_missing_slice_allowed,
    c_jitter_within_tolerance, c_irregular_resampled, c_irregular_refused, c_gantry_tilt_corrected,
    c_gantry_tilt_refused, c_mixed_matrix, c_mixed_orientation, c_mixed_frame_of_reference,
    c_two_series, c_two_series_chosen, c_unknown_series_uid, c_per_slice_rescale, c_signed_pixels,
    c_unsigned_12bit_dirty_high_bits, c_signed_12bit, c_padding_value, c_padding_range,
    c_outside_field, c_monochrome1, c_single_slice, c_single_slice_thickness, c_thin_slab,
    c_no_dicom, c_missing_path, c_non_dicom_ignored, c_no_position, c_zip_members, c_float_slope,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[2:] for c in CASES])
def test_series_cases(case, tmp_path, series_writer, phantom):
    hu = phantom()
    source, expectation = case(tmp_path / "s", series_writer, hu)
    kwargs = {}
    if isinstance(source, tuple):
        source, kwargs = source
    kind = expectation[0]
    if kind == "raise":
        _, exc, fragment = expectation
        with pytest.raises(exc, match=fragment) as info:
            read_series(source, **kwargs)
        assert type(info.value) is exc
        assert "Potential fix" in str(info.value)
    elif kind == "warn":
        _, fragment, check = expectation
        with pytest.warns(DicomReadWarning, match=fragment):
            ct = read_series(source, **kwargs)
        assert any(re.search(fragment, m) for m in ct.meta.warnings)
        check(ct, hu)
    else:
        check = expectation[1]
        ct = read_series(source, **kwargs)
        assert ct.meta.warnings == ()
        check(ct, hu)


def test_multiple_series_error_lists_series(tmp_path, series_writer, phantom):
    hu = phantom()
    series_writer(tmp_path, hu, series_uid="1.2.3.4.1")
    series_writer(tmp_path, hu[:2], series_uid="1.2.3.4.2", prefix="S")
    with pytest.raises(MultipleSeriesError) as info:
        read_series(tmp_path)
    assert sorted(info.value.series) == [("1.2.3.4.1", 6, "test series"), ("1.2.3.4.2", 2, "test series")]
    assert "--series-uid" in str(info.value)


def test_meta_and_hash(tmp_path, series_writer, phantom):
    paths = series_writer(
        tmp_path, phantom(), patient_id="PAT7", ContrastBolusAgent="IOMERON", ConvolutionKernel=["Br40d", "3"]
    )
    ct = read_series([str(p) for p in paths[::-1]])
    m = ct.meta
    assert (m.patient_id, m.modality, m.kernel, m.contrast, m.slice_thickness_mm) == (
        "PAT7", "CT", "Br40d\\3", True, 2.5)
    assert (m.study_date, m.study_time, m.manufacturer) == ("20200401", "101500", "TestVendor")
    assert len(m.input_hash) == 64
    assert read_series(tmp_path).meta.input_hash == m.input_hash  # order-independent


def test_matches_simpleitk(tmp_path, series_writer, phantom):
    hu = phantom((12, 9, 11), seed=3)
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    series_writer(tmp_path, hu, iop=(c, s, 0, -s, c, 0), spacing=(1.25, 0.6, 0.9), slope=1, intercept=-1024)
    ct = read_series(tmp_path)
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(tmp_path)))
    img = r.Execute()
    assert ct.same_grid(img, atol_mm=1e-3)
    np.testing.assert_array_equal(ct.hu, sitk.GetArrayFromImage(img))


# --------------------------------------------------------------------------- codecs

CODECS = {
    "jpeg_lossless_p14_sv1": "1.2.840.10008.1.2.4.70",
    "jpeg_ls_lossless": "1.2.840.10008.1.2.4.80",
    "jpeg2000_lossless": "1.2.840.10008.1.2.4.90",
    "rle_lossless": "1.2.840.10008.1.2.5",
}


@pytest.mark.parametrize("name", list(CODECS))
def test_compressed_series_match_uncompressed(name, tmp_path, series_writer, phantom, transcode):
    hu = phantom((5, 16, 12), seed=5)
    paths = series_writer(tmp_path / "raw", hu, intercept=-1024)
    out = tmp_path / name
    out.mkdir()
    for p in paths:
        transcode(p, out / p.name, CODECS[name])
    ct = read_series(out)
    assert ct.meta.extra["transfer_syntax"] == CODECS[name]
    np.testing.assert_array_equal(ct.hu, hu)
    _geom(ct)


def test_deflated_series(tmp_path, series_writer, phantom):
    hu = phantom()
    for p in series_writer(tmp_path, hu):
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
        ds.save_as(p)
    ct = read_series(tmp_path)
    assert ct.meta.extra["transfer_syntax"] == pydicom.uid.DeflatedExplicitVRLittleEndian
    _exact(ct, hu)


def test_rle_encoded_by_pydicom(tmp_path, series_writer, phantom):
    hu = phantom()
    for p in series_writer(tmp_path, hu, pixel_representation=1, intercept=0):
        ds = pydicom.dcmread(p)
        ds.compress(pydicom.uid.RLELossless)
        ds.save_as(p)
    _exact(read_series(tmp_path), hu)


def test_pydicom_data_j2k_matches_uncompressed():
    from pydicom.data import get_testdata_file

    with pytest.warns(DicomReadWarning, match="single slice"):
        j2k = read_series(get_testdata_file("693_J2KR.dcm"))
    with pytest.warns(DicomReadWarning, match="single slice"):
        raw = read_series(get_testdata_file("693_UNCR.dcm"))
    np.testing.assert_array_equal(j2k.hu, raw.hu)
    assert j2k.same_grid(raw)
    assert -1024 <= int(raw.hu.min()) and int(raw.hu.max()) > 1000


def test_pydicom_data_jpeg_ls_matches_uncompressed():
    from pydicom.data import get_testdata_file

    # MR images, but the codec path is the same: JPEG-LS lossless must equal the raw file
    # (reading them also shows the non-CT warning)
    with pytest.warns(DicomReadWarning, match="single slice"), pytest.warns(DicomReadWarning, match="'MR', not CT"):
        jls = read_series(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    with pytest.warns(DicomReadWarning, match="single slice"), pytest.warns(DicomReadWarning, match="'MR', not CT"):
        raw = read_series(get_testdata_file("MR_small.dcm"))
    np.testing.assert_array_equal(jls.hu, raw.hu)


def test_enhanced_multiframe_ct():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    ct = read_series(path)
    frames = ds.pixel_array.astype(np.int32)
    pffg = ds.PerFrameFunctionalGroupsSequence
    iop = np.array(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    pos = np.array([[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in pffg])
    z = pos @ normal  # the normal is -z here (row cosines -x): frames sort by decreasing z
    order = np.argsort(z)
    np.testing.assert_allclose(ct.origin_lps, pos[order[0]])
    pvt = [f.PixelValueTransformationSequence[0] if "PixelValueTransformationSequence" in f
           else ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0] for f in pffg]
    expected = np.stack([frames[k] * float(pvt[k].RescaleSlope) + float(pvt[k].RescaleIntercept) for k in order])
    expected[expected <= -2000] = -1024
    np.testing.assert_array_equal(ct.hu, expected)
    assert ct.shape == (2, 512, 512)
    np.testing.assert_allclose(ct.spacing_mm[0], abs(z[1] - z[0]), atol=1e-4)
    assert ct.meta.extra["n_files"] == 1


# --------------------------------------------------------------------------- real data


def _realdata_series(root: Path):
    from lungdamage.io.catalog import scan

    return [s for s in scan(root) if s.n_slices > 0]


@pytest.mark.realdata
@pytest.mark.slow
def test_realdata_matches_simpleitk(realdata):
    series = _realdata_series(realdata)
    assert len(series) >= 30
    for s in series:
        expect = []
        dup = any("duplicate" in i for i in s.issues)
        if dup:
            expect.append("duplicate slice")
        if s.n_slices - dup == 1 or s.z_extent_mm < 10:
            expect.append("single slice|thin slab")
        if expect:
            with pytest.warns(DicomReadWarning, match="|".join(expect)):
                ct = read_series(s)
        else:
            ct = read_series(s)
        # SimpleITK/GDCM sorts the files itself (independent of our ordering)
        r = sitk.ImageSeriesReader()
        r.SetGlobalWarningDisplay(False)
        folder = str(Path(s.files[0]).parent)
        files = r.GetGDCMSeriesFileNames(folder, s.series_uid) if s.series_uid else r.GetGDCMSeriesFileNames(folder)
        assert set(files) <= set(s.files) and (dup or len(files) == len(s.files))
        files = files[:1] if dup and len(files) == 2 else files
        r.SetFileNames(files)
        img = r.Execute() if len(files) > 1 else sitk.ReadImage(files[0])
        ref = sitk.GetArrayFromImage(img).astype(np.int32).reshape(ct.shape)
        ref[ref <= -2000] = -1024
        sp, origin, d = CTVolume.geometry_from_sitk(img)
        if len(files) > 1:
            assert ct.same_grid(img, atol_mm=1e-3), s.series_uid
        else:  # SimpleITK reports 1 mm for a single slice; we use SpacingBetweenSlices/SliceThickness
            np.testing.assert_allclose(ct.spacing_mm[1:], sp[1:], atol=1e-3)
            np.testing.assert_allclose(ct.origin_lps, origin, atol=1e-3)
            np.testing.assert_allclose(ct.direction, d, atol=1e-4)
        np.testing.assert_array_equal(ct.hu, ref, err_msg=s.series_uid)
        # HU sane: air about -1000, soft tissue 0-80 somewhere in the image
        air = np.percentile(ct.hu, 5)
        assert -1100 <= air <= -850 or ct.shape[0] == 1, (s.series_uid, air)
        assert ((ct.hu > 0) & (ct.hu < 80)).mean() > 0.02, s.series_uid
