"""Model lookup and caching (see the package docstring). torch is imported only when needed."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

from napari_histo.schema.types import TypeInfo
from napari_histo.utils import HistoError, InputFileError, choose_device, resource_path

# Lazy imports: pandas, torch are imported inside the functions that use them (directly or through
# the modules named there): importing this module stays light for the CLI and the napari manifest.

#: Folder of the shipped default model (compact HoVer-Net).
DEFAULT_WEIGHTS = ("weights", "hovernet_compact")

_CACHE: dict[tuple, object] = {}
_LOCK = threading.Lock()

#: Official HoVer-Net releases: nr_types -> shipped type table (``resources/type_info``).
_TYPE_TABLE_BY_NAME = {"pannuke": "pannuke.json", "consep": "consep.json", "monusac": "monusac.json"}


def default_type_info(name: str) -> TypeInfo:
    """Shipped type table ``pannuke``, ``consep`` or ``monusac`` (``resources/type_info``)."""
    key = name.lower()
    if key not in _TYPE_TABLE_BY_NAME:
        raise HistoError(f"unknown type table {name!r}; choose from {sorted(_TYPE_TABLE_BY_NAME)}")
    return TypeInfo.load(resource_path("type_info", _TYPE_TABLE_BY_NAME[key]))


def list_models() -> list[str]:
    """Names accepted by :func:`get_segmenter` besides paths."""
    return ["classical", "default"]


def clear_cache() -> None:
    """Drop every cached model (frees GPU memory)."""
    with _LOCK:
        _CACHE.clear()


def get_segmenter(name_or_path: str | Path = "default", device: str | None = None, mpp: float | None = None,
                  **kwargs):
    """A cached Segmenter for a name or path.

    Parameters
    ----------
    name_or_path : str or Path
        ``"classical"`` (weight-free detector), ``"default"`` (shipped compact HoVer-Net; falls
        back to classical with a warning when its weights are not installed), a folder with
        ``config.json`` + ``model.pt`` (+ ``type_info.json``), a folder of an official HoVer-Net
        trained by ``napari-histo train hovernet --mode fast|original`` (``model_info.json`` names
        its weights and µm/px), or an official HoVer-Net checkpoint file (``.tar``/``.pth``,
        optional ``type_info.json`` beside it).
    device : str, optional
        torch device; default cuda > mps > cpu.
    mpp : float, optional
        The µm/px an official checkpoint file was trained at, i.e. its processing resolution
        (default 0.25, the 40× of the released weights). A model folder states its own and
        refuses another; the classical detector has none.
    **kwargs
        Passed to the segmenter (e.g. classical parameters, ``batch_size``).

    Raises
    ------
    HistoError / InputFileError
        Unknown name, missing or incompatible weights.
    """
    key_name = str(name_or_path)
    mpp = None if mpp is None else float(mpp)
    if key_name == "classical":
        key = ("classical", mpp, tuple(sorted(kwargs.items())))
    else:
        device = choose_device(device)
        key = (key_name, device, mpp, tuple(sorted(kwargs.items())))
    with _LOCK:
        seg = _CACHE.get(key)
        if seg is None:
            seg = _build(key_name, device, mpp, **kwargs)
            _CACHE[key] = seg
    return seg


def _build(name: str, device: str | None, mpp: float | None = None, **kwargs):
    if name == "classical":
        from napari_histo.nuclei.classical import ClassicalSegmenter

        if mpp is not None:
            raise HistoError("the classical detector has no trained resolution; a model µm/px applies to "
                             "HoVer-Net checkpoint files")
        return ClassicalSegmenter(**kwargs)
    if name == "default":
        folder = resource_path(*DEFAULT_WEIGHTS)
        if not (folder / "config.json").exists() or not (folder / "model.pt").exists():
            warnings.warn(
                f"default nucleus model weights not installed ({folder}); using the classical detector",
                stacklevel=3,
            )
            from napari_histo.nuclei.classical import ClassicalSegmenter

            return ClassicalSegmenter(**kwargs)
        _refuse_other_mpp(folder, mpp)
        return _compact_segmenter(folder, device, name="hovernet-compact", **kwargs)
    path = Path(name).expanduser()
    if not path.exists():
        raise HistoError(f"unknown model {name!r}: not 'classical', 'default' or an existing path")
    if path.is_dir():
        if (path / "model_info.json").exists():
            return _official_folder_segmenter(path, device, mpp, **kwargs)
        if (path / "config.json").exists() and (path / "model.pt").exists():
            _refuse_other_mpp(path, mpp)
            return _compact_segmenter(path, device, name=path.name, **kwargs)
        raise InputFileError(path, "model folder needs config.json and model.pt (compact) or model_info.json "
                                   "(official HoVer-Net)")
    return _official_segmenter(path, device, mpp=mpp, **kwargs)


def _refuse_other_mpp(folder: Path, mpp: float | None, own: float | None = None) -> None:
    """A model folder states the µm/px it was trained at (``own``, else its ``config.json``):
    another processing resolution is refused."""
    if mpp is None:
        return
    if own is None:
        import json

        own = float(json.loads((folder / "config.json").read_text(encoding="utf-8"))["mpp"])
    if abs(mpp - own) > 1e-6 * own:
        raise InputFileError(folder, f"the model was trained at {own:g} µm/px (its config says so); a model "
                                     f"resolution of {mpp:g} applies to checkpoint files that state none")


def _official_folder_segmenter(folder: Path, device: str | None, mpp: float | None, **kwargs):
    import json

    info_path = folder / "model_info.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        weights = folder / str(info["weights"])
        own = float(info["mpp"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputFileError(info_path, f"not a model description (needs 'weights' and 'mpp'): {exc}") from exc
    _refuse_other_mpp(folder, mpp, own)
    return _official_segmenter(weights, device, mpp=own, name=folder.name, **kwargs)


def _compact_segmenter(folder: Path, device: str | None, name: str, **kwargs):
    try:
        from napari_histo.models.hovernet.compact import compact_segmenter
    except ImportError as exc:  # pragma: no cover - packaging error
        raise HistoError(f"cannot load compact model code: {exc}") from exc
    # constants, vocabulary and inference shortcuts tuned with the weights travel in config.json
    return compact_segmenter(folder, device=device, name=name, **kwargs)


def _official_segmenter(path: Path, device: str | None, mpp: float | None = None, name: str | None = None,
                        **kwargs):
    from napari_histo.models.hovernet.checkpoint import load_hovernet
    from napari_histo.nuclei.hovernet_segmenter import HoverNetSegmenter

    mpp = 0.25 if mpp is None else float(mpp)
    if not mpp > 0:
        raise HistoError(f"model µm/px must be positive, got {mpp}")
    model, info = load_hovernet(path, device=device or "cpu")
    type_info = None
    if info.nr_types:
        ti_path = path.with_name("type_info.json")
        if ti_path.exists():
            type_info = TypeInfo.load(ti_path)
        else:
            type_info = _guess_type_info(path, info.nr_types)
        if len(type_info.ids) < info.nr_types:
            raise InputFileError(ti_path if ti_path.exists() else path,
                                 f"type table has {len(type_info.ids)} entries, checkpoint predicts {info.nr_types} types")
    return HoverNetSegmenter(model, info.input_size, info.output_size, mpp=mpp, type_info=type_info,
                             name=name or f"hovernet-{info.mode}-{path.stem}", device=device, **kwargs)


def _guess_type_info(path: Path, nr_types: int) -> TypeInfo:
    """Type table from the checkpoint name (pannuke / monusac / consep), else generic names."""
    stem = path.name.lower()
    for key in ("pannuke", "monusac", "consep"):
        if key in stem:
            ti = default_type_info(key)
            if len(ti.ids) == nr_types:
                return ti
    if nr_types == 6:
        return default_type_info("pannuke")
    warnings.warn(f"{path.name}: no type_info.json beside the checkpoint; types are named by id", stacklevel=4)
    return TypeInfo({i: ("background" if i == 0 else f"type {i}") for i in range(nr_types)})
