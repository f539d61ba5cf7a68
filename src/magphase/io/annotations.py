"""fastMRI+ brain annotations: parsing, volume labelling (paper 2.1.1) and box coordinates.

Input format (microsoft/fastmri-plus, ``Annotations/brain.csv``)::

    file,slice,study_level,x,y,width,height,label
    file_brain_AXFLAIR_200_6002425,2,No,91,132,7,6,Nonspecific white matter lesion
    file_brain_AXFLAIR_200_6002442,0,Yes,,,,,Normal for age

``file`` is the fastMRI file stem (no ``.h5``). ``study_level=No`` rows are bounding boxes in pixels
of ``reconstruction_rss[slice]`` **after an up/down flip**; ``study_level=Yes`` rows are whole-study
labels with empty coordinates. ``brain_file_list.csv`` (no header, one stem per line) lists every
reviewed volume, including reviewed volumes with no row in ``brain.csv``.

Volume classes (:class:`LabelRules` holds the label sets as data; precedence in
:func:`classify_volume` and ``docs/labels.md``):

1. ``abnormal``: at least one valid box whose label is in ``abnormal_labels`` (wins over everything,
   because a box is a concrete, localised finding).
2. ``normal``: a normal marker (study-level label in ``normal_study_labels`` or a valid box labelled
   in ``normal_image_labels``) and no label outside the normal/tolerated sets anywhere in the volume,
   rejected rows included.
3. ``excluded``: every other volume with at least one annotation row.
4. listed in the file list with no row at all: ``rules.listed_without_rows`` (default ``unlabeled``).
5. absent from both files: ``unlabeled``.

Bad rows never abort parsing: they are returned as :class:`Reject` records. A rejected row can only
push its volume towards ``excluded`` (its label still counts as a finding that blocks ``normal``);
it never makes a volume normal or abnormal. Each reject names the column at fault. A missing
required column, an unreadable, empty or non-UTF-8 file, or a header-only file without a file list
is fatal (:class:`~magphase.errors.DataError` naming the file and the column, ``encoding`` or
``rows``). UTF-8 with a BOM and Windows (CRLF) line ends read exactly like plain UTF-8 with LF.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from magphase.config.labels import (
    PAPER_ABNORMAL_LABELS,
    VOLUME_CLASSES,
    LabelRules,
    VolumeClass,
    normalize_label,
)
from magphase.conventions import SEQUENCES, sequence_from_filename
from magphase.errors import DataError
from magphase.utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)

#: Exact header of a fastMRI+ annotation CSV, in order.
HEADER: tuple[str, ...] = ("file", "slice", "study_level", "x", "y", "width", "height", "label")
#: Row name used by :meth:`AnnotationSet.summary` for files whose name carries no known sequence.
UNKNOWN_SEQUENCE = "unknown"

_BOX_FIELDS: tuple[str, ...] = ("slice", "x", "y", "width", "height")


def volume_key(name: str | os.PathLike[str]) -> str:
    """The fastMRI file stem of a name, ``name.h5`` or a path: ``.../file_brain_X.h5`` -> ``file_brain_X``."""
    base = os.path.basename(os.fspath(name).strip())
    if base.lower().endswith(".h5"):
        base = base[:-3]
    return base


@dataclass(frozen=True)
class Box:
    """One fastMRI+ bounding box, in the CSV's flipped-image pixel convention.

    ``x``/``width`` are columns, ``y``/``height`` rows of ``np.flipud(reconstruction_rss[slice])``.
    Use :meth:`to_array` (or :func:`box_to_array`) for rows/columns on the stored array.
    """

    file: str
    slice: int
    x: int
    y: int
    width: int
    height: int
    label: str

    def to_array(self, image_height: int) -> tuple[int, int, int, int]:
        """Half-open ``(row0, row1, col0, col1)`` on the stored (unflipped) array."""
        return box_to_array(self.x, self.y, self.width, self.height, image_height)


@dataclass(frozen=True)
class StudyLabel:
    """One study-level fastMRI+ label (CSV row with ``study_level=Yes`` and empty coordinates)."""

    file: str
    label: str


@dataclass(frozen=True)
class Reject:
    """A CSV row that was not used as written.

    Attributes:
        source: path of the CSV.
        row: line number in that file (the header is line 1).
        file: the row's file stem ('' when unreadable).
        kind: short category (``duplicate``, ``zero-size``, ``out-of-image``, ``non-numeric``, ...).
        reason: human-readable detail.
        field: the column at fault (``x``, ``slice``, ``label``, ...); ``row`` when it is the whole
            row (a duplicate, a wrong number of fields).
    """

    source: str
    row: int
    file: str
    kind: str
    reason: str
    field: str = ""


@dataclass(frozen=True)
class VolumeAnnotation:
    """Everything the annotation files say about one volume.

    Attributes:
        file: fastMRI file stem (no ``.h5``).
        sequence: sequence parsed from the name (``AXFLAIR`` ...), None when the name has none.
        label: one of :data:`VOLUME_CLASSES`.
        reason: why this class (first deciding rule).
        boxes: valid boxes, CSV order, every label.
        study_labels / image_labels: distinct labels of valid study-level rows / boxes, first-seen order.
        rejected_labels: distinct labels of rejected rows (they block ``normal``, see module doc).
        in_file_list: listed in the file list (True when no list was given and the file has rows).
    """

    file: str
    sequence: str | None
    label: VolumeClass
    reason: str
    boxes: tuple[Box, ...] = ()
    study_labels: tuple[str, ...] = ()
    image_labels: tuple[str, ...] = ()
    rejected_labels: tuple[str, ...] = ()
    in_file_list: bool = True


def classify_volume(
    study_labels: Sequence[str],
    box_labels: Sequence[str],
    rejected_labels: Sequence[str],
    rules: LabelRules,
) -> tuple[VolumeClass, str]:
    """Class of a volume with at least one annotation row, and the reason.

    Precedence: an abnormal box -> ``abnormal``; else a normal marker with every other label
    (study, box, rejected rows) normal or tolerated -> ``normal``; else ``excluded``.
    A label in ``normal_study_labels`` counts as a marker only on a study-level row and one in
    ``normal_image_labels`` only on a box; at the other level it is an unexplained label.
    """
    abnormal = [label for label in box_labels if rules.is_abnormal(label)]
    if abnormal:
        return "abnormal", f"abnormal box: {abnormal[0]}"
    markers = [label for label in study_labels if rules.is_normal_study(label)]
    markers += [label for label in box_labels if rules.is_normal_image(label)]
    others = [
        label for label in study_labels if not (rules.is_normal_study(label) or rules.is_tolerated(label))
    ]
    others += [
        label for label in box_labels if not (rules.is_normal_image(label) or rules.is_tolerated(label))
    ]
    others += [
        label
        for label in rejected_labels
        if not (rules.is_normal_study(label) or rules.is_normal_image(label) or rules.is_tolerated(label))
    ]
    if markers and not others:
        return "normal", f"normal marker: {markers[0]}"
    if markers:
        return "excluded", f"normal marker {markers[0]!r} with other label {others[0]!r}"
    if others:
        return "excluded", f"label outside both classes: {others[0]}"
    return "excluded", "only rejected rows"


@dataclass
class AnnotationSet:
    """Parsed annotations: one :class:`VolumeAnnotation` per volume named in either file.

    Look-ups accept a stem, ``name.h5`` or a path. Volumes absent from the annotation files are
    ``unlabeled`` and have no boxes.
    """

    volumes: dict[str, VolumeAnnotation]
    rejects: list[Reject]
    rules: LabelRules
    source: str = ""
    file_list_source: str | None = None

    def get(self, file: str | os.PathLike[str]) -> VolumeAnnotation | None:
        return self.volumes.get(volume_key(file))

    def label_of(self, file: str | os.PathLike[str]) -> VolumeClass:
        """Class of a volume; ``unlabeled`` when the annotation files do not name it."""
        volume = self.get(file)
        return volume.label if volume is not None else "unlabeled"

    def abnormal_boxes(self, file: str | os.PathLike[str]) -> list[Box]:
        """The volume's valid boxes whose label is abnormal (CSV order); [] when there are none."""
        volume = self.get(file)
        if volume is None:
            return []
        return [box for box in volume.boxes if self.rules.is_abnormal(box.label)]

    def files(self, label: str | None = None, sequence: str | None = None) -> list[str]:
        """Sorted stems of the volumes with this class and/or sequence (None = any)."""
        return sorted(
            key
            for key, volume in self.volumes.items()
            if (label is None or volume.label == label) and (sequence is None or volume.sequence == sequence)
        )

    def summary(self) -> dict[str, dict[str, int]]:
        """Volume counts ``{sequence: {class: n}}`` for every class in :data:`VOLUME_CLASSES`.

        Rows: the five sequences in index order (zeros included), then ``unknown`` only when some
        file name carries no sequence. ``unlabeled`` counts only listed volumes without rows;
        volumes outside the annotation files are not counted.
        """
        counts: dict[str, dict[str, int]] = {seq: dict.fromkeys(VOLUME_CLASSES, 0) for seq in SEQUENCES}
        for volume in self.volumes.values():
            row = volume.sequence if volume.sequence is not None else UNKNOWN_SEQUENCE
            counts.setdefault(row, dict.fromkeys(VOLUME_CLASSES, 0))[volume.label] += 1
        return counts

    def reject_counts(self) -> dict[str, int]:
        """Number of rejects per kind, most frequent first."""
        return dict(Counter(reject.kind for reject in self.rejects).most_common())


def box_to_array(x: int, y: int, width: int, height: int, image_height: int) -> tuple[int, int, int, int]:
    """fastMRI+ box (drawn on the up/down-flipped image) -> half-open rows/columns on the stored array.

    Flipped row ``r`` is stored row ``H - 1 - r``, so flipped rows ``y .. y + height - 1`` are stored
    rows ``H - y - height .. H - y - 1``; columns are unchanged.

    Args:
        x, y, width, height: box in the CSV's pixels (x, width: columns; y, height: rows).
        image_height: H, rows of that file's ``reconstruction_rss`` slice (320, 384, 213, ...).

    Returns:
        ``(row0, row1, col0, col1)`` with ``stored[row0:row1, col0:col1]`` the box.

    Raises:
        ValueError: non-positive size, negative coordinate, or rows outside ``0 .. image_height``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"box size must be positive, got width={width}, height={height}")
    if x < 0 or y < 0:
        raise ValueError(f"box coordinates must be >= 0, got x={x}, y={y}")
    if y + height > image_height:
        raise ValueError(f"box rows y={y}..{y + height} exceed the image height {image_height}")
    return image_height - y - height, image_height - y, x, x + width


def array_to_box(row0: int, row1: int, col0: int, col1: int, image_height: int) -> tuple[int, int, int, int]:
    """Inverse of :func:`box_to_array`: half-open stored-array rows/columns -> fastMRI+ box.

    Returns:
        ``(x, y, width, height)`` in the CSV's flipped-image convention (what the simulator writes).

    Raises:
        ValueError: empty or reversed ranges, or rows outside ``0 .. image_height``.
    """
    if row1 <= row0 or col1 <= col0:
        raise ValueError(f"empty box: rows {row0}..{row1}, columns {col0}..{col1}")
    if row0 < 0 or col0 < 0 or row1 > image_height:
        raise ValueError(
            f"box rows {row0}..{row1} / columns from {col0} outside an image of height {image_height}"
        )
    return col0, image_height - row1, col1 - col0, row1 - row0


# ----------------------------------------------------------------------------------------- reading


def _open_text(path: Path, what: str) -> str:
    """The file as text: UTF-8 with or without a BOM, any line ends (read as ``\\n``).

    Raises:
        DataError: missing or unreadable file; field ``encoding`` for UTF-16 (BOM or NUL bytes)
            or bytes that are not UTF-8 (naming the line).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(path, None, f"{what} not found") from exc
    except OSError as exc:
        raise DataError(path, None, f"cannot read {what}: {exc}") from exc
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in raw[:4096]:
        raise DataError(
            path, "encoding", f"{what} is UTF-16 (or binary), not UTF-8 text; save it as UTF-8 CSV"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            path,
            "encoding",
            f"{what} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} ({exc.reason}); "
            "save it as UTF-8",
        ) from None
    # Universal newlines, as text-mode reading would do: CRLF (Windows) and CR read as LF.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_file_list(path: str | os.PathLike[str]) -> tuple[list[str], list[Reject]]:
    """Read ``brain_file_list.csv``: one file stem per line, no header.

    A first line reading ``file`` is taken as a header and skipped; blank lines are skipped;
    ``.h5`` suffixes and folders are stripped. Repeated names are reported as rejects.

    Returns:
        (stems in file order without repeats, rejects)
    """
    path = Path(path)
    text = _open_text(path, "file list")
    stems: list[str] = []
    seen: dict[str, int] = {}
    rejects: list[Reject] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        name = line.strip().split(",")[0].strip()
        if not name or (line_number == 1 and name.casefold() == "file"):
            continue
        stem = volume_key(name)
        if stem in seen:
            rejects.append(
                Reject(str(path), line_number, stem, "duplicate", f"repeats line {seen[stem]}", "file")
            )
            continue
        seen[stem] = line_number
        stems.append(stem)
    return stems, rejects


def _parse_int(text: str | None) -> int | None:
    """Integer value of a CSV field (``12`` or ``12.0``); None when not an integer."""
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def _image_shape(shape: Sequence[int]) -> tuple[int | None, int, int]:
    if len(shape) == 2:
        return None, int(shape[0]), int(shape[1])
    if len(shape) == 3:
        return int(shape[0]), int(shape[1]), int(shape[2])
    raise ValueError(f"image shape must be (H, W) or (slices, H, W), got {tuple(shape)}")


@dataclass
class _VolumeRows:
    boxes: list[Box] = field(default_factory=list)
    study_labels: list[str] = field(default_factory=list)
    rejected_labels: list[str] = field(default_factory=list)

    def add_label(self, labels: list[str], label: str) -> None:
        if normalize_label(label) not in {normalize_label(x) for x in labels}:
            labels.append(label)


def read_annotations(
    brain_csv: str | os.PathLike[str],
    file_list: str | os.PathLike[str] | None = None,
    rules: LabelRules | None = None,
    image_shapes: Mapping[str, Sequence[int]] | None = None,
) -> AnnotationSet:
    """Parse a fastMRI+ ``brain.csv`` (and optionally its file list) and label every volume.

    Args:
        brain_csv: annotation CSV with header :data:`HEADER` (any column order; extra columns ignored).
        file_list: ``brain_file_list.csv``; when given, rows of files not in it are rejected
            (``unknown-file``, those volumes become ``excluded``) and listed files without rows get
            ``rules.listed_without_rows``.
        rules: label sets; default :class:`LabelRules`.
        image_shapes: optional ``{file: shape}`` with ``shape`` = ``(H, W)`` of a slice or
            ``(slices, H, W)`` of ``reconstruction_rss``; keys as stems, names or paths. Boxes reaching
            past that width/height (or slice count) are rejected (``out-of-image``). Without a shape
            only negative coordinates are detectable.

    Returns:
        :class:`AnnotationSet` with the volumes and the rejects.

    Raises:
        DataError: unreadable, empty, not UTF-8, header-only without a file list, or a missing
            required column (names the file and the column, ``encoding`` or ``rows``).
    """
    rules = rules or LabelRules()
    path = Path(brain_csv)
    source = str(path)
    rejects: list[Reject] = []

    listed: list[str] | None = None
    if file_list is not None:
        listed, list_rejects = read_file_list(file_list)
        rejects.extend(list_rejects)
    listed_set = set(listed) if listed is not None else None
    shapes = {volume_key(k): _image_shape(v) for k, v in (image_shapes or {}).items()}

    reader = csv.reader(io.StringIO(_open_text(path, "annotation CSV"), newline=""))
    try:
        # Leading blank lines are not a header; a file with nothing else is empty.
        header_fields = next(fields for fields in reader if any(value.strip() for value in fields))
        header = [name.strip().casefold() for name in header_fields]
    except StopIteration:
        raise DataError(path, "header", "empty file (expected header " + ",".join(HEADER) + ")") from None
    for column in HEADER:
        if column not in header:
            raise DataError(path, column, f"missing required column {column!r}; header is {','.join(header)}")
    extra = [name for name in header if name not in HEADER]
    if extra:
        logger.info("%s: ignoring extra columns %s", path, extra)
    index = {column: header.index(column) for column in HEADER}

    rows_by_file: dict[str, _VolumeRows] = {}
    unknown_files: set[str] = set()
    accepted_keys: dict[tuple[object, ...], int] = {}

    def reject(line: int, file: str, kind: str, column: str, reason: str, label: str | None = None) -> None:
        rejects.append(Reject(source, line, file, kind, reason, column))
        # A duplicate repeats an accepted row and an unknown file is handled apart; any other bad
        # row still tells us the volume was annotated, so it can no longer pass as "no rows".
        if file and kind not in ("duplicate", "unknown-file"):
            volume = rows_by_file.setdefault(file, _VolumeRows())
            if label:
                volume.add_label(volume.rejected_labels, label)

    n_rows = 0
    for values in reader:
        line = reader.line_num
        if not any(value.strip() for value in values):
            continue
        n_rows += 1
        if len(values) != len(header):
            file = volume_key(values[index["file"]]) if len(values) > index["file"] else ""
            reject(line, file, "bad-field-count", "row", f"expected {len(header)} fields, got {len(values)}")
            continue
        row = {column: values[i].strip() for column, i in index.items()}
        file = volume_key(row["file"]) if row["file"] else ""
        label = " ".join(row["label"].split())
        if not file:
            reject(line, "", "empty-file", "file", "empty file name")
            continue
        if listed_set is not None and file not in listed_set:
            unknown_files.add(file)
            reject(line, file, "unknown-file", "file", "file not in the file list")
            continue
        if not label:
            reject(line, file, "empty-label", "label", "empty label")
            continue
        level = row["study_level"].casefold()
        if level not in ("yes", "no"):
            reject(
                line,
                file,
                "bad-study-level",
                "study_level",
                f"study_level must be Yes or No, got {row['study_level']!r}",
                label,
            )
            continue

        if level == "yes":
            filled = [name for name in ("x", "y", "width", "height") if row[name]]
            if filled:
                reject(
                    line,
                    file,
                    "study-coordinates",
                    filled[0],
                    f"study-level row has coordinates in {filled}",
                    label,
                )
                continue
            key: tuple[object, ...] = (file, "study", normalize_label(label))
            if key in accepted_keys:
                reject(line, file, "duplicate", "row", f"duplicate of row {accepted_keys[key]}", label)
                continue
            accepted_keys[key] = line
            volume = rows_by_file.setdefault(file, _VolumeRows())
            volume.add_label(volume.study_labels, label)
            continue

        bad = next((name for name in _BOX_FIELDS if _parse_int(row[name]) is None), None)
        if bad is not None:
            kind = "missing-coordinate" if not row[bad] else "non-numeric"
            reject(line, file, kind, bad, f"{bad}={row[bad]!r} is not an integer", label)
            continue
        slice_index, x, y, width, height = (int(float(row[name])) for name in _BOX_FIELDS)
        if width <= 0 or height <= 0:
            reject(
                line,
                file,
                "zero-size",
                "width" if width <= 0 else "height",
                f"box size {width}x{height}",
                label,
            )
            continue
        negative = next((name for name, v in (("slice", slice_index), ("x", x), ("y", y)) if v < 0), None)
        if negative is not None:
            reason = f"negative coordinate (slice={slice_index}, x={x}, y={y})"
            reject(line, file, "out-of-image", negative, reason, label)
            continue
        if file in shapes:
            n_slices, image_height, image_width = shapes[file]
            if x + width > image_width or y + height > image_height:
                reject(
                    line,
                    file,
                    "out-of-image",
                    "x" if x + width > image_width else "y",
                    f"box x={x}..{x + width}, y={y}..{y + height} outside {image_height}x{image_width}",
                    label,
                )
                continue
            if n_slices is not None and slice_index >= n_slices:
                reject(
                    line, file, "out-of-image", "slice", f"slice {slice_index} >= {n_slices} slices", label
                )
                continue
        key = (file, "box", slice_index, x, y, width, height, normalize_label(label))
        if key in accepted_keys:
            reject(line, file, "duplicate", "row", f"duplicate of row {accepted_keys[key]}", label)
            continue
        accepted_keys[key] = line
        rows_by_file.setdefault(file, _VolumeRows()).boxes.append(
            Box(file, slice_index, x, y, width, height, label)
        )
    if not n_rows and file_list is None:
        # With a file list, no rows means every listed volume was reviewed without findings; alone,
        # a header-only file labels nothing and is almost always a failed export.
        raise DataError(
            path, "rows", "no annotation rows after the header (give the file list if none were expected)"
        )

    volumes: dict[str, VolumeAnnotation] = {}
    for file in listed or []:
        if file not in rows_by_file:
            volumes[file] = VolumeAnnotation(
                file=file,
                sequence=sequence_from_filename(file),
                label=rules.listed_without_rows,
                reason="listed in the file list without annotation rows",
            )
    for file, rows in rows_by_file.items():
        image_labels: list[str] = []
        for box in rows.boxes:
            rows.add_label(image_labels, box.label)
        label, reason = classify_volume(rows.study_labels, image_labels, rows.rejected_labels, rules)
        volumes[file] = VolumeAnnotation(
            file=file,
            sequence=sequence_from_filename(file),
            label=label,
            reason=reason,
            boxes=tuple(rows.boxes),
            study_labels=tuple(rows.study_labels),
            image_labels=tuple(image_labels),
            rejected_labels=tuple(rows.rejected_labels),
            in_file_list=listed_set is None or file in listed_set,
        )
    for file in sorted(unknown_files - set(rows_by_file)):
        volumes[file] = VolumeAnnotation(
            file=file,
            sequence=sequence_from_filename(file),
            label="excluded",
            reason="annotated but not in the file list",
            in_file_list=False,
        )
    if rejects:
        logger.warning(
            "%s: %d rejected rows (%s)", path, len(rejects), dict(Counter(r.kind for r in rejects))
        )
    return AnnotationSet(
        volumes=dict(sorted(volumes.items())),
        rejects=rejects,
        rules=rules,
        source=source,
        file_list_source=str(file_list) if file_list is not None else None,
    )


# ----------------------------------------------------------------------------------------- writing


def _csv_row(row: Box | StudyLabel) -> list[str]:
    label = " ".join(row.label.split())
    file = volume_key(row.file)
    if not file or not label:
        raise ValueError(f"annotation row needs a file and a label, got {row!r}")
    if isinstance(row, StudyLabel):
        return [file, "0", "Yes", "", "", "", "", label]
    values = (row.slice, row.x, row.y, row.width, row.height)
    if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
        raise ValueError(f"box fields must be integers, got {row!r}")
    if row.slice < 0 or row.x < 0 or row.y < 0 or row.width <= 0 or row.height <= 0:
        raise ValueError(f"box needs slice, x, y >= 0 and width, height > 0, got {row!r}")
    return [file, str(row.slice), "No", *(str(v) for v in values[1:]), label]


def write_annotations(
    path: str | os.PathLike[str],
    rows: Iterable[Box | StudyLabel],
    file_list_path: str | os.PathLike[str] | None = None,
    files: Iterable[str] | None = None,
) -> None:
    """Write a fastMRI+-format annotation CSV (and optionally its file list), atomically.

    The CSV has exactly the header :data:`HEADER`, LF line ends, box rows in the flipped-image
    convention (convert stored-array boxes with :func:`array_to_box`) and study-level rows as
    ``file,0,Yes,,,,,label`` — the layout of the real ``brain.csv``, which :func:`read_annotations`
    reads back unchanged.

    Args:
        path: CSV to write.
        rows: :class:`Box` and :class:`StudyLabel` records in output order; file names may carry ``.h5``.
        file_list_path: also write the file list (no header, one stem per line).
        files: stems for the file list (include reviewed volumes without findings); default: the
            files of ``rows`` in first-seen order.

    Raises:
        ValueError: a row without file/label, with non-integer or negative coordinates or an empty
            box; ``files`` given without ``file_list_path``.
    """
    if files is not None and file_list_path is None:
        raise ValueError("files given without file_list_path")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    seen_files: dict[str, None] = {}
    for row in rows:
        values = _csv_row(row)
        seen_files.setdefault(values[0], None)
        writer.writerow(values)
    atomic_write_text(buffer.getvalue(), path)
    if file_list_path is not None:
        names = list(dict.fromkeys(volume_key(f) for f in files)) if files is not None else list(seen_files)
        atomic_write_text("".join(f"{name}\n" for name in names), file_list_path)


def write_volume_labels(path: str | os.PathLike[str], annotations: AnnotationSet) -> None:
    """Write one row per volume (``file,sequence,label,reason,n_boxes,n_abnormal_boxes,study_labels,
    image_labels``; label lists joined by ``;``) to a CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ("file", "sequence", "label", "reason", "n_boxes", "n_abnormal_boxes", "study_labels", "image_labels")
    )
    for file, volume in annotations.volumes.items():
        writer.writerow(
            (
                file,
                volume.sequence or "",
                volume.label,
                volume.reason,
                len(volume.boxes),
                len(annotations.abnormal_boxes(file)),
                ";".join(volume.study_labels),
                ";".join(volume.image_labels),
            )
        )
    atomic_write_text(buffer.getvalue(), path)


__all__ = [
    "HEADER",
    "PAPER_ABNORMAL_LABELS",
    "VOLUME_CLASSES",
    "AnnotationSet",
    "Box",
    "LabelRules",
    "Reject",
    "StudyLabel",
    "VolumeAnnotation",
    "array_to_box",
    "box_to_array",
    "classify_volume",
    "normalize_label",
    "read_annotations",
    "read_file_list",
    "volume_key",
    "write_annotations",
    "write_volume_labels",
]
