"""The training loop (CPU, one GPU, or data-parallel under torchrun): gradient-cached steps,
balancing, evaluation at step 0 and every K steps, sample grids, atomic checkpoints, tracking."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rdmx import __version__
from rdmx.errors import RdmxError
from rdmx.files import write_json
from rdmx.recipe import ResolvedRecipe
from rdmx.samples import grid_conditions, save_grid
from rdmx.track.base import NullTracker, Tracker
from rdmx.train.build import Components, build_components
from rdmx.train.checkpoint import load_checkpoint, restore_training, save_checkpoint
from rdmx.train.distributed import DistContext, from_environment
from rdmx.train.gradcache import cached_backward, direct_backward
from rdmx.train.evaluation import evaluate_generator, text_joint_eval
from rdmx.train.objective import make_loss_fn
from rdmx.train.sampling import generate


def step_generator(seed: int, step: int, salt: int) -> torch.Generator:
    """A CPU generator seeded by (seed, step, salt): fresh noise every step, identical on resume
    and on every rank."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 7_919 + salt) % (2**63 - 1))
    return g


@dataclass
class RunState:
    """What a run has done so far; saved in every checkpoint so a resumed run's summary equals an
    uninterrupted one's."""

    history: list[dict[str, float]] = field(default_factory=list)
    evals: dict[int, dict[str, float]] = field(default_factory=dict)
    skipped: int = 0  # steps skipped for a non-finite loss or gradient
    wall_s: float = 0.0  # wall time of the earlier sessions of this run

    def to_dict(self) -> dict[str, Any]:
        return {"history": self.history, "evals": {str(k): v for k, v in self.evals.items()},
                "skipped": self.skipped, "wall_s": self.wall_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        return cls(list(d.get("history", [])), {int(k): v for k, v in d.get("evals", {}).items()},
                   int(d.get("skipped", 0)), float(d.get("wall_s", 0.0)))


class Trainer:
    """Runs one resolved recipe end to end."""

    def __init__(self, resolved: ResolvedRecipe, out_dir: str | Path, tracker: Tracker | None = None,
                 progress: bool = True, components: Components | None = None, dist: DistContext | None = None):
        self.resolved = resolved
        self.recipe = resolved.recipe
        self.out = Path(out_dir)
        self.dist = dist or from_environment()
        t = self.recipe.train
        if t.batch % ((t.micro_batch or 1) * self.dist.world):
            raise RdmxError(
                f"train.batch ({t.batch}) must be a multiple of micro_batch × world size "
                f"({t.micro_batch or 1} × {self.dist.world}): N = micro_batch × world_size × accumulation"
            )
        self.tracker = (tracker or NullTracker()) if self.dist.main else NullTracker()
        self.progress = progress and self.dist.main
        self.c = components or build_components(resolved, local_rank=self.dist.local_rank)
        self.refs: dict[str, Any] = {}
        self.joint_condition = None  # text-joint law: generated rows' prompt ids -> τ(prompt)
        self.text_eval = None  # text-joint SW_r / MMDr inputs (rdmx.train.evaluation.text_joint_eval)
        self.state = RunState()

    # -- set-up ----------------------------------------------------------------------------
    def prepare_references(self) -> None:
        """Per-encoder frozen references, floors and evaluation banks (cached by fingerprint)."""
        from rdmx.reference.build import build_references

        r = self.recipe
        self.refs = build_references(
            self.c.data, self.c.encoders, self.c.estimator.request(),
            cache_dir=r.reference.cache_dir, joint=r.joint,
            estimator=self.c.estimator, train_names=self.c.train_names,
            floors=(r.reference.floor_draws, r.reference.floor_rows), eval_rows=r.eval.bank_rows(),
            seed=r.seed, device=self.c.device, progress=self.progress,
            batch_size=r.reference.batch_size, num_workers=r.reference.workers, text_encoder=self.c.text_encoder,
        )
        if r.joint.kind == "text":
            from rdmx.reference.text import prompt_conditions

            self.joint_condition = prompt_conditions(self.c.text_encoder, self.c.info.prompts,
                                                     cache_dir=r.reference.cache_dir, device=self.c.device)
        self.floors = {k: self.refs[k].floor for k in self.c.train_names}
        if hasattr(self.c.balancer, "set_floors"):
            self.c.balancer.set_floors(self.floors)
        # the real-data floor of each training encoder's loss: the level a perfect generator reaches
        self.tracker.log_metrics({f"floor/{k}": v for k, v in self.floors.items() if v is not None}, 0)

    # -- pieces of a step ------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        t = self.recipe.train
        if t.lr_schedule == "constant" or t.steps <= 1:
            return t.lr
        return t.lr_min + 0.5 * (t.lr - t.lr_min) * (1 + math.cos(math.pi * step / max(t.steps - 1, 1)))

    def generate(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` samples from fixed noise (the same for every checkpoint with the same seed)."""
        chunk = self.recipe.train.micro_batch or self.recipe.train.batch
        return generate(self.c.generator, n, seed, chunk, self.c.device)

    def evaluate(self, step: int) -> dict[str, float]:
        """Off-objective evaluation of the current generator (see rdmx.train.evaluation); rank 0 only."""
        if not self.dist.main:
            return {}
        t = self.recipe.train
        if self.text_eval is None and self.recipe.joint.kind == "text":
            self.text_eval = text_joint_eval(self.c, self.recipe, self.refs, self.joint_condition)
        ev = evaluate_generator(self.c.generator, self.c.encoders, self.c.roles, self.refs, self.recipe.eval,
                                chunk=t.micro_batch or t.batch, device=self.c.device, metrics=self.c.metrics,
                                data=self.c.data, step=step, text=self.text_eval)
        self.last_samples = ev.samples
        self.mmd_protocol = ev.result.settings.get("mmd_protocol")
        metrics = {f"eval/{k}": v for k, v in ev.scalars().items()}
        self.state.evals[step] = metrics
        self.tracker.log_metrics(metrics, step)
        return metrics

    def save_samples(self, step: int) -> Path | None:
        if not self.c.info.is_image or not self.dist.main:
            return None
        cols = 8
        cond, labels, rows = grid_conditions(self.c.info, cols, self.c.device)  # a row per class / prompt
        gen = self.c.generator
        g = torch.Generator().manual_seed(self.recipe.seed + 777)
        noise = gen.sample_noise(rows * cols, g, self.c.device)
        chunk = self.recipe.train.micro_batch or self.recipe.train.batch
        was = gen.training
        gen.eval()
        with torch.no_grad():
            imgs = torch.cat([gen(noise[s : s + chunk], None if cond is None else cond[s : s + chunk])
                              for s in range(0, len(noise), chunk)])
        gen.train(was)
        path = save_grid(imgs, self.out / "samples" / f"step-{step:06d}.png", labels=labels, columns=cols,
                         scale=max(1, 64 // imgs.shape[-1]), title=f"{self.recipe.name} step {step}")
        self.tracker.log_artifact(path, "samples")
        return path

    def checkpoint(self, step: int) -> Path:
        path = self.out / "checkpoints" / "last.pt"
        if not self.dist.main:
            return path
        state = RunState(self.state.history, self.state.evals, self.state.skipped,
                         self.state.wall_s + time.perf_counter() - self._t0)
        save_checkpoint(path, step=step, generator=self.c.generator, optimizer=self.optimizer,
                        balancer=self.c.balancer, fingerprint=self.resolved.fingerprint,
                        run_id=self.tracker.run_id, extra={"state": state.to_dict()})
        if self.recipe.train.keep_checkpoints:  # a milestone: the generator's weights only (rdmx eval -c)
            save_checkpoint(path.with_name(f"step-{step:06d}.pt"), step=step, generator=self.c.generator,
                            optimizer=None, balancer=None, fingerprint=self.resolved.fingerprint,
                            run_id=self.tracker.run_id)
        return path

    def compute_gradient(self, step: int):
        """Accumulate into the generator's ``.grad`` the full-batch gradient ``s·∇L`` of step ``step``'s loss.

        Every rank draws the same global noise and keeps its slice; gradient caching bounds memory
        by one micro-chunk; under torchrun the features are gathered and the gradients summed, so
        every rank holds the single-process gradient.

        The gradient scale s is decided here and only here: ``train.loss_scale`` (a number s, or the
        release's ``b / N`` for a reference per-GPU batch b). It never depends on the micro batch or
        the world size, so the clip threshold and the learning rate mean the same on any hardware."""
        r, t = self.recipe, self.recipe.train
        gen = self.c.generator
        local = t.batch // self.dist.world  # this rank's share of the global batch N
        micro = min(t.micro_batch or local, local)
        grad_scale = t.gradient_scale()
        gather = self.dist.gather if self.dist.world > 1 else None
        rows = self.dist.slice(t.batch)
        g = step_generator(r.seed, step, 0)
        noise = gen.sample_noise(t.batch, g, self.c.device)[rows]
        cond = gen.sample_conditions(t.batch, g, self.c.device)
        cond = None if cond is None else cond[rows]
        estimator_rng = step_generator(r.seed, step, 1)  # estimators draw on the CPU, then move
        refs = {k: self.refs[k].reference for k in self.c.train_names}
        loss_fn = make_loss_fn(self.c.estimator, refs, self.c.balancer.weights, lambda: estimator_rng,
                               condition=self.joint_condition)
        train_encoders = {k: self.c.encoders[k] for k in self.c.train_names}
        if micro < local:  # gradient caching: memory bounded by one micro-chunk
            res = cached_backward(gen, train_encoders, noise, cond, loss_fn, micro, gather=gather, grad_scale=grad_scale)
        else:  # the whole share fits: the same gradient in one pass
            res = direct_backward(gen, train_encoders, noise, cond, loss_fn, grad_scale=grad_scale, gather=gather)
        self.dist.sum_gradients([p for p in gen.parameters() if p.requires_grad])
        return res

    def diagnose_nonfinite(self, step: int, res) -> str:
        """Why a step was non-finite, found by probing a few samples: the generator's parameters or
        samples, an encoder's features, an encoder's gradient at its input, or the loss itself."""
        from rdmx.components import describe_encoder

        gen = self.c.generator
        if not all(torch.isfinite(p).all() for p in gen.parameters()):
            return "the generator's parameters are non-finite"
        g = step_generator(self.recipe.seed, step, 0)
        n = min(8, self.recipe.train.batch)
        noise = gen.sample_noise(n, g, self.c.device)
        cond = gen.sample_conditions(n, g, self.c.device)
        with torch.no_grad():
            x = gen(noise, cond)
        if not torch.isfinite(x).all():
            return "the generator's samples are non-finite"
        causes = []
        for label in self.c.train_names:
            enc = self.c.encoders[label]
            probe = x.detach().clone().requires_grad_(True)
            f = enc(probe)
            who = describe_encoder(label, enc)
            if not torch.isfinite(f).all():
                causes.append(f"{who} returns non-finite features")
                continue
            if not f.requires_grad:
                causes.append(f"{who} returns features detached from its input (no gradient)")
                continue
            w = torch.randn(f.shape, generator=torch.Generator().manual_seed(0)).to(f.device)
            (f * w).sum().backward()
            if probe.grad is None or not torch.isfinite(probe.grad).all():
                causes.append(f"{who} returns finite features but non-finite gradients at its input")
        if causes:
            return "; ".join(causes)
        raws = {k: float(v) for k, v in res.raws.items()}
        bad = [k for k, v in raws.items() if not math.isfinite(v)]
        if bad:
            return (f"the {self.recipe.estimator.name} loss is non-finite for encoder(s) {', '.join(bad)} although "
                    "their features are finite")
        return "the loss or the generator's gradient is non-finite although every encoder probes finite"

    # -- the loop ----------------------------------------------------------------------------
    def run(self, resume: bool = True, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train to ``train.steps``; resumes from ``checkpoint`` (already loaded and verified) or
        from the output folder's last checkpoint when ``resume``."""
        r, t = self.recipe, self.recipe.train
        t0 = self._t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        gen = self.c.generator
        params = [p for p in gen.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
        start = 0
        ckpt_path = self.out / "checkpoints" / "last.pt"
        ckpt = checkpoint
        if ckpt is None and resume and ckpt_path.is_file():
            ckpt = load_checkpoint(ckpt_path, self.resolved.fingerprint)
        if ckpt is not None:
            start = restore_training(ckpt, ckpt_path, generator=gen, optimizer=self.optimizer,
                                     balancer=self.c.balancer)
            self.state = RunState.from_dict(ckpt["extra"].get("state", {}))
        self.prepare_references()
        if start == 0:
            self.evaluate(0)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=t.steps, initial=start, desc=r.name, unit="step", dynamic_ncols=True)
        streak = 0  # consecutive skipped steps
        for step in range(start, t.steps):
            ts = time.perf_counter()
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_at(step)
            self.optimizer.zero_grad(set_to_none=True)
            res = self.compute_gradient(step)
            loss = float(res.loss)
            finite = math.isfinite(loss) and all(p.grad is None or torch.isfinite(p.grad).all() for p in params)
            if not finite:
                self.state.skipped += 1
                streak += 1
                self.optimizer.zero_grad(set_to_none=True)
                gnorm = float("nan")
                if t.max_consecutive_skips and streak >= t.max_consecutive_skips:
                    raise RdmxError(
                        f"training stopped at step {step + 1}: {streak} consecutive steps had a non-finite loss or "
                        f"gradient and were skipped (train.max_consecutive_skips = {t.max_consecutive_skips}); "
                        f"{self.diagnose_nonfinite(step, res)}. Nothing was trained in those steps; the last "
                        "checkpoint (if any) is intact")
            else:
                streak = 0
                gnorm = float(torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else float("inf")))
                self.optimizer.step()
            raws = {k: float(v) for k, v in res.raws.items()}
            weights_used = dict(self.c.balancer.weights)
            if finite:
                self.c.balancer.update(raws)
            dt = time.perf_counter() - ts
            row = {"loss": loss, "grad_norm": gnorm, "images_per_s": t.batch / dt, "lr": self.lr_at(step),
                   "skipped_steps": self.state.skipped}
            row.update({f"raw/{k}": v for k, v in raws.items()})
            row.update({f"weight/{k}": float(v) for k, v in weights_used.items()})
            self.state.history.append(row)
            done = step + 1
            if done % t.log_every == 0 or done == t.steps:
                self.tracker.log_metrics(row, done)
            if r.eval.every and done % r.eval.every == 0 and done != t.steps:
                self.evaluate(done)
            if t.sample_every and done % t.sample_every == 0:
                self.save_samples(done)
            if t.checkpoint_every and done % t.checkpoint_every == 0:
                self.checkpoint(done)
            if bar is not None:
                last = self.state.evals[max(self.state.evals)] if self.state.evals else {}
                post = {"raw": f"{sum(raws.values()) / max(len(raws), 1):.3g}"}
                if "eval/sw_rK_heldout" in last:
                    post["held-out SW_r"] = f"{last['eval/sw_rK_heldout']:.2f}"
                bar.set_postfix(post)
                bar.update(1)
        if bar is not None:
            bar.close()
        final = self.evaluate(t.steps)
        grid = self.save_samples(t.steps)
        if not self.c.info.is_image and self.dist.main:  # small vector samples (toys): keep them for figures
            torch.save(self.last_samples.cpu(), self.out / "final_samples.pt")
        ckpt = self.checkpoint(t.steps)
        wall = self.state.wall_s + time.perf_counter() - t0
        first_eval = self.state.evals.get(0, {})
        return {
            "recipe": r.name,
            "fingerprint": self.resolved.fingerprint,
            "run_id": self.tracker.run_id,
            "rdmx_version": __version__,
            "steps": t.steps,
            "batch": t.batch,
            "micro_batch": t.micro_batch or t.batch // self.dist.world,
            "world_size": self.dist.world,
            "skipped_steps": self.state.skipped,
            "roles": dict(self.c.roles),
            "floors": self.floors,
            "wall_time_s": round(wall, 2),
            "initial": first_eval,
            "final": final,
            "eval_protocol": {"mmd_r": getattr(self, "mmd_protocol", None)},
            "final_loss": self.state.history[-1]["loss"] if self.state.history else None,
            "sample_grid": str(grid) if grid else None,
            "checkpoint": str(ckpt),
        }


write_json_atomic = write_json  # the one atomic JSON writer lives in rdmx.files
