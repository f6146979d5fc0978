"""The training loop (CPU, one GPU, or data-parallel under torchrun, optionally with the
generator sharded by FSDP2): gradient-cached steps, balancing, evaluation at step 0 and every K
steps, sample grids, atomic checkpoints, tracking. Running out of memory anywhere is one message
naming the setting to lower."""

from __future__ import annotations

import contextlib
import math
import sys
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
from rdmx.train import micro_batch as auto_micro
from rdmx.train import shard
from rdmx.train.checkpoint import Checkpoint, latest, open_checkpoint, restore_state
from rdmx.train.checkpointer import Checkpointer
from rdmx.train.ema import GeneratorEMA
from rdmx.train.stop import RunStopped, StopRequest, agree, signal_name
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
    loop_s: float = 0.0  # time in the training loop over those sessions (train.max_seconds counts it)

    def to_dict(self) -> dict[str, Any]:
        return {"history": self.history, "evals": {str(k): v for k, v in self.evals.items()},
                "skipped": self.skipped, "wall_s": self.wall_s, "loop_s": self.loop_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        return cls(list(d.get("history", [])), {int(k): v for k, v in d.get("evals", {}).items()},
                   int(d.get("skipped", 0)), float(d.get("wall_s", 0.0)), float(d.get("loop_s", 0.0)))


class Trainer:
    """Runs one resolved recipe end to end."""

    def __init__(self, resolved: ResolvedRecipe, out_dir: str | Path, tracker: Tracker | None = None,
                 progress: bool = True, components: Components | None = None, dist: DistContext | None = None):
        self.resolved = resolved
        self.recipe = resolved.recipe
        self.out = Path(out_dir)
        self.dist = dist or from_environment()
        self._bar = None  # the progress bar while the steps run
        self._loop_t0: float | None = None  # when this session's training loop started
        t = self.recipe.train
        fixed = 1 if t.micro_batch == "auto" else (t.micro_batch or 1)
        if t.batch % (fixed * self.dist.world):
            raise RdmxError(
                f"train.batch ({t.batch}) must be a multiple of micro_batch × world size "
                f"({fixed} × {self.dist.world}): N = micro_batch × world_size × accumulation"
            )
        self.tracker = (tracker or NullTracker()) if self.dist.main else NullTracker()
        self.progress = progress and self.dist.main
        self.c = components or build_components(resolved, local_rank=self.dist.local_rank)
        self.refs: dict[str, Any] = {}
        self.joint_condition = None  # text-joint law: generated rows' prompt ids -> τ(prompt)
        self.text_eval = None  # text-joint SW_r / MMDr inputs (rdmx.train.evaluation.text_joint_eval)
        self.state = RunState()
        self.sharded = self._prepare_generator()
        # the EMA (and post-hoc profiles) of the generator: float32 copies of its parameters' shards
        self.ema = GeneratorEMA(self.c.generator, t.ema, t.batch) if t.ema is not None else None
        if t.micro_batch == "auto" and self.sharded:
            raise RdmxError(
                "train.micro_batch = 'auto' cannot probe a generator sharded with FSDP2 (train.shard = \"fsdp\"): "
                "its forward and backward are collectives, and an out-of-memory error on one rank would leave "
                "the others waiting; probe it unsharded on one GPU, or set train.micro_batch")
        self._micro: int | None = None if t.micro_batch == "auto" else min(t.micro_batch or self.local_batch,
                                                                         self.local_batch)
        self.probe_budget: int | None = None  # saved-activation budget of the "auto" probe (default: see micro_batch)
        self.phase = None  # a phase(name) context factory for benchmarks (rdmx.train.gradcache.PHASES, update, balancer)
        self.cache_mode = "image"  # where phase 3 caches the loss gradient (benchmarks compare "features")
        self.streak = 0  # consecutive skipped steps
        self.last_skip = None  # (step, result) of the last skipped step: its cause is diagnosed at the end
        self._checkpointer: Checkpointer | None = None
        self._t0 = self._saved_at = time.perf_counter()

    @property
    def checkpointer(self) -> Checkpointer:
        """This run's checkpoint writer (rdmx.train.checkpointer); made on first use, by every rank."""
        if self._checkpointer is None:
            t = self.recipe.train
            self._checkpointer = Checkpointer(self.out / "checkpoints", self.dist, keep_last=t.keep_last,
                                              keep_every=t.keep_every, milestones=t.milestones, log=self.log)
        return self._checkpointer

    def _prepare_generator(self) -> bool:
        """Activation checkpointing, FSDP2 sharding and torch.compile as the recipe asks; True when
        the generator is sharded."""
        t = self.recipe.train
        gen = self.c.generator
        units = shard.shard_units(gen)
        asked = [n for n, on in (("activation checkpointing", t.activation_checkpointing),
                                  ("sharding", t.shard == "fsdp")) if on]
        if asked and not units:
            self.log(f"generator '{self.recipe.generator.name}' lists no shard_units(): "
                     f"{' and '.join(asked)} will treat it as one block")
            units = [gen] if t.activation_checkpointing else []
        if t.activation_checkpointing:
            shard.checkpoint_units(units)
        sharded = False
        if t.shard == "fsdp":
            if self.dist.world > 1:
                shard.fully_shard_generator(gen, [u for u in units if u is not gen], self.c.device, self.dist.world)
                sharded = True
            else:
                self.log("train.shard = 'fsdp' in one process: the generator is not sharded")
        if t.compile:
            shard.compile_modules(gen, self.c.encoders)
        return sharded

    def log(self, message: str) -> None:
        """A line on stderr from rank 0 (run set-up decisions: the probed micro batch, sharding)."""
        if not self.dist.main:
            return
        if self._bar is not None:  # above the progress bar, which is drawn again below it
            from tqdm import tqdm

            tqdm.write(f"rdmx: {message}", file=sys.stderr)
        else:
            print(f"rdmx: {message}", file=sys.stderr, flush=True)

    # -- batch geometry ----------------------------------------------------------------------
    @property
    def local_batch(self) -> int:
        """This process's rows of the global batch N."""
        return self.recipe.train.batch // self.dist.world

    @property
    def micro_batch(self) -> int:
        """The gradient-caching chunk (``train.micro_batch``; probed once when "auto")."""
        if self._micro is None:
            train_encoders = {k: self.c.encoders[k] for k in self.c.train_names}
            try:
                m = auto_micro.probe_micro_batch(self.c.generator, train_encoders, self.local_batch, self.c.device,
                                                 budget_bytes=self.probe_budget, log=self.log)
            finally:
                auto_micro.free_memory(self.c.device)
            self._micro = auto_micro.agree(m, self.c.device)
            if self._micro != m:
                self.log(f"train.micro_batch = 'auto': {self._micro}, the smallest over the ranks")
            self.tracker.log_metrics({"micro_batch": float(self._micro)}, 0)
        return self._micro

    @property
    def accumulation(self) -> int:
        return self.local_batch // self.micro_batch

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
            **r.reference.real_rows(r.eval),
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

    @property
    def eval_chunk(self) -> int:
        """Samples generated and encoded at once in evaluation: ``eval.chunk``, else 4 × micro batch."""
        return eval_chunk(self.recipe, self.micro_batch)

    def generate(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` samples from fixed noise (the same for every checkpoint with the same seed)."""
        return generate(self.c.generator, n, seed, self.eval_chunk, self.c.device)

    def evaluate(self, step: int) -> dict[str, float]:
        """Off-objective evaluation of the current generator (see rdmx.train.evaluation): every rank
        generates and encodes a share of the samples, rank 0 computes, tracks and returns the metrics."""
        if self.dist.main and self.text_eval is None and self.recipe.joint.kind == "text":
            self.text_eval = text_joint_eval(self.c, self.recipe, self.refs, self.joint_condition)
        with self.out_of_memory(f"the evaluation at step {step}", "eval.chunk", self.eval_chunk):
            ev = evaluate_generator(self.c.generator, self.c.encoders, self.c.roles, self.refs, self.recipe.eval,
                                    chunk=self.eval_chunk, device=self.c.device, metrics=self.c.metrics,
                                    data=self.c.data, step=step, keep_samples=not self.c.info.is_image,
                                    text=self.text_eval, dist=self.dist)
        metrics = {}
        if ev is not None:
            self.last_samples = ev.samples
            self.mmd_protocol = ev.result.settings.get("mmd_protocol")
            self.mmd_real_rows = ev.result.settings.get("mmd_real_rows")
            metrics = {f"eval/{k}": v for k, v in ev.scalars().items()}
        if self.ema is not None and "ema" in self.ema.averages and step > 0:  # the EMA, on the same samples' noise
            with self.ema.swapped_in("ema"), self.out_of_memory(f"the EMA's evaluation at step {step}", "eval.chunk",
                                                                 self.eval_chunk):
                ev_ema = evaluate_generator(self.c.generator, self.c.encoders, self.c.roles, self.refs,
                                            self.recipe.eval, chunk=self.eval_chunk, device=self.c.device,
                                            metrics=self.c.metrics, data=self.c.data, step=step,
                                            keep_samples=False, text=self.text_eval, dist=self.dist)
            if ev_ema is not None:
                metrics.update({f"eval_ema/{k}": v for k, v in ev_ema.scalars().items()})
        if not metrics:
            return {}
        self.state.evals[step] = metrics
        self.tracker.log_metrics(metrics, step)
        return metrics

    def save_samples(self, step: int) -> Path | None:
        """A labelled grid from fixed noise (rank 0 writes it; a sharded generator runs on every rank)."""
        if not self.c.info.is_image or not (self.dist.main or self.sharded):
            return None
        cols = 8
        cond, labels, rows = grid_conditions(self.c.info, cols, self.c.device)  # a row per class / prompt
        gen = self.c.generator
        g = torch.Generator().manual_seed(self.recipe.seed + 777)
        noise = gen.sample_noise(rows * cols, g, self.c.device)
        chunk = self.eval_chunk
        was = gen.training
        gen.eval()
        with torch.no_grad():
            imgs = torch.cat([gen(noise[s : s + chunk], None if cond is None else cond[s : s + chunk])
                              for s in range(0, len(noise), chunk)])
        gen.train(was)
        if not self.dist.main:
            return None
        path = save_grid(imgs, self.out / "samples" / f"step-{step:06d}.png", labels=labels, columns=cols,
                         scale=max(1, 64 // imgs.shape[-1]), title=f"{self.recipe.name} step {step}")
        self.tracker.log_artifact(path, "samples")
        return path

    def training_state(self) -> dict[str, Any]:
        """The DCP state-dict entries of a checkpoint: this rank's shards of the generator and of the
        optimiser state (keyed by parameter name; left out before the optimiser's first step)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        state = {"generator": get_model_state_dict(self.c.generator)}
        if self.optimizer.state:
            state["optimizer"] = get_optimizer_state_dict(self.c.generator, self.optimizer)
        if self.ema is not None:
            state.update(self.ema.state_dicts())
        return state

    def checkpoint(self, step: int, block: bool = False) -> Path:
        """A sealed checkpoint of step ``step`` (rdmx.train.checkpoint), written in the background
        unless ``block``; every rank writes its own shards."""
        state = RunState(self.state.history, self.state.evals, self.state.skipped,
                         self.state.wall_s + time.perf_counter() - self._t0, self.loop_seconds())
        small = {"fingerprint": self.resolved.fingerprint, "run_id": self.tracker.run_id, "sharded": self.sharded,
                 "balancer": self.c.balancer.state_dict(),
                 "extra": {"state": state.to_dict(), "micro_batch": self.micro_batch,
                           "encoders": self.encoder_weights()},
                 "ema": self.ema.small_state() if self.ema is not None else None}
        self._saved_at = time.perf_counter()
        return self.checkpointer.save(step, self.training_state(), small, block=block)

    def compute_gradient(self, step: int):
        """Accumulate into the generator's ``.grad`` the full-batch gradient ``s·∇L`` of step ``step``'s loss.

        Every rank draws the same global noise and keeps its slice; gradient caching bounds memory
        by one micro-chunk and one encoder; under torchrun the features are gathered and the
        gradients summed (by FSDP2's reduce-scatter when sharded), so every rank holds the
        single-process gradient (its shard of it when sharded).

        The gradient scale s is decided here and only here: ``train.loss_scale`` (a number s, or the
        release's ``b / N`` for a reference per-GPU batch b). It never depends on the micro batch or
        the world size, so the clip threshold and the learning rate mean the same on any hardware."""
        r, t = self.recipe, self.recipe.train
        gen = self.c.generator
        local = self.local_batch  # this rank's share of the global batch N
        micro = self.micro_batch
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
        if micro < local:  # gradient caching: memory bounded by one micro-chunk and one encoder
            res = cached_backward(gen, train_encoders, noise, cond, loss_fn, micro, gather=gather,
                                  grad_scale=grad_scale, mode=self.cache_mode, phase=self.phase)
        else:  # the whole share fits: the same gradient in one pass
            res = direct_backward(gen, train_encoders, noise, cond, loss_fn, grad_scale=grad_scale, gather=gather)
        if not self.sharded:  # FSDP2 sums in its reduce-scatter
            self.dist.sum_gradients([p for p in gen.parameters() if p.requires_grad])
        return res

    def diagnose_nonfinite(self, step: int, res) -> str:
        """Why a step was non-finite, found by probing a few samples: the generator's parameters or
        samples, an encoder's features, an encoder's gradient at its input, or the loss itself."""
        from rdmx.components import describe_encoder

        gen = self.c.generator
        if not all(torch.isfinite(shard.local(p)).all() for p in gen.parameters()):
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

    def grads_finite(self, params) -> bool:
        """Every gradient finite (on every rank's shard when sharded)."""
        ok = all(p.grad is None or bool(torch.isfinite(shard.local(p.grad)).all()) for p in params)
        return bool(auto_micro.agree(int(ok), self.c.device)) if self.sharded else ok

    def out_of_memory(self, where: str, setting: str, value, extra: str = ""):
        """Turn ``torch.OutOfMemoryError`` in the block into one message naming ``setting``."""
        return auto_micro.out_of_memory_hint(where, setting, value, extra, device=self.c.device)

    def resume(self, checkpoint: Checkpoint | None = None, allowed: bool = True) -> int:
        """Restore generator, optimiser, balancer, RNG and run history from ``checkpoint`` (located
        already) or, when ``allowed``, from the newest sealed checkpoint in ``out/checkpoints``;
        returns the step to start at. Every rank reads its own shards (any world size)."""
        ckpt = checkpoint
        if ckpt is None and allowed:
            found = latest(self.out / "checkpoints")
            if found is not None:
                ckpt = open_checkpoint(found, self.resolved.fingerprint, verify=False)
        if ckpt is None:
            return 0
        self._check_encoders(ckpt)
        if ckpt.legacy is not None:
            self._restore_legacy(ckpt)
        else:
            self._restore(ckpt)
        self.state = RunState.from_dict(ckpt.extra.get("state", {}))
        return ckpt.step

    def encoder_weights(self) -> dict[str, dict[str, str]]:
        """Every encoder's fingerprint and the weights it loaded (a hub commit or a file's digest)."""
        return {name: {"fingerprint": enc.spec.fingerprint(), "checkpoint": enc.spec.checkpoint,
                       "revision": enc.spec.revision}
                for name, enc in self.c.encoders.items() if hasattr(enc, "spec")}

    def _check_encoders(self, ckpt: Checkpoint) -> None:
        """Refuse to resume with encoders other than those the run started with: weights that moved
        upstream (a newer snapshot in the cache) would silently change the objective mid-run."""
        then = ckpt.extra.get("encoders") or {}
        for name, now in self.encoder_weights().items():
            old = then.get(name)
            if old is None or old["fingerprint"] == now["fingerprint"]:
                continue
            if old["revision"] != now["revision"]:
                what = (f"its weights are now revision {now['revision'][:12] or '(none)'}, the run started with "
                        f"{old['revision'][:12] or '(none)'}; pin that one (rdmx weights pin, RDMX_WEIGHTS_PINS) to "
                        f"go on")
            else:
                what = "its fingerprint changed (its code or settings)"
            raise RdmxError(f"{ckpt.path}: encoder '{name}' ({now['checkpoint']}) is not the one this run started "
                            f"with: {what}, or start over with --fresh")

    def _restore(self, ckpt: Checkpoint) -> None:
        """The sharded format: every rank verifies a share of the files and reads its own shards
        (rdmx.train.checkpoint.restore_state), then the balancer and this rank's RNG."""
        entries = {"generator": self.c.generator, **(self.ema.state_dicts() if self.ema is not None else {})}
        restore_state(ckpt, entries, self.c.generator, self.optimizer, self.dist, self.checkpointer.groups)
        if self.ema is not None:
            self.ema.load_small_state(ckpt.small.get("ema") or {})
        if ckpt.small.get("balancer") is not None:
            try:
                self.c.balancer.load_state_dict(ckpt.small["balancer"])
            except (RuntimeError, KeyError, TypeError, ValueError, IndexError, RdmxError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise RdmxError(f"{ckpt.path}: its balancer state cannot be restored ({first}); start over with "
                                "--fresh") from None
        rngs = ckpt.small.get("rng") or []
        if rngs:  # this rank's own when the world size is the one saved, else rank 0's
            mine = rngs[self.dist.rank] if len(rngs) == self.dist.world else rngs[0]
            torch.set_rng_state(mine["torch"])
            if mine.get("cuda") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(list(mine["cuda"])[: torch.cuda.device_count()])

    def _restore_legacy(self, ckpt: Checkpoint) -> None:
        """rdmx 0.1's single file (rdmx.train.legacy_checkpoint); sharded: rank 0 broadcasts it."""
        from rdmx.train.legacy_checkpoint import restore_sharded_state, restore_training

        if not self.sharded:
            restore_training(ckpt.legacy, ckpt.path, generator=self.c.generator, optimizer=self.optimizer,
                             balancer=self.c.balancer)
            return
        restore_sharded_state(self.c.generator, self.optimizer, ckpt.legacy if self.dist.main else None, ckpt.path)
        if ckpt.legacy.get("balancer") is not None:
            self.c.balancer.load_state_dict(ckpt.legacy["balancer"])
        torch.set_rng_state(ckpt.legacy["torch_rng"])

    def make_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the generator's trainable parameters (their shards when sharded)."""
        t = self.recipe.train
        self.params = [p for p in self.c.generator.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
        return self.optimizer

    def _phase(self, name: str):
        return self.phase(name) if self.phase is not None else contextlib.nullcontext()

    def train_step(self, step: int) -> dict[str, float]:
        """One optimisation step: the full-batch gradient of the step's loss, skipped when not
        finite, clipped, AdamW, then the balancer's update; returns the row that is logged."""
        t = self.recipe.train
        ts = time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        self.optimizer.zero_grad(set_to_none=True)
        with self.out_of_memory(f"training step {step}", "train.micro_batch", self.micro_batch,
                                " or set train.micro_batch = \"auto\""):
            res = self.compute_gradient(step)
        with self._phase("update"):
            loss = float(res.loss)
            finite = math.isfinite(loss) and self.grads_finite(self.params)
            if not finite:
                self.state.skipped += 1
                self.streak += 1
                self.last_skip = (step, res)
                self.optimizer.zero_grad(set_to_none=True)
                gnorm = float("nan")
                if t.max_consecutive_skips and self.streak >= t.max_consecutive_skips:
                    raise RdmxError(
                        f"training stopped at step {step + 1}: {self.streak} consecutive steps had a non-finite loss "
                        f"or gradient and were skipped (train.max_consecutive_skips = {t.max_consecutive_skips}); "
                        f"{self.diagnose_nonfinite(step, res)}. Nothing was trained in those steps; the last "
                        "checkpoint (if any) is intact")
            else:
                self.streak = 0
                norm = torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip if t.grad_clip > 0 else float("inf"))
                gnorm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(step + 1)
        with self._phase("balancer"):
            raws = {k: float(v) for k, v in res.raws.items()}
            weights_used = dict(self.c.balancer.weights)
            if finite:
                self.c.balancer.update(raws)
        dt = time.perf_counter() - ts
        row = {"loss": loss, "grad_norm": gnorm, "images_per_s": t.batch / dt, "lr": self.lr_at(step),
               "skipped_steps": self.state.skipped}
        row.update({f"raw/{k}": v for k, v in raws.items()})
        row.update({f"weight/{k}": float(v) for k, v in weights_used.items()})
        return row

    # -- the loop ----------------------------------------------------------------------------
    def trained(self) -> bool:
        """Whether the run trained: at most ``train.max_skipped_fraction`` of its steps skipped."""
        t = self.recipe.train
        return self.state.skipped <= t.max_skipped_fraction * max(t.steps, 1)

    def untrained_message(self) -> str:
        t = self.recipe.train
        cause = self.diagnose_nonfinite(*self.last_skip) if self.last_skip is not None else "cause unknown (resumed)"
        return (f"the run skipped {self.state.skipped} of its {t.steps} steps for a non-finite loss or gradient "
                f"(more than train.max_skipped_fraction = {t.max_skipped_fraction}): it did not train; {cause}. Its "
                f"summary says trained = false")

    def loop_seconds(self) -> float:
        """Seconds in the training loop, this session's and the earlier ones' (train.max_seconds)."""
        now = time.perf_counter() - self._loop_t0 if self._loop_t0 is not None else 0.0
        return self.state.loop_s + now

    def budget_spent(self) -> bool:
        t = self.recipe.train
        return bool(t.max_seconds) and self.loop_seconds() >= t.max_seconds

    def checkpoint_due(self, done: int) -> bool:
        """``train.checkpoint_every`` steps, or ``train.checkpoint_minutes`` of training, since the last one."""
        t = self.recipe.train
        if t.checkpoint_every and done % t.checkpoint_every == 0:
            return True
        return bool(t.checkpoint_minutes) and time.perf_counter() - self._saved_at >= 60 * t.checkpoint_minutes

    def run(self, resume: bool = True, checkpoint: Checkpoint | None = None) -> dict[str, Any]:
        """Train to ``train.steps``; resumes from ``checkpoint`` (located already) or from the
        output folder's newest sealed checkpoint when ``resume``. A stop signal ends it with
        :class:`RunStopped` after a checkpoint (see rdmx.train.stop)."""
        r, t = self.recipe, self.recipe.train
        t0 = self._t0 = self._saved_at = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        stop = StopRequest(t.stop_signals, rank=self.dist.rank)
        try:
            with stop:
                return self._run(stop, resume, checkpoint, t0)
        finally:  # a save in flight is sealed before the process ends (bounded when ranks may be gone)
            if self._checkpointer is not None:
                self._checkpointer.close(timeout=None if self.dist.world == 1 else 600)
                self._checkpointer = None

    def _run(self, stop: StopRequest, resume: bool, checkpoint: Checkpoint | None, t0: float) -> dict[str, Any]:
        r, t = self.recipe, self.recipe.train
        self.make_optimizer()
        # resume (model, optimiser, balancer, RNG, step, history) from the given or the newest checkpoint
        self.streak = 0
        start = self.resume(checkpoint, allowed=resume)
        # the encoders' behavioural contract on a few generated images (rdmx.testing.contract), then
        # the frozen references, floors and evaluation banks (cached by fingerprint)
        from rdmx.train.build import check_behaviour

        check_behaviour(self.c)
        with self.out_of_memory("the reference build", "reference.batch_size", r.reference.batch_size):
            self.prepare_references()
        if start == 0:
            self.evaluate(0)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = self._bar = tqdm(total=t.steps, initial=start, desc=r.name, unit="step", dynamic_ncols=True)
        saved = start
        done = start
        self._loop_t0 = time.perf_counter()
        budget_out = bool(t.max_seconds) and self.state.loop_s >= t.max_seconds  # resumed with its budget used
        with stop.at_step_boundaries():
            for step in range(start, t.steps if not budget_out else start):
                # one step, then logging, evaluation, samples and checkpoints on their schedules
                row = self.train_step(step)
                raws = {k[4:]: v for k, v in row.items() if k.startswith("raw/")}
                self.state.history.append(row)
                done = step + 1
                if done % t.log_every == 0 or done == t.steps:
                    self.tracker.log_metrics(row, done)
                if r.eval.every and done % r.eval.every == 0 and done != t.steps:
                    self.evaluate(done)
                if t.sample_every and done % t.sample_every == 0:
                    self.save_samples(done)
                if bar is not None:
                    last = self.state.evals[max(self.state.evals)] if self.state.evals else {}
                    post = {"raw": f"{sum(raws.values()) / max(len(raws), 1):.3g}"}
                    if "eval/sw_rK_heldout" in last:
                        post["held-out SW_r"] = f"{last['eval/sw_rK_heldout']:.2f}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
                # the step boundary: the ranks agree on a stop request, a checkpoint being due, the budget
                stopping, due, budget_out = agree(
                    [stop.number, int(self.dist.main and self.checkpoint_due(done)),
                     int(self.dist.main and self.budget_spent() and done < t.steps)], self.dist, self.c.device)
                if (due or stopping) and not budget_out:
                    self.checkpoint(done, block=bool(stopping))
                    saved = done
                if stopping:
                    if bar is not None:
                        bar.close()
                        self._bar = None
                    raise RunStopped(signal_name(stopping), done, self.out / "checkpoints" / f"step-{done:06d}")
                if budget_out:
                    self.log(f"train.max_seconds = {t.max_seconds:g} spent after step {done} of {t.steps}: the run "
                             f"ends here (a larger budget continues it)")
                    break
        if bar is not None:
            bar.close()
            self._bar = None
        self.state.loop_s, self._loop_t0 = self.loop_seconds(), None
        # the last step's checkpoint (before the final evaluation: a stop during it loses no step)
        ckpt = self.checkpoint(done) if saved != done else self.out / "checkpoints" / f"step-{done:06d}"
        final = self.evaluate(done)
        grid = self.save_samples(done)
        if not self.c.info.is_image and self.dist.main:  # small vector samples (toys): keep them for figures
            torch.save(self.last_samples.cpu(), self.out / "final_samples.pt")
        self.checkpointer.wait()
        wall = self.state.wall_s + time.perf_counter() - t0
        first_eval = self.state.evals.get(0, {})
        return {
            "recipe": r.name,
            "fingerprint": self.resolved.fingerprint,
            "run_id": self.tracker.run_id,
            "rdmx_version": __version__,
            "steps": t.steps,
            "steps_done": done,
            "stopped_by_budget": done < t.steps,
            "loop_s": round(self.state.loop_s, 2),
            "max_seconds": t.max_seconds,
            "batch": t.batch,
            "micro_batch": self.micro_batch,
            "accumulation": self.accumulation,
            "world_size": self.dist.world,
            "sharded": self.sharded,
            "skipped_steps": self.state.skipped,
            "trained": self.trained(),
            "roles": dict(self.c.roles),
            "floors": self.floors,
            "wall_time_s": round(wall, 2),
            "initial": first_eval,
            "final": final,
            "eval_protocol": {"mmd_r": getattr(self, "mmd_protocol", None),
                              "mmd_r_real_rows": getattr(self, "mmd_real_rows", None)},
            "final_loss": self.state.history[-1]["loss"] if self.state.history else None,
            "sample_grid": str(grid) if grid else None,
            "checkpoint": str(ckpt),
        }


def eval_chunk(recipe, micro_batch: int) -> int:
    """``eval.chunk``, or 4 × the training micro batch (evaluation keeps no graph, so it affords more)."""
    return recipe.eval.chunk or 4 * micro_batch


write_json_atomic = write_json  # the one atomic JSON writer lives in rdmx.files
