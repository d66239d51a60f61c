"""Physical pixel size and objective power from slide metadata (never guessed).

Each parser returns ``None`` when the file does not state the value; a made-up default
(72 dpi TIFF resolution, an assumed 20x) is worse than an honest "unknown".
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from napari_histo.utils import positive_float

# Lazy imports: defusedxml is imported inside the functions that use it (directly or through the
# modules named there): importing this module stays light for the CLI and the napari manifest.

#: Plausible range for a microscope pixel size in µm; values outside are treated as absent.
_MPP_RANGE = (0.01, 100.0)


def plausible_mpp(value: object) -> float | None:
    """``value`` as µm/px if it is a finite number in a microscope's range, else None."""
    number = positive_float(value)
    if number is None or not (_MPP_RANGE[0] <= number <= _MPP_RANGE[1]):
        return None
    return number


def mpp_from_openslide(properties: Mapping[str, str]) -> tuple[float, float] | None:
    """mpp (x, y) from OpenSlide's normalised properties (Aperio, Hamamatsu, MIRAX, ...)."""
    mpp_x = plausible_mpp(properties.get("openslide.mpp-x"))
    mpp_y = plausible_mpp(properties.get("openslide.mpp-y"))
    if mpp_x is None and mpp_y is None:
        return None
    return (mpp_x or mpp_y, mpp_y or mpp_x)


def power_from_openslide(properties: Mapping[str, str]) -> float | None:
    """Objective power from OpenSlide's normalised properties."""
    return positive_float(properties.get("openslide.objective-power"))


_APERIO_FIELD = re.compile(r"\|\s*([^|=]+?)\s*=\s*([^|]*)")


def parse_aperio_description(description: str) -> dict[str, str]:
    """The ``key = value`` fields of an Aperio ImageDescription (``"Aperio ...|MPP = 0.25|..."``)."""
    if not description.startswith("Aperio"):
        return {}
    return {key.strip(): value.strip() for key, value in _APERIO_FIELD.findall(description)}


def mpp_power_from_aperio(description: str) -> tuple[tuple[float, float] | None, float | None]:
    """mpp and AppMag from an Aperio ImageDescription."""
    fields = parse_aperio_description(description)
    mpp = plausible_mpp(fields.get("MPP"))
    power = positive_float(fields.get("AppMag"))
    return ((mpp, mpp) if mpp else None), power


_OME_UNITS_TO_UM = {"µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def mpp_power_from_ome(xml: str) -> tuple[tuple[float, float] | None, float | None]:
    """mpp from ``Pixels/@PhysicalSizeX|Y`` (with units) and power from ``Objective/@NominalMagnification``."""
    from defusedxml import ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except Exception:
        return None, None
    mpp = None
    power = None
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Pixels" and mpp is None:
            sizes = []
            for axis in ("X", "Y"):
                size = positive_float(element.get(f"PhysicalSize{axis}"))
                unit = _OME_UNITS_TO_UM.get(element.get(f"PhysicalSize{axis}Unit", "µm"))
                sizes.append(plausible_mpp(size * unit) if size is not None and unit else None)
            if sizes[0] or sizes[1]:
                mpp = (sizes[0] or sizes[1], sizes[1] or sizes[0])
        elif tag == "Objective" and power is None:
            power = positive_float(element.get("NominalMagnification"))
    return mpp, power


def mpp_from_tiff_resolution(x_resolution, y_resolution, unit: int) -> tuple[float, float] | None:
    """mpp from TIFF X/YResolution when the unit is centimetre (3) or inch (2) and plausible.

    Unit NONE (1), the common writer default, carries no physical meaning and gives None.
    """
    per_um = {2: 25400.0, 3: 10000.0}.get(int(unit))
    if per_um is None:
        return None

    def one(resolution) -> float | None:
        if isinstance(resolution, tuple):
            resolution = resolution[0] / resolution[1] if resolution[1] else 0
        number = positive_float(resolution)
        return plausible_mpp(per_um / number) if number else None

    mpp_x, mpp_y = one(x_resolution), one(y_resolution)
    if mpp_x is None or mpp_y is None:
        return None
    return (mpp_x, mpp_y)
