"""Class <-> Sedeen pen colour table (``resources/type_info/sedeen_colours.json``).

Sedeen sessions carry no class field: the pen colour is the class. The shipped table is the IHC
positivity one (negative red, weak blue, moderate purple, strong green, tumour bed cyan); a table
can also be derived from a nucleus table's ``type_info`` colours, or loaded from a user file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from napari_histo.schema.types import TypeInfo
from napari_histo.utils import atomic_write, resource_path

# Lazy imports: pandas is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.

__all__ = ["SedeenColourTable", "normalise_colour", "rgb_to_hex", "hex_to_rgb"]

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})([0-9a-fA-F]{2})?$")


def normalise_colour(colour: str) -> str:
    """'#RRGGBB[AA]' (any case, '#' optional) -> '#rrggbbaa' (alpha 'ff' when absent); ValueError if not a colour."""
    m = _HEX.match(str(colour).strip())
    if not m:
        raise ValueError(f"not a #rrggbbaa colour: {colour!r}")
    return "#" + m.group(1).lower() + (m.group(2) or "ff").lower()


def rgb_to_hex(rgb, alpha: int = 255) -> str:
    r, g, b = (int(c) & 255 for c in list(rgb)[:3])
    return f"#{r:02x}{g:02x}{b:02x}{alpha & 255:02x}"


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    h = normalise_colour(colour)
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


@dataclass
class SedeenColourTable:
    """Nucleus type id <-> (name, pen colour), plus region classes and hotspot rank colours."""

    classes: dict[int, tuple[str, str]]
    regions: dict[str, str] = field(default_factory=dict)  # colour -> region class name
    unknown: str = "#000000ff"
    hotspot_rank_colours: list[str] = field(default_factory=lambda: ["#ffff00ff", "#ff0000ff", "#0000ffff", "#aa00ffff", "#00ff00ff"])
    hotspot_default: str = "#000000ff"
    roi: str = "#00ffffff"

    # ------------------------------------------------------------------ construction
    @classmethod
    def default(cls) -> SedeenColourTable:
        """The shipped IHC positivity table."""
        return cls.load(resource_path("type_info", "sedeen_colours.json"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> SedeenColourTable:
        from napari_histo.formats._common import AnnotationFormatError, load_json

        data = load_json(path)
        try:
            classes = {int(c["id"]): (str(c["name"]), normalise_colour(c["colour"])) for c in data["classes"]}
            regions = {normalise_colour(r["colour"]): str(r["name"]) for r in data.get("regions", [])}
            kw = {}
            for key in ("unknown", "hotspot_default", "roi"):
                if key in data:
                    kw[key] = normalise_colour(data[key])
            if "hotspot_rank_colours" in data:
                kw["hotspot_rank_colours"] = [normalise_colour(c) for c in data["hotspot_rank_colours"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise AnnotationFormatError(path, f"not a colour table: {exc}") from None
        return cls(classes, regions, **kw)

    @classmethod
    def from_type_info(cls, type_info) -> SedeenColourTable:
        """One pen colour per type id > 0 from a :class:`TypeInfo` (or its JSON dict)."""
        info = TypeInfo.from_json_dict(type_info) if isinstance(type_info, dict) else type_info
        base = cls({})
        base.classes = {t: (info.name(t), rgb_to_hex(info.colour(t))) for t in info.ids if t > 0}
        return base

    def save(self, path: str | os.PathLike) -> None:
        data = {
            "classes": [{"id": k, "name": n, "colour": c} for k, (n, c) in sorted(self.classes.items())],
            "regions": [{"name": n, "colour": c} for c, n in self.regions.items()],
            "unknown": self.unknown,
            "hotspot_rank_colours": self.hotspot_rank_colours,
            "hotspot_default": self.hotspot_default,
            "roi": self.roi,
        }
        with atomic_write(Path(path), encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)

    # ------------------------------------------------------------------ lookups
    def colour_of(self, type_id: int) -> str:
        entry = self.classes.get(int(type_id))
        return entry[1] if entry else self.unknown

    def type_of(self, colour: str) -> int | None:
        """Type id for a pen colour (RGB compared case-insensitively, alpha ignored), or None."""
        try:
            rgb = normalise_colour(colour)[:7]
        except ValueError:
            return None
        for k, (_, c) in sorted(self.classes.items()):
            if c[:7] == rgb:
                return k
        return None

    def region_of(self, colour: str) -> str | None:
        try:
            rgb = normalise_colour(colour)[:7]
        except ValueError:
            return None
        for c, name in self.regions.items():
            if c[:7] == rgb:
                return name
        return None

    def hotspot_colour(self, rank: int) -> str:
        """Pen colour for the hotspot of 1-based ``rank``."""
        return self.hotspot_rank_colours[rank - 1] if 1 <= rank <= len(self.hotspot_rank_colours) else self.hotspot_default

    def type_info_dict(self) -> dict[str, list]:
        out = {"0": ["background", [0, 0, 0]]}
        for k, (n, c) in sorted(self.classes.items()):
            out[str(k)] = [n, list(hex_to_rgb(c))]
        return out
