"""Print the README's sanity-check table from the sanity.json files of ``cnnlens sanity`` runs.

Usage: python benchmarks/sanity_table.py sanity-efficientnet/cheap/sanity.json sanity-efficientnet/costly/sanity.json
(the runs of benchmarks/sanity_efficientnet.sh). Means follow the verdict's rule: images whose trained-model map is
constant are left out; a similarity left undefined by a constant randomised map counts as 0.
"""
from __future__ import annotations

import json
import sys


def _mean(rows, keep):
    vals = [0.0 if v is None else v for v, k in zip(rows, keep) if k]
    return sum(vals) / len(vals) if vals else float("nan")


def table(paths: list[str]) -> str:
    lines = ["| method (options) | layer | photos | steps | verdict | max(ρ, ρ_abs) after all blocks | ρ | ρ_abs "
             "| SSIM | HOG "
             "| max(ρ, ρ_abs) after the head only |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        data = json.load(open(path))
        for m in data["methods"]:
            v = m["verdict"]["cascade"]
            keep = [p is not None for p in v["per_image"]]
            sc = m["scores"]["cascade"]
            means = {k: _mean(sc[k][-1], keep) for k in ("spearman", "spearman_abs", "ssim", "hog")}
            opts = {k: val for k, val in m["options"].items() if k != "composite"}
            label = f"`{m['label']}`" + (f" ({', '.join(f'{k}={val}' for k, val in opts.items())})" if opts else "")
            layer = m["layer"]
            layer = "input" if layer is None else (f"{len(layer)} block outputs" if isinstance(layer, list) else layer)
            stat = "—" if v["statistic"] is None else f"{v['statistic']:.2f}"
            first = v.get("statistic_first_block")
            steps = len(data["steps"]["cascade"])
            lines.append(f"| {label} | {layer} | {len(data['images'])} | {steps} | **{v['verdict']}** | {stat} | "
                         f"{means['spearman']:.2f} | {means['spearman_abs']:.2f} | {means['ssim']:.2f} | "
                         f"{means['hog']:.2f} | {'—' if first is None else f'{first:.2f}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(table(sys.argv[1:]))
