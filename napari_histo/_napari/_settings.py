"""Plugin settings (napari 0.9 ``configurations`` contribution) with safe defaults.

The manifest declares one category, ``engine``, edited in napari's Preferences. Widgets read it
through :func:`engine_settings`, which falls back to :data:`DEFAULTS` when napari's plugin
settings are unavailable (plugin not registered, older napari). Precedence for the scheduler
address follows the project rule: env (``NAPARI_HISTO_SCHEDULER`` / ``DASK_SCHEDULER_ADDRESS``)
> plugin setting > none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

# Lazy imports: napari is imported inside the functions that use it (directly or through the
# modules named there): napari-histo --help and napari's plugin discovery import this module.

PLUGIN_NAME = "napari-histo"


@dataclass(frozen=True)
class EngineSettings:
    """Defaults for the nuclei panel and the whole-slide engine."""

    device: str = "auto"
    tile_size: int = 1024
    batch_size: int = 4
    scheduler_address: str = ""


DEFAULTS = EngineSettings()


def engine_settings() -> EngineSettings:
    """Current settings from napari's plugin configuration, env overrides applied."""
    settings = DEFAULTS
    try:
        from napari.settings import get_plugin_settings

        engine = get_plugin_settings(PLUGIN_NAME).engine
        settings = EngineSettings(
            device=str(getattr(engine, "device", DEFAULTS.device) or DEFAULTS.device),
            tile_size=int(getattr(engine, "tile_size", DEFAULTS.tile_size)),
            batch_size=int(getattr(engine, "batch_size", DEFAULTS.batch_size)),
            scheduler_address=str(getattr(engine, "scheduler_address", "") or ""),
        )
    except Exception:  # napari without plugin settings, or the plugin is not registered
        settings = DEFAULTS
    env = os.environ.get("NAPARI_HISTO_SCHEDULER") or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if env:
        settings = replace(settings, scheduler_address=env)
    return settings
