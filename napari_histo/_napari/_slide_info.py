"""The Slide panel's metadata: what napari-histo reads from a slide file, as display text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    pass


def slide_info(path: str) -> dict[str, Any]:
    """Vendor, level-0 size, levels, mpp and objective power of the slide at ``path``."""
    from napari_histo.slide import open_slide

    with open_slide(path) as slide:
        return {
            "path": str(path),
            "vendor": slide.vendor or "unknown",
            "backend": slide.backend,
            "dimensions": tuple(int(v) for v in slide.dimensions),
            "levels": int(slide.level_count),
            "mpp": None if slide.mpp is None else tuple(float(v) for v in slide.mpp),
            "objective_power": slide.objective_power,
        }


def _format_info(info: dict[str, Any]) -> dict[str, str]:
    w, h = info["dimensions"]
    mpp = info.get("mpp")
    power = info.get("objective_power")
    return {
        "vendor": f"{info['vendor']} ({info.get('backend') or '?'})",
        "size": f"{w:,} × {h:,} px, {info['levels']} level(s)",
        "mpp": "unknown" if mpp is None else f"{mpp[0]:.4f} × {mpp[1]:.4f} µm/px",
        "power": "unknown" if power is None else f"{float(power):g}×",
    }
