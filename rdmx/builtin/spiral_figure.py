"""The spiral sweep's figure (paper Fig. 3): a grid of 2-D sample scatters, batch × estimator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdmx.builtin.toydata import spiral_curve, spiral_embedding

# The paper's Fig. 3 (recall, medDist) per (batch, estimator), as published with its release.
PAPER_FIG3: dict[tuple[str, str], tuple[float, float]] = {
    ("8", "fd"): (0.30, 0.378), ("32", "fd"): (0.23, 0.313), ("128", "fd"): (0.32, 0.330),
    ("8", "sw"): (0.52, 0.280), ("32", "sw"): (0.97, 0.230), ("128", "sw"): (0.98, 0.140),
    ("8", "drifting"): (1.00, 0.254), ("32", "drifting"): (1.00, 0.073), ("128", "drifting"): (0.00, 0.53),
    ("8", "mmd-rff"): (0.88, 0.189), ("32", "mmd-rff"): (0.97, 0.137), ("128", "mmd-rff"): (0.98, 0.108),
    ("8", "mmd-exact"): (0.98, 0.197), ("32", "mmd-exact"): (0.98, 0.085), ("128", "mmd-exact"): (1.00, 0.040),
    ("8", "mmd-nystrom"): (0.98, 0.158), ("32", "mmd-nystrom"): (1.00, 0.054), ("128", "mmd-nystrom"): (1.00, 0.028),
}


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
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols), 2.4 * len(rows)), squeeze=False)
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
        paper = PAPER_FIG3.get((rows[r], cols[k]))
        title = f"{cols[k]}\nrdmx {rec:.2f} / {med:.3f}"
        ax.set_title(title + (f"\npaper {paper[0]:.2f} / {paper[1]:.3f}" if paper else ""), fontsize=7)
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
    with_paper = any((r, k) in PAPER_FIG3 for r in rows for k in cols)
    for r in rows:
        cells_txt = []
        for k in cols:
            rec, med = table.get((r, k), (float("nan"), float("nan")))
            paper = PAPER_FIG3.get((r, k))
            cells_txt.append(f"{rec:.2f} / {med:.3f}" + (f" ({paper[0]:.2f} / {paper[1]:.3f})" if paper else ""))
        lines.append(f"| {r} | " + " | ".join(cells_txt) + " |")
    head = "recall / medDist per cell" + (" — rdmx (paper)" if with_paper else "")
    md = head + "\n\n" + "\n".join(lines) + "\n"
    (out / "table.md").write_text(md)
    return path, md
