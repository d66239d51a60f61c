"""One nucleus type vocabulary for the whole product: four coarse classes with finer children.

The coarse level is the four merged classes of the CoNSeP evaluation (Graham et al., "HoVer-Net",
Medical Image Analysis 2019, section 4.1): *other*, *inflammatory*, *epithelial* (normal and
neoplastic) and *spindle-shaped* (fibroblast, muscle, endothelial). Every dataset and model names
its classes its own way (MoNuSAC's lymphocyte / neutrophil / macrophage, CRCHistoPhenotypes'
fibroblast / others, PanNuke's neoplastic / connective / dead); each such name is a *fine* class
and belongs to exactly one coarse class. Analyses select a coarse class (all its children) or a
fine one by name; exports write the names a model gives (QuPath classification names, Sedeen pen
colours from :data:`COARSE_COLOURS` when a type has no colour of its own).

The ids of the coarse classes follow CoNSeP's merged labels (1 other, 2 inflammatory,
3 epithelial, 4 spindle), so the HoVer-Net JSON of a model using them can be scored against CoNSeP
ground truth directly. The table is documented for users in ``docs/TYPES.md``.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Coarse class id -> name (CoNSeP's merged classes; 0 is background / no label).
COARSE_CLASSES: dict[int, str] = {1: "other", 2: "inflammatory", 3: "epithelial", 4: "spindle"}

#: Coarse class id -> RGB colour used for labels, GeoJSON and Sedeen pens.
COARSE_COLOURS: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0),
    1: (255, 200, 0),
    2: (0, 90, 255),
    3: (230, 25, 45),
    4: (0, 170, 60),
}

#: Fine class name -> coarse class name. Names are matched case-insensitively, with "_" and "-"
#: read as spaces and a trailing plural "s" dropped.
FINE_TO_COARSE: dict[str, str | None] = {
    # epithelial
    "epithelial": "epithelial",
    "epithelium": "epithelial",
    "neoplastic": "epithelial",
    "neoplastic epithelial": "epithelial",
    "malignant epithelial": "epithelial",
    "dysplastic epithelial": "epithelial",
    "normal epithelial": "epithelial",
    "healthy epithelial": "epithelial",
    "non neoplastic epithelial": "epithelial",
    "tumour": "epithelial",
    "tumor": "epithelial",
    "neopla": "epithelial",
    "epithelia": "epithelial",
    # inflammatory
    "inflammatory": "inflammatory",
    "inflam": "inflammatory",
    "immune cell": "inflammatory",
    "lymphocyte": "inflammatory",
    "neutrophil": "inflammatory",
    "macrophage": "inflammatory",
    "plasma cell": "inflammatory",
    "eosinophil": "inflammatory",
    # spindle-shaped / connective
    "spindle": "spindle",
    "spindle shaped": "spindle",
    "connective": "spindle",
    "connec": "spindle",
    "stroma": "spindle",
    "stromal": "spindle",
    "fibroblast": "spindle",
    "muscle": "spindle",
    "smooth muscle": "spindle",
    "endothelial": "spindle",
    # other
    "other": "other",
    "miscellaneous": "other",
    "misc": "other",
    "necrotic": "other",
    "necrosis": "other",
    "dead": "other",
    "apoptotic": "other",
    "unknown": "other",
    "nolabe": None,  # PanNuke's "no label" = background
}

_COARSE_ID = {name: cid for cid, name in COARSE_CLASSES.items()}


def normalise_name(name: str) -> str:
    """Lower-case, ``_``/``-`` as spaces, single spaces, a trailing plural ``s`` dropped."""
    text = " ".join(str(name).strip().lower().replace("_", " ").replace("-", " ").split())
    if text.endswith("s") and text[:-1] in FINE_TO_COARSE:
        text = text[:-1]
    return text


def coarse_class(name: str) -> str | None:
    """Coarse class name of a (fine or coarse) type name, or None when the name is not known.

    >>> coarse_class("Lymphocytes"), coarse_class("fibroblast"), coarse_class("whatever")
    ('inflammatory', 'spindle', None)
    """
    return FINE_TO_COARSE.get(normalise_name(name))


def coarse_id(name: str) -> int | None:
    """Coarse class id (1 other, 2 inflammatory, 3 epithelial, 4 spindle) of a type name, or None."""
    coarse = coarse_class(name)
    return _COARSE_ID.get(coarse) if coarse else None


def coarse_colour(name: str) -> tuple[int, int, int] | None:
    """Colour of the coarse class of a type name, or None when the name is not known."""
    cid = coarse_id(name)
    return COARSE_COLOURS[cid] if cid is not None else None


def ids_for(selector: str, names: dict[int, str]) -> set[int]:
    """Type ids of a model's vocabulary ``names`` that a selector picks.

    ``selector`` is a type name (fine: only that type), a coarse class name (every type whose coarse
    class it is), an id, or a comma-separated list of any of these (``"2,3,4"``,
    ``"lymphocyte,macrophage"``). Raises ValueError naming the known types when a part matches none.
    """
    picked: set[int] = set()
    known = {tid: normalise_name(n) for tid, n in names.items() if tid != 0}
    for part in (p.strip() for p in str(selector).split(",")):
        if not part:
            continue
        if part.lstrip("-").isdigit():
            picked.add(int(part))
            continue
        low = normalise_name(part)
        exact = {tid for tid, n in known.items() if n == low}
        if exact:
            picked |= exact
            continue
        if low in COARSE_CLASSES.values():
            children = {tid for tid, n in known.items() if coarse_class(n) == low}
            if children:
                picked |= children
                continue
        raise ValueError(f"unknown nucleus type {part!r}; known: {sorted(set(names[t] for t in known))} "
                         f"or a coarse class ({', '.join(COARSE_CLASSES.values())})")
    return picked


def vocabulary_rows(extra_names: Iterable[str] = ()) -> list[tuple[str, str, tuple[int, int, int]]]:
    """(fine name, coarse name, coarse colour) for every fine name, for documentation and legends."""
    rows = []
    for fine in sorted(set(FINE_TO_COARSE) | {normalise_name(n) for n in extra_names}):
        coarse = FINE_TO_COARSE.get(fine)
        if coarse:
            rows.append((fine, coarse, COARSE_COLOURS[_COARSE_ID[coarse]]))
    return rows
