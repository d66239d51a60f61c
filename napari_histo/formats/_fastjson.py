"""Vectorised JSON text for millions of numbers: fixed-point formatting and UUIDs as bytes.

Python's ``json`` spends ~1 µs per float; a million nuclei of 24 vertices are ~50 M floats. Here
each number becomes a row of ASCII bytes in a numpy matrix (sign, digits, point, decimals) and a
keep-mask drops the leading zeros and unused sign, so a whole chunk of numbers is formatted in a
few numpy operations. Output is standard JSON number syntax, trailing fraction zeros stripped
(``-12.50`` -> ``-12.5``, ``3.00`` -> ``3``).
"""

from __future__ import annotations

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
    hexes = np.empty((n, 32), np.uint8)
    hexes[:, 0::2] = _HEX[raw >> 4]
    hexes[:, 1::2] = _HEX[raw & 0x0F]
    out = np.full((n, 36), ord("-"), np.uint8)
    out[:, 0:8], out[:, 9:13], out[:, 14:18], out[:, 19:23], out[:, 24:36] = (
        hexes[:, 0:8], hexes[:, 8:12], hexes[:, 12:16], hexes[:, 16:20], hexes[:, 20:32])
    return out.tobytes()
