"""Outputs of a sanity run: ``sanity.json``, ``summary.md`` (the verdict table), a figure of the maps along the
cascade per image (rows methods, columns steps, as Adebayo et al.'s Fig. 2) and plots of similarity vs step."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .runner import SanityReport
from .similarity import METRICS

_METRIC_TITLES = {"spearman": "Spearman ρ (map)", "spearman_abs": "Spearman ρ (|map|)", "ssim": "SSIM (|map|)",
                  "hog": "HOG similarity (|map|)"}


def _fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def summary_table(report: SanityReport) -> str:
    """The verdict table in Markdown: per method, the verdict statistic and each metric after full randomisation."""
    verdicts = report.verdicts()
    modes = [m for m in ("cascade", "data") if any(m in v for v in verdicts.values())]
    lines = []
    for mode in modes:
        what = ("after randomising every block (cascade)" if mode == "cascade"
                else "random-label twin (data randomisation)")
        first = f" | after `{report.steps['cascade'][0]}` only" if mode == "cascade" else ""
        lines += [f"**{what}**, threshold {report.threshold:g} on mean max(ρ, ρ_abs)", "",
                  f"| method | layer | verdict | max(ρ, ρ_abs) | ρ | ρ_abs | SSIM | HOG | images{first} |",
                  "|---|---|---|---|---|---|---|---|---|" + ("---|" if first else "")]
        for e in report.methods:
            v = verdicts[e.label].get(mode)
            if v is None:
                continue
            means = {k: rows[-1] for k, rows in report.step_means(e.label, mode).items()}
            lay = report.layers[e.label]
            lay = ", ".join(lay) if isinstance(lay, (list, tuple)) and len(lay) <= 3 else (
                f"{len(lay)} layers" if isinstance(lay, (list, tuple)) else (lay or "input"))
            excl = f" ({v['n_excluded']} constant left out)" if v["n_excluded"] else ""
            stat = v["statistic"]
            weak = " (weak: within 0.1 of the threshold)" if stat is not None and abs(stat - v["threshold"]) < 0.1 \
                else ""
            lines.append(f"| `{e.label}` | {lay} | **{v['verdict']}**{weak} | {_fmt(v['statistic'])} | "
                         f"{_fmt(means['spearman'])} | {_fmt(means['spearman_abs'])} | {_fmt(means['ssim'])} | "
                         f"{_fmt(means['hog'])} | {v['n_images']}{excl} |"
                         + (f" {_fmt(v.get('statistic_first_block'))} |" if first else ""))
        lines.append("")
    if "independent" in report.steps:
        from .runner import verdict
        steps = report.steps["independent"]
        lines += ["**independent randomisation** (one block alone): mean max(ρ, ρ_abs) with the trained map, per block",
                  "", "| method | " + " | ".join(f"`{b}`" for b in steps) + " |", "|---|" + "---|" * len(steps)]
        for e in report.methods:
            s = report.scores[e.label].get("independent")
            if s is None:
                continue
            const = report.original_constant[e.label]
            stats = [verdict(s["spearman"][k], s["spearman_abs"][k], const, report.threshold)["statistic"]
                     for k in range(len(steps))]
            lines.append(f"| `{e.label}` | " + " | ".join(_fmt(v) for v in stats) + " |")
        lines.append("")
    return "\n".join(lines)


def write_outputs(report: SanityReport, out_dir: str | Path, images: Sequence[np.ndarray], image_names: Sequence[str],
                  *, model_name: str, class_names: Sequence[str] | None = None,
                  command: str | None = None, weights_note: str | None = None) -> list[Path]:
    """Write sanity.json, summary.md, maps_<image>.png (cascade) and similarity_<mode>.png into ``out_dir``.

    weights_note: what the reader must know about the model's weights (e.g. a random init), in both files."""
    from ..viz import write_text_atomic
    out = Path(out_dir)
    written = []
    data = report.to_json()
    data["model"] = model_name
    data["images"] = list(image_names)
    data["target_names"] = [class_names[t] if class_names else str(t) for t in report.targets.tolist()]
    if command:
        data["command"] = command
    if weights_note:
        data["weights"] = weights_note
    write_text_atomic(out / "sanity.json", json.dumps(data, indent=2))
    written.append(out / "sanity.json")

    targets = ", ".join(f"{n} → {t}" for n, t in zip(image_names, data["target_names"]))
    md = [f"# Sanity checks: {model_name}", "",
          f"Images and explained classes (the trained model's, kept at every step): {targets}. Seed {report.seed}; "
          f"blocks randomised from the logits down: {', '.join(b.name for b in report.blocks)}.", ""]
    if weights_note:
        md += [f"**Weights: {weights_note}.**", ""]
    if command:
        md += ["Command:", "", f"```\n{command}\n```", ""]
    md += [summary_table(report), "",
           "ρ / ρ_abs: Spearman rank correlation of the map / |map| with the trained model's map; SSIM and HOG "
           "similarity of |map| scaled to [0, 1] (Adebayo et al. 2018). A method passes when the randomised map keeps "
           "less rank structure than the threshold; images whose trained map is constant are left out of the mean, "
           "and a "
           "constant randomised map counts as ρ = 0 (marked \"constant\" in the figures).", ""]
    if report.fallback_layers:
        md += [f"Layers without `reset_parameters` (PyTorch's default initialisers used): "
               f"{', '.join(report.fallback_layers)}", ""]
    write_text_atomic(out / "summary.md", "\n".join(md))
    written.append(out / "summary.md")

    labels = [e.label for e in report.methods]
    for mode in ("cascade", "independent"):
        if mode not in report.steps:
            continue
        if all(mode in report.maps[lab] for lab in labels):
            for i, (img, name) in enumerate(zip(images, image_names)):
                if mode != "cascade":
                    continue
                cols = [f"trained · {name} · {data['target_names'][i]}"[:40]] + \
                    [f"→ {s}".replace("+", "+\n") for s in report.steps[mode]]
                cells = [[report.maps[lab]["original"][i]] + [m[i] for m in report.maps[lab][mode]] for lab in labels]
                sg = [[report.signed[lab]] * len(cols) for lab in labels]
                path = out / f"maps_{mode}_{_stem(name, i)}.png"
                _maps_figure(img, labels, cols, cells, sg, path)
                written.append(path)
        written.append(_similarity_plot(report, mode, out / f"similarity_{mode}.png"))
    return written


def _maps_figure(img, rows, cols, cells, signed, path: Path) -> Path:
    """Rows methods, columns steps (Adebayo et al.'s Fig. 2); a constant map (no structure left) is labelled."""
    from ..viz.figures import _plt, overlay, save_figure
    plt = _plt()
    h, w = np.asarray(img).shape[:2]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols) * w / max(h, 1), 2.2 * len(rows) + 0.4),
                             squeeze=False)
    for r, label in enumerate(rows):
        for c, cell in enumerate(cells[r]):
            ax = axes[r][c]
            hm = np.asarray(cell.detach().cpu() if hasattr(cell, "detach") else cell, dtype=np.float64)
            overlay(ax, img, hm, signed=bool(signed[r][c]), alpha=0.65, title=cols[c] if r == 0 else None)
            if hm.size and float(hm.max() - hm.min()) == 0.0:
                ax.text(0.5, 0.5, "constant", transform=ax.transAxes, ha="center", va="center", fontsize=9,
                        color="w", bbox=dict(facecolor="k", alpha=0.6, lw=0))
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    return save_figure(fig, path)


def _stem(name: str, i: int) -> str:
    stem = Path(name).stem or f"image{i}"
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)


def _similarity_plot(report: SanityReport, mode: str, path: Path) -> Path:
    from ..viz.figures import _plt, save_figure
    plt = _plt()
    steps = report.steps[mode]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6), squeeze=False)
    xs = np.arange(len(steps) + 1)
    cmap = plt.get_cmap("tab10")
    styles = ("-", "--", ":", "-.")
    markers = ("o", "s", "^", "v", "D", "x", "+", "*")
    for j, metric in enumerate(METRICS):
        ax = axes[0][j]
        for i, e in enumerate(report.methods):          # line style and marker vary too: equal curves stay visible
            mean = np.array([1.0] + report.step_means(e.label, mode)[metric])
            ax.plot(xs, mean, marker=markers[i % len(markers)], ms=4, lw=1.2, color=cmap(i % 10),
                    ls=styles[(i + i // 10) % 4], label=e.label, alpha=0.85)
        ax.axhline(0.0, color="0.6", lw=0.6)
        if metric in ("spearman", "spearman_abs"):
            ax.axhline(report.threshold, color="k", lw=0.8, ls="--")
        ax.set_xticks(xs)
        ax.set_xticklabels(["trained"] + list(steps), rotation=60, ha="right", fontsize=7)
        ax.set_title(_METRIC_TITLES[metric], fontsize=9)
        ax.set_ylim(-1.05, 1.05)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    what = "cascading (cumulative, from the logits down)" if mode == "cascade" else "independent (one block alone)"
    fig.suptitle(f"{what} randomisation: similarity to the trained model's map (mean over images; dashed: the "
                 f"verdict threshold)", fontsize=10)
    return save_figure(fig, path)
