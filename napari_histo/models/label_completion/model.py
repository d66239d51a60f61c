"""Label-completion networks: base (shared encoder + concatenated label space) and correlation MLPs.

The label space is the concatenation of the label sets (taxonomies) in config order; label set
``d`` owns the logit slice ``offsets[d]:offsets[d+1]``. Each correlation MLP ``d`` predicts set
``d``'s labels from the *other* sets' logits. Inference averages the base slice's softmax and the
MLP's softmax, so every nucleus gets a type in every taxonomy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from napari_histo.jsonconfig import JsonConfig
from napari_histo.utils import HistoError, atomic_path

#: Logits are clamped to this range before any softmax (as in the reference training).
LOGIT_CLAMP = 10.0


@dataclass
class LabelSet:
    """A taxonomy: its name and its labels in local order."""

    name: str
    labels: list[str]


@dataclass
class LabelCompletionConfig(JsonConfig):
    """Model + training configuration, saved as ``config.json`` next to the weights.

    Attributes
    ----------
    label_sets : list[LabelSet]
        Taxonomies in logit order (configurable; the default is MoNuSAC + CRCHistoPhenotypes).
    data : dict[str, str]
        Label-set name -> data root (adapter chosen by name: "monusac" or "crchisto").
    train_sets : list[str] or None
        Label sets whose labelled nuclei are used for training (None = all); the others are
        still predicted (their heads get no supervision). A per-dataset model lists one set.
    heldout : dict[str, Any]
        Held-out definition per set: ``{"images": [...]}`` or ``{"x_fraction": 0.7}`` (nuclei
        whose centre lies right of that fraction of the image width are held out).
    crop_um, input_size : float, int
        Context crop width (µm) and network input side (px).
    encoder_widths : list[int]
        Channels of the small CNN encoder (one stride-2 stage each).
    stages : list[str]
        Stages to run: "base", "correlation", "completion".
    threshold : float
        Pseudo-label confidence threshold of the completion stage (0.99).
    """

    CONFIG_NAME: ClassVar[str] = "label-completion"

    label_sets: list[LabelSet] = field(default_factory=lambda: [
        LabelSet("monusac", ["Epithelial", "Lymphocyte", "Neutrophil", "Macrophage"]),
        LabelSet("crchisto", ["epithelial", "fibroblast", "inflammatory", "others"]),
    ])
    data: dict[str, str] = field(default_factory=dict)
    train_sets: list[str] | None = None
    heldout: dict[str, Any] = field(default_factory=dict)
    out_dir: str = "runs/label_completion"
    crop_um: float = 16.0
    input_size: int = 32
    encoder_widths: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    mlp_hidden: int = 128
    stages: list[str] = field(default_factory=lambda: ["base", "correlation", "completion"])
    base_epochs: int = 30
    correlation_epochs: int = 30
    completion_epochs: int = 15
    base_lr: float = 1e-3
    correlation_lr: float = 1e-3
    completion_lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 128
    grad_clip: float = 10.0
    threshold: float = 0.99
    use_unlabelled: bool = True
    class_balanced: bool = True
    seed: int = 0
    num_threads: int = 1

    @property
    def sizes(self) -> list[int]:
        return [len(s.labels) for s in self.label_sets]

    @property
    def offsets(self) -> list[int]:
        out = [0]
        for n in self.sizes:
            out.append(out[-1] + n)
        return out

    def set_index(self, name: str) -> int:
        for i, s in enumerate(self.label_sets):
            if s.name == name:
                return i
        raise KeyError(f"unknown label set {name!r}; have {[s.name for s in self.label_sets]}")







class CropEncoder(nn.Module):
    """Small CNN on nucleus crops: [Conv3x3-BN-ReLU x2, stride 2] per width, global pooling."""

    def __init__(self, widths: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w),
                       nn.ReLU(inplace=True)]
            cin = w
        self.body = nn.Sequential(*layers)
        self.num_features = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.body(x), 1).flatten(1)


class BaseModel(nn.Module):
    """Shared encoder -> one linear layer over the concatenated label space."""

    def __init__(self, cfg: LabelCompletionConfig):
        super().__init__()
        self.encoder = CropEncoder(cfg.encoder_widths)
        self.fc = nn.Linear(self.encoder.num_features, cfg.offsets[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x)).clamp(-LOGIT_CLAMP, LOGIT_CLAMP)


class CorrelationMLP(nn.Module):
    """Linear(in, hidden) -> BN1d -> ReLU -> Linear(hidden, |d|)."""

    def __init__(self, n_in: int, n_out: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LabelCompletionModel(nn.Module):
    """Base model plus one correlation MLP per label set (MLPs unused until trained)."""

    def __init__(self, cfg: LabelCompletionConfig):
        super().__init__()
        self.config = cfg
        self.base = BaseModel(cfg)
        total = cfg.offsets[-1]
        self.mlps = nn.ModuleList(CorrelationMLP(total - n, n, cfg.mlp_hidden) for n in cfg.sizes)
        self.register_buffer("mlps_trained", torch.zeros(len(cfg.sizes), dtype=torch.bool))

    def other_logits(self, logits: torch.Tensor, d: int) -> torch.Tensor:
        """Logits with label set ``d``'s columns removed (the MLP input)."""
        o = self.config.offsets
        return torch.cat([logits[:, :o[d]], logits[:, o[d + 1]:]], dim=1)

    def slice(self, logits: torch.Tensor, d: int) -> torch.Tensor:
        o = self.config.offsets
        return logits[:, o[d]:o[d + 1]]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Base logits (B, total) and per-set MLP logits [(B, |d|)]."""
        logits = self.base(x)
        return logits, [mlp(self.other_logits(logits, d)) for d, mlp in enumerate(self.mlps)]

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 512) -> list[torch.Tensor]:
        """Per label set (B, |d|) probabilities: mean of base and MLP softmax (base only when
        that set's MLP was never trained)."""
        self.eval()
        outs: list[list[torch.Tensor]] = [[] for _ in self.config.sizes]
        for b in range(0, len(x), batch_size):
            logits, mlp_logits = self(x[b:b + batch_size])
            for d in range(len(self.config.sizes)):
                p = torch.softmax(self.slice(logits, d), 1)
                if bool(self.mlps_trained[d]):
                    p = (p + torch.softmax(mlp_logits[d], 1)) / 2
                outs[d].append(p)
        return [torch.cat(o) if o else torch.zeros(0, n) for o, n in zip(outs, self.config.sizes)]


#: Folder (under resources/weights) of the shipped label-completion model.
SHIPPED_MODEL = "label_completion"


def shipped_model_dir() -> Path:
    """The shipped merged model (CoNSeP + MoNuSAC + CRCHistoPhenotypes label sets)."""
    from napari_histo.utils import resource_path

    path = resource_path("weights", SHIPPED_MODEL)
    if not (path / "config.json").is_file():
        raise HistoError(f"the shipped label-completion model is missing ({path}); reinstall napari-histo "
                         "or pass --model DIR")
    return path


def save_model(model: LabelCompletionModel, folder: str | Path, name: str = "model.pt") -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / name) as tmp:
        torch.save(model.state_dict(), tmp)
    model.config.save(folder / "config.json")
    return folder / name


def load_model(folder: str | Path, name: str = "model.pt") -> LabelCompletionModel:
    """Build from ``folder/config.json`` and load ``folder/<name>`` strictly."""
    folder = Path(folder)
    for p in (folder / "config.json", folder / name):
        if not p.is_file():
            raise HistoError(f"{p}: label-completion model file not found")
    model = LabelCompletionModel(LabelCompletionConfig.load(folder / "config.json"))
    state = torch.load(folder / name, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise HistoError(f"{folder / name}: weights do not fit config.json ({exc})") from exc
    return model.eval()
