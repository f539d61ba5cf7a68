"""fastMRI brain multi-coil HDF5 files: lazy validated reading, atomic writing, folder scans.

Layout (exactly as fastMRI stores it; see ``docs/fastmri-io.md``):

* ``kspace``: complex64 ``(slices, coils, H, W)``, centred k-space; ``H`` is the readout (2x
  oversampled), ``W`` the phase encoding. Sizes vary per file (640x320, 768x396, 512x213, ...).
* ``reconstruction_rss``: float32 ``(slices, h, w)``, optional; the RSS image at the recon size.
* ``ismrmrd_header``: the ISMRMRD XML header as a bytes string (:mod:`magphase.io.ismrmrd`).
* attrs: ``acquisition`` (e.g. ``"AXT1POST"``), ``patient_id``, and with a reconstruction
  ``max`` (its maximum) and ``norm`` (its Frobenius norm over the whole volume).

Every problem with a file raises :class:`magphase.errors.DataError` naming the file and the
dataset/attribute at fault; :func:`scan_folder` turns those into reject records.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from magphase.conventions import SEQUENCES, sequence_from_filename
from magphase.errors import DataError
from magphase.io.ismrmrd import AcquisitionHeader, header_to_xml, parse_header
from magphase.mri.rss import rss_reconstruction
from magphase.utils.atomic import atomic_path

logger = logging.getLogger(__name__)

KSPACE = "kspace"
RECONSTRUCTION_RSS = "reconstruction_rss"
ISMRMRD_HEADER = "ismrmrd_header"
#: The ``field`` of errors about the file as a whole (missing, not HDF5, truncated).
CONTAINER = "hdf5"
#: Attributes every volume must carry (the sequence and the patient, used to split without leakage).
REQUIRED_ATTRS: tuple[str, ...] = ("acquisition", "patient_id")
#: Attributes required as well when the file holds ``reconstruction_rss`` (fastMRI derives them from it).
RECONSTRUCTION_ATTRS: tuple[str, ...] = ("max", "norm")
#: The problem of a volume whose k-space is zero everywhere (HDF5 returns zeros for unwritten chunks).
ALL_ZERO = "every sample is zero (an empty or never-written dataset)"


def _attr_value(value: Any) -> Any:
    """HDF5 attribute -> plain Python (bytes -> str, numpy scalars -> int/float, arrays -> lists)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_attr_value(v) for v in value.tolist()] if value.dtype.kind in "OS" else value.tolist()
    return value


class FastMRIVolume:
    """One fastMRI multi-coil volume, opened read-only and validated; slices are read lazily.

    Opening checks the structure (a readable regular file, HDF5, ``kspace`` complex and 4-D,
    ``ismrmrd_header`` parses and its encoded matrix is the k-space H x W,
    ``reconstruction_rss`` shape/dtype if present, required attrs) without reading k-space.
    NaN/Inf are checked on the data actually read (:meth:`kspace_slice`, :meth:`kspace`) or for
    the whole file by :meth:`validate` with ``full=True``.

    Use as a context manager, or call :meth:`close`. The object pickles (the HDF5 handle is
    dropped and reopened on first use), so it can be handed to DataLoader workers.

    Args:
        path: the ``.h5`` file.
        required_attrs: attributes that must be present (default :data:`REQUIRED_ATTRS`;
            ``max``/``norm`` are added when the file has ``reconstruction_rss``). Pass ``()`` to
            accept files with no attributes (the sequence then comes from the file name).

    Raises:
        DataError: for any structural problem, naming the file and the field.
    """

    def __init__(self, path: str | Path, required_attrs: Sequence[str] = REQUIRED_ATTRS):
        self._path = Path(path)
        self._required_attrs = tuple(required_attrs)
        self._file: h5py.File | None = None
        self._pid = os.getpid()
        self._open_and_validate()

    # -- opening and structural validation ------------------------------------------------------

    def _fail(self, field: str | None, problem: str) -> DataError:
        return DataError(self._path, field, problem)

    def _handle(self) -> h5py.File:
        if self._file is not None and self._pid != os.getpid():
            # A forked DataLoader worker inherited the parent's handle: HDF5 handles must not be
            # shared across processes, so drop it (without closing the parent's) and reopen.
            self._file = None
        if self._file is None:
            self._check_regular_file()
            try:
                # No file locking: readers never see a partial file (writes are atomic renames)
                # and locking fails on some network/read-only mounts where datasets live.
                self._file = h5py.File(self._path, "r", locking=False)
            except PermissionError:
                raise self._fail(CONTAINER, "permission denied: the file is not readable") from None
            except OSError as exc:
                if not h5py.is_hdf5(self._path):
                    raise self._fail(CONTAINER, "not an HDF5 file (no HDF5 signature)") from None
                raise self._fail(CONTAINER, f"cannot open HDF5 file (truncated or corrupt): {exc}") from None
            self._pid = os.getpid()
        return self._file

    def _check_regular_file(self) -> None:
        """A readable, non-empty regular file, or the DataError that says what the path is instead."""
        try:
            info = self._path.stat()
        except FileNotFoundError:
            if self._path.is_symlink():
                raise self._fail(
                    CONTAINER, f"dangling symbolic link (-> {os.readlink(self._path)})"
                ) from None
            raise self._fail(CONTAINER, "file does not exist") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._fail(CONTAINER, "symbolic link loop (the link never reaches a file)") from None
            raise self._fail(CONTAINER, f"cannot access: {exc.strerror or exc}") from None
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a special file"
            raise self._fail(CONTAINER, f"not a file ({kind} named like a volume)")
        if info.st_size == 0:
            raise self._fail(CONTAINER, "file is empty (0 bytes)")

    def _open_and_validate(self) -> None:
        f = self._handle()
        try:
            self._validate_structure(f)
        except BaseException:
            self.close()
            raise

    def _dataset(self, f: h5py.File, name: str, required: bool) -> h5py.Dataset | None:
        try:
            if name not in f:
                if required:
                    raise self._fail(name, "dataset is missing")
                return None
            obj = f[name]
        except (OSError, KeyError, RuntimeError) as exc:
            raise self._fail(name, f"cannot read dataset (truncated or corrupt?): {exc}") from None
        if not isinstance(obj, h5py.Dataset):
            raise self._fail(name, f"expected a dataset, found {type(obj).__name__}")
        return obj

    def _validate_structure(self, f: h5py.File) -> None:
        ks = self._dataset(f, KSPACE, required=True)
        assert ks is not None
        if ks.dtype.kind != "c":
            raise self._fail(KSPACE, f"must be complex (complex64), got dtype {ks.dtype}")
        if ks.ndim == 3:
            raise self._fail(
                KSPACE,
                f"3-D shape {ks.shape} looks single-coil (slices x H x W); magphase needs brain "
                "multi-coil k-space (slices x coils x H x W)",
            )
        if ks.ndim != 4:
            raise self._fail(KSPACE, f"must be 4-D (slices, coils, H, W), got shape {ks.shape}")
        if min(ks.shape) < 1:
            raise self._fail(KSPACE, f"has an empty axis: shape {ks.shape}")
        self._kspace_shape: tuple[int, int, int, int] = tuple(int(v) for v in ks.shape)  # type: ignore[assignment]
        self._kspace_dtype = ks.dtype

        hdr = self._dataset(f, ISMRMRD_HEADER, required=True)
        assert hdr is not None
        try:
            raw = hdr[()]
        except (OSError, RuntimeError) as exc:
            raise self._fail(ISMRMRD_HEADER, f"cannot read (truncated or corrupt?): {exc}") from None
        if isinstance(raw, np.ndarray):
            # Some writers store the XML as a 1-element array rather than a scalar.
            raw = raw.reshape(-1)[0] if raw.size == 1 else raw.tobytes()
        if isinstance(raw, np.bytes_ | np.str_):
            raw = raw.item()
        if not isinstance(raw, bytes | str):
            raise self._fail(ISMRMRD_HEADER, f"expected an XML string, got {type(raw).__name__}")
        self._header = parse_header(raw, self._path)

        height, width = self._kspace_shape[-2:]
        if (height, width) != self._header.encoded_matrix[:2]:
            # Real fastMRI files always agree. A file that does not is not what its header says:
            # the recon crop, the phase-encoding limits and the pixel size would all be wrong.
            x, y = self._header.encoded_matrix[:2]
            raise self._fail(
                ISMRMRD_HEADER,
                f"encoding/encodedSpace/matrixSize x, y = {x} x {y} disagrees with kspace H x W = "
                f"{height} x {width}",
            )
        if self._header.n_coils is not None and self._header.n_coils != self._kspace_shape[1]:
            logger.warning(
                "%s: header receiverChannels=%d but kspace has %d coils",
                self._path,
                self._header.n_coils,
                self._kspace_shape[1],
            )

        recon = self._dataset(f, RECONSTRUCTION_RSS, required=False)
        self._recon_shape_stored: tuple[int, int] | None = None
        if recon is not None:
            if recon.dtype.kind != "f":
                raise self._fail(RECONSTRUCTION_RSS, f"must be real floating point, got dtype {recon.dtype}")
            if recon.ndim != 3:
                raise self._fail(RECONSTRUCTION_RSS, f"must be 3-D (slices, h, w), got shape {recon.shape}")
            if recon.shape[0] != self._kspace_shape[0]:
                raise self._fail(
                    RECONSTRUCTION_RSS,
                    f"has {recon.shape[0]} slices but kspace has {self._kspace_shape[0]}",
                )
            self._recon_shape_stored = (int(recon.shape[1]), int(recon.shape[2]))

        try:
            attrs = {str(k): _attr_value(v) for k, v in f.attrs.items()}
        except (OSError, RuntimeError) as exc:
            raise self._fail("attrs", f"cannot read attributes (truncated or corrupt?): {exc}") from None
        required = list(self._required_attrs)
        if recon is not None and self._required_attrs:
            required += [a for a in RECONSTRUCTION_ATTRS if a not in required]
        for name in required:
            if name not in attrs:
                raise self._fail(f"attrs/{name}", "required attribute is missing")
        for name in ("max", "norm"):
            if name in attrs:
                value = attrs[name]
                if not isinstance(value, int | float) or not np.isfinite(value):
                    raise self._fail(f"attrs/{name}", f"must be a finite number, got {value!r}")
        self._attrs = attrs

    # -- context management and pickling ------------------------------------------------------

    def close(self) -> None:
        """Close the HDF5 handle (reopened automatically on the next read)."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    def __enter__(self) -> FastMRIVolume:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"FastMRIVolume({str(self._path)!r}, sequence={self.sequence!r}, "
            f"kspace_shape={self.kspace_shape})"
        )

    # -- metadata -----------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def header(self) -> AcquisitionHeader:
        return self._header

    @property
    def attrs(self) -> dict[str, Any]:
        """File attributes as plain Python values (a copy)."""
        return dict(self._attrs)

    @property
    def sequence(self) -> str | None:
        """The sequence: attr ``acquisition`` when it names one of :data:`SEQUENCES`, else the one in
        the file name, else the raw ``acquisition`` text (None when there is neither)."""
        acquisition = self._attrs.get("acquisition")
        if isinstance(acquisition, str) and acquisition.strip().upper() in SEQUENCES:
            return acquisition.strip().upper()
        from_name = sequence_from_filename(self._path.name)
        if from_name is not None:
            return from_name
        return acquisition.strip() if isinstance(acquisition, str) and acquisition.strip() else None

    @property
    def patient_id(self) -> str | None:
        value = self._attrs.get("patient_id")
        return None if value is None else str(value)

    @property
    def kspace_shape(self) -> tuple[int, int, int, int]:
        """``(slices, coils, H, W)``."""
        return self._kspace_shape

    @property
    def n_slices(self) -> int:
        return self._kspace_shape[0]

    @property
    def n_coils(self) -> int:
        """Coils in the k-space array (authoritative over the header's receiverChannels)."""
        return self._kspace_shape[1]

    @property
    def recon_shape(self) -> tuple[int, int]:
        """``(h, w)`` of the RSS image: stored ``reconstruction_rss`` if any, else the header recon matrix."""
        if self._recon_shape_stored is not None:
            return self._recon_shape_stored
        return self._header.recon_matrix[0], self._header.recon_matrix[1]

    @property
    def has_reconstruction(self) -> bool:
        return self._recon_shape_stored is not None

    # -- data ---------------------------------------------------------------------------------

    def _slice_index(self, index: int) -> int:
        n = self.n_slices
        if not -n <= index < n:
            raise IndexError(f"slice {index} out of range for {n} slices in {self._path}")
        return index % n

    def _read(self, name: str, selection: Any, what: str) -> np.ndarray:
        f = self._handle()
        try:
            return np.asarray(f[name][selection])
        except (OSError, RuntimeError, ValueError) as exc:
            raise self._fail(name, f"cannot read {what} (truncated or corrupt?): {exc}") from None

    def _check_finite(self, data: np.ndarray, name: str, first_slice: int) -> None:
        finite = np.isfinite(data)
        if not finite.all():
            bad = np.flatnonzero(~finite.reshape(data.shape[0], -1).all(axis=1))
            slices = ", ".join(str(first_slice + int(b)) for b in bad[:5])
            raise self._fail(name, f"contains NaN/Inf values (slice {slices})")

    def kspace_slice(self, index: int) -> np.ndarray:
        """K-space of one slice, complex64 ``(coils, H, W)``; reads only that slice from disk.

        Raises:
            IndexError: slice out of range.
            DataError: unreadable data or NaN/Inf in the slice.
        """
        i = self._slice_index(index)
        data = self._read(KSPACE, i, f"slice {i}").astype(np.complex64, copy=False)
        self._check_finite(data[None], KSPACE, i)
        return data

    def kspace(self) -> np.ndarray:
        """The whole k-space volume, complex64 ``(slices, coils, H, W)`` (checked for NaN/Inf)."""
        data = self._read(KSPACE, (), "kspace").astype(np.complex64, copy=False)
        self._check_finite(data, KSPACE, 0)
        return data

    def reconstruction_rss(self, index: int | None = None, compute_if_missing: bool = True) -> np.ndarray:
        """RSS image(s), float32 ``(h, w)`` for one slice or ``(slices, h, w)`` for ``index=None``.

        Reads ``reconstruction_rss`` when stored; otherwise, if ``compute_if_missing``, computes it
        from k-space with :func:`magphase.mri.rss.rss_reconstruction` at the header's recon size.

        Raises:
            DataError: absent and not computed, unreadable, or NaN/Inf.
        """
        if self.has_reconstruction:
            if index is None:
                data = self._read(RECONSTRUCTION_RSS, (), "reconstruction_rss")
                self._check_finite(data, RECONSTRUCTION_RSS, 0)
            else:
                i = self._slice_index(index)
                data = self._read(RECONSTRUCTION_RSS, i, f"slice {i}")
                self._check_finite(data[None], RECONSTRUCTION_RSS, i)
            return data.astype(np.float32, copy=False)
        if not compute_if_missing:
            raise self._fail(RECONSTRUCTION_RSS, "dataset is missing")
        kspace = self.kspace() if index is None else self.kspace_slice(index)
        try:
            return np.asarray(rss_reconstruction(kspace, self.recon_shape))
        except ValueError as exc:
            raise self._fail(RECONSTRUCTION_RSS, f"cannot compute RSS: {exc}") from None

    def validate(self, full: bool = False) -> None:
        """Check the file; with ``full=True`` also read every slice and reject NaN/Inf and all-zero k-space.

        The structure was already validated on open; ``full`` reads one slice at a time so memory
        stays at one slice.

        Raises:
            DataError: the first problem found.
        """
        if not full:
            return
        signal = False
        for i in range(self.n_slices):
            signal = bool(np.any(self.kspace_slice(i))) or signal
            if self.has_reconstruction:
                self.reconstruction_rss(i)
        if not signal:
            raise self._fail(KSPACE, ALL_ZERO)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary: file, sequence, shapes, header fields, attrs."""
        return {
            "file": str(self._path),
            "sequence": self.sequence,
            "patient_id": self.patient_id,
            "kspace_shape": list(self.kspace_shape),
            "n_slices": self.n_slices,
            "n_coils": self.n_coils,
            "recon_shape": list(self.recon_shape),
            "has_reconstruction_rss": self.has_reconstruction,
            "header": self._header.to_dict(),
            "attrs": self.attrs,
        }


def open_volume(path: str | Path, required_attrs: Sequence[str] = REQUIRED_ATTRS) -> FastMRIVolume:
    """Open and validate a fastMRI file (see :class:`FastMRIVolume`)."""
    return FastMRIVolume(path, required_attrs=required_attrs)


# ------------------------------------------------------------------------------------------------
# writing


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def write_volume(
    path: str | Path,
    kspace: np.ndarray | torch.Tensor,
    header: AcquisitionHeader,
    reconstruction_rss: np.ndarray | torch.Tensor | None = None,
    attrs: Mapping[str, Any] | None = None,
    *,
    compute_rss: bool = True,
    compression: str | None = None,
) -> Path:
    """Write a volume in fastMRI's multi-coil layout, atomically (temp file + ``os.replace``).

    Args:
        path: destination ``.h5``; its folder must exist.
        kspace: complex ``(slices, coils, H, W)``; stored as complex64, one chunk per slice so a
            one-slice read touches one chunk. ``(H, W)`` must equal ``header.encoded_matrix[:2]``.
        header: written as ``ismrmrd_header``; ``n_coils`` None is filled from the array.
        reconstruction_rss: float ``(slices, h, w)``; when None and ``compute_rss`` it is computed
            with :func:`rss_reconstruction` at ``header.recon_matrix[:2]`` (fastMRI's targets);
            when None and not ``compute_rss`` the dataset is omitted.
        attrs: file attributes. ``acquisition`` defaults to the sequence in the file name and
            ``patient_id`` to the file stem; ``max``/``norm`` default to the reconstruction's
            maximum and Frobenius norm. Other entries are stored as given.
        compression: optional h5py filter for both datasets (``"gzip"``, ``"lzf"``); None as fastMRI.

    Returns:
        The written path.

    Raises:
        ValueError: inconsistent or non-finite arrays, or no ``acquisition`` can be determined.
    """
    path = Path(path)
    kspace_np = _as_numpy(kspace)
    if not np.iscomplexobj(kspace_np):
        raise ValueError(f"kspace must be complex, got dtype {kspace_np.dtype}")
    if kspace_np.ndim != 4 or min(kspace_np.shape) < 1:
        raise ValueError(f"kspace must be (slices, coils, H, W), got shape {kspace_np.shape}")
    kspace_np = kspace_np.astype(np.complex64, copy=False)
    if not np.isfinite(kspace_np).all():
        raise ValueError("kspace contains NaN/Inf")
    n_slices, n_coils, height, width = kspace_np.shape
    if (height, width) != header.encoded_matrix[:2]:
        raise ValueError(
            f"kspace {height}x{width} does not match the header's encoded matrix {header.encoded_matrix[:2]}"
        )
    if header.n_coils is None:
        header = dataclasses.replace(header, n_coils=n_coils)
    elif header.n_coils != n_coils:
        raise ValueError(f"header n_coils={header.n_coils} but kspace has {n_coils} coils")

    recon_np: np.ndarray | None
    if reconstruction_rss is None:
        recon_np = np.asarray(rss_reconstruction(kspace_np, header.recon_matrix)) if compute_rss else None
    else:
        recon_np = _as_numpy(reconstruction_rss)
        if recon_np.dtype.kind not in "fiu":
            raise ValueError(f"reconstruction_rss must be real, got dtype {recon_np.dtype}")
        recon_np = recon_np.astype(np.float32, copy=False)
        if recon_np.ndim != 3 or recon_np.shape[0] != n_slices:
            raise ValueError(f"reconstruction_rss must be ({n_slices}, h, w), got shape {recon_np.shape}")
        if not np.isfinite(recon_np).all():
            raise ValueError("reconstruction_rss contains NaN/Inf")

    file_attrs: dict[str, Any] = dict(attrs or {})
    if "acquisition" not in file_attrs:
        sequence = sequence_from_filename(path.name)
        if sequence is None:
            raise ValueError(f"attrs has no 'acquisition' and the file name {path.name!r} names no sequence")
        file_attrs["acquisition"] = sequence
    file_attrs.setdefault("patient_id", path.stem)
    if recon_np is not None:
        file_attrs.setdefault("max", float(recon_np.max()))
        file_attrs.setdefault("norm", float(np.linalg.norm(recon_np)))

    xml = header_to_xml(header).encode("utf-8")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(KSPACE, data=kspace_np, chunks=(1, n_coils, height, width), compression=compression)
        if recon_np is not None:
            f.create_dataset(
                RECONSTRUCTION_RSS,
                data=recon_np,
                chunks=(1, *recon_np.shape[1:]),
                compression=compression,
            )
        # np.bytes_ gives a fixed-length scalar string dataset; h5py reads it back as bytes,
        # which is what fastMRI's `etree.fromstring(hf["ismrmrd_header"][()])` expects.
        f.create_dataset(ISMRMRD_HEADER, data=np.bytes_(xml))
        for key, value in file_attrs.items():
            f.attrs[key] = value
    logger.debug("wrote %s: kspace %s", path, kspace_np.shape)
    return path


# ------------------------------------------------------------------------------------------------
# folder scans


@dataclass(frozen=True)
class VolumeInfo:
    """What a scan learned about one readable volume (no k-space loaded)."""

    path: Path
    sequence: str | None
    patient_id: str | None
    kspace_shape: tuple[int, int, int, int]
    recon_shape: tuple[int, int]
    has_reconstruction: bool
    header: AcquisitionHeader = field(repr=False)

    @property
    def n_slices(self) -> int:
        return self.kspace_shape[0]

    @property
    def n_coils(self) -> int:
        return self.kspace_shape[1]


@dataclass(frozen=True)
class Reject:
    """A file a batch job skipped: which file, which field (dataset/attribute), and why."""

    path: Path
    field: str | None
    reason: str

    @classmethod
    def from_error(cls, error: DataError, path: Path) -> Reject:
        return cls(path=Path(error.path) if error.path else path, field=error.field, reason=error.problem)


def scan_folder(
    folder: str | Path,
    pattern: str = "*.h5",
    full: bool = False,
    required_attrs: Sequence[str] = REQUIRED_ATTRS,
) -> tuple[list[VolumeInfo], list[Reject]]:
    """Open every file matching ``pattern`` in ``folder`` (not recursive, sorted by name).

    Files that fail validation are skipped and reported; the scan never stops on a bad file.
    Matching entries that are not regular files (a folder named ``x.h5``, a looping or dangling
    link) are reported too, not skipped in silence.
    With ``full=True`` every slice is also read and checked for NaN/Inf (slow on real data).

    Returns:
        ``(volumes, rejects)``.

    Raises:
        DataError: ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, None, "not a folder")
    volumes: list[VolumeInfo] = []
    rejects: list[Reject] = []
    for path in sorted(folder.glob(pattern)):
        try:
            with FastMRIVolume(path, required_attrs=required_attrs) as volume:
                volume.validate(full=full)
                volumes.append(
                    VolumeInfo(
                        path=path,
                        sequence=volume.sequence,
                        patient_id=volume.patient_id,
                        kspace_shape=volume.kspace_shape,
                        recon_shape=volume.recon_shape,
                        has_reconstruction=volume.has_reconstruction,
                        header=volume.header,
                    )
                )
        except DataError as exc:
            logger.warning("skipping %s", exc)
            rejects.append(Reject.from_error(exc, path))
    logger.info("scanned %s: %d volumes, %d rejected", folder, len(volumes), len(rejects))
    return volumes, rejects


__all__ = [
    "ALL_ZERO",
    "CONTAINER",
    "ISMRMRD_HEADER",
    "KSPACE",
    "RECONSTRUCTION_ATTRS",
    "RECONSTRUCTION_RSS",
    "REQUIRED_ATTRS",
    "FastMRIVolume",
    "Reject",
    "VolumeInfo",
    "open_volume",
    "scan_folder",
    "write_volume",
]
