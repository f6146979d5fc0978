"""Run by tests/test_fsdp.py as one torchrun-style rank (or as the single process): the gradient
of step 0, a straight run, and a run killed after its step-2 checkpoint then resumed."""

import json
import sys

import torch

from rdmx.recipe import load_recipe
from rdmx.train.distributed import shutdown
from rdmx.train.loop import Trainer


def full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def flat(tensors):
    return torch.cat([full(t).detach().flatten() for t in tensors])


class Killed(Trainer):
    def checkpoint(self, step, **kw):
        path = super().checkpoint(step, **kw)
        if step == 2:
            raise KeyboardInterrupt
        return path


out, overrides = sys.argv[1], json.loads(sys.argv[2])
r = load_recipe("recipes/quickstart.toml", overrides)
trainer = Trainer(r, out + "/straight", progress=False)
trainer.prepare_references()
trainer.c.generator.zero_grad(set_to_none=True)
trainer.compute_gradient(0)
grads = flat(p.grad for p in trainer.c.generator.parameters())
summary = trainer.run(resume=False)
straight = flat(trainer.c.generator.parameters())
try:
    Killed(r, out + "/resumed", progress=False).run(resume=False)
except KeyboardInterrupt:
    pass
resumed_trainer = Trainer(r, out + "/resumed", progress=False)
resumed_summary = resumed_trainer.run(resume=True)
resumed = flat(resumed_trainer.c.generator.parameters())
rank = trainer.dist.rank
torch.save({"grad": grads, "params": straight, "resumed": resumed, "history": trainer.state.history,
            "resumed_history": resumed_trainer.state.history, "summary": summary,
            "sharded": trainer.sharded, "units": sum(type(m).__name__.startswith("FSDP")
                                                      for m in trainer.c.generator.modules())},
           f"{out}/rank{rank}-of-{trainer.dist.world}.pt")
shutdown()
