"""The ISMRMRD XML header stored in fastMRI files (dataset ``ismrmrd_header``).

fastMRI keeps the scanner's ISMRMRD header (namespace ``http://www.ismrm.org/ISMRMRD``) as a bytes
string. Its reference ``SliceDataset`` reads, from the first ``encoding``:

* ``encodedSpace/matrixSize/{x,y,z}``  -> ``encoding_size`` (k-space matrix, readout x phase)
* ``reconSpace/matrixSize/{x,y,z}``    -> ``recon_size`` (the image is centre-cropped to x, y)
* ``encodingLimits/kspace_encoding_step_1/{center,maximum}`` ->
  ``padding_left = enc_y // 2 - center`` and ``padding_right = padding_left + maximum + 1``:
  the acquired phase-encoding columns are ``[padding_left, padding_right)`` of the k-space array.

:func:`header_to_xml` writes every one of those elements (plus the acquisition parameters that
``magphase info`` shows), and :func:`parse_header` reads real scanner headers: TR/TE/TI/flip angle
may repeat (multi-echo; the first value is kept), and TI, vendor, institution and the like may be
absent. Axis naming follows ISMRMRD: ``x`` is the readout (array rows of ``kspace[s, c]``, 2x
oversampled in fastMRI brain data), ``y`` the phase encoding (array columns), ``z`` the slice
direction (1 for 2-D acquisitions).
"""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magphase.errors import DataError

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"
#: Proton gyromagnetic ratio / 2 pi in Hz per tesla (CODATA 2018), for the default H1 frequency.
PROTON_GAMMA_HZ_PER_T = 42.577478518e6
_NS = {"mrd": ISMRMRD_NAMESPACE}
_FIELD = "ismrmrd_header"
_PATIENT_POSITIONS = ("HFP", "HFS", "HFDR", "HFDL", "FFP", "FFS", "FFDR", "FFDL")
_TRAJECTORIES = ("cartesian", "epi", "radial", "goldenangle", "spiral", "other")


@dataclass(frozen=True)
class EncodingLimits:
    """An ISMRMRD ``limitType``: the range of one encoding counter (0-based, inclusive)."""

    minimum: int
    maximum: int
    center: int

    @classmethod
    def fully_sampled(cls, n: int) -> EncodingLimits:
        """Limits of ``n`` acquired lines with the k-space centre at ``n // 2`` (fastMRI's centre)."""
        if n < 1:
            raise ValueError(f"number of lines must be >= 1, got {n}")
        return cls(minimum=0, maximum=n - 1, center=n // 2)


@dataclass(frozen=True, kw_only=True)
class AcquisitionHeader:
    """The acquisition parameters magphase reads from / writes to an ISMRMRD header.

    Matrices are ``(x, y, z)`` = (readout, phase encoding, slice) sample counts, so for a 2-D
    fastMRI brain file ``kspace.shape[-2:] == encoded_matrix[:2]`` (e.g. ``(640, 320)``, readout
    2x oversampled) and the RSS image is cropped to ``recon_matrix[:2]`` (e.g. ``(320, 320)``).
    Fields of view are in mm; times in ms (as ISMRMRD stores them).

    ``kspace_encoding_step_1`` defaults to fully sampled phase encoding (``0 .. y-1``, centre
    ``y // 2``) and ``h1_resonance_frequency_hz`` to the proton Larmor frequency at
    ``field_strength_t``. Only the constructor arguments without defaults are required when
    parsing; the others are ``None`` when a real header lacks them.
    """

    encoded_matrix: tuple[int, int, int]
    encoded_fov_mm: tuple[float, float, float]
    recon_matrix: tuple[int, int, int]
    recon_fov_mm: tuple[float, float, float]
    field_strength_t: float
    tr_ms: float
    te_ms: float
    ti_ms: float | None = None
    flip_angle_deg: float | None = None
    n_coils: int | None = None
    kspace_encoding_step_1: EncodingLimits | None = None
    h1_resonance_frequency_hz: int | None = None
    protocol_name: str | None = None
    sequence_type: str | None = None
    echo_spacing_ms: float | None = None
    vendor: str | None = None
    model: str | None = None
    institution: str | None = None
    patient_position: str = "HFS"
    trajectory: str = "cartesian"

    def __post_init__(self) -> None:
        for name in ("encoded_matrix", "recon_matrix"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != 3 or any(v < 1 for v in value):
                raise ValueError(f"{name} must be three positive integers (x, y, z), got {value}")
            object.__setattr__(self, name, value)
        for name in ("encoded_fov_mm", "recon_fov_mm"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3 or not all(math.isfinite(v) and v > 0 for v in value):
                raise ValueError(f"{name} must be three positive finite numbers (x, y, z), got {value}")
            object.__setattr__(self, name, value)
        if not (math.isfinite(self.field_strength_t) and self.field_strength_t > 0):
            raise ValueError(f"field_strength_t must be positive, got {self.field_strength_t}")
        if self.n_coils is not None and int(self.n_coils) < 1:
            raise ValueError(f"n_coils must be >= 1, got {self.n_coils}")
        if self.kspace_encoding_step_1 is None:
            object.__setattr__(
                self, "kspace_encoding_step_1", EncodingLimits.fully_sampled(self.encoded_matrix[1])
            )
        if self.h1_resonance_frequency_hz is None:
            object.__setattr__(
                self, "h1_resonance_frequency_hz", round(PROTON_GAMMA_HZ_PER_T * self.field_strength_t)
            )
        if self.patient_position not in _PATIENT_POSITIONS:
            raise ValueError(
                f"patient_position must be one of {_PATIENT_POSITIONS}, got {self.patient_position!r}"
            )
        if self.trajectory not in _TRAJECTORIES:
            raise ValueError(f"trajectory must be one of {_TRAJECTORIES}, got {self.trajectory!r}")
        left, right = self.padding_left, self.padding_right
        if not 0 <= left < right <= self.encoded_matrix[1]:
            raise ValueError(
                "kspace_encoding_step_1 is inconsistent with the encoded matrix: fastMRI would place the "
                f"acquired columns at [{left}, {right}) of {self.encoded_matrix[1]}"
            )

    @property
    def padding_left(self) -> int:
        """First acquired phase-encoding column, as fastMRI's SliceDataset computes it."""
        assert self.kspace_encoding_step_1 is not None
        return self.encoded_matrix[1] // 2 - self.kspace_encoding_step_1.center

    @property
    def padding_right(self) -> int:
        """One past the last acquired phase-encoding column (fastMRI's ``padding_right``)."""
        assert self.kspace_encoding_step_1 is not None
        return self.padding_left + self.kspace_encoding_step_1.maximum + 1

    @property
    def readout_oversampling(self) -> float:
        """Encoded / recon field of view along the readout (2.0 for fastMRI brain data)."""
        return self.encoded_fov_mm[0] / self.recon_fov_mm[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists, limits a nested dict)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# writing


def _fmt(value: float | int) -> str:
    """Shortest text that reads back to the same number; integral floats print without '.0'."""
    if isinstance(value, int):
        return str(value)
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _sub(parent: ET.Element, tag: str, text: str | float | int | None = None) -> ET.Element:
    child = ET.SubElement(parent, f"{{{ISMRMRD_NAMESPACE}}}{tag}")
    if text is not None:
        child.text = text if isinstance(text, str) else _fmt(text)
    return child


def _xyz(parent: ET.Element, tag: str, values: tuple[float, ...] | tuple[int, ...]) -> None:
    node = _sub(parent, tag)
    for axis, value in zip("xyz", values, strict=True):
        _sub(node, axis, value)


def _limit(parent: ET.Element, tag: str, limits: EncodingLimits) -> None:
    node = _sub(parent, tag)
    _sub(node, "minimum", limits.minimum)
    _sub(node, "maximum", limits.maximum)
    _sub(node, "center", limits.center)


def header_to_xml(header: AcquisitionHeader) -> str:
    """Serialise ``header`` as an ISMRMRD XML document (UTF-8 text with an XML declaration).

    The element order follows ``ismrmrd.xsd``; every element fastMRI's ``SliceDataset`` queries
    is present. Store it in HDF5 as bytes (``xml.encode("utf-8")``), as fastMRI does.
    """
    ET.register_namespace("", ISMRMRD_NAMESPACE)
    root = ET.Element(f"{{{ISMRMRD_NAMESPACE}}}ismrmrdHeader")

    measurement = _sub(root, "measurementInformation")
    _sub(measurement, "patientPosition", header.patient_position)
    if header.protocol_name is not None:
        _sub(measurement, "protocolName", header.protocol_name)

    system = _sub(root, "acquisitionSystemInformation")
    if header.vendor is not None:
        _sub(system, "systemVendor", header.vendor)
    if header.model is not None:
        _sub(system, "systemModel", header.model)
    _sub(system, "systemFieldStrength_T", float(header.field_strength_t))
    if header.n_coils is not None:
        _sub(system, "receiverChannels", int(header.n_coils))
    if header.institution is not None:
        _sub(system, "institutionName", header.institution)

    conditions = _sub(root, "experimentalConditions")
    _sub(conditions, "H1resonanceFrequency_Hz", int(header.h1_resonance_frequency_hz or 0))

    encoding = _sub(root, "encoding")
    encoded = _sub(encoding, "encodedSpace")
    _xyz(encoded, "matrixSize", header.encoded_matrix)
    _xyz(encoded, "fieldOfView_mm", header.encoded_fov_mm)
    recon = _sub(encoding, "reconSpace")
    _xyz(recon, "matrixSize", header.recon_matrix)
    _xyz(recon, "fieldOfView_mm", header.recon_fov_mm)
    limits = _sub(encoding, "encodingLimits")
    assert header.kspace_encoding_step_1 is not None
    _limit(limits, "kspace_encoding_step_1", header.kspace_encoding_step_1)
    _limit(limits, "kspace_encoding_step_2", EncodingLimits.fully_sampled(header.encoded_matrix[2]))
    _sub(encoding, "trajectory", header.trajectory)

    sequence = _sub(root, "sequenceParameters")
    _sub(sequence, "TR", float(header.tr_ms))
    _sub(sequence, "TE", float(header.te_ms))
    if header.ti_ms is not None:
        _sub(sequence, "TI", float(header.ti_ms))
    if header.flip_angle_deg is not None:
        _sub(sequence, "flipAngle_deg", float(header.flip_angle_deg))
    if header.sequence_type is not None:
        _sub(sequence, "sequence_type", header.sequence_type)
    if header.echo_spacing_ms is not None:
        _sub(sequence, "echo_spacing", float(header.echo_spacing_ms))

    ET.indent(root, space="   ")
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + body + "\n"


# --------------------------------------------------------------------------------------------
# parsing


class _Reader:
    """Typed look-ups in one parsed header; every failure is a DataError naming the element."""

    def __init__(self, root: ET.Element, path: str | Path | None):
        self.root = root
        self.path = path

    def fail(self, problem: str) -> DataError:
        return DataError(self.path, _FIELD, problem)

    def all_text(self, element: str) -> list[str]:
        query = "/".join(f"mrd:{part}" for part in element.split("/"))
        return [(node.text or "").strip() for node in self.root.findall(query, _NS)]

    def text(self, element: str, required: bool) -> str | None:
        values = [v for v in self.all_text(element) if v]
        if not values:
            if required:
                raise self.fail(f"required element {element} is missing or empty")
            return None
        return values[0]

    def number(self, element: str, required: bool) -> float | None:
        raw = self.text(element, required)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise self.fail(f"element {element} = {raw!r} is not a number") from None
        if not math.isfinite(value):
            raise self.fail(f"element {element} = {raw!r} is not finite")
        return value

    def integer(self, element: str, required: bool) -> int | None:
        value = self.number(element, required)
        if value is None:
            return None
        if not value.is_integer():
            raise self.fail(f"element {element} = {value} is not an integer")
        return int(value)

    def xyz(self, element: str, cast: type) -> tuple:
        getter = self.integer if cast is int else self.number
        return tuple(getter(f"{element}/{axis}", True) for axis in "xyz")


def parse_header(xml: str | bytes, path: str | Path | None = None) -> AcquisitionHeader:
    """Parse an ISMRMRD XML header (as stored in a fastMRI file) into an :class:`AcquisitionHeader`.

    Args:
        xml: the document, bytes (as read from HDF5) or text.
        path: the file it came from, named in errors.

    Raises:
        DataError: ``(path, "ismrmrd_header", problem)`` when the XML is malformed, is not an
            ISMRMRD header, lacks a required element (matrix sizes, fields of view,
            ``kspace_encoding_step_1`` centre/maximum, field strength, TR, TE) or holds values
            that are not numbers or are inconsistent (e.g. limits outside the encoded matrix).
    """
    if isinstance(xml, str):
        # ElementTree refuses str input carrying an encoding declaration only in some parsers;
        # bytes always work, so normalise to bytes.
        xml = xml.encode("utf-8")
    if not xml or not xml.strip():
        raise DataError(path, _FIELD, "header is empty")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DataError(path, _FIELD, f"malformed XML: {exc}") from None
    expected = f"{{{ISMRMRD_NAMESPACE}}}ismrmrdHeader"
    if root.tag != expected:
        raise DataError(path, _FIELD, f"root element is {root.tag!r}, expected {expected!r}")

    r = _Reader(root, path)
    enc = "encoding/encodedSpace"
    rec = "encoding/reconSpace"
    lim = "encoding/encodingLimits/kspace_encoding_step_1"
    encoded_matrix = r.xyz(f"{enc}/matrixSize", int)
    center = r.integer(f"{lim}/center", True)
    maximum = r.integer(f"{lim}/maximum", True)
    minimum = r.integer(f"{lim}/minimum", False)
    channels = r.integer("acquisitionSystemInformation/receiverChannels", False)
    h1 = r.integer("experimentalConditions/H1resonanceFrequency_Hz", False)
    patient_position = r.text("measurementInformation/patientPosition", False)
    trajectory = r.text("encoding/trajectory", False)
    try:
        return AcquisitionHeader(
            encoded_matrix=encoded_matrix,
            encoded_fov_mm=r.xyz(f"{enc}/fieldOfView_mm", float),
            recon_matrix=r.xyz(f"{rec}/matrixSize", int),
            recon_fov_mm=r.xyz(f"{rec}/fieldOfView_mm", float),
            field_strength_t=r.number("acquisitionSystemInformation/systemFieldStrength_T", True),
            tr_ms=r.number("sequenceParameters/TR", True),
            te_ms=r.number("sequenceParameters/TE", True),
            ti_ms=r.number("sequenceParameters/TI", False),
            flip_angle_deg=r.number("sequenceParameters/flipAngle_deg", False),
            n_coils=channels if channels else None,
            kspace_encoding_step_1=EncodingLimits(
                minimum=0 if minimum is None else minimum, maximum=maximum, center=center
            ),
            h1_resonance_frequency_hz=h1 if h1 else None,
            protocol_name=r.text("measurementInformation/protocolName", False),
            sequence_type=r.text("sequenceParameters/sequence_type", False),
            echo_spacing_ms=r.number("sequenceParameters/echo_spacing", False),
            vendor=r.text("acquisitionSystemInformation/systemVendor", False),
            model=r.text("acquisitionSystemInformation/systemModel", False),
            institution=r.text("acquisitionSystemInformation/institutionName", False),
            patient_position=patient_position if patient_position in _PATIENT_POSITIONS else "HFS",
            trajectory=trajectory if trajectory in _TRAJECTORIES else "other",
        )
    except ValueError as exc:
        raise DataError(path, _FIELD, f"inconsistent header: {exc}") from None


__all__ = [
    "ISMRMRD_NAMESPACE",
    "AcquisitionHeader",
    "EncodingLimits",
    "header_to_xml",
    "parse_header",
]
