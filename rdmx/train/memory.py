"""Activation memory, measured the same way on every device: the tensors autograd saves for
backward, counted while they are alive.

:class:`SavedTensorMeter` installs ``torch.autograd.graph.saved_tensors_hooks``: every tensor a
graph saves is counted (once per storage; parameters and views of them excluded) with the module that was running
when it was saved (its *owner*), and uncounted when the graph that holds it is freed. It
reports the peak of live bytes, the live bytes per owner, and the most owners alive at once
(``max_concurrent``): a proof, independent of allocators and timing, of how many encoders'
graphs a training step keeps at the same time. With ``budget_bytes`` it raises
``torch.OutOfMemoryError`` when the live bytes exceed the budget: a deterministic stand-in for a
GPU running out of memory (tests of ``train.micro_batch = "auto"``).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping

import torch


class _Saved:
    """What a graph holds instead of the tensor; its death uncounts the tensor."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


class SavedTensorMeter:
    """Context manager counting live saved-for-backward bytes, per owner module."""

    def __init__(self, owners: Mapping[str, torch.nn.Module] | None = None, budget_bytes: int | None = None):
        self.owners = dict(owners or {})
        self.budget = budget_bytes
        self.live = 0  # bytes alive now
        self.peak = 0
        self.by_owner: dict[str, int] = {}  # live bytes per owner
        self.peak_by_owner: dict[str, int] = {}
        self.max_concurrent = 0  # most owners (other than "other") with live saved tensors at once
        self._storages: dict[int, list] = {}  # storage ptr -> [count, bytes, owner]
        self._stack: list[str] = []
        self._handles: list = []
        self._hooks = None

    # -- owner tracking ------------------------------------------------------------------
    def _push(self, name):
        def hook(module, args):
            self._stack.append(name)
        return hook

    def _pop(self, module, args, out):
        if self._stack:
            self._stack.pop()

    # -- saved tensors ---------------------------------------------------------------------
    def _pack(self, t: torch.Tensor):
        if isinstance(t, torch.nn.Parameter) or isinstance(t._base, torch.nn.Parameter) or t.device.type == "meta":
            return t  # parameters and their views (a linear saves weight.t()) hold no new memory
        owner = self._stack[-1] if self._stack else "other"
        try:
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. sparse, functional)
            ptr, nbytes = id(t), t.numel() * t.element_size()
        entry = self._storages.get(ptr)
        if entry is None:
            entry = self._storages[ptr] = [0, nbytes, owner]
            self._add(owner, nbytes)
        entry[0] += 1
        saved = _Saved(t)
        weakref.finalize(saved, self._release, ptr)
        return saved

    @staticmethod
    def _unpack(saved):
        return saved.tensor if isinstance(saved, _Saved) else saved

    def _add(self, owner: str, nbytes: int) -> None:
        self.live += nbytes
        self.by_owner[owner] = self.by_owner.get(owner, 0) + nbytes
        self.peak = max(self.peak, self.live)
        self.peak_by_owner[owner] = max(self.peak_by_owner.get(owner, 0), self.by_owner[owner])
        alive = sum(1 for k, v in self.by_owner.items() if v > 0 and k != "other")
        self.max_concurrent = max(self.max_concurrent, alive)
        if self.budget is not None and self.live > self.budget:
            raise torch.OutOfMemoryError(
                f"out of memory (simulated): {self.live / 2**20:.1f} MiB of saved activations exceed "
                f"the budget of {self.budget / 2**20:.1f} MiB")

    def _release(self, ptr: int) -> None:
        entry = self._storages.get(ptr)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            del self._storages[ptr]
            self.live -= entry[1]
            self.by_owner[entry[2]] -= entry[1]

    # -- context ---------------------------------------------------------------------------
    def __enter__(self) -> SavedTensorMeter:
        for name, module in self.owners.items():
            self._handles.append(module.register_forward_pre_hook(self._push(name)))
            self._handles.append(module.register_forward_hook(self._pop, always_call=True))
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._stack.clear()
