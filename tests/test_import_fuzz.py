"""Fuzzing the importers: random and mutated Sedeen XML, QuPath GeoJSON and HoVer-Net JSON must
either load or raise AnnotationFormatError naming the file -- never another exception or a hang."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_histo.formats.geojson import read_geojson
from napari_histo.formats.hovernet_json import read_hovernet_json
from napari_histo.formats.sedeen import read_sedeen
from napari_histo.utils import InputFileError

#: CI runs the same 30 examples per test every time (deterministic); a longer random campaign:
#: ``NAPARI_HISTO_FUZZ_EXAMPLES=500 NAPARI_HISTO_FUZZ_RANDOM=1 pytest tests/test_import_fuzz.py``.
SETTINGS = settings(max_examples=int(os.environ.get("NAPARI_HISTO_FUZZ_EXAMPLES", "30")), deadline=5000,
                    derandomize="NAPARI_HISTO_FUZZ_RANDOM" not in os.environ, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SESSION = """\ufeff<?xml version="1.0"?>\r
<session software="PathCore Session Printer" version="0.1.0">\r
  <image identifier="a.svs"><dimensions>200,100</dimensions><pixel-size units="um">0.25,0.25</pixel-size>\r
    <overlays>\r
      <graphic type="polygon" name="Region 0" description="x"><pen color="#ff0000ff" width="3" style="Solid"/><font>Arial;12</font>\r
        <point-list><point>10,10</point><point>40,12</point><point>30,40</point></point-list></graphic>\r
      <graphic type="rectangle" name="Region 1" description="y"><pen color="#00FF00FF"/><point-list><point>50,50</point><point>80,50</point><point>80,70</point><point>50,70</point></point-list></graphic>\r
      <graphic type="ellipse" name="Region 2" description="z"><pen color="#0000ffff"/><point-list><point>100,10</point><point>120,10</point><point>120,30</point><point>100,30</point></point-list></graphic>\r
      <graphic type="point" name="Region 3" description="p"><pen color="#aa00ffff"/><point-list><point>150,50</point><point>160,60</point></point-list></graphic>\r
    </overlays></image></session>\r
"""

GEOJSON = json.dumps({"type": "FeatureCollection", "features": [
    {"type": "Feature", "id": "3f1c2b1e-0000-4000-8000-000000000001",
     "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], [[2, 2], [4, 2], [4, 4], [2, 2]]]},
     "properties": {"objectType": "detection", "classification": {"name": "Tumor", "color": [255, 0, 0]},
                    "measurements": {"Area px^2": 100.0}}},
    {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [[[[20, 20], [30, 20], [30, 30], [20, 20]]]]},
     "nucleusGeometry": {"type": "Polygon", "coordinates": [[[22, 22], [26, 22], [26, 26], [22, 22]]]},
     "properties": {"objectType": "cell", "classification": "Immune", "measurements": [{"name": "a", "value": "NaN"}]}},
    {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}, "properties": {"objectType": "annotation", "name": "p"}},
]})

HOVERNET = json.dumps({"mag": None, "nuc": {"1": {"bbox": [[0, 0], [10, 10]], "centroid": [5, 5], "contour": [[0, 0], [9, 0], [9, 9], [0, 9]],
                                                  "type_prob": 0.9, "type": 1}}})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(
        ["type", "features", "geometry", "coordinates", "properties", "objectType", "classification", "name", "color",
         "measurements", "nucleusGeometry", "nuc", "contour", "mag", "prob", "value", "childObjects"]), children, max_size=4),
    max_leaves=20,
)


def _mutate(text: str, data) -> str:
    for _ in range(data.draw(st.integers(1, 4))):
        if not text:
            break
        i = data.draw(st.integers(0, len(text) - 1))
        j = data.draw(st.integers(i, min(len(text), i + 20)))
        op = data.draw(st.sampled_from(["delete", "insert", "duplicate", "replace"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + data.draw(st.text(alphabet='<>/&;"=#,.-0123456789abcdefxyz \r\n[]{}:', max_size=10)) + text[i:]
        elif op == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + data.draw(st.sampled_from(["nan", "1e999", "-", "", "<!ENTITY a 'b'>", "&a;", "null", "[]", "{}", "\x00"])) + text[j:]
    return text


#: How far the process's peak memory (ru_maxrss) may rise above its peak before the fuzzing
#: began: a reader that inflates a few hundred bytes into gigabytes fails here, not on a
#: user's machine, whatever the tests that ran earlier in the session held.
MAX_RSS_RISE_MB = 1536


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_PEAK_BEFORE_FUZZING_MB: list[float] = []


@pytest.fixture(scope="module", autouse=True)
def _peak_before_fuzzing():
    """The peak when this module's first test starts (collection imports every module earlier)."""
    _PEAK_BEFORE_FUZZING_MB.append(_peak_rss_mb())
    yield
    _PEAK_BEFORE_FUZZING_MB.clear()


def _memory_bounded() -> None:
    rise = _peak_rss_mb() - _PEAK_BEFORE_FUZZING_MB[0]
    assert rise < MAX_RSS_RISE_MB, f"peak RSS rose by {rise:.0f} MiB while fuzzing"


def _check(reader, path, text: str | bytes, after=None) -> None:
    if isinstance(text, str):
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
    else:
        path.write_bytes(text)
    try:
        result = reader(path)
    except InputFileError as exc:  # AnnotationFormatError included
        assert path.name in str(exc)
        _memory_bounded()
        return
    if after is not None:
        after(result)
    _memory_bounded()


def _use_session(session) -> None:
    session.to_table()
    session.to_masks((0, 0, 64, 48))
    session.to_annotations()


@SETTINGS
@given(data=st.data())
def test_mutated_sedeen_xml(tmp_path, data):
    _check(read_sedeen, tmp_path / "s.session.xml", _mutate(SESSION, data), _use_session)


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_random_bytes_sedeen(tmp_path, raw):
    _check(read_sedeen, tmp_path / "r.session.xml", raw, _use_session)


@SETTINGS
@given(data=st.data())
def test_mutated_geojson_text(tmp_path, data):
    _check(read_geojson, tmp_path / "g.geojson", _mutate(GEOJSON, data))


@SETTINGS
@given(value=json_values)
def test_random_json_structures(tmp_path, value):
    text = json.dumps(value, allow_nan=True)
    _check(read_geojson, tmp_path / "v.geojson", text)
    _check(read_hovernet_json, tmp_path / "v.json", text)


@SETTINGS
@given(data=st.data(), value=json_values)
def test_geojson_with_random_subtrees(tmp_path, data, value):
    doc = json.loads(GEOJSON)
    feature = doc["features"][data.draw(st.integers(0, 2))]
    target = data.draw(st.sampled_from(["geometry", "properties", "nucleusGeometry", "type"]))
    if target == "properties" and data.draw(st.booleans()):
        feature["properties"][data.draw(st.sampled_from(["classification", "measurements", "objectType", "name", "color"]))] = value
    else:
        feature[target] = value
    _check(read_geojson, tmp_path / "t.geojson", json.dumps(doc, allow_nan=True))


@SETTINGS
@given(data=st.data())
def test_mutated_hovernet(tmp_path, data):
    _check(read_hovernet_json, tmp_path / "h.json", _mutate(HOVERNET, data),
           lambda t: np.testing.assert_array_equal(t["id"] > 0, True))


IMAGESCOPE = """<Annotations MicronsPerPixel="0.25"><Annotation Id="1" LineColor="65280"><Attributes><Attribute Name="Epithelial"/></Attributes>
<Regions><Region Id="1" NegativeROA="0"><Vertices><Vertex X="1" Y="1"/><Vertex X="9" Y="1"/><Vertex X="9" Y="9"/></Vertices></Region>
<Region Id="2"><Vertices><Vertex X="20" Y="20"/><Vertex X="30" Y="20"/><Vertex X="30" Y="30"/><Vertex X="20" Y="30"/></Vertices></Region></Regions></Annotation></Annotations>
"""

ASAP = """<?xml version="1.0"?><ASAP_Annotations><Annotations>
<Annotation Name="A" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58"><Coordinates><Coordinate Order="0" X="1" Y="1"/>
<Coordinate Order="1" X="9" Y="1"/><Coordinate Order="2" X="9" Y="9"/></Coordinates></Annotation>
<Annotation Name="B" Type="Dot" PartOfGroup="Lymphocyte" Color="#F4FA58"><Coordinates><Coordinate Order="0" X="5" Y="5"/></Coordinates></Annotation>
</Annotations><AnnotationGroups><Group Name="Tumor" PartOfGroup="None" Color="#64FE2E"/></AnnotationGroups></ASAP_Annotations>
"""


def _read_any(path):
    from napari_histo.formats.auto import read_annotation_file

    return read_annotation_file(path)


@SETTINGS
@given(data=st.data(), seed=st.sampled_from(["imagescope", "asap"]))
def test_mutated_imagescope_and_asap_xml(tmp_path, data, seed):
    text = IMAGESCOPE if seed == "imagescope" else ASAP
    _check(_read_any, tmp_path / f"{seed}.xml", _mutate(text, data))


@pytest.fixture(scope="module")
def own_exports(tmp_path_factory):
    """Seeds written by the package itself: a GeoJSON and a Sedeen session of synthetic nuclei."""
    from _analysis_data import synthetic_table

    from napari_histo.formats.geojson import write_geojson
    from napari_histo.formats.sedeen import write_sedeen

    folder = tmp_path_factory.mktemp("exports")
    table = synthetic_table(2, spacing=30)
    return {"geojson": write_geojson(table, folder / "n.geojson").read_text(),
            "sedeen": write_sedeen(table, folder / "n.session.xml").read_text()}


@SETTINGS
@given(data=st.data(), kind=st.sampled_from(["geojson", "sedeen"]))
def test_mutated_own_exports(tmp_path, own_exports, data, kind):
    name = "e.geojson" if kind == "geojson" else "e.session.xml"
    _check(_read_any, tmp_path / name, _mutate(own_exports[kind], data))


@pytest.fixture(scope="module")
def result_table(tmp_path_factory):
    from _analysis_data import synthetic_table

    return synthetic_table(3, spacing=30)


@SETTINGS
@given(values=st.dictionaries(st.sampled_from(["slide", "plan", "parameters", "files", "n_nuclei", "command"]),
                              json_values, max_size=4),
       plan=st.dictionaries(st.sampled_from(["width", "height", "slide_mpp"]), json_values, max_size=3))
def test_result_folders_with_any_run_json(tmp_path, result_table, values, plan):
    """A result folder from anywhere: run.json with any values is read, or refused naming it."""
    from napari_histo.cli import main
    from napari_histo.schema.table import write_table_parquet

    folder = tmp_path / "result"
    folder.mkdir(exist_ok=True)
    write_table_parquet(result_table, folder / "nuclei.parquet")
    if plan and "plan" not in values:
        values = {**values, "plan": plan}
    (folder / "run.json").write_text(json.dumps(values, allow_nan=True))
    for command in (["summary", str(folder)], ["density", str(folder), "-o", str(tmp_path / "d.npy")],
                    ["export", str(folder), "--csv", str(tmp_path / "n.csv")]):
        assert main(command) in (0, 1), command
    _memory_bounded()


@pytest.fixture(scope="module")
def small_svs(tmp_path_factory):
    from slide_synth import synthetic_he, write_aperio_svs

    rgb, _ = synthetic_he(300, 400, seed=5)
    return write_aperio_svs(tmp_path_factory.mktemp("svs") / "small.svs", [rgb], mpp=0.25, app_mag=40).read_bytes()


@SETTINGS
@given(data=st.data())
def test_slides_with_mutated_headers(tmp_path, small_svs, data):
    """Random bytes over a slide's header and directories: it opens and reads, or is refused with
    the file named; never another exception."""
    from napari_histo.slide import open_slide
    from napari_histo.utils import InputFileError

    raw = bytearray(small_svs)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, min(len(raw) - 1, 4096)))
        raw[at] = data.draw(st.integers(0, 255))
    path = tmp_path / "m.svs"
    path.write_bytes(bytes(raw))
    try:
        with open_slide(path) as slide:
            slide.read_region((0, 0), (64, 64), 0, "level")
            slide.thumbnail(64)
    except InputFileError as exc:
        assert path.name in str(exc)
    _memory_bounded()


@SETTINGS
@given(attrs=st.dictionaries(st.sampled_from(["mpp", "type_info", "slide", "segmenter"]), json_values, max_size=4))
def test_result_tables_with_any_metadata(tmp_path, result_table, attrs):
    """The table's own metadata (mpp, type names and colours) from anywhere: used when usable,
    dropped when not; every command answers."""
    import pyarrow.parquet as pq

    from napari_histo.cli import main
    from napari_histo.schema.table import write_table_parquet

    folder = tmp_path / "result"
    folder.mkdir(exist_ok=True)
    write_table_parquet(result_table, folder / "nuclei.parquet")
    table = pq.read_table(folder / "nuclei.parquet")
    meta = dict(table.schema.metadata or {})
    key = next(k for k in meta if b"napari" in k or b"histo" in k)
    meta[key] = json.dumps(attrs, allow_nan=True).encode()
    pq.write_table(table.replace_schema_metadata(meta), folder / "nuclei.parquet")
    for command in (["summary", str(folder)], ["density", str(folder), "-o", str(tmp_path / "d.npy")],
                    ["hotspots", str(folder), "-k", "1", "--radius-px", "30"],
                    ["export", str(folder), "--sedeen", "--geojson", "--hovernet-json", "--csv"]):
        assert main(command) in (0, 1), command
    _memory_bounded()
