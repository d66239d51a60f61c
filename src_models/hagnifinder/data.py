"""Multi-magnification patches from images of known pixel size, by downsampling only.

A source image with pixel size ``mpp`` has magnification ``M = 10 / mpp`` (40x = 0.25 µm/px).
A 224² patch at target magnification ``m <= M`` covers ``224 * M / m`` source pixels per side,
area-averaged down to 224 px. Targets above the source magnification are refused: the sampler
never upsamples, so the network never sees interpolated (blurred) detail that real scans lack.

When the source is too small for the field (e.g. 5x from a 1000 px 40x tile needs 1792 px), the
whole extent is downsampled and the patch is completed by reflection padding; ``pad_prob`` applies
the same padding at random at every magnification so that padding is not a magnification cue.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_histo.datasets.readers import CRCHISTO_MPP
from napari_histo.models.hagnifinder.config import DEFAULT_HOLDOUT
from napari_histo.models.hagnifinder.images import mag_to_mpp, mpp_to_mag, read_rgb, reflect_pad
from napari_histo.slide import tissue_fraction

# Lazy imports: PIL, openslide, scipy are imported inside the functions that use them (directly or
# through the modules named there): only the code paths that use them pay for loading.


@dataclass
class SourceImage:
    """One source image of known pixel size; ``rgb`` is loaded lazily and cached."""

    name: str
    dataset: str
    path: Path
    mpp: float
    region: tuple[int, int, int, int] | None = None  # x, y, w, h at level 0 (slides)
    _rgb: np.ndarray | None = field(default=None, repr=False)

    @property
    def magnification(self) -> float:
        return mpp_to_mag(self.mpp)

    @property
    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = read_rgb(self.path, self.region)
        return self._rgb


# --------------------------------------------------------------------------------------------
# the sources in ../shared/data
# --------------------------------------------------------------------------------------------

_MPP_RE = re.compile(rb'MicronsPerPixel="([0-9.]+)"')


def _xml_mpp(xml_path: Path, default: float) -> float:
    if xml_path.exists():
        match = _MPP_RE.search(xml_path.read_bytes()[:2000])
        if match:
            return float(match.group(1))
    return default


def discover_sources(data_root: str | Path) -> list[SourceImage]:
    """All images of known pixel size under ``data_root`` (``../shared/data`` layout).

    MoNuSeg mpp from the XML (0.25 when absent), CPM-15 from the manifest's objective power
    (20x -> 0.5, 40x -> 0.25 µm/px), MoNuSAC and the CMU slide from their Aperio headers,
    CRCHistoPhenotypes 0.55 µm/px (the paper's value). Datasets that are absent are skipped.
    """
    root = Path(data_root)
    sources: list[SourceImage] = []
    for sub in ("MoNuSegTrainData", "MoNuSegTestData"):
        for tif in sorted((root / "monuseg" / sub).glob("*.tif")):
            mpp = _xml_mpp(tif.with_suffix(".xml"), 0.25)
            sources.append(SourceImage(f"monuseg:{tif.stem}", "monuseg", tif, mpp))
    manifest = root / "cpm15" / "manifest.csv"
    if manifest.exists():
        with open(manifest, newline="") as fh:
            for row in csv.DictReader(fh):
                mag = float(row["magnification"].lower().rstrip("x"))
                path = root / "cpm15" / row["image"]
                sources.append(SourceImage(f"cpm15:{path.stem}", "cpm15", path, mag_to_mpp(mag)))
    for svs in sorted((root / "monusac" / "sample_original").glob("*.svs")):
        sources.append(SourceImage(f"monusac:{svs.stem}", "monusac", svs, _slide_mpp(svs, 0.19448)))
    crc = root / "crchisto" / "CRCHistoPhenotypes_2016_04_28" / "cls_and_det" / "test"
    for bmp in sorted(crc.glob("img*/img*.bmp")):
        sources.append(SourceImage(f"crchisto:{bmp.stem}", "crchisto", bmp, CRCHISTO_MPP))
    cmu = root / "wsi" / "cmu-1-small-region.svs"
    if cmu.exists():
        sources.append(SourceImage("wsi:cmu-1-small-region", "wsi", cmu, _slide_mpp(cmu, 0.499)))
    return sources


#: BreakHis optics (Spanhol et al., IEEE Trans. Biomed. Eng. 63(7):1455-1462, 2016): an Olympus
#: BX-50 microscope, a 3.3× relay lens and a Samsung SCC-131AN camera whose CCD pixels are 6.5 µm
#: wide; the stated magnification is the objective's times a 10× eyepiece. The pixel size at the
#: specimen is therefore 6.5 / (3.3 × objective) µm: 0.49, 0.20, 0.098, 0.049 µm/px at 40X, 100X,
#: 200X, 400X (scanner-equivalent 20×, 51×, 102×, 203× in this package's 10 / mpp convention).
BREAKHIS_CAMERA_PIXEL_UM = 6.5
BREAKHIS_RELAY = 3.3
BREAKHIS_EYEPIECE = 10.0


def breakhis_mpp(stated: str | float) -> float:
    """µm/px of a BreakHis image from its stated total magnification (``"40X"`` ... ``"400X"``)."""
    total = float(str(stated).upper().rstrip("X"))
    objective = total / BREAKHIS_EYEPIECE
    return BREAKHIS_CAMERA_PIXEL_UM / (BREAKHIS_RELAY * objective)


def breakhis_sources(root: str | Path) -> list[SourceImage]:
    """The microscope-camera images of ``root/breakhis`` (its ``manifest.csv``), each named
    ``breakhis:<file stem>`` with the pixel size of :func:`breakhis_mpp`; [] when absent."""
    folder = Path(root) / "breakhis"
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        return []
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [SourceImage(f"breakhis:{Path(r['path']).stem}", "breakhis", folder / r["path"],
                        breakhis_mpp(r["magnification"])) for r in rows]


def _slide_mpp(path: Path, default: float) -> float:
    try:
        import openslide

        with openslide.OpenSlide(str(path)) as slide:
            value = slide.properties.get("openslide.mpp-x")
        return float(value) if value else default
    except Exception:  # noqa: BLE001 - an unreadable header falls back to the documented value
        return default


def split_sources(sources: Sequence[SourceImage], holdout: Sequence[str] = DEFAULT_HOLDOUT
                  ) -> tuple[list[SourceImage], list[SourceImage]]:
    """(train, validation) by whole source image: names in ``holdout`` go to validation."""
    held = set(holdout)
    train = [s for s in sources if s.name not in held]
    val = [s for s in sources if s.name in held]
    return train, val


# --------------------------------------------------------------------------------------------
# patch extraction
# --------------------------------------------------------------------------------------------

def downsample_factor(source_mag: float, target_mag: float) -> float:
    """Source px per output px for a target magnification; refuses to upsample (factor < 1)."""
    factor = float(source_mag) / float(target_mag)
    if factor < 1.0 - 1e-9:
        raise ValueError(f"target magnification {target_mag:.3g}x is above the source's "
                         f"{source_mag:.3g}x: that would need upsampling")
    return max(factor, 1.0)


def field_size(patch_size: int, factor: float) -> int:
    """Source pixels per side covered by a ``patch_size`` patch downsampled by ``factor``."""
    return int(round(patch_size * factor))


def extract_patch(rgb: np.ndarray, source_mag: float, target_mag: float, patch_size: int = 224,
                  center: tuple[float, float] | None = None,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray, float]:
    """One ``patch_size``² patch of ``rgb`` seen at ``target_mag`` (never upsampled).

    Parameters
    ----------
    rgb
        Source image (h, w, 3) uint8 at ``source_mag``.
    center
        Field centre (x, y) in source px; random (from ``rng``) when None.

    Returns
    -------
    patch, real_fraction
        The patch and the fraction of its pixels that are image (the rest is reflection padding
        because the source was smaller than the field).
    """
    from PIL import Image

    factor = downsample_factor(source_mag, target_mag)
    h, w = rgb.shape[:2]
    fs = field_size(patch_size, factor)
    fw, fh = min(fs, w), min(fs, h)
    if center is None:
        rng = rng or np.random.default_rng()
        x0 = int(rng.integers(0, w - fw + 1))
        y0 = int(rng.integers(0, h - fh + 1))
    else:
        x0 = int(np.clip(round(center[0] - fw / 2), 0, w - fw))
        y0 = int(np.clip(round(center[1] - fh / 2), 0, h - fh))
    crop = rgb[y0:y0 + fh, x0:x0 + fw]
    ow = min(patch_size, max(1, int(round(fw / factor))))
    oh = min(patch_size, max(1, int(round(fh / factor))))
    if (ow, oh) != (fw, fh):
        crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((ow, oh), Image.BOX))
    real = (ow * oh) / float(patch_size * patch_size)
    if ow < patch_size or oh < patch_size:
        crop = reflect_pad(crop, patch_size)
    return np.ascontiguousarray(crop), real


# --------------------------------------------------------------------------------------------
# the training sampler
# --------------------------------------------------------------------------------------------

@dataclass
class MultiMagSampler:
    """Random (patch, magnification) pairs balanced uniformly over ``mag_range``.

    For a target ``m ~ U(mag_min, mag_max)`` one dataset is chosen uniformly among those with an
    image of magnification >= ``m``, then one such image uniformly, then a random field.
    """

    sources: Sequence[SourceImage]
    mag_range: tuple[float, float] = (5.0, 40.0)
    patch_size: int = 224
    pad_prob: float = 0.15
    min_tissue: float = 0.3
    augment: bool = True
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    stain_jitter: float = 0.0
    #: Probability of camera-like degradations (:func:`camera_degrade`) of a patch.
    camera_prob: float = 0.0
    #: "uniform" (magnification uniform over the range) or "log" (uniform in log2): a wide range
    #: (5-200×) sampled uniformly would spend most patches above the scanners' 40×.
    mag_sampling: str = "uniform"

    def __post_init__(self) -> None:
        top = max(s.magnification for s in self.sources) if self.sources else 0.0
        if not self.sources or top < self.mag_range[1] - 1e-6:
            raise ValueError(f"no source reaches {self.mag_range[1]}x (highest: {top:.3g}x)")

    def eligible(self, target_mag: float) -> list[SourceImage]:
        return [s for s in self.sources if s.magnification >= target_mag - 1e-9]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, float, str]:
        """One augmented patch, its magnification, and the source name."""
        if self.mag_sampling == "log":
            target = float(2.0 ** rng.uniform(np.log2(self.mag_range[0]), np.log2(self.mag_range[1])))
        else:
            target = float(rng.uniform(*self.mag_range))
        eligible = self.eligible(target)
        datasets = sorted({s.dataset for s in eligible})
        dataset = datasets[int(rng.integers(len(datasets)))]
        pool = [s for s in eligible if s.dataset == dataset]
        src = pool[int(rng.integers(len(pool)))]
        patch = None
        for _ in range(4):  # prefer fields with tissue
            patch, _real = extract_patch(src.rgb, src.magnification, target, self.patch_size, rng=rng)
            if tissue_fraction(patch) >= self.min_tissue:
                break
        if self.augment and rng.random() < self.pad_prob:
            keep = int(rng.integers(self.patch_size // 3, self.patch_size))
            y0, x0 = rng.integers(0, self.patch_size - keep + 1, size=2)
            patch = reflect_pad(patch[y0:y0 + keep, x0:x0 + keep], self.patch_size)
        if self.augment and self.blur_prob > 0 and rng.random() < self.blur_prob:
            patch = blur_patch(patch, float(rng.uniform(*self.blur_sigma)))
        if self.augment and self.stain_jitter > 0:
            patch = jitter_stains(patch, rng, self.stain_jitter)
        if self.augment and self.camera_prob > 0 and rng.random() < self.camera_prob:
            patch = camera_degrade(patch, rng)
        if self.augment:
            patch = augment_patch(patch, rng)
        return patch, target, src.name

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``size`` patches (B, H, W, 3) uint8 and magnifications (B,) float32."""
        return self.batch_with_sources(rng, size)[:2]

    def batch_with_sources(self, rng: np.random.Generator, size: int
                           ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """:meth:`batch` and the source name of each patch (same random stream)."""
        patches, mags, names = zip(*[self.sample(rng) for _ in range(size)])
        return np.stack(patches), np.asarray(mags, np.float32), list(names)


def blur_patch(patch: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an RGB patch (``sigma`` in px, per channel)."""
    from scipy.ndimage import gaussian_filter

    out = gaussian_filter(patch.astype(np.float32), sigma=(sigma, sigma, 0), mode="reflect")
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


#: Haematoxylin, eosin and DAB optical-density vectors (RGB; Ruifrok & Johnston), one per row,
#: and their inverse (RGB optical density -> stain amounts); float32, computed once.
_RGB_OD_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB_OD = np.linalg.inv(_RGB_OD_FROM_HED).astype(np.float32)
_RGB_OD_FROM_HED = _RGB_OD_FROM_HED.astype(np.float32)


def jitter_stains(patch: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Stain augmentation: each stain's optical density scaled by U(1 ± strength) and shifted
    by U(± strength / 5), by colour deconvolution and back (Tellez et al. 2018)."""
    od = -np.log(np.maximum(patch.astype(np.float32), 1.0) / 255.0)
    stains = od.reshape(-1, 3) @ _HED_FROM_RGB_OD
    stains = stains * rng.uniform(1 - strength, 1 + strength, 3).astype(np.float32) \
        + rng.uniform(-strength / 5, strength / 5, 3).astype(np.float32)
    out = 255.0 * np.exp(-(stains @ _RGB_OD_FROM_HED))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(patch.shape)


def camera_degrade(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a microscope camera adds to a field: a colour cast (white balance), vignetting (the
    corners up to 35 % darker), a slight blur, and JPEG compression (quality 40-90), each drawn
    at random, so that neither a scanner's nor a camera's look is read as magnification."""
    from io import BytesIO

    from PIL import Image

    x = patch.astype(np.float32)
    if rng.random() < 0.7:  # white balance
        x = x * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    if rng.random() < 0.6:  # vignetting: radial fall-off centred anywhere near the middle
        h, w = x.shape[:2]
        cy, cx = h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / float(max(h, w) ** 2)
        x = x * (1.0 - float(rng.uniform(0.05, 0.35)) * np.clip(r2 * 2.0, 0, 1))[..., None]
    out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        out = blur_patch(out, float(rng.uniform(0.3, 1.0)))
    if rng.random() < 0.7:
        buffer = BytesIO()
        Image.fromarray(out).save(buffer, format="JPEG", quality=int(rng.integers(40, 91)))
        out = np.asarray(Image.open(BytesIO(buffer.getvalue())).convert("RGB"))
    return np.ascontiguousarray(out)


def augment_patch(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flips, 90° rotations, and colour jitter (per-channel gain/offset, saturation, gamma)."""
    out = np.rot90(patch, int(rng.integers(4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    x = out.astype(np.float32)
    grey = x.sum(axis=2, keepdims=True) * np.float32(1 / 3)
    x = grey + (x - grey) * np.float32(rng.uniform(0.7, 1.3))
    x = np.clip(x, 0, 255).astype(np.uint8)
    levels = np.arange(256, dtype=np.float32) / 255.0
    gamma = rng.uniform(0.8, 1.25)
    for c in range(3):  # per-channel gain, offset and a shared gamma, as lookup tables
        lut = np.clip(levels * rng.uniform(0.9, 1.1) + rng.uniform(-0.05, 0.05), 0, 1) ** gamma
        x[..., c] = (lut * 255.0 + 0.5).astype(np.uint8)[x[..., c]]
    return x


def fields_by_magnification(sources: Sequence[SourceImage], mags: Sequence[float]
                            ) -> Iterator[tuple[int, SourceImage, float, float]]:
    """(source index, source, nominal, magnification) for every nominal magnification a source
    reaches by downsampling. A "40x" scan at 39.7x still counts for the 40x row, labelled with
    its true 39.7x; nominal magnifications above the scan's are skipped (never upsampled)."""
    for i, src in enumerate(sources):
        for nominal in mags:
            if nominal <= src.magnification * 1.03:
                yield i, src, nominal, min(float(nominal), src.magnification)


def validation_patches(sources: Sequence[SourceImage], mags: Sequence[float] = (5, 10, 15, 20, 25, 30, 35, 40),
                       crops_per_mag: int = 8, patch_size: int = 224, seed: int = 0,
                       min_tissue: float = 0.3) -> list[dict]:
    """A deterministic validation set: per source and magnification <= its own, ``crops_per_mag``
    tissue-rich fields (no augmentation). Each record: source, dataset, mag, patch, real_fraction."""
    records = []
    for i, src, nominal, mag in fields_by_magnification(sources, mags):
        rng = np.random.default_rng([seed, i, int(nominal * 10)])
        for _ in range(crops_per_mag):
            for _attempt in range(6):
                patch, real = extract_patch(src.rgb, src.magnification, mag, patch_size, rng=rng)
                if tissue_fraction(patch) >= min_tissue:
                    break
            records.append({"source": src.name, "dataset": src.dataset, "nominal": float(nominal),
                            "mag": mag, "patch": patch, "real_fraction": real})
    return records


# --------------------------------------------------------------------------------------------
# Hagni40-style folders: patches already labelled by magnification
# --------------------------------------------------------------------------------------------

def hagni40_entries(root: str | Path) -> list[tuple[Path, str, float]]:
    """(image, cancer type, magnification) of a Hagni40-layout folder.

    The layout of the Hagnifinder paper's dataset: ``<root>/<magnification>/<cancer_type>/*.png``
    (magnification as ``20`` or ``20x``), or an index file ``<root>/index.txt`` of lines
    ``<path> <cancer_type> <magnification>`` (paths relative to ``root``). Raises a clear error
    naming the folder when neither holds an image.
    """
    root = Path(root)
    index = root / "index.txt"
    entries: list[tuple[Path, str, float]] = []
    if index.is_file():
        for number, line in enumerate(index.read_text(encoding="utf-8").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise ValueError(f"{index}, line {number}: expected '<path> <cancer_type> <magnification>'")
            entries.append((root / parts[0], parts[1], float(parts[2].lower().rstrip("x"))))
    else:
        for mag_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            try:
                mag = float(mag_dir.name.lower().rstrip("x"))
            except ValueError:
                continue
            for cancer_dir in sorted(p for p in mag_dir.iterdir() if p.is_dir()):
                for image in sorted(cancer_dir.iterdir()):
                    if image.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
                        entries.append((image, cancer_dir.name, mag))
    if not entries:
        raise FileNotFoundError(f"{root}: no Hagni40-style images (<magnification>/<cancer_type>/*.png or index.txt)")
    return entries


class LabelledPatchSampler:
    """Training patches of images already labelled by magnification (a Hagni40-style folder).

    Unlike :class:`MultiMagSampler` nothing is resampled: a random ``patch_size``² crop of a
    random image (reflection-padded when smaller), flips / 90° rotations / colour jitter when
    ``augment`` (upstream's ``data_arg``), labelled with the image's magnification. ``sources``
    are one per cancer type (``hagni40:<type>``), so holdouts and cross-fitting work by type.
    Images are read when drawn, as upstream's dataset does (a Hagni40 folder does not fit in memory).
    """

    def __init__(self, entries: Sequence[tuple[Path, str, float]], patch_size: int = 224, augment: bool = True,
                 camera_prob: float = 0.0) -> None:
        self.entries = list(entries)
        self.patch_size, self.augment, self.camera_prob = patch_size, augment, camera_prob
        types = sorted({cancer for _, cancer, _ in self.entries})
        self.sources = [SourceImage(f"hagni40:{t}", "hagni40", Path(), float("nan")) for t in types]

    def crop(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        """A ``patch_size``² crop of entry ``index``: random with ``rng``, else the centre one."""
        rgb = read_rgb(self.entries[index][0])
        h, w = rgb.shape[:2]
        size = self.patch_size
        ch, cw = min(size, h), min(size, w)
        y0 = int(rng.integers(0, h - ch + 1)) if rng is not None else (h - ch) // 2
        x0 = int(rng.integers(0, w - cw + 1)) if rng is not None else (w - cw) // 2
        patch = rgb[y0:y0 + ch, x0:x0 + cw]
        if ch < size or cw < size:
            patch = reflect_pad(patch, size)
        return np.ascontiguousarray(patch)

    def batch_with_sources(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        patches, mags, names = [], [], []
        for _ in range(size):
            index = int(rng.integers(len(self.entries)))
            patch = self.crop(index, rng)
            if self.augment and self.camera_prob > 0 and rng.random() < self.camera_prob:
                patch = camera_degrade(patch, rng)
            if self.augment:
                patch = augment_patch(patch, rng)
            patches.append(patch)
            mags.append(self.entries[index][2])
            names.append(f"hagni40:{self.entries[index][1]}")
        return np.stack(patches), np.asarray(mags, np.float32), names

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        return self.batch_with_sources(rng, size)[:2]

    def validation(self, keep_types: set[str]) -> list[dict]:
        """Centre crops of every image of the given cancer types (validation records)."""
        return [{"source": f"hagni40:{cancer}", "dataset": "hagni40", "nominal": mag, "mag": mag,
                 "patch": self.crop(i, None), "real_fraction": 1.0}
                for i, (_, cancer, mag) in enumerate(self.entries) if cancer in keep_types]


PACK_INDEX = "sources.json"


def read_pack(folder: str | Path) -> list[SourceImage]:
    """The sources of a pack (images load lazily, as with :func:`discover_sources`)."""
    folder = Path(folder)
    index = folder / PACK_INDEX
    if not index.exists():
        raise FileNotFoundError(f"{folder}: not a Hagnifinder data pack (no {PACK_INDEX})")
    with open(index) as fh:
        entries = json.load(fh)["sources"]
    return [SourceImage(e["name"], e["dataset"], folder / e["file"], float(e["mpp"])) for e in entries]
