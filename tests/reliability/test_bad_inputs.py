"""Bad-input suite (issue 19): malformed fastMRI HDF5, fastMRI+ CSV and NIfTI inputs, each fed to
every command that reads that kind of file.

What a user must see, per case and command (one parametrised test each):

* a single-file command (``info``, ``labels``, a ``prepare`` whose annotation CSV is unreadable)
  exits non-zero with exactly one ``error:`` line naming the file and the field (HDF5 dataset or
  attribute, CSV column, ...), no traceback, and no output file;
* a batch job over a folder of volumes (``prepare``, ``prepare-external``) exits 0, lists the bad
  volume in ``OUT/rejects.csv`` with its file and field, and still processes the good volumes of
  the same folder; a bad annotation *row* is listed in ``OUT/annotation_rejects.csv`` (``labels``
  lists it under ``rejects`` in its JSON) while the good rows are used;
* nothing half-written is left behind (:func:`cli_helpers.partial_outputs` is empty).

Cases that are not errors by nature, or not for every command, say so in their id and in
``H5Case.accepted_by`` / ``CsvCase.labels_accepts``: CRLF line ends and a UTF-8 BOM are read exactly
like the plain file; duplicate rows are de-duplicated (reported as rejects of
kind ``duplicate``); ``info`` without ``--full`` reads no k-space, so it cannot see NaN/Inf/zeros
(``--full`` does); ``labels`` has no images, so a box outside the image or a slice beyond the volume
is only detectable by ``prepare``.

The unreadable-file case cannot use ``chmod 000`` when the suite runs as root (root reads any
file), so there ``h5py.File`` is made to raise the ``PermissionError`` that h5py raises for
``errno 13`` on that one path; as any other user the file really is ``chmod 000``.

NIfTI: no command reads NIfTI (``prepare --nifti`` only writes it), so the library reader
:func:`magphase.io.nifti.read_nifti` is tested directly: it raises :class:`DataError` naming the
file and the field, never another exception type.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import io
import json
import os
import shutil
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import h5py
import nibabel as nib
import numpy as np
import pytest

from cli_helpers import assert_one_clear_error, partial_outputs, run_main
from magphase.errors import DataError
from magphase.io.ismrmrd import header_to_xml, parse_header
from magphase.io.nifti import export_nifti, read_nifti

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from prepare_fixtures import lesion_box_row, write_phantom_volume  # noqa: E402

# Two good volumes (the smallest phantom that still yields a 96 x 96 patch inside the brain):
# a normal and an abnormal one with a lesion box. 2 slices, 2 coils, 128 x 128.
SHAPE = (128, 128)
NORMAL = "file_brain_AXT1_200_1001"
ABNORMAL = "file_brain_AXFLAIR_200_1002"
LESION = (1, 70, 56, 5)
GOOD = (NORMAL, ABNORMAL)
# One patch per volume, a 96 x 96 external matrix with one centre patch: each prepare run < 0.5 s.
TINY_CONFIG = """\
prepare:
  normal_patches: [1, 1]
  unlabeled_patches: [1, 1]
  abnormal_box_patches: [1, 1]
  abnormal_volume_normal_patches: [0, 0]
  min_brain_fraction: 0.5
  external: {matrix: [96, 96], grid: 1, keep: 1}
"""
HEAD = "file,slice,study_level,x,y,width,height,label"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Folder holding the two good volumes and the tiny config (read-only for the tests)."""
    root = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(19)
    write_phantom_volume(root / f"{NORMAL}.h5", rng, n_slices=2, n_coils=2, shape=SHAPE)
    write_phantom_volume(root / f"{ABNORMAL}.h5", rng, n_slices=2, n_coils=2, shape=SHAPE, lesion=LESION)
    (root / "tiny.yaml").write_text(TINY_CONFIG)
    return root


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _stored_volumes(out: Path) -> set[str]:
    return {row["volume"] for row in _read_csv(out / "patches" / "manifest.csv")}


def _assert_clean_batch(code: int, out: str, err: str) -> None:
    """A batch that met bad items: exit 0, no traceback, no ``error:`` line."""
    assert code == 0, out + err
    assert "Traceback" not in out + err, out + err
    assert not [line for line in err.splitlines() if line.startswith("error:")], err


# ================================================================================================
# fastMRI HDF5


def _copy(template: Path, folder: Path, stem: str) -> Path:
    return Path(shutil.copy(template / f"{NORMAL}.h5", folder / f"{stem}.h5"))


def _mutate(template: Path, folder: Path, stem: str, edit: Callable[[h5py.File], None]) -> Path:
    """A copy of a valid volume with ``edit`` applied in place."""
    path = _copy(template, folder, stem)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _replace(name: str, data: np.ndarray) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]
        f.create_dataset(name, data=data)

    return edit


def _kspace_like(f: h5py.File, fill: float | complex | None = None) -> np.ndarray:
    data = np.asarray(f["kspace"])
    if fill is not None:
        data[1, 0, 40:44, 30:34] = fill
    return data


def _set_kspace(fill: float | complex) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f["kspace"][...] = _kspace_like(f, fill)

    return edit


def _truncated(fraction: float) -> Callable[[Path, Path, str], Path]:
    def make(template: Path, folder: Path, stem: str) -> Path:
        path = _copy(template, folder, stem)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
        return path

    return make


def _bytes(content: bytes) -> Callable[[Path, Path, str], Path]:
    def make(template: Path, folder: Path, stem: str) -> Path:
        path = folder / f"{stem}.h5"
        path.write_bytes(content)
        return path

    return make


def _edited(edit: Callable[[h5py.File], None]) -> Callable[[Path, Path, str], Path]:
    return lambda template, folder, stem: _mutate(template, folder, stem, edit)


def _zero_axis(axis: int) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        shape = list(f["kspace"].shape)
        shape[axis] = 0
        _replace("kspace", np.zeros(shape, np.complex64))(f)

    return edit


def _kspace_group(f: h5py.File) -> None:
    del f["kspace"]
    f.create_group("kspace")


def _all_zero(f: h5py.File) -> None:
    f["kspace"][...] = np.zeros(f["kspace"].shape, np.complex64)


def _header_matrix_mismatch(f: h5py.File) -> None:
    header = parse_header(f["ismrmrd_header"][()])
    x, y, z = header.encoded_matrix
    wrong = dataclasses.replace(header, encoded_matrix=(2 * x, y, z))
    _replace("ismrmrd_header", np.bytes_(header_to_xml(wrong).encode()))(f)


def _directory(template: Path, folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.h5"
    path.mkdir()
    (path / "kspace").write_text("a folder named like a volume\n")
    return path


def _symlink_loop(template: Path, folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.h5"
    path.symlink_to(path.name)  # -> itself
    return path


def _dangling_symlink(template: Path, folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.h5"
    path.symlink_to(folder / "moved_away.h5")
    return path


def _unreadable(template: Path, folder: Path, stem: str) -> Path:
    path = _copy(template, folder, stem)
    path.chmod(0)  # as root this alone reads fine: see _simulated_permission_denied
    return path


@contextlib.contextmanager
def _simulated_permission_denied(path: Path) -> Iterator[None]:
    """As root, make ``h5py.File(path)`` fail as it does for other users of a ``chmod 000`` file."""
    if os.geteuid() != 0:
        yield
        return
    real_file = h5py.File

    def file(name, *args, **kwargs):
        if Path(name).resolve() == path.resolve():
            raise PermissionError(
                13,
                "Unable to synchronously open file (unable to open file: name = "
                f"'{path}', errno = 13, error message = 'Permission denied', flags = 0, o_flags = 0)",
            )
        return real_file(name, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(h5py, "File", file)
        yield


COMMANDS_H5_FILE = ("info", "info --full")
COMMANDS_H5_BATCH = ("prepare", "prepare-external")


@dataclass(frozen=True)
class H5Case:
    """A malformed volume: how to make it, the field its error names, a word of the problem, and
    the commands that accept it by design (command -> why)."""

    make: Callable[[Path, Path, str], Path]
    field: str
    needle: str
    accepted_by: dict[str, str] = field(default_factory=dict)
    sequence: str = "AXT2"


_HEADER_ONLY_INFO = {"info": "info reads the header only; --full reads every slice"}

H5_CASES: dict[str, H5Case] = {
    "empty-file": H5Case(_bytes(b""), "hdf5", "empty"),
    "not-hdf5-text": H5Case(_bytes(b"file,slice\nthis is a CSV, not HDF5\n"), "hdf5", "not an HDF5 file"),
    "truncated-10pct": H5Case(_truncated(0.10), "hdf5", "truncated"),
    "truncated-50pct": H5Case(_truncated(0.50), "hdf5", "truncated"),
    "truncated-99pct": H5Case(_truncated(0.99), "hdf5", "truncated"),
    "missing-kspace": H5Case(_edited(lambda f: f.__delitem__("kspace")), "kspace", "missing"),
    "kspace-a-group": H5Case(_edited(_kspace_group), "kspace", "expected a dataset"),
    "real-kspace": H5Case(
        _edited(lambda f: _replace("kspace", np.abs(_kspace_like(f)).astype(np.float32))(f)),
        "kspace",
        "complex",
    ),
    "rank-3-kspace": H5Case(
        _edited(lambda f: _replace("kspace", _kspace_like(f)[:, 0])(f)), "kspace", "multi-coil"
    ),
    "rank-5-kspace": H5Case(_edited(lambda f: _replace("kspace", _kspace_like(f)[None])(f)), "kspace", "4-D"),
    "zero-slices": H5Case(_edited(_zero_axis(0)), "kspace", "empty axis"),
    "zero-coils": H5Case(_edited(_zero_axis(1)), "kspace", "empty axis"),
    "nan-kspace": H5Case(_edited(_set_kspace(np.nan)), "kspace", "NaN", _HEADER_ONLY_INFO),
    "inf-kspace": H5Case(_edited(_set_kspace(np.inf)), "kspace", "Inf", _HEADER_ONLY_INFO),
    "all-zero-kspace": H5Case(_edited(_all_zero), "kspace", "zero", _HEADER_ONLY_INFO),
    "missing-ismrmrd_header": H5Case(
        _edited(lambda f: f.__delitem__("ismrmrd_header")), "ismrmrd_header", "missing"
    ),
    "unparsable-ismrmrd_header": H5Case(
        _edited(_replace("ismrmrd_header", np.bytes_(b"<ismrmrdHeader><encoding>"))),
        "ismrmrd_header",
        "malformed XML",
    ),
    "header-matrix-disagrees": H5Case(_edited(_header_matrix_mismatch), "ismrmrd_header", "matrixSize"),
    "missing-acquisition-attr": H5Case(
        _edited(lambda f: f.attrs.__delitem__("acquisition")),
        "attrs/acquisition",
        "missing",
        {
            "info": "info needs no attributes: the sequence comes from the file name",
            "info --full": "info needs no attributes: the sequence comes from the file name",
        },
    ),
    "unknown-sequence": H5Case(
        _edited(lambda f: f.attrs.__setitem__("acquisition", "AXPD")),
        "attrs/acquisition",
        "AXPD",
        {
            "info": "info describes any file and shows the sequence as stored",
            "info --full": "info describes any file and shows the sequence as stored",
            "prepare-external": "external volumes take their sequence from the labels CSV",
        },
        sequence="AXPD",
    ),
    "directory-named-h5": H5Case(_directory, "hdf5", "not a file"),
    "symlink-loop": H5Case(_symlink_loop, "hdf5", "symbolic link"),
    "dangling-symlink": H5Case(_dangling_symlink, "hdf5", "symbolic link"),
    "unreadable-chmod-000": H5Case(_unreadable, "hdf5", "permission denied"),
}


def _h5_params(commands: tuple[str, ...]) -> list:
    return [
        pytest.param(name, command, id=f"{name}-{command.replace(' ', '')}")
        for name in H5_CASES
        for command in commands
    ]


def _bad_stem(name: str, case: H5Case) -> str:
    index = list(H5_CASES).index(name)
    return f"file_brain_{case.sequence}_300_{9000 + index}"


@pytest.mark.parametrize(("name", "command"), _h5_params(COMMANDS_H5_FILE))
def test_hdf5_single_file(name, command, template, tmp_path, monkeypatch, capsys) -> None:
    """``magphase info FILE`` (and ``--full``): one clear error naming file and dataset/attribute."""
    case = H5_CASES[name]
    path = case.make(template, tmp_path, _bad_stem(name, case))
    with _simulated_permission_denied(path) if name.startswith("unreadable") else contextlib.nullcontext():
        code, out, err = run_main(monkeypatch, capsys, *command.split(), path)
    if command in case.accepted_by:
        assert code == 0 and "Traceback" not in out + err and "error:" not in err, out + err
    else:
        assert_one_clear_error(code, out, err, path.name, f"[{case.field}]", case.needle)
    assert partial_outputs(tmp_path) == []


def _batch_argv(command: str, raw: Path, out: Path, template: Path) -> list[str | Path]:
    argv: list[str | Path] = [command, "--config", template / "tiny.yaml", "--raw", raw, "--out", out]
    if command == "prepare-external":
        labels = raw.parent / "labels.csv"
        stems = sorted(p.name[:-3] for p in raw.iterdir())
        labels.write_text("file,label,sequence\n" + "".join(f"{s},healthy,AXT1\n" for s in stems))
        argv += ["--labels", labels]
    return argv


@pytest.mark.parametrize(("name", "command"), _h5_params(COMMANDS_H5_BATCH))
def test_hdf5_in_a_batch(name, command, template, tmp_path, monkeypatch, capsys) -> None:
    """``prepare`` / ``prepare-external`` over a folder: the bad volume is a reject naming file and
    field, the good volumes beside it are processed, nothing half-written is left."""
    case = H5_CASES[name]
    raw = tmp_path / "raw"
    raw.mkdir()
    for stem in GOOD:
        shutil.copy(template / f"{stem}.h5", raw)
    bad = case.make(template, raw, _bad_stem(name, case))
    out = tmp_path / "out"
    argv = _batch_argv(command, raw, out, template)
    with _simulated_permission_denied(bad) if name.startswith("unreadable") else contextlib.nullcontext():
        code, stdout, stderr = run_main(monkeypatch, capsys, *argv)
    _assert_clean_batch(code, stdout, stderr)
    rejects = {Path(r["file"]).name: r for r in _read_csv(out / "rejects.csv")}
    stored = _stored_volumes(out)
    if command in case.accepted_by:
        assert bad.name not in rejects and bad.name[:-3] in stored, rejects
    else:
        assert bad.name in rejects, rejects
        assert rejects[bad.name]["field"] == case.field, rejects[bad.name]
        assert case.needle in rejects[bad.name]["reason"], rejects[bad.name]
        assert bad.name[:-3] not in stored
    assert set(GOOD) <= stored and not set(GOOD) & {k[:-3] for k in rejects}
    assert partial_outputs(tmp_path) == []


# ================================================================================================
# fastMRI+ annotation CSV

UNLISTED = "file_brain_AXT1_999_9999"
GOOD_ROWS = [f"{NORMAL},0,Yes,,,,,Normal for age", lesion_box_row(ABNORMAL, LESION, SHAPE[0], "Mass")]
GOOD_TEXT = "\n".join([HEAD, *GOOD_ROWS]) + "\n"


@dataclass(frozen=True)
class CsvCase:
    """A malformed (or merely unusual) annotation CSV.

    ``kind``: ``fatal`` (the whole file is unusable: one error line), ``row`` (one bad row: a reject
    naming the column, the good rows used), ``accepted`` (read exactly like :data:`GOOD_TEXT`).
    ``labels_accepts``: why ``labels`` cannot see a row problem that ``prepare`` reports.
    """

    content: bytes
    kind: str
    field: str = ""
    needle: str = ""
    file_list: bool = False
    labels_accepts: str = ""


def _rows(
    *extra: str, head: str = HEAD, rows: tuple[str, ...] = tuple(GOOD_ROWS), encoding: str = "utf-8"
) -> bytes:
    return ("\n".join([head, *rows, *extra]) + "\n").encode(encoding)


_NO_IMAGE = "labels has no image to compare the box with; prepare reports it"

CSV_CASES: dict[str, CsvCase] = {
    "missing-column-height": CsvCase(
        _rows(head="file,slice,study_level,x,y,width,label", rows=(f"{NORMAL},0,Yes,,,,Normal for age",)),
        "fatal",
        "height",
        "missing required column",
    ),
    "missing-column-label": CsvCase(
        _rows(head="file,slice,study_level,x,y,width,height", rows=(f"{NORMAL},0,Yes,,,,",)),
        "fatal",
        "label",
        "missing required column",
    ),
    "empty-0-bytes": CsvCase(b"", "fatal", "header", "empty file"),
    "header-only": CsvCase((HEAD + "\n").encode(), "fatal", "rows", "no annotation rows"),
    "utf16": CsvCase(GOOD_TEXT.encode("utf-16"), "fatal", "encoding", "UTF-16"),
    "latin1-bytes": CsvCase(
        _rows(f"{ABNORMAL},1,No,10,20,5,6,Läsion", encoding="latin-1"),
        "fatal",
        "encoding",
        "line 4",
    ),
    "non-numeric-box": CsvCase(_rows(f"{ABNORMAL},1,No,ten,20,5,6,Mass"), "row", "x", "non-numeric"),
    "negative-box": CsvCase(_rows(f"{ABNORMAL},1,No,-3,20,5,6,Mass"), "row", "x", "out-of-image"),
    "ragged-row": CsvCase(_rows(f"{ABNORMAL},1,No,10,20,5,6"), "row", "row", "bad-field-count"),
    "box-outside-image": CsvCase(
        _rows(f"{ABNORMAL},1,No,500,20,5,6,Mass"), "row", "x", "out-of-image", labels_accepts=_NO_IMAGE
    ),
    "box-rows-outside-image": CsvCase(
        _rows(f"{ABNORMAL},1,No,10,200,5,6,Mass"), "row", "y", "out-of-image", labels_accepts=_NO_IMAGE
    ),
    "slice-beyond-volume": CsvCase(
        _rows(f"{ABNORMAL},7,No,10,20,5,6,Mass"), "row", "slice", "out-of-image", labels_accepts=_NO_IMAGE
    ),
    "unknown-file-name": CsvCase(
        _rows(f"{UNLISTED},0,No,10,20,5,6,Mass"), "row", "file", "unknown-file", file_list=True
    ),
    "duplicate-rows-deduplicated": CsvCase(_rows(GOOD_ROWS[1]), "row", "row", "duplicate"),
    "crlf-line-ends-accepted": CsvCase(GOOD_TEXT.replace("\n", "\r\n").encode(), "accepted"),
    "utf8-bom-accepted": CsvCase(b"\xef\xbb\xbf" + GOOD_TEXT.encode(), "accepted"),
}


def _write_csv(folder: Path, case: CsvCase) -> tuple[Path, Path | None]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "brain.csv"
    path.write_bytes(case.content)
    listed = None
    if case.file_list:
        listed = folder / "brain_file_list.csv"
        listed.write_text("".join(f"{stem}\n" for stem in GOOD))
    return path, listed


def _labels(monkeypatch, capsys, brain_csv: Path, file_list: Path | None, out: Path):
    argv: list[str | Path] = ["labels", "--annotations", brain_csv, "--json", "--out", out]
    if file_list is not None:
        argv += ["--file-list", file_list]
    return run_main(monkeypatch, capsys, *argv)


def _volume_labels(path: Path) -> dict[str, tuple[str, str]]:
    return {r["file"]: (r["label"], r["n_boxes"]) for r in _read_csv(path)}


@pytest.fixture(scope="module")
def baseline_labels(tmp_path_factory) -> Path:
    """``magphase labels`` on the plain LF, UTF-8 CSV: the per-volume labels CSV."""
    root = tmp_path_factory.mktemp("lf")
    (root / "brain.csv").write_text(GOOD_TEXT)
    with pytest.MonkeyPatch.context() as mp, _captured() as cap:
        code, out, err = run_main(mp, cap, "labels", "-a", root / "brain.csv", "--out", root / "labels.csv")
    assert code == 0, out + err
    return root / "labels.csv"


@contextlib.contextmanager
def _captured() -> Iterator[SimpleNamespace]:
    """A ``capsys`` stand-in for module-scoped runs of :func:`run_main`."""
    stdout, stderr = io.StringIO(), io.StringIO()
    cap = SimpleNamespace(readouterr=lambda: SimpleNamespace(out=stdout.getvalue(), err=stderr.getvalue()))
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        yield cap


@pytest.mark.parametrize("name", list(CSV_CASES))
def test_csv_labels(name, baseline_labels, tmp_path, monkeypatch, capsys) -> None:
    """``magphase labels --annotations CSV``: fatal files fail with one clear error and no output;
    bad rows are listed under ``rejects`` (file, column) while the good rows label their volumes."""
    case = CSV_CASES[name]
    brain_csv, file_list = _write_csv(tmp_path, case)
    out = tmp_path / "labels.csv"
    code, stdout, stderr = _labels(monkeypatch, capsys, brain_csv, file_list, out)
    if case.kind == "fatal":
        assert_one_clear_error(code, stdout, stderr, brain_csv.name, f"[{case.field}]", case.needle)
        assert not out.exists()
    else:
        _assert_clean_batch(code, stdout, stderr)
        rejects = json.loads(stdout)["rejects"]["rows"]
        if case.kind == "accepted" or case.labels_accepts:
            assert rejects == []
        else:
            assert [(r["source"], r["field"], r["kind"]) for r in rejects] == [
                (str(brain_csv), case.field, case.needle)
            ]
        labels = _volume_labels(out)
        if case.labels_accepts:
            # The box is kept: labels cannot know the image size.
            assert labels[ABNORMAL] == ("abnormal", "2") and labels[NORMAL] == ("normal", "0")
        else:
            baseline = _volume_labels(baseline_labels)
            assert {v: labels[v] for v in GOOD} == {v: baseline[v] for v in GOOD}
    assert partial_outputs(tmp_path) == []


@pytest.fixture(scope="module")
def baseline_prepare(template, tmp_path_factory) -> Path:
    """``magphase prepare`` with the plain CSV: the output folder (its manifest is the reference)."""
    root = tmp_path_factory.mktemp("lf-prepare")
    (root / "brain.csv").write_text(GOOD_TEXT)
    with pytest.MonkeyPatch.context() as mp, _captured() as cap:
        code, out, err = run_main(mp, cap, *_prepare_argv(template, root / "brain.csv", None, root / "out"))
    assert code == 0, out + err
    return root / "out"


def _prepare_argv(template: Path, brain_csv: Path, file_list: Path | None, out: Path) -> list[str | Path]:
    # The good volumes are read in place: prepare never writes into its raw folder.
    argv: list[str | Path] = ["prepare", "--config", template / "tiny.yaml", "--raw", template]
    argv += ["--annotations", brain_csv, "--out", out]
    return argv + (["--file-list", file_list] if file_list is not None else [])


@pytest.mark.parametrize("name", list(CSV_CASES))
def test_csv_prepare(name, template, baseline_prepare, tmp_path, monkeypatch, capsys) -> None:
    """``magphase prepare --annotations CSV``: fatal files stop it before any output; a bad row is in
    ``annotation_rejects.csv`` (CSV, line, volume, column) and both volumes are still prepared."""
    case = CSV_CASES[name]
    brain_csv, file_list = _write_csv(tmp_path / "ann", case)
    out = tmp_path / "out"
    code, stdout, stderr = run_main(monkeypatch, capsys, *_prepare_argv(template, brain_csv, file_list, out))
    if case.kind == "fatal":
        assert_one_clear_error(code, stdout, stderr, brain_csv.name, f"[{case.field}]", case.needle)
        assert not out.exists()
        return
    _assert_clean_batch(code, stdout, stderr)
    rejects = _read_csv(out / "annotation_rejects.csv")
    manifest = (out / "patches" / "manifest.csv").read_bytes()
    if case.kind == "accepted":
        assert rejects == [] and manifest == (baseline_prepare / "patches" / "manifest.csv").read_bytes()
    else:
        assert [(r["file"], r["field"], r["kind"]) for r in rejects] == [
            (str(brain_csv), case.field, case.needle)
        ]
        assert rejects[0]["volume"] in (ABNORMAL, UNLISTED) and rejects[0]["reason"]
        assert set(GOOD) <= _stored_volumes(out)
    assert _read_csv(out / "rejects.csv") == []
    assert partial_outputs(tmp_path) == []


# The external set's labels CSV (read by prepare-external only): whole-file problems are fatal.
EXTERNAL_LABELS_CASES: dict[str, tuple[bytes, str, str]] = {
    "latin1-bytes": (f"file,label,sequence\n{NORMAL},gesund-ä,AXT1\n".encode("latin-1"), "encoding", "UTF-8"),
    "missing-column-label": (f"file,sequence\n{NORMAL},AXT1\n".encode(), "label", "missing required column"),
    "volume-listed-twice": (
        f"file,label,sequence\n{NORMAL},healthy,AXT1\n{NORMAL}.h5,healthy,AXT1\n".encode(),
        "file",
        "listed twice",
    ),
}


@pytest.mark.parametrize("name", list(EXTERNAL_LABELS_CASES))
def test_external_labels_csv(name, template, tmp_path, monkeypatch, capsys) -> None:
    """``prepare-external --labels CSV``: one clear error naming the CSV and column, no output folder."""
    content, field_name, needle = EXTERNAL_LABELS_CASES[name]
    labels = tmp_path / "labels.csv"
    labels.write_bytes(content)
    out = tmp_path / "out"
    argv = ["prepare-external", "--config", template / "tiny.yaml", "--raw", template, "--labels", labels]
    code, stdout, stderr = run_main(monkeypatch, capsys, *argv, "--out", out)
    assert_one_clear_error(code, stdout, stderr, labels.name, f"[{field_name}]", needle)
    assert not out.exists() and partial_outputs(tmp_path) == []


# ================================================================================================
# NIfTI (library reader: no command reads NIfTI)


def _valid_nifti(folder: Path) -> Path:
    """A magnitude image large enough that cutting the file in half cuts the voxel data."""
    rng = np.random.default_rng(5)
    volume = (rng.standard_normal((3, 40, 30)) + 1j * rng.standard_normal((3, 40, 30))).astype(np.complex64)
    mag, _ = export_nifti(volume, folder / "vol", voxel_size_mm=(0.7, 0.8, 5.0))
    return mag


def _nifti_of(data: np.ndarray) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / "bad.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), path)
        return path

    return make


def _nifti_zero_voxel_size(folder: Path) -> Path:
    """pixdim[2] (the row spacing) patched to 0 in the header bytes (nibabel would not write it)."""
    path = _nifti_of(np.ones((7, 10, 3)))(folder)
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[84:88] = struct.pack("<f", 0.0)  # NIfTI-1 pixdim starts at byte 76; pixdim[2]
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def _nifti_truncated(folder: Path) -> Path:
    path = _valid_nifti(folder)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _nifti_truncated_in_header(folder: Path) -> Path:
    path = folder / "vol.nii"
    path.write_bytes(gzip.decompress(_valid_nifti(folder).read_bytes())[:200])
    return path


def _nifti_truncated_uncompressed(folder: Path) -> Path:
    path = folder / "vol.nii"
    path.write_bytes(gzip.decompress(_valid_nifti(folder).read_bytes())[:-100])
    return path


def _nifti_not_gzip(folder: Path) -> Path:
    path = _valid_nifti(folder)
    path.write_bytes(gzip.decompress(path.read_bytes()))  # a plain .nii under a .nii.gz name
    return path


def _nifti_empty(folder: Path) -> Path:
    path = folder / "empty.nii.gz"
    path.write_bytes(b"")
    return path


def _nifti_not_nifti(folder: Path) -> Path:
    path = folder / "text.nii.gz"
    path.write_bytes(gzip.compress(b"not a NIfTI header at all\n" * 20))
    return path


NIFTI_CASES: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "truncated-gz": (_nifti_truncated, "data", "truncated"),
    "truncated-uncompressed": (_nifti_truncated_uncompressed, "data", "truncated"),
    "truncated-in-header": (_nifti_truncated_in_header, "header", "truncated"),
    "not-gzip-named-nii-gz": (_nifti_not_gzip, "gzip", "not gzip"),
    "empty-file": (_nifti_empty, "gzip", "empty"),
    "not-nifti-header": (_nifti_not_nifti, "header", "not a NIfTI"),
    "2-d": (_nifti_of(np.ones((7, 10))), "dim", "3-D"),
    "4-d": (_nifti_of(np.ones((7, 10, 3, 2))), "dim", "3-D"),
    "nan": (_nifti_of(np.where(np.arange(210).reshape(7, 10, 3) == 5, np.nan, 1.0)), "data", "NaN"),
    "inf": (_nifti_of(np.where(np.arange(210).reshape(7, 10, 3) == 5, np.inf, 1.0)), "data", "Inf"),
    "all-zero": (_nifti_of(np.zeros((7, 10, 3))), "data", "zero"),
    "zero-voxel-size": (_nifti_zero_voxel_size, "pixdim", "voxel size"),
}


def test_nifti_reader_reads_what_export_writes(tmp_path) -> None:
    """The reference the bad cases break: export -> read is the identity on the magnitude."""
    rng = np.random.default_rng(5)
    volume = (rng.standard_normal((3, 10, 7)) + 1j * rng.standard_normal((3, 10, 7))).astype(np.complex64)
    mag, phase = export_nifti(volume, tmp_path / "vol", voxel_size_mm=(0.7, 0.8, 5.0))
    image = read_nifti(mag)
    assert image.data.dtype == np.float32 and image.data.shape == (3, 10, 7)
    np.testing.assert_allclose(image.data, np.abs(volume), rtol=1e-6)
    np.testing.assert_allclose(read_nifti(phase).data, np.angle(volume), atol=1e-6)
    assert image.voxel_size_mm == pytest.approx((0.7, 0.8, 5.0))


@pytest.mark.parametrize("name", list(NIFTI_CASES))
def test_nifti_reader(name, tmp_path) -> None:
    """:func:`read_nifti` raises DataError naming the file and the NIfTI field, nothing else."""
    make, field_name, needle = NIFTI_CASES[name]
    path = make(tmp_path)
    with pytest.raises(DataError) as info:
        read_nifti(path)
    assert info.value.path == str(path) and info.value.field == field_name, str(info.value)
    assert needle in info.value.problem and path.name in str(info.value)
    assert partial_outputs(tmp_path) == []


def test_case_count() -> None:
    """Issue 19 asks for at least 40 distinct malformed inputs."""
    assert len(H5_CASES) + len(CSV_CASES) + len(EXTERNAL_LABELS_CASES) + len(NIFTI_CASES) >= 40
