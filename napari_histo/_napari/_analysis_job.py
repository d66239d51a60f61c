"""What the Density & hotspots panel runs in its worker: density map, hotspots and region
summary over a nucleus table, and the summary's text lines.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def analysis_events(table: pd.DataFrame, params: dict[str, Any]) -> Generator[str, None, tuple[Any, Any, Any]]:
    """Compute the density map, the hotspots and, for a region, its read-out (worker thread)."""
    from napari_histo.analysis.density import density_map
    from napari_histo.analysis.hotspots import find_hotspots

    kind = params["kind"]
    common = {"mpp": params.get("mpp"), "shape": params.get("shape"), "type": params.get("type")}
    radius = {"radius_um": params["radius_um"]} if params.get("mpp") else {"radius_px": params["radius_px"]}
    if kind == "tile":
        dmap = density_map(table, "tile", tile=int(params["tile"]), tile_sigma=float(params.get("tile_sigma", 0.0)), **common)
    else:
        extra = {"secondary": params["secondary"]} if kind == "percent" else {}
        dmap = density_map(table, kind, **radius, **extra, **common)
    yield "density"
    roi = params.get("roi")
    if kind == "tile":
        spots = find_hotspots(table, int(params["k"]), mode="box", tile=int(params["tile"]), window=int(params["window"]),
                              roi=roi, **common)
    else:
        reuse = {"dmap": dmap} if kind in ("count", "gaussian") else {}
        density = kind if kind in ("count", "gaussian") else "count"
        spots = find_hotspots(table, int(params["k"]), mode="circle", density=density, roi=roi, **radius, **reuse, **common)
    yield "hotspots"
    summary = None
    if roi is not None:
        from napari_histo.analysis.summary import region_summary

        summary = region_summary(table, roi, mpp=params.get("mpp"))
    return dmap, spots, summary


def summary_lines(summary: pd.DataFrame | None, top_types: int = 4) -> list[str]:
    """One line per region: nuclei, density, the most frequent types and % positive."""
    if summary is None:
        return []
    lines = []
    fixed = {"region", "class", "area_px", "area_mm2", "nuclei", "nuclei_per_mm2", "nuclei_per_mpx",
             "positive", "positive_pct", "mean_area_um2"}
    for _, row in summary.iterrows():
        density = (f"{row['nuclei_per_mm2']:,.0f}/mm² in {row['area_mm2']:.3g} mm²" if "nuclei_per_mm2" in row
                   else f"{row['nuclei_per_mpx']:,.0f}/Mpx")
        types = sorted((c for c in summary.columns if c not in fixed and not c.endswith("_pct")),
                       key=lambda c: -row[c])[:top_types]
        shares = ", ".join(f"{c} {row[c + '_pct']:.0f} %" for c in types if row["nuclei"] and row[c])
        positive = f", {row['positive_pct']:.1f} % positive" if "positive_pct" in row and row["nuclei"] else ""
        lines.append(f"{row['region']}: {int(row['nuclei']):,} nuclei, {density}" + (f"; {shares}" if shares else "") + positive)
    return lines
