"""The one preset mechanism of the config, and the layering of defaults it rests on.

Every config model derives from :class:`Section`. A section's value is built from three layers, each
merged over the one below:

1. the defaults of its fields; a nested section's field may carry its own (the stage-1 engine settings
   differ from :class:`~magphase.config.training.TrainSettings`' generic ones);
2. the named preset, for a section with a :class:`PresetTable` (``preset: <name>``); a field the preset
   sets takes the preset's value over the nested model's class defaults (not over layer 1);
3. what the YAML file and ``--set`` overrides give.

Merging recurses into nested sections only; a mapping-valued field (a coil mix, sequence weights) and a
model instance given from Python replace the lower layer whole. A YAML file therefore states only what
differs from its preset: ``train: {steps: 300}`` keeps every other engine setting of the section.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_validator


class PresetTable(Mapping[str, dict[str, Any]]):
    """Named presets of one section: each a dict of that section's values (nested sections as dicts).

    Indexing returns a deep copy, so nobody edits a preset in place.
    """

    def __init__(self, section: str, presets: dict[str, dict[str, Any]]) -> None:
        if not presets:
            raise ValueError(f"preset table {section!r} is empty")
        self.section = section
        self._presets = presets

    def __getitem__(self, name: str) -> dict[str, Any]:
        try:
            return copy.deepcopy(self._presets[name])
        except KeyError:
            raise KeyError(f"{self.section}: unknown preset {name!r}; presets: {', '.join(self)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._presets)

    def __len__(self) -> int:
        return len(self._presets)

    def __repr__(self) -> str:
        return f"PresetTable({self.section!r}, {list(self)})"


def section_type(annotation: Any) -> type[BaseModel] | None:
    """The model class of a field annotated ``M`` or ``M | None`` (None for anything else)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) == 1:
            return models[0]
    return None


def merge_layers(model: type[BaseModel], lower: dict[str, Any], upper: dict[str, Any]) -> dict[str, Any]:
    """``upper`` over ``lower``, recursing into the fields of ``model`` that are sections themselves."""
    out = dict(lower)
    for key, value in upper.items():
        field = model.model_fields.get(key)
        sub = section_type(field.annotation) if field is not None else None
        if sub is not None and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_layers(sub, out[key], value)
        else:
            out[key] = value
    return out


class Section(BaseModel):
    """A config model: unknown keys are errors, defaults layer as the module docstring says.

    A section with presets sets ``PRESETS`` and has a ``preset`` field typed ``Literal[<names>]``
    (checked against the table when the class is defined), or ``Literal[...] | None`` for "no preset".
    """

    model_config = ConfigDict(extra="forbid")
    PRESETS: ClassVar[PresetTable | None] = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.PRESETS is None:
            return
        field = cls.model_fields.get("preset")
        names = set()
        if field is not None:
            for arg in (field.annotation, *typing.get_args(field.annotation)):
                if typing.get_origin(arg) is Literal:
                    names |= set(typing.get_args(arg))
        if names != set(cls.PRESETS):
            raise TypeError(
                f"{cls.__name__}.preset must be typed Literal{sorted(cls.PRESETS)}, "
                f"got {field and field.annotation}"
            )

    @model_validator(mode="before")
    @classmethod
    def _layer_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset: dict[str, Any] = {}
        if cls.PRESETS is not None:
            name = data.get("preset", cls.model_fields["preset"].default)
            if name in cls.PRESETS:  # an unknown name is reported by the field's own validation
                preset = cls.PRESETS[name]
        base: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            sub = section_type(field.annotation)
            if sub is None or name in preset or getattr(sub, "PRESETS", None) is not None:
                continue  # the preset's value replaces the field default; a preset section layers itself
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                own = default.model_dump(exclude_defaults=True)
                if own:
                    base[name] = own
        base.update(preset)
        return merge_layers(cls, base, data)


__all__ = ["PresetTable", "Section", "merge_layers", "section_type"]
