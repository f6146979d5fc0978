"""Run by test_flux2_fsdp.py as one torchrun-style rank (or as the single process): the tiny
FLUX.2 generator's gradient of step 0 and its parameters after two steps, sharded or not."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from flux2_tiny import t2i_recipe  # noqa: E402

from rdmx.train.distributed import shutdown  # noqa: E402
from rdmx.train.loop import Trainer  # noqa: E402


def full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


root, out, train = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
trainer = Trainer(t2i_recipe(root, **train), out, progress=False)
trainer.prepare_references()
gen = trainer.c.generator
gen.zero_grad(set_to_none=True)
trainer.compute_gradient(0)
grads = {n: full(p.grad).detach().clone() for n, p in gen.named_parameters() if p.grad is not None}
summary = trainer.run(resume=False)
params = {n: full(p).detach().clone() for n, p in gen.named_parameters() if p.requires_grad}
if trainer.dist.main:
    torch.save({"grads": grads, "params": params, "sharded": trainer.sharded,
                "units": sum(type(m).__name__.startswith("FSDP") for m in gen.modules()),
                "losses": [h["loss"] for h in trainer.state.history]}, f"{out}/result.pt")
shutdown()
