"""The evaluation suite: SW_rK, MMDr and FD over an encoder panel, as one :class:`EvalResult`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from rdmx.errors import RdmxError
from rdmx.evaluate.base import ROLES, EvalContext
from rdmx.evaluate.features import as_tensor, equal_size
from rdmx.evaluate.frechet import frechet_to
from rdmx.evaluate.rff import RFF_SEED, median_sigma, rff_frequencies, rff_mean_embedding
from rdmx.evaluate.sliced import PRECISIONS, sliced_w2_to

METRICS = ("sw", "mmdr", "fd")
PAPER_MMD_ROWS = 50_000  # the paper's MMDr: 50,000 generated, train and val rows, D = 4096


def mmd_protocol(rows: int, features: int) -> str:
    """A label for MMDr values: the paper's protocol, or small-sample (not comparable with the paper's)."""
    if rows >= PAPER_MMD_ROWS and features == 4096:
        return f"paper: {rows:,} rows per set, D = {features}, sigma = train median"
    return (f"small-sample: {rows:,} rows per set, D = {features} (the paper uses {PAPER_MMD_ROWS:,}; "
            f"MMDr - 1 shrinks roughly in proportion, so it is not comparable with the paper's)")


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


@dataclass
class EvalResult:
    """Per-encoder values, their means and the settings that produced them."""

    encoders: dict[str, dict[str, float]]
    roles: dict[str, str]
    summary: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EvalResult:
        return cls(**json.loads(text))

    def flat(self, prefix: str = "") -> dict[str, float]:
        """One flat ``{name: value}`` dict for trackers: summary keys and ``<value>/<encoder>``."""
        out = {f"{prefix}{k}": v for k, v in self.summary.items()}
        for enc, values in self.encoders.items():
            out.update({f"{prefix}{k}/{enc}": v for k, v in values.items()})
        return out

    def table(self, title: str = "evaluation"):
        """A ``rich`` table: one row per encoder, then the means."""
        from rich.table import Table

        columns = [c for c in ("sw_r", "sw_gen", "sw_val", "mmd_r", "fd", "fd_val", "sw_r_text", "mmd_r_text") if any(
            c in v for v in self.encoders.values())]
        protocol = self.settings.get("mmd_protocol")
        small = bool(protocol) and not protocol.startswith("paper")
        caption = f"MMDr {protocol}" if protocol else None
        if "fid" in self.summary:  # rdmx-fid's metric, the literature's number (the paper prefers SW_rK)
            fid = f"FID {self.summary['fid']:.3f} on {int(self.summary.get('fid_samples', 0)):,} samples"
            caption = f"{caption}\n{fid}" if caption else fid
        table = Table(title=title, caption=caption)
        table.add_column("encoder")
        table.add_column("role")
        for c in columns:
            label = f"mmd_r (small-sample, {self.settings['mmd_rows']:,} rows)" if c == "mmd_r" and small else c
            table.add_column(label, justify="right")
        for enc, values in self.encoders.items():
            table.add_row(enc, self.roles[enc], *(_fmt(values.get(c)) for c in columns))
        for suffix, group in (("", "all"), ("_train", "train"), ("_heldout", "heldout")):
            means = {"sw_r": self.summary.get("sw_rK" + suffix), "mmd_r": self.summary.get("mmd_r" + suffix),
                     "sw_r_text": self.summary.get("sw_rK_text" + suffix),
                     "mmd_r_text": self.summary.get("mmd_r_text" + suffix)}
            if any(v is not None for v in means.values()):
                cells = [_fmt(means[c]) if c in means else "" for c in columns]
                table.add_row("[bold]mean[/bold]", group, *cells)
        return table

    def render(self, console=None, title: str = "evaluation") -> None:
        from rich.console import Console

        (console or Console()).print(self.table(title))


def _ratio(num: float, den: float, what: str, enc: str) -> float:
    if den <= 0.0:
        raise RdmxError(
            f"evaluation: {what}(val, train) = {den} for encoder '{enc}'; the validation bank "
            "must be a draw of real data distinct from the train bank"
        )
    return num / den


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def evaluate_features(
    gen: Mapping[str, Any],
    train: Mapping[str, Any],
    val: Mapping[str, Any],
    roles: Mapping[str, str],
    *,
    n: int = 16384,
    mmd_n: int | None = None,
    directions: int = 1024,
    seed: int = 0,
    metrics: Iterable[str] = METRICS,
    rff_features: int = 4096,
    rff_seed: int = RFF_SEED,
    sigmas: Mapping[str, float] | None = None,
    chunk: int = 128,
    precision: str = "float64",
    device: Any = None,
    mmd_first: Mapping[str, tuple[Any, Any]] | None = None,
) -> EvalResult:
    """Evaluate generated features against train and validation banks, per encoder.

    ``gen``/``train``/``val`` map encoder name -> (rows, dim) features; ``roles`` maps the same
    names to "train" or "heldout". Each encoder's sets are cut to min(n, smallest set) rows by
    seeded subsamples (min(mmd_n, smallest set) for MMDr; ``mmd_n`` defaults to ``n``). Per
    encoder: ``sw_r`` (= sw_gen / sw_val), ``mmd_r``, ``fd`` (gen vs train) and ``fd_val`` (val vs
    train). Summary: ``sw_rK`` (mean r over all encoders), ``sw_rK_train``, ``sw_rK_heldout``, the
    same three for ``mmd_r``, and ``mmd_r_rows`` (the fewest rows an encoder's MMDr used);
    ``settings["mmd_protocol"]`` labels MMDr as the paper's protocol (50,000 rows per set, D = 4096)
    or small-sample. MMDr's sigma is the median heuristic on 10,000 train rows unless ``sigmas``.
    ``mmd_first`` (encoder -> (train rows, val rows), the first of each split in the pool's order:
    ``reference.rows = "first"``) makes MMDr's real sets those rows, cut to the MMDr row count, as the
    paper's release computes it; the generated rows and sigma stay the seeded ones.
    """
    metrics = tuple(metrics)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise RdmxError(f"unknown evaluation metrics {unknown}; available: {list(METRICS)}")
    names = list(roles)
    for what, bank in (("generated features", gen), ("train banks", train), ("validation banks", val)):
        missing = [e for e in names if e not in bank]
        if missing:
            raise RdmxError(f"evaluation: no {what} for encoders {missing}")
    bad = {e: r for e, r in roles.items() if r not in ROLES}
    if bad:
        raise RdmxError(f"evaluation: roles must be one of {ROLES}, got {bad}")
    dtype = PRECISIONS.get(precision, torch.float64)
    encoders: dict[str, dict[str, float]] = {}
    rows_used: dict[str, int] = {}
    mmd_rows: dict[str, int] = {}
    for enc in names:
        g, t, v, rows = equal_size(gen[enc], train[enc], val[enc], n, seed, dtype, device)
        rows_used[enc] = rows
        values: dict[str, float] = {}
        if "sw" in metrics:
            sw_gen, sw_val = sliced_w2_to([g, v], t, directions=directions, seed=seed, chunk=chunk, precision=precision)
            values.update(sw_r=_ratio(sw_gen, sw_val, "SW", enc), sw_gen=sw_gen, sw_val=sw_val)
        if "mmdr" in metrics:
            if mmd_n is not None and mmd_n != n:
                g, t, v, rows = equal_size(gen[enc], train[enc], val[enc], mmd_n, seed, dtype, device)
            g64, t64, v64 = g.double(), t.double(), v.double()
            sigma = float(sigmas[enc]) if sigmas and enc in sigmas else median_sigma(t64, seed=seed)
            if mmd_first is not None and enc in mmd_first:
                first_t, first_v = mmd_first[enc]
                rows = min(mmd_n or n, len(gen[enc]), len(first_t), len(first_v))
                g64, _, _, rows = equal_size(gen[enc], first_t[:rows], first_v[:rows], rows, seed, torch.float64,
                                             device)
                t64, v64 = (as_tensor(x[:rows], torch.float64, g64.device) for x in (first_t, first_v))
            mmd_rows[enc] = rows
            w = rff_frequencies(t.shape[1], rff_features, sigma, rff_seed).to(t.device)
            ref = rff_mean_embedding(t64, w)
            mmd_gen = float((rff_mean_embedding(g64, w) - ref).square().sum())
            mmd_val = float((rff_mean_embedding(v64, w) - ref).square().sum())
            values.update(mmd_r=_ratio(mmd_gen, mmd_val, "MMD²", enc), mmd2_gen=mmd_gen, mmd2_val=mmd_val, sigma=sigma)
        if "fd" in metrics:
            fd_gen, fd_val = frechet_to(t, [g, v])
            values.update(fd=fd_gen, fd_val=fd_val)
        encoders[enc] = values
    summary: dict[str, float] = {}
    for key, label in (("sw_r", "sw_rK"), ("mmd_r", "mmd_r")):
        if not any(key in v for v in encoders.values()):
            continue
        for suffix, members in (("", names), ("_train", [e for e in names if roles[e] == "train"]),
                                ("_heldout", [e for e in names if roles[e] == "heldout"])):
            mean = _mean(encoders[e][key] for e in members)
            if mean is not None:
                summary[label + suffix] = mean
    settings = {
        "n": n, "rows": rows_used, "directions": directions, "seed": seed, "metrics": list(metrics),
        "rff_features": rff_features, "rff_seed": rff_seed, "precision": precision,
    }
    if mmd_rows:
        fewest = min(mmd_rows.values())
        summary["mmd_r_rows"] = float(fewest)
        settings.update(mmd_n=mmd_n or n, mmd_rows=fewest, mmd_protocol=mmd_protocol(fewest, rff_features),
                        mmd_real_rows="first" if mmd_first else "random")
    return EvalResult(encoders=encoders, roles=dict(roles), summary=summary, settings=settings)


def evaluate_context(ctx: EvalContext, **kw: Any) -> EvalResult:
    """:func:`evaluate_features` on the feature sets of an :class:`EvalContext`."""
    f = ctx.features
    return evaluate_features(
        {e: x.gen for e, x in f.items()}, {e: x.train for e, x in f.items()},
        {e: x.val for e, x in f.items()}, ctx.roles, **kw,
    )
