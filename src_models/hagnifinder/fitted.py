"""What is fitted after training (a calibration, a prediction interval) is written into the
model's ``config.json`` here, never from data that includes its held-out sources."""

from __future__ import annotations

from pathlib import Path

from napari_histo.models.hagnifinder.config import HagnifinderConfig


def write_fitted(model_dir: str | Path, name: str, value: dict, sources) -> Path:
    """Store ``value`` (a calibration, an interval) as ``name`` in ``model_dir/config.json``.

    Refuses when any of ``sources``, the images it was fitted on, is on the model's held-out
    list: what is fitted after training must not see the validation images either.
    """
    cfg_path = Path(model_dir) / "config.json"
    config = HagnifinderConfig.load(cfg_path)
    if set(sources) & set(config.holdout):
        raise RuntimeError(f"{name} data includes held-out sources")
    setattr(config, name, value)
    config.save(cfg_path)
    return cfg_path
