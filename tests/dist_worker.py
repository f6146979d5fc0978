"""Run by tests/test_distributed.py as one torchrun-style rank (or as the single process)."""

import json
import sys

import torch

from rdmx.recipe import load_recipe
from rdmx.train.distributed import shutdown
from rdmx.train.loop import Trainer

out, overrides = sys.argv[1], json.loads(sys.argv[2])
r = load_recipe("recipes/quickstart.toml", overrides)
trainer = Trainer(r, out + "/run", progress=False)
trainer.prepare_references()
trainer.c.generator.zero_grad(set_to_none=True)
trainer.compute_gradient(0)
grads = torch.cat([p.grad.flatten() for p in trainer.c.generator.parameters()])
summary = trainer.run(resume=False)
params = torch.cat([p.detach().flatten() for p in trainer.c.generator.parameters()])
torch.save({"grad": grads, "params": params, "history": trainer.state.history, "summary": summary},
           f"{out}/rank{trainer.dist.rank}-of-{trainer.dist.world}.pt")
shutdown()
