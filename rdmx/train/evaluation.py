"""One evaluation of a generator, shared by training (step 0 and every K steps) and `rdmx eval`:
fixed-noise samples → every battery encoder → SW_rK / MMDr / FD against the real banks, plus the
recipe's ``[eval] metrics``. The metrics themselves live in :mod:`rdmx.evaluate`, which never
sees the training objective."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rdmx.errors import RdmxError
from rdmx.train.sampling import NonFiniteSamples, generate_features

EVAL_NOISE_SALT = 12345  # eval noise = eval.seed + this: the same samples for every checkpoint
EXTRA_NOISE_SALT = 1_000_003  # chunk i beyond eval.n: seed + EVAL_NOISE_SALT + this + i


@dataclass
class TextJointEval:
    """What the text-joint SW_r / MMDr need (``rdmx.evaluate.joint``): τ of generated rows' prompt ids,
    τ of every caption id per split (bank labels are caption ids), and β's rule."""

    prompt_tau: Callable[[torch.Tensor], torch.Tensor]
    captions: dict[str, torch.Tensor]
    sigma_scale: float
    s_txt: float


def text_joint_eval(components, recipe, refs: Mapping[str, Any], prompt_tau=None) -> TextJointEval | None:
    """The text-joint evaluation of a recipe whose joint law is text (else None): caption τ from the
    references (or computed, cached), prompt τ of the generator's current prompts (or ``prompt_tau``)."""
    if recipe.joint.kind != "text":
        return None
    from rdmx.reference.build import caption_embeddings
    from rdmx.reference.text import prompt_conditions

    cache = recipe.reference.cache_dir
    captions = next((b.captions for b in refs.values() if b.captions is not None), None)
    if captions is None:
        captions = caption_embeddings(components.data, components.text_encoder, cache)
    if prompt_tau is None:
        prompt_tau = prompt_conditions(components.text_encoder, components.generator.prompts, cache_dir=cache,
                                       device="cpu")
    return TextJointEval(prompt_tau, captions, float(components.estimator.request().sigma_scale),
                         float(recipe.joint.s_txt))


@dataclass
class Evaluation:
    result: Any  # rdmx.evaluate.suite.EvalResult (extra metrics merged into its summary)
    samples: torch.Tensor | None  # kept (CPU) only when asked for or when a metric reads them
    cond: torch.Tensor | None

    def scalars(self) -> dict[str, float]:
        """Flat metrics for trackers (per-encoder SW numerators/denominators left out)."""
        return {k: float(v) for k, v in self.result.flat().items() if not k.startswith(("sw_gen", "sw_val"))}


def check_finite(samples: torch.Tensor, feats: Mapping[str, torch.Tensor], encoders: Mapping[str, Any],
                 step: int | None) -> None:
    """Evaluation needs finite samples and features: a NaN here names its source, not a linear-
    algebra routine three calls later."""
    from rdmx.components import describe_encoder

    at = f" at step {step}" if step is not None else ""
    if samples is not None and not torch.isfinite(samples).all():
        bad = int((~torch.isfinite(samples.reshape(len(samples), -1))).any(dim=1).sum())
        raise RdmxError(f"evaluation{at}: the generator made {bad} of {len(samples)} samples with NaN or inf values")
    for label, f in feats.items():
        if not torch.isfinite(f).all():
            bad = int((~torch.isfinite(f)).any(dim=1).sum())
            raise RdmxError(f"evaluation{at}: {describe_encoder(label, encoders[label])} returned non-finite "
                            f"features for {bad} of {len(f)} finite generated samples")


@torch.no_grad()
def evaluate_generator(
    generator, encoders: Mapping[str, torch.nn.Module], roles: Mapping[str, str], refs: Mapping[str, Any],
    eval_config, *, chunk: int, device: torch.device, metrics=(), data=None, step: int | None = None,
    text: TextJointEval | None = None, cond: torch.Tensor | None = None, reference_samples=None,
    keep_samples: bool = False, dist=None, label_texts: Sequence[str] | None = None,
) -> Evaluation | None:
    """``eval_config`` is the recipe's ``[eval]`` block; ``refs`` hold each encoder's banks; samples
    are generated and encoded ``chunk`` at a time, without gradients.

    ``cond`` fixes the samples' conditions (e.g. every prompt of an evaluation set, ``len(cond)``
    samples); ``reference_samples`` (a baseline's images from the same noise and conditions) go to
    the metrics (win rates); ``text`` adds the text-joint SW_r / MMDr (keys ``*_text``);
    ``label_texts`` (one per condition id, e.g. class prompts) are the text the metrics see.

    Under torchrun every rank must call this (the ranks share the generation, see
    :func:`rdmx.train.sampling.generate_features`); rank 0 computes the metrics and returns them,
    the other ranks return None."""
    from rdmx.evaluate.base import EncoderFeatures, EvalContext
    from rdmx.evaluate.suite import evaluate_features

    e = eval_config
    main = dist is None or dist.main
    n = e.n if cond is None else len(cond)
    streamed = [m for m in metrics if getattr(m, "stream_samples", 0)]
    try:
        feats, samples, cond = generate_features(generator, encoders, n, e.seed + EVAL_NOISE_SALT, chunk, device,
                                                 keep_samples=keep_samples or bool(metrics), dist=dist, cond=cond,
                                                 quantize=e.quantize)
    except NonFiniteSamples as exc:
        raise RdmxError(f"evaluation{f' at step {step}' if step is not None else ''}: {exc}") from None
    if main:
        for m in streamed:
            for s in range(0, n, chunk):
                m.observe(samples[s : s + chunk], None if cond is None else cond[s : s + chunk])
    # samples beyond the first n (MMDr's mmd_n, FID-50K's 50,000): generated chunk by chunk from their
    # own fixed noise, encoded and streamed, never all held at once; the first n are unchanged
    total = max([e.bank_rows()] + [min(m.stream_samples, 10**9) for m in streamed])
    extra, extra_cond = {k: [] for k in encoders}, []
    for i, start in enumerate(range(n, total, chunk)):
        rows = min(chunk, total - start)
        needed = [m for m in streamed if start < m.stream_samples]
        more_feats, more, more_cond = generate_features(
            generator, encoders if start < e.bank_rows() else {}, rows,
            e.seed + EVAL_NOISE_SALT + EXTRA_NOISE_SALT + i, chunk, device, keep_samples=bool(needed), dist=dist,
            quantize=e.quantize)
        if start < e.bank_rows():
            for k, f in more_feats.items():
                extra[k].append(f)
            if more_cond is not None:
                extra_cond.append(more_cond)
        if main:
            for m in needed:
                m.observe(more, more_cond)
    if not main:
        return None
    feats = {k: torch.cat([f, *extra[k]]) for k, f in feats.items()}
    all_cond = None if cond is None else torch.cat([cond, *extra_cond])  # one per row of feats
    check_finite(samples, feats, encoders, step)
    train = {k: refs[k].train_bank for k in encoders}
    val = {k: refs[k].val_bank for k in encoders}
    # each encoder's three sets are cut to min(n, bank rows) by seeded subsamples (mmd_n for MMDr)
    first = {k: (refs[k].train_first, refs[k].val_first) for k in encoders
             if getattr(refs[k], "train_first", None) is not None}  # reference.rows = "first": MMDr's real rows
    result = evaluate_features(feats, train, val, dict(roles), n=n, mmd_n=e.mmd_n, directions=e.directions,
                               seed=e.seed, metrics=tuple(e.suite), device=device, mmd_first=first or None)
    if text is not None and cond is not None:
        _add_text_joint(result, text, feats, all_cond, refs, roles, e, n, device)
    if metrics:
        prompts = label_texts or getattr(generator, "prompts", ())
        labels = None if cond is None else ([prompts[i] for i in cond.tolist()] if prompts else cond.cpu())
        ctx = EvalContext(
            features={k: EncoderFeatures(feats[k], train[k], val[k], roles[k]) for k in encoders},
            samples=samples, labels=labels, step=step, reference_samples=reference_samples,
        )
        ctx.data = data  # sample metrics on toy data (spiral) read the data's geometry
        for metric in metrics:
            result.summary.update({k: float(v) for k, v in metric(ctx).items()})
    return Evaluation(result, samples, cond)


def _add_text_joint(result, text: TextJointEval, feats, cond, refs, roles, e, n, device) -> None:
    """Merge the text-joint SW_r / MMDr (``sw_r_text``, ``sw_rK_text*``, ``mmd_r_text*``) into ``result``."""
    from rdmx.evaluate.joint import text_joint_sets
    from rdmx.evaluate.suite import evaluate_features

    suite = tuple(m for m in e.suite if m in ("sw", "mmdr"))
    if not suite:
        return
    names = list(feats)
    gen_tau = text.prompt_tau(cond).cpu()
    bank_tau = {s: {k: text.captions[s][getattr(refs[k], f"{s}_bank_labels")] for k in names} for s in ("train", "val")}
    g, t, v, weights = text_joint_sets(feats, {k: refs[k].train_bank for k in names},
                                       {k: refs[k].val_bank for k in names}, gen_tau, bank_tau["train"],
                                       bank_tau["val"], sigma_scale=text.sigma_scale, s_txt=text.s_txt, seed=e.seed)
    joint = evaluate_features(g, t, v, dict(roles), n=n, directions=e.directions, seed=e.seed, metrics=suite,
                              device=device)
    for enc, values in joint.encoders.items():
        result.encoders[enc].update({f"{k}_text": values[k] for k in ("sw_r", "mmd_r") if k in values})
        result.encoders[enc]["text_weight"] = weights[enc]
    for key, value in joint.summary.items():
        stem = "sw_rK" if key.startswith("sw_rK") else "mmd_r"
        result.summary[stem + "_text" + key[len(stem):]] = value
    result.settings["text_joint"] = {"sigma_scale": text.sigma_scale, "s_txt": text.s_txt}
