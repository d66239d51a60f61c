"""Nucleus type tables: id -> (name, RGB colour), as HoVer-Net's ``type_info.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from napari_histo.schema.vocabulary import coarse_colour
from napari_histo.utils import atomic_write


@dataclass(frozen=True)
class TypeInfo:
    """Ordered nucleus vocabulary. Id 0 is always "background"/"no label".

    Attributes
    ----------
    names : dict[int, str]
        Type id -> display name.
    colours : dict[int, tuple[int, int, int]]
        Type id -> RGB colour (0-255), used for labels, GeoJSON and Sedeen pens.
    """

    names: dict[int, str]
    colours: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def ids(self) -> list[int]:
        return sorted(self.names)

    def name(self, type_id: int) -> str:
        return self.names.get(int(type_id), f"type {int(type_id)}")

    def colour(self, type_id: int) -> tuple[int, int, int]:
        """The type's own colour; else the colour of its coarse class in the product's vocabulary
        (:mod:`napari_histo.schema.vocabulary`); else yellow."""
        if int(type_id) in self.colours:
            return tuple(self.colours[int(type_id)])  # type: ignore[return-value]
        return coarse_colour(self.name(type_id)) or (255, 255, 0)

    def id_of(self, name: str) -> int | None:
        """Type id for a (case-insensitive) name, or None."""
        low = name.strip().lower()
        for k, v in self.names.items():
            if v.lower() == low:
                return k
        return None

    # HoVer-Net's type_info.json: {"0": ["nolabe", [0, 0, 0]], "1": ["neopla", [255, 0, 0]], ...}
    def to_json_dict(self) -> dict[str, list]:
        return {str(k): [self.names[k], list(self.colour(k))] for k in self.ids}

    @classmethod
    def from_json_dict(cls, data: dict) -> TypeInfo:
        names: dict[int, str] = {}
        colours: dict[int, tuple[int, int, int]] = {}
        for key, value in data.items():
            name, colour = value[0], value[1]
            names[int(key)] = str(name)
            colours[int(key)] = tuple(int(c) for c in colour)  # type: ignore[assignment]
        return cls(names, colours)

    @classmethod
    def load(cls, path: str | Path) -> TypeInfo:
        with open(path, encoding="utf-8-sig") as fh:
            return cls.from_json_dict(json.load(fh))

    def save(self, path: str | Path) -> None:
        with atomic_write(path) as fh:
            json.dump(self.to_json_dict(), fh, indent=2)


#: Untyped segmentation (classical detector, models without a type branch).
NUCLEUS_ONLY = TypeInfo({0: "background", 1: "nucleus"}, {0: (0, 0, 0), 1: (255, 255, 0)})
