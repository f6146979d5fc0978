"""Run by tests/test_cluster.py as one torchrun-style rank (or as the single process).

``save OUT OVERRIDES``: train the tiny quickstart to its last step (a sealed checkpoint) and dump
the full training state; ``restore OUT OVERRIDES``: a fresh trainer resumes from OUT's newest
checkpoint, on this world size, and dumps what it restored. The dumps hold full tensors (gathered
from the shards by the test's own code, not by the checkpoint's)."""

import json
import sys

import torch

from rdmx.recipe import load_recipe
from rdmx.train.distributed import shutdown
from rdmx.train.loop import Trainer


def full_state(trainer) -> dict:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True)
    gen = trainer.c.generator
    return {
        "params": {k: v.clone() for k, v in get_model_state_dict(gen, options=opts).items()},
        "optim": get_optimizer_state_dict(gen, trainer.optimizer, options=opts)["state"],
        "balancer": trainer.c.balancer.state_dict(),
        "history": [h["loss"] for h in trainer.state.history],
        "sharded": trainer.sharded,
        "ema": {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).clone()
                for k, v in (trainer.ema.state_dicts()["ema"].items() if trainer.ema else [])},
        "ema_updates": trainer.ema.updates if trainer.ema else None,
    }


mode, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
r = load_recipe("recipes/quickstart.toml", overrides)
trainer = Trainer(r, out + "/run", progress=False)
if mode == "save":
    summary = trainer.run(resume=False)
    state, step = full_state(trainer), summary["steps"]
else:
    trainer.make_optimizer()
    step = trainer.resume()
    state = full_state(trainer)
    trainer.checkpointer.close()
state["step"] = step
if trainer.dist.main:
    torch.save(state, f"{out}/{mode}-world{trainer.dist.world}.pt")
shutdown()
