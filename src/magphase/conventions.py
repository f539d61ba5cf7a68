"""Project-wide fixed conventions (DESIGN.md "Conventions"). Tests pin these values.

Sequences and labels are index-ordered; conditioning tokens append learned extra tokens:
``null`` (dropped condition, for classifier-free guidance) and, for the class stream, ``unknown``
(sequences with no class labels: AXT2, AXT1PRE).
"""

from __future__ import annotations

SEQUENCES: tuple[str, ...] = ("AXFLAIR", "AXT1", "AXT1POST", "AXT1PRE", "AXT2")
#: Sequences whose fastMRI+ volumes carry normal/abnormal labels (paper Fig. 5 and stage 2); the others
#: get the class token ``unknown``.
LABELLED_SEQUENCES: tuple[str, ...] = ("AXFLAIR", "AXT1", "AXT1POST")
UNLABELLED_SEQUENCES: tuple[str, ...] = tuple(s for s in SEQUENCES if s not in LABELLED_SEQUENCES)
LABELS: tuple[str, ...] = ("normal", "abnormal", "unlabeled")

#: Class tokens of the stage-2 flow model: normal, abnormal, unknown, null (index order fixed).
CLASS_TOKENS: tuple[str, ...] = ("normal", "abnormal", "unknown", "null")
#: Sequence tokens: the five sequences then null.
SEQUENCE_TOKENS: tuple[str, ...] = (*SEQUENCES, "null")

SEQUENCE_INDEX: dict[str, int] = {s: i for i, s in enumerate(SEQUENCES)}
LABEL_INDEX: dict[str, int] = {s: i for i, s in enumerate(LABELS)}
CLASS_TOKEN_INDEX: dict[str, int] = {s: i for i, s in enumerate(CLASS_TOKENS)}
NULL_SEQUENCE: int = len(SEQUENCES)
NULL_CLASS: int = CLASS_TOKEN_INDEX["null"]
UNKNOWN_CLASS: int = CLASS_TOKEN_INDEX["unknown"]

PATCH_SIZE: int = 96
LATENT_SHAPE: tuple[int, int, int] = (2, 48, 48)
SPLITS: tuple[str, ...] = ("train", "val", "test")


def sequence_index(name: str) -> int:
    """Index of a sequence name (case-insensitive); raises ValueError naming the valid choices."""
    key = name.strip().upper()
    if key not in SEQUENCE_INDEX:
        raise ValueError(f"unknown sequence {name!r}; expected one of {', '.join(SEQUENCES)}")
    return SEQUENCE_INDEX[key]


def sequence_from_filename(name: str) -> str | None:
    """The fastMRI sequence in a file name such as ``file_brain_AXT1POST_201_6002780.h5``.

    Longest match wins so AXT1POST is not read as AXT1. Returns None when no sequence is named.
    """
    stem = name.rsplit("/", 1)[-1].upper()
    parts = stem.replace(".H5", "").split("_")
    for part in parts:
        if part in SEQUENCE_INDEX:
            return part
    return None
