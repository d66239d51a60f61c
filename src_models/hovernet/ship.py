"""Package a trained run as the shipped default model: weights, configs, validation, model card.

Run: ``python -m src_models.hovernet.ship RUN_DIR DEST_DIR --validation VAL.json [--bench BENCH.json]``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from src_models.hovernet.config import TrainConfig

LICENCES = """\
| data | use in this model | licence |
|---|---|---|
| MoNuSeg 2018 (13 training tiles + 5 of the 10 test tiles; 5 test tiles held out) | np/hv branches | CC BY-NC-SA 4.0 (non-commercial) |
| CPM-15 (12 images; image04 excluded: its mask does not match the image) | np/hv branches | none stated, research use only |
| MoNuSAC 2020 (3 sub-images of TCGA-5P-A9K0) | np/hv branches and the type branch | CC BY-NC-SA 4.0 (non-commercial) |
| CRCHistoPhenotypes 2016 (7 images, points) | typing evaluation only (never trained on) | research use only |

**The weights are derived from these data and inherit their terms: non-commercial,
research use only.** Cite Kumar et al. (IEEE TMI 2017/2020), Verma et al. (IEEE TMI 2021),
Sirinukunwattana et al. (IEEE TMI 2016) and Graham et al. (MedIA 2019, HoVer-Net)."""


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def model_card(cfg: TrainConfig, val: dict, log_done: dict, bench: dict | None, params: int, macs: int) -> str:
    """Markdown model card text."""
    m = cfg.model
    lines = [
        "# Compact HoVer-Net (napari-histo default nucleus model)",
        "",
        "Nucleus instance segmentation and typing for H&E, HoVer-Net style (np / hv / tp branches,",
        "official marker-controlled watershed post-processing), small enough for CPU inference.",
        "",
        "## Model",
        f"- Network: residual U-Net encoder widths {m.widths} (blocks {m.blocks}, strides 1/2/4/8), "
        f"three decoder branches (np 2 ch, hv 2 ch, tp {m.num_types} ch), {params:,} parameters, "
        f"{macs / 1e9:.2f} GMAC per {m.input_size}² 40× patch (official HoVer-Net fast: 148.9 GMAC "
        "per 256² patch).",
        f"- Input and output maps at **{m.mpp} µm/px** (40×); the convolutions run at "
        f"{m.network_mpp} µm/px: `forward` average-pools the input ×{m.internal_downsample} and "
        f"upsamples the maps back (bilinear). Patches {m.input_size}² -> centre {m.output_size}² "
        "(border px dropped). The network was trained on tiles resampled to "
        f"{m.network_mpp} µm/px.",
        f"- Post-processing: `napari_histo.nuclei.postproc` (official HV watershed) at {m.mpp} µm/px with "
        f"`{json.dumps(m.postproc)}` (stored in config.json as `postproc`; size constants are the "
        "official 40× ones, np_threshold and marker_threshold were picked on 3 MoNuSeg TRAINING "
        "tiles, see validation.json `postproc_tuning`).",
        "- Files: `model.pt` (float32 state_dict), `config.json` (CompactConfig), `train_config.json` "
        "(TrainConfig), `type_info.json`, `validation.json`.",
        "",
        "## Type vocabulary",
        "",
        "| id | name | colour | unified ids (MODELS.md §5.1) |",
        "|---|---|---|---|",
    ]
    for i, (name, col, uni) in enumerate(zip(m.type_names, m.type_colours, m.unified_ids, strict=False)):
        lines.append(f"| {i} | {name} | {tuple(col)} | {uni} |")
    lines += [
        "",
        "Only MoNuSAC carries type labels (epithelial 329, lymphocyte 299, macrophage 7, neutrophil 5",
        "nuclei in 3 images of one patient); MoNuSeg/CPM nuclei are \"unknown type\" and masked out",
        "of the type loss. \"epithelial\" covers neoplastic and non-neoplastic epithelium. Nuclei of",
        "other kinds (fibroblasts, endothelium, plasma cells...) are forced into one of these 4 names:",
        "**treat the type column as indicative only.**",
        "",
        "## Training",
        "- Single phase from random (Kaiming) initialisation: no pretrained encoder exists for this "
        "network, so HoVer-Net's two-phase freeze/unfreeze schedule does not apply.",
        f"- AdamW lr {cfg.lr} (3 % warm-up, cosine to 2 %), weight decay {cfg.weight_decay}, batch "
        f"{cfg.batch_size} × {cfg.patch_size}² px patches at {m.network_mpp} µm/px (loss on the centre "
        f"after a {(m.input_size - m.output_size) // (2 * m.internal_downsample)} px margin), seed {cfg.seed}.",
        f"- Losses (weights): {json.dumps(cfg.loss_weights)}.",
        "- Augmentation: rotation ±180°, scale 0.85-1.15, shear ±5° (p 0.5), flips/rot90, HED "
        "stain jitter, brightness/contrast/saturation, blur or noise.",
        f"- Budget: {log_done.get('iter')} iterations in {log_done.get('elapsed_s', 0) / 60:.0f} min on a "
        f"shared 2-core CPU (1 torch thread), no GPU. This is a very short schedule: numbers below "
        f"are what that run reached, not the architecture's ceiling.",
        f"- Final running losses: {json.dumps({k: v for k, v in log_done.items() if k not in ('event', 'iter', 'elapsed_s')})}.",
        "",
        "## Data and licences",
        "",
        LICENCES,
        "",
        "## Validation (held-out MoNuSeg test tiles, whole images, never trained on)",
        "",
        "Tiles are resampled to the working mpp, segmented, and the labels resized (nearest) back to",
        "the native ≈0.25 µm/px ground truth. Metrics: `napari_histo.nuclei.metrics` (HoVer-Net",
        "`compute_stats` definitions). Classical = `napari_histo.nuclei.classical` defaults at 0.25 µm/px.",
        "",
        "| image | nuclei | Dice | AJI | DQ | SQ | PQ | classical AJI | classical PQ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in val["per_image"]:
        lines.append(
            f"| {r['image']} | {r['n_true']} | {_fmt(r['dice'])} | {_fmt(r['aji'])} | {_fmt(r['dq'])} | "
            f"{_fmt(r['sq'])} | {_fmt(r['pq'])} | {_fmt(r.get('classical_aji', '–'))} | {_fmt(r.get('classical_pq', '–'))} |"
        )
    mean = val["mean"]
    cm = val.get("classical_mean", {})
    lines.append(
        f"| **mean** | | {_fmt(mean['dice'])} | {_fmt(mean['aji'])} | {_fmt(mean['dq'])} | {_fmt(mean['sq'])} | "
        f"{_fmt(mean['pq'])} | {_fmt(cm.get('aji', '–'))} | {_fmt(cm.get('pq', '–'))} |"
    )
    lines += ["", "Targets from the issue: mean PQ ≥ 0.60 and AJI ≥ 0.62."]
    if "crchisto_coarse" in val:
        c = val["crchisto_coarse"]
        lines += [
            "",
            "## Typing",
            "",
            "- **CRCHistoPhenotypes** (7 images, 20× ≈0.55 µm/px, point labels, never trained on; matching",
            "  radius 6 px; predictions mapped to coarse epithelial / inflammatory = lymphocyte +",
            "  neutrophil + macrophage; fibroblast and 'others' are not in the vocabulary, so their F1 is 0",
            "  by construction): "
            f"F1_detection {_fmt(c.get('f1_d'))}, type accuracy on labelled matches {_fmt(c.get('acc'))}, "
            f"F1 epithelial {_fmt(c.get('f1_type1'))}, F1 inflammatory {_fmt(c.get('f1_type2'))}, "
            f"F1 fibroblast {_fmt(c.get('f1_type3'))}, F1 others {_fmt(c.get('f1_type4'))}.",
        ]
    if "monusac_train_fit" in val:
        s = val["monusac_train_fit"]
        lines += [
            "- **MoNuSAC** (the 3 images are TRAINING images: with one patient and 3 images, holding one",
            "  out would remove a class entirely, so MoNuSAC typing is NOT validated; this is a fit):",
            f"  F1_detection {_fmt(s.get('f1_d'))}, acc {_fmt(s.get('acc'))}, F1 epithelial {_fmt(s.get('f1_type1'))}, "
            f"lymphocyte {_fmt(s.get('f1_type2'))}, neutrophil {_fmt(s.get('f1_type3'))}, macrophage {_fmt(s.get('f1_type4'))}.",
        ]
    lines += ["", "## Inference speed", ""]
    if bench:
        lines += [
            f"2-core CPU (shared), 24 GiB, Python {bench.get('python')}, torch {bench.get('torch')}, no GPU; "
            f"{bench['threads']} torch threads; MoNuSeg tile {bench['image']} ({bench['input_mpx_40x']} Mpx at 40×), "
            "median of repeats, command `python benchmarks/bench_compact.py`:",
            "",
            f"- total (resample + network + post-processing): {bench['seconds_total_median']} s = "
            f"**{bench['mpx_per_s_40x_total']} Mpx/s at 40×** (target ≥ 0.5)",
            f"- network only: {bench['seconds_network_median']} s ({bench['mpx_per_s_40x_network']} Mpx/s); "
            f"post-processing {bench['seconds_postproc_median']} s.",
        ]
    else:
        lines.append("Not measured.")
    lines += [
        "",
        "## Limitations",
        "- Trained for under an hour on a shared CPU; see the numbers above before relying on it.",
        "- H&E only; 20×/40× brightfield. Typing is limited to 4 names learned from 3 images of one patient.",
        "- Research / non-commercial use only (data licences above).",
        "",
    ]
    return "\n".join(lines)


def shipped_config(train_cfg: TrainConfig, downsample: int = 2, postproc: dict | None = None):
    """Network config exposed at ``mpp / downsample`` with the same weights (see ``internal_downsample``)."""
    from src_models.hovernet.config import CompactConfig, scaled_postproc

    m = train_cfg.model
    fine_mpp = m.mpp / downsample
    return CompactConfig.from_dict({
        **m.to_dict(),
        "mpp": fine_mpp,
        "internal_downsample": downsample,
        "input_size": m.input_size * downsample,
        "output_size": m.output_size * downsample,
        "postproc": {**scaled_postproc(fine_mpp), **(postproc or {})},
    })


def ship(run_dir: str | Path, dest: str | Path, validation: dict, bench: dict | None = None,
         model_cfg=None) -> Path:
    """Copy the run's final weights and write configs, validation.json and MODEL_CARD.md into ``dest``.

    ``model_cfg`` (default :func:`shipped_config`) is written as ``config.json``; the training
    config goes to ``train_config.json``.
    """
    from napari_histo.utils import atomic_write
    from src_models.hovernet.compact import CompactHoVerNet, count_macs

    run, dest = Path(run_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.load(run / "train_config.json")
    for name in ("model.pt", "type_info.json"):
        shutil.copyfile(run / name, dest / name)
    model_cfg = model_cfg or shipped_config(cfg)
    model_cfg.save(dest / "config.json")
    cfg.save(dest / "train_config.json")
    with atomic_write(dest / "validation.json") as fh:
        json.dump(validation, fh, indent=2)
    done = {}
    for line in open(run / "train_log.jsonl", encoding="utf-8"):
        rec = json.loads(line)
        if "iter" in rec and rec.get("event") != "resume":
            done = rec
    model = CompactHoVerNet(model_cfg)
    params = sum(p.numel() for p in model.parameters())
    card_cfg = TrainConfig.from_dict({**cfg.to_dict(), "model": model_cfg.to_dict()})
    text = model_card(card_cfg, validation, done, bench, params, count_macs(model, model_cfg.input_size))
    with atomic_write(dest / "MODEL_CARD.md") as fh:
        fh.write(text)
    return dest


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("dest")
    ap.add_argument("--validation", required=True)
    ap.add_argument("--bench", default=None)
    ap.add_argument("--postproc", default=None, help="JSON overrides of the post-processing constants")
    a = ap.parse_args()
    val = json.loads(Path(a.validation).read_text())
    b = json.loads(Path(a.bench).read_text()) if a.bench else None
    tcfg = TrainConfig.load(Path(a.run_dir) / "train_config.json")
    mcfg = shipped_config(tcfg, postproc=json.loads(a.postproc) if a.postproc else None)
    print(ship(a.run_dir, a.dest, val, b, mcfg))
