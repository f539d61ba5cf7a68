"""fastMRI+ annotations: real brain.csv counts, hand-checked volumes, bad rows, box convention."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from magphase.cli import app
from magphase.errors import DataError
from magphase.io.annotations import (
    HEADER,
    Box,
    LabelRules,
    StudyLabel,
    array_to_box,
    box_to_array,
    read_annotations,
    write_annotations,
    write_volume_labels,
)

# Volume classes on the real fastMRI+ brain.csv + brain_file_list.csv with the default rules
# (documented in docs/labels.md; recomputed independently below).
REAL_TOTALS = {"normal": 371, "abnormal": 345, "excluded": 281, "unlabeled": 4}


@pytest.fixture(scope="module")
def real(fastmri_plus_dir: Path):
    return read_annotations(fastmri_plus_dir / "brain.csv", fastmri_plus_dir / "brain_file_list.csv")


def _pandas_classes(brain_csv: Path, file_list: Path) -> pd.DataFrame:
    """Paper 2.1.1 volume classes by whole-table pandas operations (independent of the parser).

    One flag per row, ``any`` per file, then the class from the three flags.
    """
    table = pd.read_csv(brain_csv).drop_duplicates()
    label = table["label"].str.strip().str.lower()
    is_study = table["study_level"].str.strip().str.lower().eq("yes")
    usable_box = ~is_study & (table["width"] > 0) & (table["height"] > 0)
    abnormal_set = {
        "mass",
        "extra-axial mass",
        "nonspecific lesion",
        "nonspecific white matter lesion",
        "encephalomalacia",
        "lacunar infarct",
        "likely cysts",
    }
    marker = (is_study & label.eq("normal for age")) | (~is_study & label.eq("normal variant"))
    flags = pd.DataFrame(
        {
            "file": table["file"],
            "abnormal": usable_box & label.isin(abnormal_set),
            "marker": marker,
            "other": ~marker,
        }
    )
    per_file = flags.groupby("file")[["abnormal", "marker", "other"]].any()
    per_file["label"] = np.select(
        [per_file["abnormal"], per_file["marker"] & ~per_file["other"]], ["abnormal", "normal"], "excluded"
    )
    listed = pd.read_csv(file_list, header=None, names=["file"])
    merged = listed.merge(per_file[["label"]].reset_index(), on="file", how="left").fillna(
        {"label": "unlabeled"}
    )
    merged["sequence"] = merged["file"].str.extract(r"^file_brain_([A-Z0-9]+?)_\d+_\d+$", expand=False)
    return merged


def test_real_counts_match_independent_computation(real, fastmri_plus_dir: Path) -> None:
    expected = _pandas_classes(fastmri_plus_dir / "brain.csv", fastmri_plus_dir / "brain_file_list.csv")
    crosstab = pd.crosstab(expected["sequence"], expected["label"])
    summary = real.summary()
    for sequence, row in summary.items():
        for label, count in row.items():
            want = (
                int(crosstab.at[sequence, label]) if (sequence in crosstab.index and label in crosstab) else 0
            )
            assert count == want, (sequence, label)
    # Per-volume agreement, not only the marginals.
    ours = {file: volume.label for file, volume in real.volumes.items()}
    assert ours == dict(zip(expected["file"], expected["label"], strict=True))
    totals = {label: sum(row[label] for row in summary.values()) for label in REAL_TOTALS}
    assert totals == REAL_TOTALS
    assert {s for s, row in summary.items() if sum(row.values())} == {"AXFLAIR", "AXT1", "AXT1POST"}


def test_real_rejects(real) -> None:
    rejects = sorted((r.row, r.file, r.kind) for r in real.rejects)
    assert rejects == [
        (2383, "file_brain_AXFLAIR_203_6000890", "duplicate"),
        (3521, "file_brain_AXT1_202_2020089", "zero-size"),
        (6821, "file_brain_AXFLAIR_202_6000476", "zero-size"),
    ]
    n_box_rows, n_study_rows = 7570, 643
    assert sum(len(v.boxes) for v in real.volumes.values()) == n_box_rows - 2
    assert sum(len(v.study_labels) for v in real.volumes.values()) == n_study_rows - 1


@pytest.mark.parametrize(
    ("file", "label"),
    [
        # brain.csv lines 2-7: six "Nonspecific white matter lesion" boxes.
        ("file_brain_AXFLAIR_200_6002425", "abnormal"),
        # line 36: only study-level "Normal for age".
        ("file_brain_AXFLAIR_200_6002442", "normal"),
        # lines 38, 41, ...: "Mass" boxes.
        ("file_brain_AXFLAIR_200_6002456", "abnormal"),
        # "Normal for age" plus "Normal variant" boxes: both markers, nothing else.
        ("file_brain_AXFLAIR_202_6000428", "normal"),
        # lines 5009-5012: only "Normal variant" boxes.
        ("file_brain_AXT1POST_200_6002196", "normal"),
        # "Normal for age" plus 16 "Possible artifact" boxes: the paper excludes possible artifacts.
        ("file_brain_AXFLAIR_202_6000440", "excluded"),
        # "Normal for age" plus study-level "Motion artifact".
        ("file_brain_AXFLAIR_201_6003029", "excluded"),
        # "Normal variant" with "Possible artifact", "Posttreatment change" and "Craniotomy" boxes.
        ("file_brain_AXT1POST_200_6001992", "excluded"),
        # line 1282: only study-level "Global Ischemia".
        ("file_brain_AXFLAIR_201_6002902", "excluded"),
        # lines 2382-2383: the same study-level label twice (one reject), nothing else.
        ("file_brain_AXFLAIR_203_6000890", "excluded"),
        # white matter lesions + possible artifacts + one zero-size box (line 6821): still abnormal.
        ("file_brain_AXFLAIR_202_6000476", "abnormal"),
        # in brain_file_list.csv, no row in brain.csv.
        ("file_brain_AXFLAIR_200_6002474", "unlabeled"),
        # not annotated at all.
        ("file_brain_AXT2_200_2000001", "unlabeled"),
    ],
)
def test_real_hand_checked_volumes(real, file: str, label: str) -> None:
    assert real.label_of(file) == label
    assert real.label_of(f"/data/brain/{file}.h5") == label


def test_real_abnormal_boxes_as_written(real) -> None:
    boxes = real.abnormal_boxes("file_brain_AXFLAIR_200_6002425.h5")
    assert len(boxes) == 6
    # brain.csv line 2: file_brain_AXFLAIR_200_6002425,2,No,91,132,7,6,Nonspecific white matter lesion
    assert boxes[0] == Box(
        "file_brain_AXFLAIR_200_6002425", 2, 91, 132, 7, 6, "Nonspecific white matter lesion"
    )
    # Possible-artifact boxes of an abnormal volume are kept in .boxes but are not abnormal boxes.
    volume = real.get("file_brain_AXFLAIR_202_6000476")
    assert {"Nonspecific white matter lesion", "Possible artifact"} <= {b.label for b in volume.boxes}
    assert {b.label for b in real.abnormal_boxes(volume.file)} == {"Nonspecific white matter lesion"}
    assert real.abnormal_boxes("file_brain_AXFLAIR_200_6002442") == []
    assert real.abnormal_boxes("not_a_file") == []


def test_rules_are_data(fastmri_plus_dir: Path) -> None:
    csv_path, list_path = fastmri_plus_dir / "brain.csv", fastmri_plus_dir / "brain_file_list.csv"
    rules = LabelRules(normal_tolerated_labels=["motion ARTIFACT "], listed_without_rows="normal")
    relaxed = read_annotations(csv_path, list_path, rules=rules)
    assert relaxed.label_of("file_brain_AXFLAIR_201_6003029") == "normal"
    assert relaxed.label_of("file_brain_AXFLAIR_200_6002474") == "normal"
    totals = {label: sum(row[label] for row in relaxed.summary().values()) for label in REAL_TOTALS}
    assert totals == {"normal": 371 + 2 + 4, "abnormal": 345, "excluded": 281 - 2, "unlabeled": 0}
    # Without the file list the 4 reviewed-without-rows volumes are simply not named.
    bare = read_annotations(csv_path)
    assert len(bare.volumes) == 997 and bare.label_of("file_brain_AXFLAIR_200_6002474") == "unlabeled"


def test_label_rules_validation() -> None:
    with pytest.raises(ValidationError):
        LabelRules(abnormal_labels=["Mass", "normal variant"])
    with pytest.raises(ValidationError):
        LabelRules(unknown_field=1)
    with pytest.raises(ValidationError):
        LabelRules(abnormal_labels=["  "])
    assert LabelRules().is_abnormal("  extra-AXIAL   mass ")


# --------------------------------------------------------------------------------- small CSVs


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


HEAD = ",".join(HEADER)
A = "file_brain_AXFLAIR_200_1"
B = "file_brain_AXT1_200_2"
C = "file_brain_AXT1POST_200_3"


def test_precedence_rules(tmp_path: Path) -> None:
    rows = [
        HEAD,
        f"{A},0,Yes,,,,,Normal for age",  # normal marker ...
        f"{A},3,No,10,20,5,6,Mass",  # ... but a concrete abnormal box wins
        f"{B},0,No,1,2,3,4,Normal variant",
        f"{B},0,Yes,,,,,Normal for age",
        f"{C},0,No,1,2,3,4,Normal variant",
        f"{C},1,No,1,2,3,4,Posttreatment change",  # another image-level label -> excluded
        "file_brain_AXT1_200_4,0,No,1,2,3,4,Normal for age",  # study label drawn as a box
        "file_brain_AXT1_200_5,0,Yes,,,,,normal VARIANT",  # image label given study-level
        "file_brain_AXT1_200_6,0,Yes,,,,,  normal for AGE ",
    ]
    annotations = read_annotations(_write(tmp_path / "b.csv", rows))
    assert annotations.label_of(A) == "abnormal"
    assert annotations.label_of(B) == "normal"
    assert annotations.label_of(C) == "excluded"
    assert annotations.label_of("file_brain_AXT1_200_4") == "excluded"
    assert annotations.label_of("file_brain_AXT1_200_5") == "excluded"
    assert annotations.label_of("file_brain_AXT1_200_6") == "normal"
    assert annotations.get(A).study_labels == ("Normal for age",)
    assert annotations.get(A).sequence == "AXFLAIR" and annotations.get(C).sequence == "AXT1POST"
    assert annotations.rejects == []


def test_bad_rows_are_reported_not_fatal(tmp_path: Path) -> None:
    rows = [
        HEAD,
        f"{A},0,No,10,20,5,6,Mass",  # line 2: good
        f"{A},0,No,10,20,5,6,mass",  # 3: duplicate (label case-insensitive)
        f"{A},1,No,10,20,0,6,Mass",  # 4: zero width
        f"{A},1,No,-3,20,5,6,Mass",  # 5: negative x
        f"{A},1,No,ten,20,5,6,Mass",  # 6: non-numeric
        f"{A},1,No,10.5,20,5,6,Mass",  # 7: non-integer
        f"{A},1,No,10,20,5,,Mass",  # 8: missing height
        f"{A},1,Maybe,10,20,5,6,Mass",  # 9: bad study_level
        f"{A},1,No,10,20,5,6",  # 10: 7 fields
        f"{A},1,No,10,20,5,6,",  # 11: empty label
        f"{A},0,Yes,1,2,3,4,Normal for age",  # 12: study row with coordinates
        "file_brain_AXT1_999_9,0,No,10,20,5,6,Mass",  # 13: not in the file list
        ",0,No,10,20,5,6,Mass",  # 14: no file name
        f"{A},2,No,300,20,30,6,Mass",  # 15: beyond a 320-wide image
        f"{A},2,No,10,310,5,20,Mass",  # 16: beyond a 320-high image
        f"{A},40,No,10,20,5,6,Mass",  # 17: slice 40 of 16
        f"{A}.h5 , 5 , no , 12.0 , 20 , 5 , 6 ,  Mass ",  # 18: good (suffix, spaces, 12.0)
    ]
    brain_csv = _write(tmp_path / "brain.csv", rows)
    file_list = _write(tmp_path / "list.csv", [A, B, A])  # A twice: a file-list reject
    annotations = read_annotations(brain_csv, file_list, image_shapes={f"{A}.h5": (16, 320, 320)})
    kinds = {(r.row, r.kind) for r in annotations.rejects if r.source == str(brain_csv)}
    assert kinds == {
        (3, "duplicate"),
        (4, "zero-size"),
        (5, "out-of-image"),
        (6, "non-numeric"),
        (7, "non-numeric"),
        (8, "missing-coordinate"),
        (9, "bad-study-level"),
        (10, "bad-field-count"),
        (11, "empty-label"),
        (12, "study-coordinates"),
        (13, "unknown-file"),
        (14, "empty-file"),
        (15, "out-of-image"),
        (16, "out-of-image"),
        (17, "out-of-image"),
    }
    assert [(r.row, r.kind) for r in annotations.rejects if r.source == str(file_list)] == [(3, "duplicate")]
    volume = annotations.get(A)
    assert volume.boxes == (Box(A, 0, 10, 20, 5, 6, "Mass"), Box(A, 5, 12, 20, 5, 6, "Mass"))
    assert volume.label == "abnormal"
    assert annotations.label_of(B) == "unlabeled"  # listed, no rows
    assert annotations.label_of("file_brain_AXT1_999_9") == "excluded"  # annotated, unknown to the list
    assert annotations.reject_counts()["out-of-image"] == 4


def test_rejected_rows_only_push_towards_excluded(tmp_path: Path) -> None:
    rows = [
        HEAD,
        f"{A},0,Yes,,,,,Normal for age",
        f"{A},1,No,5,5,0,0,Possible artifact",  # zero-size, but the finding still blocks normal
        f"{B},1,No,5,5,0,4,Mass",  # the only abnormal row is unusable: not abnormal, excluded
        f"{C},0,Yes,,,,,Normal for age",
        f"{C},0,Yes,,,,,Normal for age",  # a duplicate marker does not block normal
    ]
    annotations = read_annotations(_write(tmp_path / "b.csv", rows))
    assert annotations.label_of(A) == "excluded"
    assert annotations.get(A).rejected_labels == ("Possible artifact",)
    assert annotations.label_of(B) == "excluded" and annotations.abnormal_boxes(B) == []
    assert annotations.label_of(C) == "normal"


def test_missing_column_is_fatal(tmp_path: Path) -> None:
    path = _write(tmp_path / "b.csv", ["file,slice,study_level,x,y,width,label", f"{A},0,No,1,2,3,Mass"])
    with pytest.raises(DataError) as info:
        read_annotations(path)
    assert info.value.field == "height" and info.value.path == str(path)
    with pytest.raises(DataError, match="empty file"):
        read_annotations(_write(tmp_path / "empty.csv", []))
    with pytest.raises(DataError, match="not found"):
        read_annotations(tmp_path / "missing.csv")


def test_column_order_and_extra_columns(tmp_path: Path) -> None:
    rows = ["label,file,x,y,width,height,slice,study_level,comment", f"Mass,{A},1,2,3,4,5,No,hi"]
    annotations = read_annotations(_write(tmp_path / "b.csv", rows))
    assert annotations.get(A).boxes == (Box(A, 5, 1, 2, 3, 4, "Mass"),)


def test_write_read_round_trip(tmp_path: Path, real) -> None:
    rows: list[Box | StudyLabel] = []
    for volume in list(real.volumes.values())[::10]:
        rows += [StudyLabel(volume.file, label) for label in volume.study_labels]
        rows += volume.boxes
    files = list(real.volumes)[::10]
    write_annotations(tmp_path / "out.csv", rows, tmp_path / "list.csv", files=files)
    again = read_annotations(tmp_path / "out.csv", tmp_path / "list.csv")
    assert again.rejects == []
    assert {f: v.label for f, v in again.volumes.items()} == {f: real.label_of(f) for f in files}
    assert {f: v.boxes for f, v in again.volumes.items()} == {f: real.get(f).boxes for f in files}


def test_writer_format_matches_real_file(tmp_path: Path, fastmri_plus_dir: Path) -> None:
    real_lines = (fastmri_plus_dir / "brain.csv").read_text().splitlines()
    write_annotations(
        tmp_path / "out.csv",
        [
            Box("file_brain_AXFLAIR_200_6002425.h5", 2, 91, 132, 7, 6, "Nonspecific white matter lesion"),
            StudyLabel("file_brain_AXFLAIR_200_6002442", "Normal for age"),
        ],
        tmp_path / "list.csv",
    )
    assert (tmp_path / "out.csv").read_bytes() == (
        "\n".join([real_lines[0], real_lines[1], real_lines[35]]) + "\n"
    ).encode()
    assert (
        tmp_path / "list.csv"
    ).read_text() == "file_brain_AXFLAIR_200_6002425\nfile_brain_AXFLAIR_200_6002442\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    with pytest.raises(ValueError):
        write_annotations(tmp_path / "bad.csv", [Box(A, 0, 1, 2, 0, 4, "Mass")])
    with pytest.raises(ValueError):
        write_annotations(tmp_path / "bad.csv", [StudyLabel(A, " ")])
    with pytest.raises(ValueError):
        write_annotations(tmp_path / "bad.csv", [], files=[A])


# ----------------------------------------------------------------------------- box convention


def test_box_to_array_worked_example() -> None:
    # brain.csv line 2 on a 320-row image: rows 320-132-6 = 182 .. 188, columns 91 .. 98.
    assert box_to_array(91, 132, 7, 6, 320) == (182, 188, 91, 98)
    assert array_to_box(182, 188, 91, 98, 320) == (91, 132, 7, 6)
    assert box_to_array(0, 0, 5, 5, 213) == (208, 213, 0, 5)  # top of the flipped image = bottom rows
    with pytest.raises(ValueError):
        box_to_array(0, 300, 5, 30, 320)
    with pytest.raises(ValueError):
        box_to_array(0, 0, 0, 5, 320)
    with pytest.raises(ValueError):
        array_to_box(5, 5, 0, 3, 320)


@pytest.mark.parametrize("image_height", [320, 384, 213])
def test_box_round_trip_and_pixels(rng: np.random.Generator, image_height: int) -> None:
    width_px = 256
    for _ in range(50):
        height = int(rng.integers(1, image_height + 1))
        y = int(rng.integers(0, image_height - height + 1))
        width = int(rng.integers(1, width_px + 1))
        x = int(rng.integers(0, width_px - width + 1))
        rows_cols = box_to_array(x, y, width, height, image_height)
        assert array_to_box(*rows_cols, image_height) == (x, y, width, height)
        assert box_to_array(*array_to_box(*rows_cols, image_height), image_height) == rows_cols

        # Draw the box where the annotator saw it (on the flipped image), then store unflipped.
        flipped = np.zeros((image_height, width_px), dtype=bool)
        flipped[y : y + height, x : x + width] = True
        stored = np.flipud(flipped)
        row0, row1, col0, col1 = rows_cols
        expected = np.zeros_like(stored)
        expected[row0:row1, col0:col1] = True
        np.testing.assert_array_equal(stored, expected)
        assert Box("f", 0, x, y, width, height, "Mass").to_array(image_height) == rows_cols


# ------------------------------------------------------------------------------------------ CLI


def test_cli_labels_table_and_json(fastmri_plus_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["labels", "--annotations", str(fastmri_plus_dir / "brain.csv")]
    args += ["--file-list", str(fastmri_plus_dir / "brain_file_list.csv")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "volumes.csv"), "--rejects"])
    assert result.exit_code == 0, result.output
    table = {
        m[0]: list(map(int, m[1:]))
        for m in re.findall(r"^(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", result.output, re.M)
    }
    assert table["total"] == [371, 345, 281, 4, 1001]
    assert table["AXFLAIR"][4] + table["AXT1"][4] + table["AXT1POST"][4] == 1001
    assert "rejected rows: 3" in result.output and "brain.csv:2383" in result.output
    volumes = pd.read_csv(tmp_path / "volumes.csv")
    assert len(volumes) == 1001 and volumes["label"].value_counts().to_dict() == REAL_TOTALS

    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["total"] == REAL_TOTALS and report["rejects"]["count"] == 3
    assert report["counts"]["AXT1"]["normal"] == table["AXT1"][0]

    rules = tmp_path / "rules.yaml"
    rules.write_text("listed_without_rows: normal\n")
    result = runner.invoke(app, [*args, "--json", "--rules", str(rules)])
    assert json.loads(result.output)["total"]["normal"] == 375

    config = tmp_path / "config.yaml"
    config.write_text("prepare:\n  labels:\n    normal_tolerated_labels: [Motion artifact]\n")
    result = runner.invoke(app, [*args, "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total"]["normal"] == 373


def test_volume_labels_writer(tmp_path: Path, real) -> None:
    write_volume_labels(tmp_path / "v.csv", real)
    table = pd.read_csv(tmp_path / "v.csv").set_index("file")
    assert table.at["file_brain_AXFLAIR_200_6002425", "n_abnormal_boxes"] == 6
    assert table.at["file_brain_AXFLAIR_200_6002442", "label"] == "normal"


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    # The writer used mkstemp once, which created 0o600 files other users of a data folder could not read.
    old = os.umask(0o022)
    try:
        write_annotations(tmp_path / "out.csv", [StudyLabel(A, "Normal for age")], tmp_path / "list.csv")
    finally:
        os.umask(old)
    for name in ("out.csv", "list.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_cli_bad_csv_raises_data_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "b.csv", ["file,slice,label", f"{A},0,Mass"])
    result = CliRunner().invoke(app, ["labels", "--annotations", str(path)])
    assert isinstance(result.exception, DataError) and result.exception.field == "study_level"
