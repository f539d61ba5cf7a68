"""The project's documented exception types."""

from __future__ import annotations

from pathlib import Path


class MagphaseError(Exception):
    """Base class of every error magphase raises on purpose."""


class DataError(MagphaseError):
    """Bad input data: names the file and the field (dataset, attribute, column) at fault.

    Raised for non-HDF5 or truncated files, missing datasets/attributes, wrong dtypes or ranks,
    malformed XML headers, NaN/Inf values, and malformed CSV rows. Batch jobs catch it, skip the
    item and record ``(file, field, reason)`` in their rejects report.
    """

    def __init__(self, path: str | Path | None, field: str | None, problem: str):
        self.path = str(path) if path is not None else None
        self.field = field
        self.problem = problem
        where = self.path or "<memory>"
        if field:
            where = f"{where} [{field}]"
        super().__init__(f"{where}: {problem}")


class ConfigError(MagphaseError):
    """An invalid configuration value; the message names the key."""


class NonFiniteLossError(MagphaseError):
    """Training produced a NaN/Inf loss; the message names the step and the loss terms."""
