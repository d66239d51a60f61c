"""Vectorised JSON text for millions of numbers: fixed-point formatting and UUIDs as bytes.

Python's ``json`` spends ~1 µs per float; a million nuclei of 24 vertices are ~50 M floats. Two
layouts turn a whole chunk of numbers into text in a few numpy operations:

- byte matrix + keep mask (:func:`vertex_rows`, :func:`number_field`): used by the HoVer-Net JSON
  writer;
- NUL-padded word rows from lookup tables (:func:`grid_words`, :func:`vertex_words`,
  :func:`assemble_rows`): used by the GeoJSON writer; whole features are assembled as rows and
  one ``translate`` pass removes the padding.

Output is standard JSON number syntax, trailing fraction zeros stripped (``-12.50`` -> ``-12.5``,
``3.00`` -> ``3``), never ``-0``.
"""

from __future__ import annotations

import functools
import os

import numpy as np

_DIGITS = np.frombuffer(b"0123456789", np.uint8)
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def field_width(values: np.ndarray, decimals: int) -> int:
    """Bytes needed by :func:`write_numbers` for ``values`` (sign + integer digits + point + decimals)."""
    top = float(np.abs(values).max()) if len(values) else 0.0
    n_int = max(1, len(str(int(np.rint(top * 10**decimals)) // 10**decimals)))
    return 1 + n_int + (1 + decimals if decimals else 0)


def write_numbers(mat: np.ndarray, keep: np.ndarray, col: int, values: np.ndarray, decimals: int, width: int) -> None:
    """Format finite ``values`` into ``mat[col:col + width, :]`` (ASCII) and mark the bytes to keep.

    ``mat`` and ``keep`` are **transposed** (one contiguous row per byte position, one column per
    number): writing a digit position is then a contiguous pass (several times faster than a
    strided column of a row-major matrix).
    """
    v = np.asarray(values, np.float64)
    scale = 10**decimals
    q = np.rint(np.abs(v) * scale).astype(np.int64)
    n_int = width - 1 - (1 + decimals if decimals else 0)
    mat[col] = 45  # "-"
    np.logical_and(v < 0, q > 0, out=keep[col])
    ip = q // scale
    small = n_int < 10
    rest = ip.astype(np.int32) if small else ip.copy()
    digit = np.empty_like(rest)
    for c in range(col + n_int, col, -1):  # least significant integer digit first
        np.remainder(rest, 10, out=digit)
        np.add(digit, 48, out=mat[c], casting="unsafe")
        rest //= 10
    # keep integer digits from the most significant non-zero one (the units digit always)
    for k in range(n_int):  # row col + 1 + k holds the digit of 10 ** (n_int - 1 - k)
        power = n_int - 1 - k
        if power == 0:
            keep[col + 1 + k] = True
        else:
            np.greater_equal(ip, 10**power, out=keep[col + 1 + k])
    if decimals:
        mat[col + 1 + n_int] = 46  # "."
        frac = (q % scale).astype(np.int32)
        q_frac = frac.copy()
        for c in range(col + width - 1, col + n_int + 1, -1):
            np.remainder(frac, 10, out=digit[: len(frac)] if small else digit)
            np.add(digit, 48, out=mat[c], casting="unsafe")
            frac //= 10
        # strip trailing zeros of the fraction (and the point when nothing is left): 1.50 -> 1.5, 2.00 -> 2
        n_frac = np.full(len(v), decimals, np.int8)
        for k in range(1, decimals + 1):
            n_frac -= (q_frac % 10**k) == 0
        np.greater(n_frac, 0, out=keep[col + 1 + n_int])
        for d in range(decimals):
            np.greater(n_frac, d, out=keep[col + 2 + n_int + d])


def number_field(values: np.ndarray, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    """(bytes matrix (n, W) uint8, keep mask (n, W) bool) for finite ``values`` at ``decimals``."""
    width = field_width(values, decimals)
    mat = np.empty((width, len(values)), np.uint8)
    keep = np.empty((width, len(values)), bool)
    write_numbers(mat, keep, 0, values, decimals, width)
    return np.ascontiguousarray(mat.T), np.ascontiguousarray(keep.T)


def vertex_rows(xy: np.ndarray, decimals: int = 2) -> tuple[bytes, np.ndarray]:
    """'[x,y],' text of every row of ``xy`` (N, 2) -> (blob, offsets), built in one matrix."""
    wx = field_width(xy[:, 0], decimals)
    wy = field_width(xy[:, 1], decimals)
    n = len(xy)
    width = wx + wy + 4
    mat = np.empty((width, n), np.uint8)
    keep = np.ones((width, n), bool)
    mat[0] = 91  # [
    write_numbers(mat, keep, 1, xy[:, 0], decimals, wx)
    mat[1 + wx] = 44  # ,
    write_numbers(mat, keep, 2 + wx, xy[:, 1], decimals, wy)
    mat[2 + wx + wy] = 93  # ]
    mat[3 + wx + wy] = 44  # ,
    lengths = keep.sum(axis=0)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return np.ascontiguousarray(mat.T)[np.ascontiguousarray(keep.T)].tobytes(), offsets


def const_field(n: int, text: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A constant byte string repeated on ``n`` rows."""
    row = np.frombuffer(text, np.uint8)
    return np.broadcast_to(row, (n, len(row))), np.ones((n, len(row)), bool)


def join_rows(fields: list[tuple[np.ndarray, np.ndarray]], row_keep: np.ndarray | None = None) -> tuple[bytes, np.ndarray]:
    """Concatenate fields column-wise; return (blob, offsets) with row i = blob[off[i]:off[i+1]]."""
    mat = np.hstack([f[0] for f in fields])
    keep = np.hstack([f[1] for f in fields])
    if row_keep is not None:
        keep &= row_keep[:, None]
    lengths = keep.sum(axis=1)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return mat[keep].tobytes(), offsets


def uuid4_block(n: int) -> bytes:
    """``n`` random version-4 UUID strings (36 bytes each, concatenated)."""
    raw = np.frombuffer(os.urandom(16 * n), np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexes = _hex_pairs()[raw].view(np.uint8).reshape(n, 32)  # two hex digits per byte, one lookup
    out = np.full((n, 36), ord("-"), np.uint8)
    out[:, 0:8], out[:, 9:13], out[:, 14:18], out[:, 19:23], out[:, 24:36] = (
        hexes[:, 0:8], hexes[:, 8:12], hexes[:, 12:16], hexes[:, 16:20], hexes[:, 20:32])
    return out.tobytes()


@functools.cache
def _hex_pairs() -> np.ndarray:
    """uint16 per byte value: its two lowercase hex digits in text order."""
    b = np.arange(256)
    pairs = np.stack([_HEX[b >> 4], _HEX[b & 0x0F]], axis=1).astype(np.uint8)
    return pairs.view(np.dtype("<u2")).ravel()


# ------------------------------------------------------------------------------------------------
# Word layout: JSON text as rows of little-endian uint32 words, NUL bytes as padding.
#
# Every number becomes a fixed group of words (prefix char, sign, integer digits, fraction) read
# from lookup tables, with NUL wherever a leading zero, a stripped trailing zero or an unused sign
# would be. Whole features are assembled as rows of words and one ``bytes.translate`` pass deletes
# the NULs (JSON text never holds a raw NUL: ``json`` escapes it), which is several times cheaper
# than masking bytes one by one.
# ------------------------------------------------------------------------------------------------
WORD = np.dtype("<u4")


@functools.cache
def _tables() -> dict[str, np.ndarray]:
    """Lookup tables (built once): 4-digit groups, 2 leading digits, fractions with zeros stripped."""
    d = np.arange(10000)
    digits = (np.stack([d // 1000, d // 100 % 10, d // 10 % 10, d % 10], axis=1) + 48).astype(np.uint8)
    n_digits = 1 + (d >= 10) + (d >= 100) + (d >= 1000)
    nul = np.where(np.arange(4)[None, :] >= 4 - n_digits[:, None], digits, 0).astype(np.uint8)
    lowest = np.concatenate([nul, digits]).view(WORD).ravel()  # index g (+10000: zero-padded)
    nul_high = nul.copy()
    nul_high[0] = 0  # a higher group that is zero and leading prints nothing
    higher = np.concatenate([nul_high, digits]).view(WORD).ravel()
    h = np.arange(100)
    lead = np.zeros((100, 4), np.uint8)  # bytes 2, 3 of the sign word: up to 2 leading digits
    lead[:, 3] = 48 + h % 10
    lead[:, 2] = np.where(h >= 10, 48 + h // 10, 0)
    lead[0, 3] = 0
    frac2 = np.zeros((100, 4), np.uint8)  # ".XY" (bytes 0-2), trailing zeros stripped
    frac2[:, 0] = np.where(h > 0, 46, 0)
    frac2[:, 1] = np.where(h > 0, 48 + h // 10, 0)
    frac2[:, 2] = np.where(h % 10 > 0, 48 + h % 10, 0)
    frac4 = np.zeros((10000, 8), np.uint8)  # ".XYZW" (bytes 0-4), trailing zeros stripped
    frac4[:, 0] = np.where(d > 0, 46, 0)
    for k in range(4):
        frac4[:, 1 + k] = np.where(d % 10 ** (4 - k) > 0, digits[:, k], 0)  # a non-zero digit follows
    return {"lowest": lowest, "higher": higher, "lead": lead.view(WORD).ravel(),
            "frac2": frac2.view(WORD).ravel(), "frac4": frac4.view(np.dtype("<u8")).ravel()}


@functools.cache
def _six_digits() -> np.ndarray:
    """uint64 per integer 0..999999: bytes 2-7 its digits, leading zeros NUL ("0" for 0)."""
    d = np.arange(10**6, dtype=np.int32)
    table = np.zeros((10**6, 8), np.uint8)
    rest = d.copy()
    for b in range(7, 1, -1):
        table[:, b] = 48 + rest % 10
        rest //= 10
    for b, power in zip(range(2, 7), (10**5, 10**4, 10**3, 100, 10), strict=True):
        table[d < power, b] = 0
    return table.view(np.dtype("<u8")).ravel()


def text_words(text: bytes) -> np.ndarray:
    """``text`` as uint32 words, NUL-padded to a multiple of 4 bytes."""
    return np.frombuffer(text + b"\0" * (-len(text) % 4), WORD)


def integer_groups(top: int) -> int:
    """4-digit groups needed below the 2 leading digits for integer parts up to ``top``."""
    k = 1
    while top >= 100 * 10 ** (4 * k):
        k += 1
    return k


def grid_words(q: np.ndarray, negative: np.ndarray, decimals: int, *, prefix: int = 0, suffix: bytes = b"",
               groups: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Words of the numbers ``±q / 10**decimals`` (``q`` >= 0 int64 on the decimal grid).

    Layout per number: [prefix char, "-", 2 leading digits] [4-digit groups ...] [fraction + suffix]
    where the fraction is one word (2 decimals, 1 suffix char) or two (4 decimals, up to 3 suffix
    chars). Output: (n, 1 + groups + 1 or 2) uint32, NUL for everything not printed.
    """
    if decimals not in (2, 4):
        raise ValueError("decimals must be 2 or 4")
    tab = _tables()
    scale = 10**decimals
    ip = q // scale
    frac = q - ip * scale
    k_groups = groups if groups is not None else integer_groups(int(ip.max()) if len(ip) else 0)
    n_frac = 1 if decimals == 2 else 2
    if out is None:
        out = np.empty((len(q), 1 + k_groups + n_frac), WORD)
    sign = (negative & (q > 0)).astype(np.uint32) * np.uint32(45 << 8) if negative is not None else None
    if k_groups == 1 and (not len(ip) or ip.max() < 10**6):  # one lookup for all six digits
        lead = _six_digits()[ip]
        if prefix:
            lead |= np.uint64(prefix)
        if sign is not None:
            lead |= sign
        out[:, :2] = lead.view(WORD).reshape(-1, 2)
    else:
        first = tab["lead"][ip // 10 ** (4 * k_groups)]
        if prefix:
            first |= np.uint32(prefix)
        if sign is not None:
            first |= sign
        out[:, 0] = first
        rest = ip
        for k in range(k_groups):  # least significant group first, written right to left
            nxt = rest // 10000
            group = rest - nxt * 10000
            group += 10000 * (ip >= 10 ** (4 * k + 4))  # zero-padded when more digits lead
            out[:, k_groups - k] = (tab["lowest"] if k == 0 else tab["higher"])[group]
            rest = nxt
    if decimals == 2:
        if len(suffix) > 1:
            raise ValueError("2 decimals take one suffix char")
        word = tab["frac2"][frac]
        if suffix:
            word |= np.uint32(suffix[0] << 24)
        out[:, -1] = word
    else:
        if len(suffix) > 3:
            raise ValueError("4 decimals take up to 3 suffix chars")
        word8 = tab["frac4"][frac]
        for i, ch in enumerate(suffix):
            word8 |= np.uint64(ch << (8 * (5 + i)))
        out[:, -2:] = word8.view(WORD).reshape(-1, 2)
    return out


def vertex_words(qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """One row of words ``[x,y],`` per vertex of grid coordinates (int64, value x 100)."""
    top = 0
    neg_x = neg_y = None
    if len(qx):
        top = max(int(np.abs(qx).max()), int(np.abs(qy).max())) // 100
        if qx.min() < 0:
            neg_x, qx = qx < 0, np.abs(qx)
        if qy.min() < 0:
            neg_y, qy = qy < 0, np.abs(qy)
    k = integer_groups(top)
    if k == 1:  # every coordinate below 10**6: fixed byte layout, one lookup per number
        tab = _tables()
        six = _six_digits()
        row = np.empty(len(qx), _VERTEX_ROW)
        for q, neg, key, prefix, suffix in ((qx, neg_x, "x", ord("["), ord(",")), (qy, neg_y, "y", 0, ord("]"))):
            ip = q // 100
            lead = six[ip]
            if prefix:
                lead |= np.uint64(prefix)
            if neg is not None:
                lead |= (neg & (q > 0)).astype(np.uint64) * np.uint64(45 << 8)
            row[key] = lead
            frac = tab["frac2"][q - ip * 100]
            frac |= np.uint32(suffix << 24)
            row[key + "f"] = frac
        row["sep"] = ord(",")
        return row.view(WORD).reshape(len(qx), 7)
    half = k + 2
    out = np.empty((len(qx), 2 * half + 1), WORD)
    grid_words(qx, neg_x, 2, prefix=ord("["), suffix=b",", groups=k, out=out[:, :half])
    grid_words(qy, neg_y, 2, suffix=b"]", groups=k, out=out[:, half : 2 * half])
    out[:, -1] = ord(",")
    return out


#: ``[x,y],`` of a vertex below 10**6 px: [ "[", sign, 6 digits ][ ".XY," ][ NUL, sign, 6 digits ][ ".XY]" ][ "," ]
_VERTEX_ROW = np.dtype({"names": ["x", "xf", "y", "yf", "sep"], "formats": ["<u8", "<u4", "<u8", "<u4", "<u4"],
                        "offsets": [0, 8, 12, 20, 24], "itemsize": 28})


def to_rows(words: np.ndarray, width: int) -> np.ndarray:
    """(n, m) words -> (n * ceil(m / width), width) rows, NUL-padded."""
    n, m = words.shape
    k = -(-m // width)
    if k * width == m:
        return words.reshape(n * k, width)
    out = np.zeros((n, k * width), WORD)
    out[:, :m] = words
    return out.reshape(n * k, width)


def texts_to_rows(texts: list[bytes], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Arbitrary texts as rows of ``width`` words -> (rows, rows per text)."""
    size = 4 * width
    padded = [t + b"\0" * (-len(t) % size) for t in texts]
    counts = np.fromiter((len(p) // size for p in padded), np.int64, count=len(padded))
    return np.frombuffer(b"".join(padded), WORD).reshape(-1, width), counts


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for each (s, l), vectorised."""
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths - starts, lengths)
    return np.arange(total) - offsets


def assemble_rows(segments: list[tuple[np.ndarray, np.ndarray]], width: int) -> bytearray:
    """Interleave per-record segments and drop the NUL padding -> text.

    ``segments`` in record order of appearance: ``(rows, counts)`` where record ``i`` owns the next
    ``counts[i]`` rows of ``rows``. The record ``i`` text is its segments' rows in the given order.
    """
    counts = np.stack([c for _, c in segments], axis=1)  # (n, S)
    flat = counts.ravel()
    starts = np.zeros(len(flat), np.int64)
    np.cumsum(flat[:-1], out=starts[1:])
    starts = starts.reshape(counts.shape)
    total = int(flat.sum())
    buffer = bytearray(total * width * 4)  # translated in place of a copy: no ``tobytes``
    out = np.frombuffer(buffer, WORD).reshape(total, width)
    for s, (rows, c) in enumerate(segments):
        if len(rows):
            out[ranges(starts[:, s], c)] = rows
    del out
    return buffer.translate(None, b"\0")
