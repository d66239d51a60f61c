"""One JSON serialiser for every configuration dataclass (model configs saved next to the
weights, training recipes, fine-tuning settings).

A config is a :func:`dataclasses.dataclass` that inherits :class:`JsonConfig`. Reading follows
the field annotations: a ``tuple[...]`` field is read back as a tuple (JSON only has lists),
a field typed as a dataclass (or a list of them) is built from its nested object.
Unknown keys are an error by default, so a misspelt option in a recipe is never ignored;
configs saved next to weights set ``UNKNOWN_KEYS = "ignore"`` so that weights written by a
newer version still load.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from napari_histo.utils import InputFileError, atomic_write

__all__ = ["JsonConfig", "read_json_object"]

T = TypeVar("T", bound="JsonConfig")


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; a clear error names a missing, invalid or non-object file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError as exc:
        raise InputFileError(path, "config file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InputFileError(path, "config must be a JSON object")
    return data


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _build(tp: type, value: dict[str, Any]) -> Any:
    return tp.from_dict(value) if issubclass(tp, JsonConfig) else tp(**value)


def _coerce(hint: Any, value: Any) -> Any:
    """``value`` read from JSON, shaped as the annotation ``hint`` says (tuples, nested configs)."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                continue
            if _is_config(arg) and isinstance(value, dict):
                return _build(arg, value)
            if typing.get_origin(arg) in (tuple, list) and isinstance(value, list | tuple):
                return _coerce(arg, value)
        return value
    if _is_config(hint) and isinstance(value, dict):
        return _build(hint, value)
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(value)
    if origin is list and isinstance(value, list | tuple) and args and _is_config(args[0]):
        return [_build(args[0], v) if isinstance(v, dict) else v for v in value]
    return value


class JsonConfig:
    """Mixin for config dataclasses: ``to_dict`` / ``from_dict`` / ``save`` / ``load``."""

    #: What :meth:`from_dict` does with keys that are not fields.
    UNKNOWN_KEYS: ClassVar[Literal["error", "ignore"]] = "error"
    #: Name used in error messages.
    CONFIG_NAME: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (nested configs as dicts)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build the config from a dict as written by :meth:`to_dict` (or by hand)."""
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - fields)
        if unknown and cls.UNKNOWN_KEYS == "error":
            raise ValueError(f"unknown {cls.CONFIG_NAME} config keys: {unknown}")
        hints = typing.get_type_hints(cls)
        values = {k: _coerce(hints.get(k, Any), v) for k, v in data.items() if k in fields}
        return cls(**values)

    def save(self, path: str | Path) -> None:
        """Write the config as indented JSON (atomic)."""
        with atomic_write(path) as fh:
            json.dump(self.to_dict(), fh, indent=2)

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        """Read a config written by :meth:`save`; a clear error names an unreadable file."""
        return cls.from_dict(read_json_object(path))
