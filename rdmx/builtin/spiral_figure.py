"""The spiral sweep's figure (paper Fig. 3): a grid of 2-D sample scatters, batch × estimator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdmx.builtin.toydata import spiral_curve, spiral_embedding


def _label(value: Any) -> str:
    return value.get("name", str(value)) if isinstance(value, dict) else str(value)


def spiral_sweep_figure(cells: list[dict[str, Any]], data_config: dict[str, Any], out: Path) -> tuple[Path, str]:
    """Scatter each cell's final samples (projected to 2-D) over the noiseless curve.

    Rows: the first swept field; columns: the second (e.g. batch × estimator). Returns the PNG
    path and a Markdown table of recall / medDist."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(cells[0]["values"])
    row_key, col_key = (keys + [None, None])[:2]
    rows = list(dict.fromkeys(_label(c["values"][row_key]) for c in cells)) if row_key else [""]
    cols = list(dict.fromkeys(_label(c["values"][col_key]) for c in cells)) if col_key else [""]
    emb = spiral_embedding(data_config["dim"], data_config["embed_seed"])
    curve = spiral_curve(np.linspace(0, 1, 2000), data_config["turns"], data_config["r0"], data_config["r1"])
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols), 2.2 * len(rows)), squeeze=False)
    table = {}
    for c in cells:
        r = rows.index(_label(c["values"][row_key])) if row_key else 0
        k = cols.index(_label(c["values"][col_key])) if col_key else 0
        ax = axes[r][k]
        pts = torch.load(Path(c["out"]) / "final_samples.pt", weights_only=True).double().numpy() @ emb
        ax.plot(curve[:, 0], curve[:, 1], color="0.8", lw=0.8)
        ax.scatter(pts[:, 0], pts[:, 1], s=0.5, alpha=0.4, color="tab:blue", rasterized=True)
        rec, med = c["final"].get("eval/spiral/recall"), c["final"].get("eval/spiral/med_dist")
        table[(rows[r], cols[k])] = (rec, med)
        ax.set_title(f"{cols[k]}  R={rec:.2f} d={med:.3f}", fontsize=7)
        ax.set_xlim(-2.8, 2.8)
        ax.set_ylim(-2.8, 2.8)
        ax.set_xticks([])
        ax.set_yticks([])
        if k == 0:
            ax.set_ylabel(f"{row_key.split('.')[-1]} = {rows[r]}" if row_key else "", fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "figure.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    lines = [f"| {row_key or ''} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        cells_txt = []
        for k in cols:
            rec, med = table.get((r, k), (float("nan"), float("nan")))
            cells_txt.append(f"{rec:.2f} / {med:.3f}")
        lines.append(f"| {r} | " + " | ".join(cells_txt) + " |")
    md = "recall / medDist per cell\n\n" + "\n".join(lines) + "\n"
    (out / "table.md").write_text(md)
    return path, md
