"""fastMRI HDF5 files: write/read round trips, lazy slices, RSS against numpy and fastMRI's crop,
every bad-input class raising DataError naming file and field, folder scans, ``magphase info``."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from magphase.cli import app, main
from magphase.errors import DataError
from magphase.io.fastmri import FastMRIVolume, Reject, open_volume, scan_folder, write_volume
from magphase.io.ismrmrd import AcquisitionHeader, EncodingLimits, header_to_xml
from magphase.mri.fft import fft2c
from magphase.mri.rss import center_crop, rss_reconstruction

# Small arrays with the proportions of real fastMRI brain sizes (2x readout oversampling, odd
# phase-encoding widths): 640x320 -> 32x16, 768x396 -> 64x33 (recon 384 -> 32), 512x213 -> 48x21.
SHAPES = [
    ((32, 16), (16, 16)),
    ((64, 33), (32, 32)),
    ((48, 21), (24, 21)),
]


def make_header(kspace_hw, recon_hw, **overrides) -> AcquisitionHeader:
    fields = dict(
        encoded_matrix=(*kspace_hw, 1),
        encoded_fov_mm=(440.0, 220.0 * kspace_hw[1] / recon_hw[1], 5.0),
        recon_matrix=(*recon_hw, 1),
        recon_fov_mm=(220.0, 220.0, 5.0),
        field_strength_t=2.8936,
        tr_ms=250.0,
        te_ms=2.64,
        flip_angle_deg=70.0,
        protocol_name="AX T1 POST",
    )
    fields.update(overrides)
    return AcquisitionHeader(**fields)


def random_kspace(rng, shape) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def numpy_rss(kspace: np.ndarray, recon_hw) -> np.ndarray:
    """Direct numpy RSS: centred orthonormal ifft2 per coil, fastMRI crop, sqrt of sum of squares."""
    axes = (-2, -1)
    image = np.fft.fftshift(
        np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), axes=axes, norm="ortho"), axes=axes
    )
    h, w = recon_hw
    top, left = (image.shape[-2] - h) // 2, (image.shape[-1] - w) // 2
    image = image[..., top : top + h, left : left + w]
    return np.sqrt((np.abs(image.astype(np.complex128)) ** 2).sum(axis=-3))


@pytest.fixture
def volume_file(tmp_path, rng):
    """A valid 3-slice, 4-coil file with fastMRI's layout; returns (path, kspace, header)."""
    header = make_header((32, 16), (16, 16))
    kspace = random_kspace(rng, (3, 4, 32, 16))
    path = write_volume(
        tmp_path / "file_brain_AXT1POST_201_6002001.h5",
        kspace,
        header,
        attrs={"acquisition": "AXT1POST", "patient_id": "subject-001", "site": 3},
    )
    return path, kspace, header


# ------------------------------------------------------------------------------------------------
# round trips and layout


@pytest.mark.parametrize(("kspace_hw", "recon_hw"), SHAPES)
def test_write_read_round_trip(tmp_path, rng, kspace_hw, recon_hw):
    header = make_header(kspace_hw, recon_hw)
    kspace = random_kspace(rng, (3, 4, *kspace_hw))
    path = write_volume(tmp_path / "file_brain_AXFLAIR_200_1.h5", kspace, header, attrs={"patient_id": "p1"})
    with open_volume(path) as volume:
        assert volume.path == path
        assert volume.kspace_shape == (3, 4, *kspace_hw)
        assert (volume.n_slices, volume.n_coils) == (3, 4)
        assert volume.recon_shape == recon_hw
        assert volume.sequence == "AXFLAIR"
        assert volume.header == dataclasses.replace(header, n_coils=4)
        np.testing.assert_array_equal(volume.kspace(), kspace)
        for i in range(3):
            np.testing.assert_array_equal(volume.kspace_slice(i), kspace[i])
        np.testing.assert_array_equal(volume.kspace_slice(-1), kspace[2])
        recon = volume.reconstruction_rss()
        assert recon.dtype == np.float32 and recon.shape == (3, *recon_hw)
        # The stored reference reproduces from k-space, both with the library and plain numpy.
        np.testing.assert_allclose(recon, rss_reconstruction(kspace, volume.header.recon_matrix), rtol=1e-6)
        np.testing.assert_allclose(recon, numpy_rss(kspace, recon_hw), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(volume.reconstruction_rss(1), recon[1])
        attrs = volume.attrs
        assert attrs["acquisition"] == "AXFLAIR"
        assert attrs["patient_id"] == "p1"
        assert attrs["max"] == pytest.approx(float(recon.max()))
        assert attrs["norm"] == pytest.approx(float(np.linalg.norm(recon)), rel=1e-6)


def test_file_has_exact_fastmri_layout(volume_file):
    path, kspace, header = volume_file
    with h5py.File(path, "r") as f:
        assert set(f.keys()) == {"kspace", "reconstruction_rss", "ismrmrd_header"}
        assert f["kspace"].dtype == np.complex64 and f["kspace"].shape == (3, 4, 32, 16)
        assert f["reconstruction_rss"].dtype == np.float32 and f["reconstruction_rss"].shape == (3, 16, 16)
        # One chunk per slice: reading a slice touches exactly one chunk.
        assert f["kspace"].chunks == (1, 4, 32, 16)
        assert f["reconstruction_rss"].chunks == (1, 16, 16)
        raw = f["ismrmrd_header"][()]
        assert isinstance(raw, bytes)
        # fastMRI parses the dataset exactly like this.
        root = ET.fromstring(raw)
        ns = {"ismrmrd_namespace": "http://www.ismrm.org/ISMRMRD"}
        x = root.find(
            ".//ismrmrd_namespace:encoding//ismrmrd_namespace:encodedSpace"
            "//ismrmrd_namespace:matrixSize//ismrmrd_namespace:x",
            ns,
        )
        assert int(x.text) == 32
        assert isinstance(f.attrs["acquisition"], str) and f.attrs["acquisition"] == "AXT1POST"
        assert f.attrs["patient_id"] == "subject-001"
        assert float(f.attrs["max"]) > 0 and float(f.attrs["norm"]) > 0
        assert f.attrs["site"] == 3
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_write_accepts_torch_and_explicit_reconstruction(tmp_path, rng):
    header = make_header((32, 16), (16, 16))
    kspace = random_kspace(rng, (2, 3, 32, 16))
    recon = rng.random((2, 16, 16)).astype(np.float32)
    path = write_volume(tmp_path / "v_AXT2.h5", torch.from_numpy(kspace), header, reconstruction_rss=recon)
    with open_volume(path) as volume:
        np.testing.assert_array_equal(volume.kspace(), kspace)
        np.testing.assert_array_equal(volume.reconstruction_rss(), recon)
        assert volume.attrs["max"] == pytest.approx(float(recon.max()))
        assert volume.sequence == "AXT2" and volume.patient_id == "v_AXT2"


def test_write_without_reconstruction_and_compute_on_read(tmp_path, rng):
    header = make_header((64, 33), (32, 32))
    kspace = random_kspace(rng, (2, 2, 64, 33))
    path = write_volume(tmp_path / "x_AXT1.h5", kspace, header, compute_rss=False, compression="gzip")
    with h5py.File(path) as f:
        assert "reconstruction_rss" not in f and "max" not in f.attrs
    with open_volume(path) as volume:
        assert not volume.has_reconstruction
        assert volume.recon_shape == (32, 32)
        np.testing.assert_allclose(volume.reconstruction_rss(0), numpy_rss(kspace[0], (32, 32)), rtol=1e-5)
        with pytest.raises(DataError, match="reconstruction_rss"):
            volume.reconstruction_rss(0, compute_if_missing=False)


def test_write_is_atomic_and_overwrites(tmp_path, rng):
    header = make_header((32, 16), (16, 16))
    path = tmp_path / "a_AXT1.h5"
    write_volume(path, random_kspace(rng, (1, 2, 32, 16)), header)
    second = random_kspace(rng, (2, 2, 32, 16))
    write_volume(path, second, header)
    with open_volume(path) as volume:
        np.testing.assert_array_equal(volume.kspace(), second)
    # A failed write leaves the previous file intact and no temp file behind.
    with pytest.raises(ValueError, match="encoded matrix"):
        write_volume(path, random_kspace(rng, (2, 2, 30, 16)), header)
    with open_volume(path) as volume:
        assert volume.n_slices == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_AXT1.h5"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kspace": np.ones((1, 2, 32, 16), np.float32)}, "complex"),
        ({"kspace": np.ones((2, 32, 16), np.complex64)}, "slices, coils"),
        ({"kspace": np.full((1, 2, 32, 16), np.nan, np.complex64)}, "NaN"),
        ({"reconstruction_rss": np.ones((2, 16, 16), np.float32)}, "reconstruction_rss"),
        ({"header": make_header((32, 16), (16, 16), n_coils=8)}, "n_coils"),
    ],
)
def test_write_rejects_bad_arrays(tmp_path, kwargs, message):
    args = {"kspace": np.ones((1, 2, 32, 16), np.complex64), "header": make_header((32, 16), (16, 16))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        write_volume(tmp_path / "w_AXT1.h5", **args)
    assert list(tmp_path.iterdir()) == []


def test_write_needs_an_acquisition(tmp_path):
    with pytest.raises(ValueError, match="acquisition"):
        write_volume(
            tmp_path / "unnamed.h5", np.ones((1, 1, 32, 16), np.complex64), make_header((32, 16), (16, 16))
        )


# ------------------------------------------------------------------------------------------------
# lazy access


def test_slice_read_is_lazy_and_checked_per_slice(volume_file):
    path, kspace, _ = volume_file
    with h5py.File(path, "r+") as f:
        bad = f["kspace"][2]
        bad[1, 3, 4] = np.nan + 0j
        f["kspace"][2] = bad
    # Opening does not read k-space, and other slices stay readable: only slice 2 is bad.
    with open_volume(path) as volume:
        np.testing.assert_array_equal(volume.kspace_slice(0), kspace[0])
        np.testing.assert_array_equal(volume.kspace_slice(1), kspace[1])
        with pytest.raises(DataError) as info:
            volume.kspace_slice(2)
        assert info.value.field == "kspace" and "slice 2" in str(info.value)
        assert path.name in str(info.value)
        with pytest.raises(DataError, match="NaN"):
            volume.kspace()
        with pytest.raises(DataError, match="slice 2"):
            volume.validate(full=True)
        volume.validate()  # structure only: passes
        with pytest.raises(IndexError):
            volume.kspace_slice(3)


def test_volume_pickles_for_dataloader_workers(volume_file):
    path, kspace, _ = volume_file
    volume = open_volume(path)
    clone = pickle.loads(pickle.dumps(volume))
    volume.close()
    np.testing.assert_array_equal(clone.kspace_slice(1), kspace[1])
    clone.close()
    # Closing is idempotent and reads reopen the handle.
    np.testing.assert_array_equal(clone.kspace_slice(0), kspace[0])
    clone.close()
    clone.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_worker_reopens_instead_of_sharing_the_handle(volume_file):
    path, kspace, _ = volume_file
    volume = open_volume(path)
    np.testing.assert_array_equal(volume.kspace_slice(0), kspace[0])  # parent handle is open
    pid = os.fork()
    if pid == 0:  # child: must not use the inherited handle
        try:
            same = np.array_equal(volume.kspace_slice(1), kspace[1]) and volume._file is not None
            os._exit(0 if same else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    np.testing.assert_array_equal(volume.kspace_slice(2), kspace[2])  # parent unaffected
    volume.close()


@pytest.mark.parametrize("keep", [0.01, 0.5, 0.99, -10])
def test_any_truncation_is_detected(tmp_path, keep):
    header = make_header((32, 16), (16, 16))
    path = write_volume(tmp_path / "cut_AXT2.h5", np.ones((4, 2, 32, 16), np.complex64), header)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[:keep])
    with pytest.raises(DataError) as info:
        open_volume(path)
    assert info.value.field == "hdf5" and "truncated" in info.value.problem


def test_sequence_falls_back_to_file_name(tmp_path, rng):
    header = make_header((32, 16), (16, 16))
    path = write_volume(
        tmp_path / "file_brain_AXT1PRE_203_6000001.h5",
        random_kspace(rng, (1, 1, 32, 16)),
        header,
        attrs={"acquisition": "AX T1 PRE", "patient_id": "p"},
    )
    with open_volume(path) as volume:
        assert volume.sequence == "AXT1PRE"
    with h5py.File(path, "r+") as f:
        del f.attrs["acquisition"]
    with pytest.raises(DataError, match="acquisition"):
        open_volume(path)
    with open_volume(path, required_attrs=()) as volume:
        assert volume.sequence == "AXT1PRE"


# ------------------------------------------------------------------------------------------------
# bad input: every class raises DataError naming the file and the field


def _write_raw(path: Path, header_xml: bytes | None, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f.create_dataset(name, data=data)
        if header_xml is not None:
            f.create_dataset("ismrmrd_header", data=np.bytes_(header_xml))
        f.attrs["acquisition"] = "AXT2"
        f.attrs["patient_id"] = "p"
    return path


GOOD_XML = header_to_xml(make_header((32, 16), (16, 16))).encode()


def _bad_not_hdf5(d: Path) -> Path:
    path = d / "not_hdf5.h5"
    path.write_text("this is a CSV, not HDF5\n1,2,3\n")
    return path


def _bad_truncated(d: Path) -> Path:
    path = write_volume(
        d / "truncated_AXT2.h5", np.ones((4, 2, 32, 16), np.complex64), make_header((32, 16), (16, 16))
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _bad_missing_kspace(d: Path) -> Path:
    return _write_raw(d / "no_kspace.h5", GOOD_XML, reconstruction_rss=np.ones((2, 16, 16), np.float32))


def _bad_float_kspace(d: Path) -> Path:
    return _write_raw(d / "float_kspace.h5", GOOD_XML, kspace=np.ones((2, 2, 32, 16), np.float32))


def _bad_rank3(d: Path) -> Path:
    return _write_raw(d / "single_coil.h5", GOOD_XML, kspace=np.ones((2, 32, 16), np.complex64))


def _bad_rank5(d: Path) -> Path:
    return _write_raw(d / "rank5.h5", GOOD_XML, kspace=np.ones((1, 2, 2, 32, 16), np.complex64))


def _bad_malformed_xml(d: Path) -> Path:
    return _write_raw(d / "bad_xml.h5", GOOD_XML[:-30], kspace=np.ones((2, 2, 32, 16), np.complex64))


def _bad_missing_header(d: Path) -> Path:
    return _write_raw(d / "no_header.h5", None, kspace=np.ones((2, 2, 32, 16), np.complex64))


def _bad_missing_attrs(d: Path) -> Path:
    path = write_volume(
        d / "no_attrs_AXT2.h5", np.ones((2, 2, 32, 16), np.complex64), make_header((32, 16), (16, 16))
    )
    with h5py.File(path, "r+") as f:
        del f.attrs["max"]
    return path


def _bad_recon_slices(d: Path) -> Path:
    return _write_raw(
        d / "recon_slices.h5",
        GOOD_XML,
        kspace=np.ones((2, 2, 32, 16), np.complex64),
        reconstruction_rss=np.ones((3, 16, 16), np.float32),
    )


def _bad_nonfinite_max(d: Path) -> Path:
    path = write_volume(
        d / "inf_max_AXT2.h5", np.ones((1, 1, 32, 16), np.complex64), make_header((32, 16), (16, 16))
    )
    with h5py.File(path, "r+") as f:
        f.attrs["max"] = np.inf
    return path


BAD_FILES = {
    "not_hdf5": (_bad_not_hdf5, "hdf5", "not an HDF5 file"),
    "truncated": (_bad_truncated, "hdf5", "truncated"),
    "missing_kspace": (_bad_missing_kspace, "kspace", "missing"),
    "float_kspace": (_bad_float_kspace, "kspace", "complex"),
    "rank3_single_coil": (_bad_rank3, "kspace", "multi-coil"),
    "rank5": (_bad_rank5, "kspace", "4-D"),
    "malformed_xml": (_bad_malformed_xml, "ismrmrd_header", "malformed XML"),
    "missing_header": (_bad_missing_header, "ismrmrd_header", "missing"),
    "missing_attr": (_bad_missing_attrs, "attrs/max", "missing"),
    "recon_slices": (_bad_recon_slices, "reconstruction_rss", "slices"),
    "nonfinite_max": (_bad_nonfinite_max, "attrs/max", "finite"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_raises_data_error_naming_file_and_field(tmp_path, case):
    make, field, message = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(DataError) as info:
        FastMRIVolume(path)
    error = info.value
    assert path.name in str(error)
    assert error.path == str(path)
    assert error.field == field
    assert message in error.problem


def test_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_volume(tmp_path / "nope.h5")


# ------------------------------------------------------------------------------------------------
# folder scans


def test_scan_folder_skips_and_reports(tmp_path, rng):
    header = make_header((32, 16), (16, 16))
    good = [
        write_volume(tmp_path / "file_brain_AXT2_200_2.h5", random_kspace(rng, (2, 3, 32, 16)), header),
        write_volume(tmp_path / "file_brain_AXFLAIR_200_1.h5", random_kspace(rng, (3, 2, 32, 16)), header),
    ]
    nan_file = write_volume(tmp_path / "file_brain_AXT1_200_3.h5", random_kspace(rng, (2, 2, 32, 16)), header)
    with h5py.File(nan_file, "r+") as f:
        f["kspace"][1, 0, 0, 0] = np.inf
    bad = {case: make(tmp_path) for case, (make, _, _) in BAD_FILES.items()}
    (tmp_path / "notes.txt").write_text("ignored: does not match the pattern")
    (tmp_path / "sub").mkdir()
    write_volume(tmp_path / "sub" / "nested_AXT2.h5", random_kspace(rng, (1, 1, 32, 16)), header)

    volumes, rejects = scan_folder(tmp_path)
    assert [v.path for v in volumes] == sorted([*good, nan_file])  # NaN is not read without full
    assert [v.sequence for v in volumes] == ["AXFLAIR", "AXT1", "AXT2"]
    assert volumes[0].n_slices == 3 and volumes[0].n_coils == 2 and volumes[0].recon_shape == (16, 16)
    assert {r.path for r in rejects} == set(bad.values())
    for reject in rejects:
        assert isinstance(reject, Reject) and reject.reason
    by_name = {r.path.name: r for r in rejects}
    assert by_name["float_kspace.h5"].field == "kspace"
    assert by_name["bad_xml.h5"].field == "ismrmrd_header"

    volumes_full, rejects_full = scan_folder(tmp_path, full=True)
    assert [v.path for v in volumes_full] == sorted(good)
    nan_reject = next(r for r in rejects_full if r.path == nan_file)
    assert nan_reject.field == "kspace" and "slice 1" in nan_reject.reason

    only_flair, _ = scan_folder(tmp_path, pattern="*AXFLAIR*.h5")
    assert [v.path.name for v in only_flair] == ["file_brain_AXFLAIR_200_1.h5"]


def test_scan_folder_requires_a_folder(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        scan_folder(tmp_path / "missing")


# ------------------------------------------------------------------------------------------------
# RSS and centre crop


def fastmri_center_crop(data, shape):
    """fastMRI's transforms.center_crop, re-implemented."""
    w_from = (data.shape[-2] - shape[0]) // 2
    h_from = (data.shape[-1] - shape[1]) // 2
    return data[..., w_from : w_from + shape[0], h_from : h_from + shape[1]]


@pytest.mark.parametrize("in_hw", [(8, 8), (9, 8), (8, 9), (7, 7), (640, 320)])
@pytest.mark.parametrize("out_hw", [(4, 4), (5, 3), (3, 6), (7, 7)])
def test_center_crop_matches_fastmri_geometry(in_hw, out_hw):
    x = np.arange(2 * in_hw[0] * in_hw[1]).reshape(2, *in_hw)
    np.testing.assert_array_equal(center_crop(x, out_hw), fastmri_center_crop(x, out_hw))
    np.testing.assert_array_equal(
        center_crop(torch.from_numpy(x), out_hw).numpy(), fastmri_center_crop(x, out_hw)
    )


def test_center_crop_geometry_by_hand():
    x = np.arange(7 * 6).reshape(7, 6)
    # H=7 -> h=4: from (7-4)//2 = 1, rows 1..4; W=6 -> w=3: from 1, columns 1..3.
    np.testing.assert_array_equal(center_crop(x, (4, 3)), x[1:5, 1:4])
    with pytest.raises(ValueError, match="fit"):
        center_crop(x, (8, 3))
    with pytest.raises(ValueError, match="fit"):
        center_crop(x, (0, 3))


def test_rss_torch_matches_numpy_and_reference(rng):
    kspace = random_kspace(rng, (2, 4, 48, 21))
    expected = numpy_rss(kspace, (24, 21))
    out_np = rss_reconstruction(kspace, (24, 21))
    out_t = rss_reconstruction(torch.from_numpy(kspace), (24, 21, 1))
    assert out_np.dtype == np.float32 and out_np.shape == (2, 24, 21)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_np, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_t.numpy(), expected, rtol=1e-4, atol=1e-5)
    # One slice (coils, H, W) gives one image.
    np.testing.assert_allclose(rss_reconstruction(kspace[0], (24, 21)), expected[0], rtol=1e-5, atol=1e-6)


def test_rss_of_single_coil_point_is_its_magnitude():
    # A single coil holding a known image: RSS returns |image| cropped (analytic case).
    image = np.zeros((1, 16, 8), np.complex64)
    image[0, 8, 4] = 3 - 4j
    out = rss_reconstruction(fft2c(image), (8, 8))
    expected = np.zeros((8, 8), np.float32)
    expected[4, 4] = 5.0
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_rss_rejects_bad_input():
    with pytest.raises(ValueError, match="complex"):
        rss_reconstruction(np.ones((2, 8, 8)), (4, 4))
    with pytest.raises(ValueError, match="fit"):
        rss_reconstruction(np.ones((2, 8, 8), np.complex64), (4, 10))


# ------------------------------------------------------------------------------------------------
# magphase info


def test_info_prints_header_summary(volume_file):
    path, _, _ = volume_file
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    out = result.output
    for text in (
        "AXT1POST",
        "3 x 4 x 32 x 16",
        "32 x 16 x 1",
        "16 x 16 x 1",
        "440 x 220 x 5 mm",
        "2.8936 T",
        "250 ms",
        "2.64 ms",
        "70 deg",
        "patient_id = subject-001",
    ):
        assert text in out, text
    assert "TI" in out and "n/a" in out  # TI absent from this header


def test_info_json(volume_file):
    path, _, header = volume_file
    result = CliRunner().invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["sequence"] == "AXT1POST"
    assert summary["kspace_shape"] == [3, 4, 32, 16]
    assert summary["n_slices"] == 3 and summary["n_coils"] == 4
    assert summary["header"]["encoded_matrix"] == [32, 16, 1]
    assert summary["header"]["recon_fov_mm"] == [220.0, 220.0, 5.0]
    assert summary["header"]["te_ms"] == header.te_ms
    assert summary["attrs"]["patient_id"] == "subject-001"


def test_info_on_corrupt_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    path = _bad_truncated(tmp_path)
    result = CliRunner().invoke(app, ["info", str(path)])
    assert isinstance(result.exception, DataError)
    monkeypatch.setattr(sys, "argv", ["magphase", "info", str(path)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and path.name in err and "truncated" in err


def test_info_full_finds_nan(volume_file, monkeypatch, capsys):
    path, _, _ = volume_file
    with h5py.File(path, "r+") as f:
        f["kspace"][0, 0, 0, 0] = np.nan
    assert CliRunner().invoke(app, ["info", str(path)]).exit_code == 0
    monkeypatch.setattr(sys, "argv", ["magphase", "info", str(path), "--full"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert "NaN" in capsys.readouterr().err


def test_limits_survive_a_file_round_trip(tmp_path, rng):
    header = make_header((32, 16), (16, 16), kspace_encoding_step_1=EncodingLimits(0, 11, 6))
    path = write_volume(tmp_path / "pf_AXT2.h5", random_kspace(rng, (1, 2, 32, 16)), header)
    with open_volume(path) as volume:
        assert volume.header.kspace_encoding_step_1 == EncodingLimits(0, 11, 6)
        assert (volume.header.padding_left, volume.header.padding_right) == (2, 14)
    assert os.path.getsize(path) > 0
