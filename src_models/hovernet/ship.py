"""Package a trained run as the shipped default model: weights, configs, validation, model card.

Run: ``python -m src_models.hovernet.ship RUN_DIR DEST_DIR --validation VAL.json [--bench BENCH.json]
[--previous OLD_VAL.json --bench-previous OLD_BENCH.json]``; without ``--validation`` only the
weights and configs are written (a staging folder to evaluate).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from napari_histo.models.hovernet.config import CompactConfig, scaled_postproc
from napari_histo.utils import atomic_write
from src_models.hovernet.config import TrainConfig

# Lazy imports: torch is imported inside the functions that use it (directly or through the
# modules named there): only the code paths that use them pay for loading.

#: One row per dataset of the recipe's ``sources`` (and CRCHisto, always evaluation only).
LICENCE_ROWS = {
    "monuseg": "| MoNuSeg 2018 (13 training tiles + 5 of the 10 test tiles; 5 test tiles held out) | np/hv branches "
               "| CC BY-NC-SA 4.0 (non-commercial) |",
    "cpm15": "| CPM-15 (12 images; image04 excluded: its mask does not match the image) | np/hv branches "
             "| none stated, research use only |",
    "monusac": "| MoNuSAC 2020 (3 sub-images of TCGA-5P-A9K0; only its four outlined classes, so unmarked "
               "pixels are not taken as background) | np/hv branches and the type branch | CC BY-NC-SA 4.0 "
               "(non-commercial) |",
    "consep": "| CoNSeP training split (22 of its 27 colorectal images, 256² JPEG crops; 5 images held out for "
              "validation) | np/hv branches and the type branch (all four classes) | TIA Centre, research use "
              "only |",
}
CRCHISTO_ROW = ("| CRCHistoPhenotypes 2016 (7 images, points) | typing evaluation only (never trained on) "
                "| research use only |")


def licences(cfg: TrainConfig) -> str:
    """The card's data and licence table for the recipe's sources."""
    rows = [LICENCE_ROWS[src] for src in cfg.sources if src in LICENCE_ROWS]
    cite = "Kumar et al. (IEEE TMI 2017/2020), Verma et al. (IEEE TMI 2021), Sirinukunwattana et al. (IEEE TMI 2016)"
    return "\n".join([
        "| data | use in this model | licence |",
        "|---|---|---|",
        *rows,
        CRCHISTO_ROW,
        "",
        "**The weights are derived from these data and inherit their terms: non-commercial,",
        f"research use only.** Cite {cite} and Graham et al. (MedIA 2019, HoVer-Net; CoNSeP).",
    ])


def _vocabulary_lines(cfg: TrainConfig) -> list[str]:
    if cfg.type_scheme == "coarse":
        return [
            "The four coarse classes of the product's vocabulary (`docs/TYPES.md`), with CoNSeP's ids: "
            "every typed source is mapped into them by name (MoNuSAC's lymphocyte, neutrophil and "
            "macrophage become inflammatory). CoNSeP labels all four; MoNuSAC only epithelial and "
            "inflammatory; MoNuSeg and CPM-15 nuclei are \"unknown type\" and masked out of the type loss "
            "(a plain masked loss over one shared label set).",
        ]
    return [
        "Only MoNuSAC carries type labels (epithelial 329, lymphocyte 299, macrophage 7, neutrophil 5",
        "nuclei in 3 images of one patient); MoNuSeg/CPM nuclei are \"unknown type\" and masked out",
        "of the type loss. \"epithelial\" covers neoplastic and non-neoplastic epithelium. Nuclei of",
        "other kinds (fibroblasts, endothelium, plasma cells...) are forced into one of these 4 names:",
        "**treat the type column as indicative only.**",
    ]


def _consep_lines(val: dict, previous: dict | None) -> list[str]:
    c = val.get("consep_validation")
    if not c:
        return []
    keys = ["f1_d", "f1_epithelial", "f1_inflammatory", "f1_spindle", "f1_other", "pq", "aji", "dice"]
    head = ["F1 detection", "F1 epithelial", "F1 inflammatory", "F1 spindle", "F1 other", "PQ", "AJI", "Dice"]
    lines = [
        "",
        f"## Validation on CoNSeP (this project's split by image: {', '.join(c['images'])}; "
        f"{c['crops']} crops, never trained on)",
        "",
        "Instance metrics per crop, averaged; detection and class F1 pooled over the crops as HoVer-Net's "
        "`compute_stats` does (centroids paired within 12 px, class F1 with the published weighting). "
        "Command: `python -m src_models.hovernet.evaluate WEIGHTS --consep`.",
        "",
        "| model | " + " | ".join(head) + " |",
        "|---|" + "---|" * len(head),
        "| this model | " + " | ".join(_fmt(c.get(k, "–")) for k in keys) + " |",
    ]
    if previous and previous.get("consep_validation"):
        p = previous["consep_validation"]
        lines.append(f"| {previous.get('label', 'previous release')} | " + " | ".join(_fmt(p.get(k, "–")) for k in keys) + " |")
    lines.append("| HoVer-Net, published (CoNSeP test split, full images) | 0.748 | 0.635 | 0.631 | 0.566 | 0.426 | 0.547 | 0.571 | 0.853 |")
    return lines


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _postproc_lines(m) -> list[str]:
    if m.postproc_at_network_mpp and m.internal_downsample > 1:
        from napari_histo.models.hovernet.compact import segmenter_post_params

        return [
            f"- Post-processing: `napari_histo.nuclei.postproc` (official HV watershed) on the network's "
            f"{m.network_mpp} µm/px grid (`postproc_at_network_mpp`): the segmenter block-averages the "
            f"{m.mpp} µm/px input ×{m.internal_downsample}, runs the network and the watershed there "
            f"with `{json.dumps(segmenter_post_params(m))}` (official 40× constants rescaled to "
            f"{m.network_mpp} µm/px"
            + (", constants" if m.network_postproc else ", thresholds")
            + " picked on MoNuSeg TRAINING tiles, see validation.json "
            f"`postproc_tuning`), and maps the instances back to {m.mpp} µm/px: labels upscaled "
            "(nearest) and masked by the bilinear-upsampled nucleus probability, gaps up to 2 px "
            "filled from the neighbouring nucleus. Typing votes on the coarse grid.",
            f"- Inference patches: {m.input_size // m.internal_downsample}² network px nominal, enlarged "
            f"up to {m.max_tile_px}² px (the network is fully convolutional) to cover a tile with fewer "
            "patches; the outer "
            f"{(m.input_size - m.output_size) // (2 * m.internal_downsample)} network px of each patch "
            "are discarded.",
        ]
    return [
        f"- Post-processing: `napari_histo.nuclei.postproc` (official HV watershed) at {m.mpp} µm/px with "
        f"`{json.dumps(m.postproc)}` (stored in config.json as `postproc`; size constants are the "
        "official 40× ones, np_threshold and marker_threshold were picked on 3 MoNuSeg TRAINING "
        "tiles, see validation.json `postproc_tuning`).",
    ]


def _previous_lines(val: dict, prev: dict | None) -> list[str]:
    """Per-image comparison with the previous release and the classical detector."""
    if not prev:
        return []
    old = {r["image"]: r for r in prev.get("per_image", [])}
    lines = [
        "",
        f"### Compared with the previous release ({prev.get('label', 'previous weights')}) and the classical detector",
        "",
        "Same tiles, same metrics; the classical column is re-run with the detector committed at "
        "evaluation time.",
        "",
        "| image | PQ previous | PQ now | PQ classical | AJI previous | AJI now | AJI classical | now beats classical (PQ / AJI) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    wins_pq = wins_aji = 0
    for r in val["per_image"]:
        o = old.get(r["image"], {})
        cpq, caji = r.get("classical_pq"), r.get("classical_aji")
        bpq = cpq is not None and r["pq"] > cpq
        baji = caji is not None and r["aji"] > caji
        wins_pq += bpq
        wins_aji += baji
        lines.append(
            f"| {r['image']} | {_fmt(o.get('pq', '–'))} | {_fmt(r['pq'])} | {_fmt(cpq if cpq is not None else '–')} | "
            f"{_fmt(o.get('aji', '–'))} | {_fmt(r['aji'])} | {_fmt(caji if caji is not None else '–')} | "
            f"{'yes' if bpq else 'no'} / {'yes' if baji else 'no'} |"
        )
    pm, m, cm = prev.get("mean", {}), val["mean"], val.get("classical_mean", {})
    lines.append(
        f"| **mean** | {_fmt(pm.get('pq', '–'))} | {_fmt(m['pq'])} | {_fmt(cm.get('pq', '–'))} | "
        f"{_fmt(pm.get('aji', '–'))} | {_fmt(m['aji'])} | {_fmt(cm.get('aji', '–'))} | "
        f"{wins_pq} / {wins_aji} of {len(val['per_image'])} |"
    )
    return lines


def model_card(cfg: TrainConfig, val: dict, log_done: dict, bench: dict | None, params: int, macs: int,
               previous: dict | None = None, bench_previous: dict | None = None,
               history: str | None = None) -> str:
    """Markdown model card text (``previous`` / ``bench_previous``: the release it replaces)."""
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
        *_postproc_lines(m),
        "- Files: `model.pt` (float32 state_dict), `config.json` (CompactConfig), `train_config.json` "
        "(TrainConfig), `type_info.json`, `validation.json`.",
        "",
        "## Type vocabulary",
        "",
        "| id | name | colour | unified ids |",
        "|---|---|---|---|",
    ]
    for i, (name, col, uni) in enumerate(zip(m.type_names, m.type_colours, m.unified_ids, strict=False)):
        lines.append(f"| {i} | {name} | {tuple(col)} | {uni} |")
    lines += [
        "",
        *_vocabulary_lines(cfg),
        "",
        "## Training",
        *(["- Fine-tuned from earlier weights of this network (`init_weights` in train_config.json; "
           "history below) with a fresh optimiser and schedule. Those were trained from random (Kaiming) "
           "initialisation: no pretrained encoder exists for this network, so HoVer-Net's two-phase "
           "freeze/unfreeze schedule does not apply."] if cfg.init_weights else
          ["- Single phase from random (Kaiming) initialisation: no pretrained encoder exists for this "
           "network, so HoVer-Net's two-phase freeze/unfreeze schedule does not apply."]),
        f"- {'Fine-tuning: ' if cfg.init_weights else ''}AdamW lr {cfg.lr} (3 % warm-up, cosine to 2 %), weight decay {cfg.weight_decay}, batch "
        f"{cfg.batch_size} × {cfg.patch_size}² px patches at {m.network_mpp} µm/px (loss on the centre "
        f"after a {(m.input_size - m.output_size) // (2 * m.internal_downsample)} px margin), seed {cfg.seed}.",
        f"- Losses (weights): {json.dumps(cfg.loss_weights)}.",
        "- Augmentation: rotation ±180°, scale 0.85-1.15, shear ±5° (p 0.5), flips/rot90, HED "
        "stain jitter, brightness/contrast/saturation, blur or noise"
        + (f", JPEG compression at quality 30-90 (p {cfg.jpeg_p})." if cfg.jpeg_p else "."),
        *([f"- Sampling: share of patches per source {json.dumps(cfg.source_weights)}."] if cfg.source_weights else []),
        f"- Budget{' of the fine-tuning run' if cfg.init_weights else ''}: {log_done.get('iter')} iterations "
        f"in {log_done.get('elapsed_s', 0) / 60:.0f} min on a "
        f"shared 2-core CPU ({cfg.threads} torch thread{'s' if cfg.threads != 1 else ''}), no GPU. This is a very short schedule: numbers below "
        f"are what that run reached, not the architecture's ceiling.",
        *([f"- {history}"] if history else []),
        f"- Final running losses: {json.dumps({k: v for k, v in log_done.items() if k not in ('event', 'iter', 'elapsed_s')})}.",
        "",
        "## Data and licences",
        "",
        licences(cfg),
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
    lines += ["", "Targets from the issue: mean PQ ≥ 0.60 and AJI ≥ 0.62: "
              f"**{'met' if mean['pq'] >= 0.60 and mean['aji'] >= 0.62 else 'not met'}** "
              f"(PQ {_fmt(mean['pq'])}, AJI {_fmt(mean['aji'])})."]
    lines += _previous_lines(val, previous)
    lines += _consep_lines(val, previous)
    rule = val.get("ship_rule")
    if rule:
        lines += [
            "",
            "## Why this model is the default",
            "",
            f"The ship rule ({rule['rule']}, written before the model was scored) asks for higher CoNSeP "
            "validation detection F1 and mean class F1 than the previous default, and MoNuSeg held-out PQ and "
            "AJI no more than 0.01 below it. Measured: CoNSeP F1 detection "
            f"{rule['consep_f1_d'][0]:.3f} -> {rule['consep_f1_d'][1]:.3f}, mean class F1 "
            f"{rule['consep_mean_class_f1'][0]:.3f} -> {rule['consep_mean_class_f1'][1]:.3f}; MoNuSeg PQ "
            f"{rule['monuseg_pq'][0]:.3f} -> {rule['monuseg_pq'][1]:.3f}, AJI {rule['monuseg_aji'][0]:.3f} -> "
            f"{rule['monuseg_aji'][1]:.3f}: **{rule['decision']}**.",
        ]
    if "crchisto_coarse" in val:
        c = val["crchisto_coarse"]
        lines += [
            "",
            "## Typing",
            "",
            *([f"Typing rule `{val.get('type_rule')}`: inside a nucleus found by the np branch the background "
               "class never wins; the nucleus takes the most probable of the four classes of its mean softmax "
               "and `type_prob` is that probability renormalised over them (HoVer-Net's own vote, "
               "`type_rule: \"official\"`, leaves nuclei whose pixels all vote background \"unclassified\"). "
               "Figures: `python -m src_models.hovernet.evaluate DIR --typing-only [--type-rule official]`.", ""]
              if val.get("type_rule") == "nucleus" else []),
            "- **CRCHistoPhenotypes** (7 images, 20× ≈0.55 µm/px, point labels, never trained on; matching",
            "  radius 6 px; predictions mapped through the coarse classes: epithelial, inflammatory,",
            "  fibroblast = spindle, others = other; a model without a class scores 0 on it): "
            f"F1_detection {_fmt(c.get('f1_d'))}, type accuracy on labelled matches {_fmt(c.get('acc'))}, "
            f"F1 epithelial {_fmt(c.get('f1_type1'))}, F1 inflammatory {_fmt(c.get('f1_type2'))}, "
            f"F1 fibroblast {_fmt(c.get('f1_type3'))}, F1 others {_fmt(c.get('f1_type4'))}.",
        ]
    if "crchisto_coarse" in val and previous and "crchisto_coarse" in previous:
        c, pc = val["crchisto_coarse"], previous["crchisto_coarse"]
        lines.append(
            f"  Previous release: F1_detection {_fmt(pc.get('f1_d'))}, type accuracy {_fmt(pc.get('acc'))}, "
            f"F1 epithelial {_fmt(pc.get('f1_type1'))}, F1 inflammatory {_fmt(pc.get('f1_type2'))}, "
            f"F1 fibroblast {_fmt(pc.get('f1_type3'))}, F1 others {_fmt(pc.get('f1_type4'))}"
            + (" — **typing on these never-trained-on images got worse** while the MoNuSAC fit below "
               "improved (most likely the type branch over-fitting the 3 MoNuSAC images of one patient)."
               if c.get("acc", 0) < pc.get("acc", 0) - 0.02 else ".")
        )
    if "monusac_train_fit" in val:
        s = val["monusac_train_fit"]
        lines += [
            "- **MoNuSAC** (the 3 images are TRAINING images: with one patient and 3 images, holding one",
            "  out would remove a class entirely, so MoNuSAC typing is NOT validated; this is a fit; coarse",
            "  classes): "
            f"F1_detection {_fmt(s.get('f1_d'))}, acc {_fmt(s.get('acc'))}, F1 epithelial {_fmt(s.get('f1_epithelial'))}, "
            f"F1 inflammatory {_fmt(s.get('f1_inflammatory'))}.",
        ]
    lines += ["", "## Inference speed", ""]
    if bench:
        lines += [
            f"2-core CPU (shared), 24 GiB, Python {bench.get('python')}, torch {bench.get('torch')}, no GPU; "
            f"{bench['threads']} torch threads; MoNuSeg tile {bench['image']} ({bench['input_mpx_40x']} Mpx at 40×), "
            f"median of {bench.get('repeat', 'several')} repeats, load average {bench.get('load_average_1min', '?')} "
            "at the end, command `python benchmarks/bench_compact.py`:",
            "",
            f"- total (resample the tile to {m.mpp} µm/px + network + post-processing + nucleus table): "
            f"{bench['seconds_total_median']} s wall = **{bench['mpx_per_s_40x_total']} Mpx/s at 40×** "
            f"(target ≥ 0.5; least disturbed repeat {bench.get('mpx_per_s_40x_total_best', '?')} Mpx/s); "
            f"process CPU time {bench.get('cpu_seconds_total_median', '?')} s",
            f"- network + post-processing only (a 40× slide needs no resampling): "
            f"{bench.get('mpx_per_s_40x_network_and_postproc', '?')} Mpx/s",
            f"- network {bench['seconds_network_median']} s wall ({bench.get('cpu_seconds_network_median', '?')} s CPU); "
            f"post-processing and measurement {bench['seconds_postproc_median']} s wall "
            f"({bench.get('cpu_seconds_postproc_median', '?')} s CPU); resampling "
            f"{bench.get('seconds_resample_median', '?')} s.",
        ]
        if bench_previous:
            lines.append(
                f"- Previous release, same command and machine: {bench_previous['seconds_total_median']} s = {bench_previous['mpx_per_s_40x_total']} "
                f"Mpx/s (network {bench_previous['seconds_network_median']} s, post-processing "
                f"{bench_previous['seconds_postproc_median']} s"
                + (f"; CPU {bench_previous['cpu_seconds_total_median']} s" if 'cpu_seconds_total_median' in bench_previous else "")
                + ")."
            )
    else:
        lines.append("Not measured.")
    lines += [
        "",
        "## Limitations",
        f"- Trained{' (last run)' if cfg.init_weights else ''} for {log_done.get('elapsed_s', 0) / 60:.0f} min "
        "on a shared 2-core CPU; see the numbers above before relying on it.",
        "- H&E only; 20×/40× brightfield. "
        + ("Typing: four coarse classes learned mostly from colorectal tissue (CoNSeP) and 3 MoNuSAC images; "
           "'other' has few examples (432 of 18,216 CoNSeP nuclei)." if cfg.type_scheme == "coarse" else
           "Typing is limited to 4 names learned from 3 images of one patient."),
        *[f"- {note}" for note in val.get("limitations", [])],
        "- Research / non-commercial use only (data licences above).",
        "",
    ]
    return "\n".join(lines)


#: Shipped defaults: thresholds picked on MoNuSeg training tiles (validation.json ``postproc_tuning``).
SHIPPED_THRESHOLDS = {"np_threshold": 0.6, "marker_threshold": 0.4}


def shipped_config(train_cfg: TrainConfig, downsample: int = 2, postproc: dict | None = None,
                   postproc_at_network_mpp: bool = True, network_postproc: dict | None = None,
                   max_tile_px: int = 640, type_rule: str = "nucleus"):
    """Network config exposed at ``mpp / downsample`` with the same weights (see ``internal_downsample``).

    ``postproc`` holds the constants for a watershed at the exposed mpp, ``network_postproc``
    (default: derived from them) those for the watershed on the network's grid, used when
    ``postproc_at_network_mpp``; ``max_tile_px`` bounds the enlarged inference patches;
    ``type_rule`` is the typing rule (the shipped models use "nucleus").
    """
    m = train_cfg.model
    fine_mpp = m.mpp / downsample
    return CompactConfig.from_dict({
        **m.to_dict(),
        "mpp": fine_mpp,
        "internal_downsample": downsample,
        "input_size": m.input_size * downsample,
        "output_size": m.output_size * downsample,
        "postproc": {**scaled_postproc(fine_mpp), **SHIPPED_THRESHOLDS, **(postproc or {})},
        "postproc_at_network_mpp": bool(postproc_at_network_mpp and downsample > 1),
        "network_postproc": network_postproc,
        "max_tile_px": int(max_tile_px),
        "type_rule": type_rule,
        # type 0 of a detected nucleus is "no class", not background (QuPath's unclassified, grey)
        "type_names": ["unclassified", *m.type_names[1:]],
        "type_colours": [[160, 160, 160], *m.type_colours[1:]],
    })


def ship(run_dir: str | Path, dest: str | Path, validation: dict | None, bench: dict | None = None,
         model_cfg=None, previous: dict | None = None, bench_previous: dict | None = None,
         history: str | None = None) -> Path:
    """Copy the run's final weights and write configs, validation.json and MODEL_CARD.md into ``dest``.

    ``model_cfg`` (default :func:`shipped_config`) is written as ``config.json``; the training
    config goes to ``train_config.json``. Without ``validation`` only weights and configs are
    written (a folder to evaluate before shipping).
    """
    from napari_histo.models.hovernet.compact import CompactHoVerNet, count_macs

    run, dest = Path(run_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.load(run / "train_config.json")
    shutil.copyfile(run / "model.pt", dest / "model.pt")
    model_cfg = model_cfg or shipped_config(cfg)
    model_cfg.save(dest / "config.json")
    with atomic_write(dest / "type_info.json") as fh:  # the shipped vocabulary, as config.json names it
        json.dump({str(i): [name, list(colour)] for i, (name, colour) in
                   enumerate(zip(model_cfg.type_names, model_cfg.type_colours, strict=True))}, fh, indent=2)
    cfg.save(dest / "train_config.json")
    if validation is None:
        return dest
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
    text = model_card(card_cfg, validation, done, bench, params, count_macs(model, model_cfg.input_size),
                      previous, bench_previous, history)
    with atomic_write(dest / "MODEL_CARD.md") as fh:
        fh.write(text)
    return dest


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("dest")
    ap.add_argument("--validation", default=None, help="evaluate output; omit to write weights + configs only")
    ap.add_argument("--bench", default=None)
    ap.add_argument("--previous", default=None, help="validation.json of the release being replaced")
    ap.add_argument("--bench-previous", default=None, help="bench JSON of the release being replaced")
    ap.add_argument("--history", default=None, help="one line on the training history for the card")
    ap.add_argument("--postproc", default=None, help="JSON overrides of the post-processing constants")
    ap.add_argument("--network-postproc", default=None,
                    help="JSON constants of the watershed on the network grid (default: derived)")
    ap.add_argument("--fine-postproc", action="store_true",
                    help="watershed on the exposed (fine) grid instead of the network's")
    a = ap.parse_args()

    def load(path):
        return json.loads(Path(path).read_text()) if path else None

    tcfg = TrainConfig.load(Path(a.run_dir) / "train_config.json")
    mcfg = shipped_config(tcfg, postproc=json.loads(a.postproc) if a.postproc else None,
                          postproc_at_network_mpp=not a.fine_postproc,
                          network_postproc=json.loads(a.network_postproc) if a.network_postproc else None)
    print(ship(a.run_dir, a.dest, load(a.validation), load(a.bench), mcfg, load(a.previous),
               load(a.bench_previous), a.history))
