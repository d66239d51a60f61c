"""Load official HoVer-Net checkpoints (``.tar`` / ``.pth``) with strict key checking.

Accepted containers (as the official ``run_infer.py`` and training loop of
https://github.com/vqdang/hover_net save them): ``{"desc": state_dict, ...}`` (released weights and
training checkpoints) or a bare state_dict; a ``module.`` prefix carried by every key
(DataParallel) is stripped. The mode is inferred from the decoder kernel size (5×5 original,
3×3 fast) and ``nr_types`` from ``decoder.tp.u0.conv.weight``. Loading is strict: a mismatch
raises ONE :class:`~napari_histo.utils.InputFileError` listing missing keys, unexpected keys and
shape mismatches. Missing ``num_batches_tracked`` buffers (absent from released weights) are
tolerated.

Input normalisation: the official model divides the 0..255 RGB input by 255 in ``forward``
(no mean/std), so callers feed float RGB in 0..255 -- never pre-normalised.

Public API
----------
- :func:`load_hovernet` -- path -> (model in eval mode, :class:`CheckpointInfo`).
- :func:`read_state_dict` -- path -> clean state_dict.
- :func:`infer_config` -- state_dict -> (mode, nr_types).
- :func:`check_state_dict` -- compare a state_dict with a model; list of problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from napari_histo.models.hovernet.net import MODE_SIZES, HoVerNet
from napari_histo.utils import InputFileError

__all__ = ["CheckpointInfo", "load_hovernet", "read_state_dict", "infer_config", "check_state_dict"]


@dataclass(frozen=True)
class CheckpointInfo:
    """What was loaded: ``mode``, ``nr_types`` (None = untyped), patch sizes, source path."""

    mode: str
    nr_types: int | None
    input_size: int
    output_size: int
    path: str
    n_tensors: int


def _error(path, reason: str) -> Exception:
    return InputFileError(path, reason)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its state_dict (``desc`` unwrapped, ``module.`` stripped)."""
    path = Path(path)
    if not path.exists():
        raise _error(path, "checkpoint file not found")
    if path.is_dir():
        raise _error(path, "is a folder; expected a HoVer-Net checkpoint file (.tar/.pth). "
                           "Note: the official .tar is a torch file and must not be unpacked")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _error(path, f"not a readable torch checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if isinstance(obj, dict) and "desc" in obj:
        obj = obj["desc"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise _error(path, "does not contain a HoVer-Net state_dict ({'desc': state_dict} or a bare state_dict)")
    keys = list(obj)
    if all(k.startswith("module.") for k in keys):
        obj = {k.split(".", 1)[1]: v for k, v in obj.items()}
    return dict(obj)


def infer_config(state: dict[str, torch.Tensor], path: str | Path = "<state_dict>") -> tuple[str, int | None]:
    """(mode, nr_types) from the decoder kernel size and the ``tp`` head."""
    key = "decoder.np.u3.conva.weight"
    if key not in state:
        raise _error(path, f"not a HoVer-Net checkpoint: key {key!r} is missing")
    k = int(state[key].shape[-1])
    if k == 5:
        mode = "original"
    elif k == 3:
        mode = "fast"
    else:
        raise _error(path, f"decoder kernel {k}x{k} matches neither mode (5x5 original, 3x3 fast)")
    tp = state.get("decoder.tp.u0.conv.weight")
    nr_types = int(tp.shape[0]) if tp is not None else None
    return mode, nr_types


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Problems loading ``state`` into ``model`` strictly (empty list = loadable)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state
        if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []

    def fmt(title: str, items: list[str]) -> str:
        head = ", ".join(items[:12])
        more = f" ... and {len(items) - 12} more" if len(items) > 12 else ""
        return f"{len(items)} {title}: {head}{more}"

    if missing:
        problems.append(fmt("missing keys", missing))
    if unexpected:
        problems.append(fmt("unexpected keys", unexpected))
    if shapes:
        problems.append(fmt("shape mismatches", shapes))
    return problems


def load_hovernet(
    path: str | Path,
    device: str = "cpu",
    mode: str | None = None,
    nr_types: int | None = None,
) -> tuple[HoVerNet, CheckpointInfo]:
    """Build the official HoVer-Net matching a checkpoint and load it strictly.

    ``mode`` / ``nr_types`` may be forced (e.g. to reproduce a wrong-mode error); by default
    they are inferred from the weights.
    """
    path = Path(path)
    state = read_state_dict(path)
    inferred_mode, inferred_types = infer_config(state, path)
    mode = mode or inferred_mode
    if mode not in MODE_SIZES:
        raise _error(path, f"unknown mode {mode!r}")
    nr_types = inferred_types if nr_types is None else (nr_types or None)
    model = HoVerNet(mode=mode, nr_types=nr_types, init_weights=False)
    problems = check_state_dict(model, state)
    if problems:
        raise _error(
            path,
            f"checkpoint does not match HoVer-Net mode={mode!r}, nr_types={nr_types}: " + "; ".join(problems),
        )
    # strictness checked above; released weights lack num_batches_tracked (reset to 0 like torch)
    full = dict(state)
    for k, v in model.state_dict().items():
        if k not in full and k.endswith("num_batches_tracked"):
            full[k] = torch.zeros_like(v)
    model.load_state_dict(full, strict=True)
    model.eval().to(device)
    inp, out = MODE_SIZES[mode]
    return model, CheckpointInfo(mode, nr_types, inp, out, str(path), len(state))
