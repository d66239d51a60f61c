"""Make napari-histo the reader whole-slide files open with.

Several installed readers may accept a ``.svs``; napari then shows a "Choose reader" dialog on
every drop, preselecting its built-in reader, which opens one unscaled level. napari keeps the
user's choice per filename pattern in its settings (``get_settings().plugins.extension2reader``,
shown in Preferences > Plugins > "File extension readers"; https://napari.org/stable/guides/preferences.html).
On first use this module records napari-histo there for the whole-slide patterns nobody has
chosen a reader for yet, once, with a notice saying where to change it. A choice the user made is
never replaced; generic image patterns (``.tif``, ``.png``, ``.jpg``) are left to the user.
"""

from __future__ import annotations

from napari_histo._napari._workers import notify_info

PLUGIN_NAME = "napari-histo"

#: Whole-slide formats: nothing else in napari's ecosystem reads them with µm scale and pyramid.
SLIDE_PATTERNS = ("*.svs", "*.ndpi", "*.mrxs", "*.scn", "*.bif", "*.vms", "*.vmu", "*.svslide")


def prefer_this_reader(notify: bool = True) -> list[str]:
    """Record napari-histo as the reader of every whole-slide pattern without a preference.

    Returns the patterns added (empty when the user had chosen for all of them, or when napari's
    settings cannot be written).
    """
    try:
        from napari.settings import get_settings

        plugins = get_settings().plugins
        current = dict(plugins.extension2reader)
    except Exception:  # settings unavailable (headless use without napari's settings)
        return []
    added = [p for p in SLIDE_PATTERNS if p not in current]
    if not added:
        return []
    plugins.extension2reader = {**current, **{p: PLUGIN_NAME for p in added}}
    if notify:
        notify_info(
            f"napari-histo now opens {', '.join(p[1:] for p in added)} slides when you drop or open them "
            "(with their pyramid and µm scale). Change this in Preferences > Plugins > File extension readers."
        )
    return added
