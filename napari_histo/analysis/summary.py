"""Per-region read-out: nuclei per type, density per mm², % positive, as pathologists report them.

A region is any polygon (a tumour outline drawn in QuPath or Sedeen, a hotspot, a box); a nucleus
belongs to it when its centroid is inside (the convention of QuPath's "Num Detections" and of the
hotspot counts). Counts are exact, from the nucleus table; areas come from the polygons.

Public API
----------
- :func:`region_summary` -- one row per region.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from napari_histo.formats._common import table_type_info

# Lazy imports: shapely is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.

__all__ = ["region_summary"]


def _regions(regions: Any, table: pd.DataFrame) -> list[tuple[str, str | None, Any]]:
    """(name, class, shapely polygon) per region; None -> the nuclei's extent as one region."""
    import shapely

    if hasattr(regions, "mask") and hasattr(regions, "downsample"):  # a TissueMask: one region
        return [("tissue", None, regions)]
    if regions is None:
        if len(table):
            x0, y0 = float(table["bbox_x0"].min()), float(table["bbox_y0"].min())
            x1, y1 = float(table["bbox_x1"].max()), float(table["bbox_y1"].max())
        else:
            x0 = y0 = x1 = y1 = 0.0
        return [("all nuclei (extent)", None, shapely.box(x0 - 0.5, y0 - 0.5, x1 - 0.5, y1 - 0.5))]
    if isinstance(regions, (tuple, list)) and len(regions) == 4 and all(np.isscalar(v) for v in regions):
        x, y, w, h = (float(v) for v in regions)
        # the segmentation engine's reading of an (x, y, w, h) ROI, so a run's --roi box and the
        # read-out of the same box count the same nuclei
        return [(f"box {int(x)},{int(y)},{int(w)},{int(h)}", None, shapely.box(x, y, x + w, y + h))]
    if not isinstance(regions, (list, tuple)):
        regions = [regions]
    out = []
    for i, reg in enumerate(regions, start=1):
        geom = getattr(reg, "geometry", reg)
        name = getattr(reg, "name", None) or getattr(reg, "class_name", None) or f"region {i}"
        out.append((str(name), getattr(reg, "class_name", None), geom))
    return out


def _on_mask(tissue: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """(nuclei on tissue, tissue area in level-0 px²) for a :class:`~napari_histo.slide.TissueMask`."""
    mask = np.asarray(tissue.mask, bool)
    ds = float(tissue.downsample)
    rows = np.floor(y / ds).astype(np.int64)
    cols = np.floor(x / ds).astype(np.int64)
    ok = (rows >= 0) & (rows < mask.shape[0]) & (cols >= 0) & (cols < mask.shape[1])
    inside = np.zeros(len(x), bool)
    inside[ok] = mask[rows[ok], cols[ok]]
    return inside, float(mask.sum()) * ds * ds


def region_summary(table: pd.DataFrame, regions: Any = None, *, mpp: float | None = None) -> pd.DataFrame:
    """Counts, densities and positivity of the nuclei in each region.

    Parameters
    ----------
    table : DataFrame
        Nucleus table (level-0 px).
    regions : None, (x, y, w, h), shapely geometry, Annotation, a list of geometries/Annotations, or a
        :class:`~napari_histo.slide.TissueMask` (one row "tissue": nuclei on tissue per mm² of tissue).
        None: one row for every nucleus, its area the nuclei's bounding extent (a rough figure: a
        drawn region or the tissue mask gives a real one).
    mpp : float, optional
        Level-0 µm/px (default ``table.attrs['mpp']``); without it densities are per megapixel.

    Returns
    -------
    DataFrame, one row per region: ``region``, ``class``, ``area_px``, ``area_mm2`` (NaN without
    mpp), ``nuclei``, ``nuclei_per_mm2`` (or ``nuclei_per_mpx`` without mpp), ``<type>`` count and
    ``<type>_pct`` per type present, ``positive``/``positive_pct`` when DAB positivity was
    measured, and ``mean_area_um2`` (mean nucleus area; NaN without mpp).
    """
    import shapely

    mpp = mpp if mpp is not None else table.attrs.get("mpp")
    info = table_type_info(table)
    x = table["x"].to_numpy(float)
    y = table["y"].to_numpy(float)
    types = table["type"].to_numpy(np.int64)
    present = sorted(set(types.tolist()))
    rows = []
    for name, cls, geom in _regions(regions, table):
        if geom is None or (not hasattr(geom, "mask") and geom.is_empty):
            raise ValueError(f"region {name!r} is empty")
        if hasattr(geom, "mask"):  # tissue mask: level-0 px (x, y) -> mask cell
            inside, area_px = _on_mask(geom, x, y)
        else:
            inside = shapely.contains_xy(geom, x, y) if len(x) else np.zeros(0, bool)
            area_px = float(geom.area)
        n = int(inside.sum())
        row: dict[str, Any] = {"region": name, "class": cls, "area_px": area_px, "nuclei": n}
        if mpp:
            area_mm2 = area_px * (float(mpp) * 1e-3) ** 2
            row["area_mm2"] = area_mm2
            row["nuclei_per_mm2"] = n / area_mm2 if area_mm2 > 0 else float("nan")
        else:
            row["area_mm2"] = float("nan")
            row["nuclei_per_mpx"] = n / (area_px / 1e6) if area_px > 0 else float("nan")
        for t in present:
            count = int((inside & (types == t)).sum())
            label = info.name(t)
            row[label] = count
            row[f"{label}_pct"] = 100.0 * count / n if n else float("nan")
        if "positive" in table.columns:
            pos = int((inside & table["positive"].to_numpy(bool)).sum())
            row["positive"] = pos
            row["positive_pct"] = 100.0 * pos / n if n else float("nan")
        if mpp and n:
            row["mean_area_um2"] = float(table["area_px"].to_numpy(float)[inside].mean() * float(mpp) ** 2)
        else:
            row["mean_area_um2"] = float("nan")
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["mpp"] = mpp
    return out
