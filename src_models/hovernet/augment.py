"""Training augmentation (numpy/scipy only): shape transforms on image + labels, colour on image."""

from __future__ import annotations

import numpy as np

# Lazy imports: scipy is imported inside the functions that use it (directly or through the
# modules named there): only the code paths that use them pay for loading.

# Ruifrok & Johnston H&E-DAB stain matrix (rows: H, E, DAB optical densities).
_RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32
)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


def random_affine_crop(
    img: np.ndarray,
    inst: np.ndarray,
    types: np.ndarray,
    out_size: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.85, 1.15),
    max_rot_deg: float = 180.0,
    max_shear_deg: float = 5.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotate/scale/shear about the centre and crop ``out_size``² (bilinear image, nearest labels).

    The source arrays must be larger than ``out_size`` by the rotation margin (callers crop
    ``ceil(out_size * 1.5)`` first). Reflect padding fills the corners.
    """
    from scipy import ndimage as ndi

    h, w = inst.shape
    ang = np.deg2rad(rng.uniform(-max_rot_deg, max_rot_deg))
    sx, sy = rng.uniform(*scale_range, size=2)
    sh = np.deg2rad(rng.uniform(-max_shear_deg, max_shear_deg))
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    shear = np.array([[1.0, np.tan(sh)], [0.0, 1.0]])
    # Maps output (row, col) -> input (row, col).
    mat = rot @ shear @ np.diag([1.0 / sy, 1.0 / sx])
    c_out = np.array([(out_size - 1) / 2.0, (out_size - 1) / 2.0])
    c_in = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    offset = c_in - mat @ c_out
    shape = (out_size, out_size)
    img_o = np.empty((out_size, out_size, 3), np.float32)
    for c in range(3):
        img_o[..., c] = ndi.affine_transform(
            img[..., c].astype(np.float32), mat, offset, output_shape=shape, order=1, mode="reflect"
        )
    inst_o = ndi.affine_transform(inst, mat, offset, output_shape=shape, order=0, mode="reflect")
    types_o = ndi.affine_transform(types, mat, offset, output_shape=shape, order=0, mode="reflect")
    return np.clip(img_o, 0, 255).astype(np.uint8), inst_o, types_o


def flip_rot90(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Same random flip + 90° rotation for every (H, W, ...) array."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrays:
        b = np.rot90(a, k, axes=(0, 1))
        if flip:
            b = b[:, ::-1]
        out.append(np.ascontiguousarray(b))
    return out


def hed_jitter(img: np.ndarray, rng: np.random.Generator, sigma: float = 0.05, bias: float = 0.05) -> np.ndarray:
    """Perturb H, E and DAB optical densities (scale ``1±sigma``, shift ``±bias``)."""
    rgb = np.maximum(img.astype(np.float32), 1.0) / 255.0
    od = -np.log(rgb)
    hed = od.reshape(-1, 3) @ _HED_FROM_RGB
    hed = hed * rng.uniform(1 - sigma, 1 + sigma, 3).astype(np.float32) + rng.uniform(-bias, bias, 3).astype(
        np.float32
    )
    od2 = np.maximum(hed @ _RGB_FROM_HED, 0)
    out = np.exp(-od2).reshape(img.shape) * 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def colour_jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation jitter (HoVer-Net ranges), then blur or noise."""
    from scipy import ndimage as ndi

    x = img.astype(np.float32)
    x = x + rng.uniform(-26, 26)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.75, 1.25) + mean
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * (1.0 + rng.uniform(-0.2, 0.2)) + grey
    choice = int(rng.integers(3))
    if choice == 0:
        s = rng.uniform(0.0, 1.0)
        if s > 0.1:
            x = ndi.gaussian_filter(x, sigma=(s, s, 0))
    elif choice == 1:
        x = x + rng.normal(0.0, rng.uniform(0, 0.03 * 255), x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def jpeg_roundtrip(img: np.ndarray, rng: np.random.Generator, quality: tuple[int, int] = (30, 90)) -> np.ndarray:
    """Encode and decode as JPEG at a random quality: the block and ringing artefacts of JPEG-saved
    tiles and of JPEG-compressed slide tiles (Aperio SVS stores JPEG at quality ~70)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def augment_patch(
    img: np.ndarray, inst: np.ndarray, types: np.ndarray, out_size: int, rng: np.random.Generator,
    jpeg_p: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full training augmentation: affine+crop (p 0.5, else centre crop; scale ±15 %), flips/rot90,
    HED stain jitter, colour, blur or noise, and JPEG compression with probability ``jpeg_p``."""
    if rng.random() < 0.5:
        img, inst, types = random_affine_crop(img, inst, types, out_size, rng)
    else:
        h, w = inst.shape
        r0, c0 = (h - out_size) // 2, (w - out_size) // 2
        sl = (slice(r0, r0 + out_size), slice(c0, c0 + out_size))
        img, inst, types = img[sl], inst[sl], types[sl]
    img, inst, types = flip_rot90([img, inst, types], rng)
    if rng.random() < 0.7:
        img = hed_jitter(img, rng)
    img = colour_jitter(img, rng)
    if jpeg_p > 0 and rng.random() < jpeg_p:
        img = jpeg_roundtrip(img, rng)
    return img, inst, types
