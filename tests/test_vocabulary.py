"""The product's nucleus type vocabulary and type selection in analyses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_histo.analysis.density import density_map, select_nuclei
from napari_histo.schema.types import TypeInfo
from napari_histo.schema.vocabulary import (
    COARSE_CLASSES,
    coarse_class,
    coarse_id,
    ids_for,
    vocabulary_rows,
)

MONUSAC = TypeInfo({0: "unclassified", 1: "epithelial", 2: "lymphocyte", 3: "neutrophil", 4: "macrophage"})
PANNUKE = TypeInfo({0: "nolabe", 1: "neopla", 2: "inflam", 3: "connec", 4: "necros", 5: "no-neo"})


def _table(info: TypeInfo, types: list[int]) -> pd.DataFrame:
    n = len(types)
    df = pd.DataFrame({"x": np.arange(n, dtype=float) * 10, "y": np.zeros(n), "type": types})
    df.attrs["type_info"] = info.to_json_dict()
    return df


@pytest.mark.parametrize(("name", "coarse"), [
    ("Lymphocytes", "inflammatory"), ("plasma_cell", "inflammatory"), ("Fibroblast", "spindle"),
    ("endothelial", "spindle"), ("malignant epithelial", "epithelial"), ("neopla", "epithelial"),
    ("connec", "spindle"), ("necrotic", "other"), ("miscellaneous", "other"), ("others", "other"),
])
def test_fine_names_of_every_dataset_belong_to_one_coarse_class(name, coarse):
    assert coarse_class(name) == coarse


def test_coarse_ids_are_consep_ids_and_unknown_names_stay_unknown():
    assert COARSE_CLASSES == {1: "other", 2: "inflammatory", 3: "epithelial", 4: "spindle"}
    assert coarse_id("other") == 1 and coarse_id("epithelial") == 3
    assert coarse_class("nolabe") is None and coarse_class("type 7") is None
    # the documentation rows cover every coarse class
    assert {row[1] for row in vocabulary_rows()} == set(COARSE_CLASSES.values())


def test_a_coarse_class_selects_all_its_children_and_a_fine_name_only_itself():
    names = MONUSAC.names
    assert ids_for("inflammatory", names) == {2, 3, 4}
    assert ids_for("lymphocyte", names) == {2}
    assert ids_for("2,3,4", names) == {2, 3, 4}
    assert ids_for("epithelial, macrophage", names) == {1, 4}
    assert ids_for("spindle", PANNUKE.names) == {3}
    with pytest.raises(ValueError, match="unknown nucleus type 'spindle'.*known"):
        ids_for("spindle", names)  # MoNuSAC's head has no spindle-shaped class


def test_analyses_select_type_sets_coarse_classes_and_ihc_positives():
    table = _table(MONUSAC, [1, 2, 2, 3, 4, 1, 0])
    assert select_nuclei(table, "inflammatory").tolist() == [False, True, True, True, True, False, False]
    assert select_nuclei(table, "1,4").sum() == 3
    assert select_nuclei(table, 2).sum() == 2
    ihc = _table(TypeInfo({0: "background", 1: "negative", 2: "positive weak", 3: "positive moderate",
                           4: "positive strong"}), [1, 1, 2, 3, 4, 1])
    assert select_nuclei(ihc, "positive").tolist() == [False, False, True, True, True, False]
    with pytest.raises(ValueError, match="no 'positive' column"):
        select_nuclei(table, "positive")
    coarse = density_map(table, "tile", tile=10, type="inflammatory", shape=(80, 10))
    by_ids = density_map(table, "tile", tile=10, type="2,3,4", shape=(80, 10))
    every = density_map(table, "tile", tile=10, shape=(80, 10))
    np.testing.assert_array_equal(coarse.counts, by_ids.counts)
    assert float(coarse.counts.sum()) == 4 and float(every.counts.sum()) == 7
    assert coarse.type == "inflammatory"


def test_the_users_documentation_lists_every_fine_name_under_its_coarse_class():
    from conftest import REPO

    from napari_histo.schema.vocabulary import FINE_TO_COARSE

    text = (REPO / "docs" / "TYPES.md").read_text(encoding="utf-8")
    for cid, name in COARSE_CLASSES.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {cid} | {name} |"))
        for fine, coarse in FINE_TO_COARSE.items():
            if coarse == name and fine != name:
                assert fine in row, (fine, name)


def test_a_type_without_a_colour_takes_its_coarse_class_colour():
    from napari_histo.schema.vocabulary import COARSE_COLOURS

    info = TypeInfo({0: "background", 1: "Fibroblast", 2: "mystery"}, {})
    assert info.colour(1) == COARSE_COLOURS[4]
    assert info.colour(2) == (255, 255, 0)
