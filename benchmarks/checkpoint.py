"""What a checkpoint costs a sharded run: rdmx 0.1's save (the full state gathered on rank 0 and
written by it) against the sharded asynchronous save (every rank writes its own shards, DCP's
``async_save``), in one run, on CPU processes (gloo) with the generator sharded by FSDP2 and AdamW
state filled by one step.

For each: seconds to save (until the checkpoint is complete on disk), seconds the training loop is
blocked (the sharded save returns once its CPU copy is staged), peak host RSS of each rank during
the save (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) above its RSS before, bytes
written per rank, and seconds to resume (read, verify, and load into every rank's shards).

    python benchmarks/checkpoint.py                        # pmf-l (0.46 B parameters), 2 processes
    python benchmarks/checkpoint.py --preset pmf-h --world 2
    python benchmarks/checkpoint.py --preset tiny          # seconds, for the test

Then the same figures on paper for pMF-H on 8 and 64 GPUs, from its exact state size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

GiB = 2**30
STATE_BYTES_PER_PARAM = 12  # float32 weights + AdamW's two float32 moments (the checkpoint's content)


def rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> int:
    """Reset the peak RSS (``VmHWM``) to the current RSS; returns it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return rss_now()


def peak() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def build(preset: str):
    """The generator, sharded by FSDP2 over the process group, and AdamW after one step."""
    import torch

    from rdmx.plugins import get_plugins
    from rdmx.train import shard
    from rdmx.train.distributed import from_environment
    from rdmx.train.generator import DataInfo

    dist = from_environment()
    if preset == "tiny":
        gen = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(4)])
        units = list(gen)
    else:
        entry = get_plugins().get("generators", preset)
        config = entry.config(weights="random", zero_init=False)
        torch.manual_seed(0)
        gen = entry.build(config, DataInfo((3, 256, 256), 1000))
        units = shard.shard_units(gen)
    shard.fully_shard_generator(gen, units, torch.device("cpu"), dist.world)
    opt = torch.optim.AdamW([p for p in gen.parameters() if p.requires_grad], lr=1e-4)
    for p in gen.parameters():
        p.grad = torch.ones_like(p) * 1e-3
    opt.step()
    opt.zero_grad(set_to_none=True)
    return gen, opt, dist


def worker(mode: str, preset: str, folder: Path) -> dict:
    """One rank of one save and its resume (``mode``: gathered or sharded), in fresh processes, so
    neither measurement inherits the other's memory."""
    import torch.distributed as tdist

    gen, opt, dist = build(preset)
    out: dict = {"rank": dist.rank, "params": sum(p.numel() for p in gen.parameters())}
    barrier = tdist.barrier
    barrier()
    base = reset_peak()
    t0 = time.perf_counter()
    if mode == "gathered":  # rdmx 0.1: gathered on rank 0 (a collective), written by rank 0; every rank waits
        from rdmx.train.legacy_checkpoint import load_checkpoint, restore_sharded_state, save_checkpoint, training_state

        path = folder / "legacy" / "last.pt"
        state = training_state(gen, opt, True)
        if dist.main:
            save_checkpoint(path, step=1, generator=gen, optimizer=opt, balancer=None, fingerprint="bench",
                            run_id=None, state=state)
        del state
        barrier()
        blocked = seconds = time.perf_counter() - t0
        written = path.stat().st_size if dist.main else 0
    else:  # each rank its own shards; the loop is blocked for the CPU staging only
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        from rdmx.train.checkpointer import Checkpointer

        ckpt = Checkpointer(folder / "sharded", dist, log=lambda m: None)
        state = {"generator": get_model_state_dict(gen), "optimizer": get_optimizer_state_dict(gen, opt)}
        path = ckpt.save(1, state, {"fingerprint": "bench", "sharded": True})
        blocked = time.perf_counter() - t0
        del state
        ckpt.wait()
        barrier()
        seconds = time.perf_counter() - t0
        written = sum(p.stat().st_size for p in path.glob(f"*/__{dist.rank}_*.distcp"))
        if dist.main:
            written += sum(p.stat().st_size for p in [*path.glob("*/.metadata"), path / "state.pt", path / "manifest.json"])
    out.update(save_s=seconds, blocked_s=blocked, rss_before=base, peak_rss=peak(), bytes=written)
    barrier()
    t0 = time.perf_counter()
    if mode == "gathered":
        legacy = load_checkpoint(path, "bench") if dist.main else None
        restore_sharded_state(gen, opt, legacy, path)
        del legacy
    else:
        from rdmx.train.checkpoint import open_checkpoint, restore_state

        restore_state(open_checkpoint(path, "bench", verify=False), {"generator": gen}, gen, opt, dist, ckpt.groups)
        ckpt.close()
    barrier()
    out["resume_s"] = time.perf_counter() - t0
    return out


def launch(mode: str, preset: str, world: int) -> list[dict]:
    """``world`` processes of this script (torchrun-style variables, gloo on 127.0.0.1)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="rdmx-ckpt-bench-") as tmp:
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": str(world),
               "LOCAL_WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", mode, preset, tmp],
                                  env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE, text=True)
                 for r in range(world)]
        outs = [p.communicate()[0] for p in procs]
        if any(p.returncode for p in procs):
            raise SystemExit(f"a worker failed (exit {[p.returncode for p in procs]})")
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def table(runs: dict[str, list[dict]], preset: str) -> str:
    world = len(runs["sharded"])
    params = runs["sharded"][0]["params"]
    head = ["save", "save s", "loop blocked s", "resume s"]
    head += [f"rank {r} RSS before → peak GiB" for r in range(world)] + [f"rank {r} writes GiB" for r in range(world)]
    lines = [f"checkpoint of {preset} ({params / 1e9:.3f} B parameters, FSDP2 over {world} CPU processes, gloo, "
             "AdamW after one step); each save in fresh processes", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for key, name in (("gathered", "gathered on rank 0 (rdmx 0.1)"), ("sharded", "sharded, asynchronous (DCP)")):
        rows = runs[key]
        cells = [f"{max(x['save_s'] for x in rows):.2f}", f"{max(x['blocked_s'] for x in rows):.2f}",
                 f"{max(x['resume_s'] for x in rows):.2f}"]
        cells += [f"{x['rss_before'] / GiB:.2f} → {x['peak_rss'] / GiB:.2f}" for x in rows]
        cells += [f"{x['bytes'] / GiB:.3f}" for x in rows]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    g, s = runs["gathered"], runs["sharded"]
    blocked = max(x["blocked_s"] for x in g) / max(max(x["blocked_s"] for x in s), 1e-9)
    lines += ["", f"loop blocked {blocked:.1f}× less with the sharded save; rank 0's peak above its resident state: "
              f"{(g[0]['peak_rss'] - g[0]['rss_before']) / GiB:.2f} GiB gathered, "
              f"{(s[0]['peak_rss'] - s[0]['rss_before']) / GiB:.2f} GiB sharded (its staging copy)"]
    return "\n".join(lines)


def on_paper(runs: dict[str, list[dict]]) -> str:
    """pMF-H's figures on 8 and 64 GPUs from its state size and this run's write throughput."""
    from rdmx_pmf.presets import PRESETS

    arch = PRESETS["pmf-h"].arch
    params = arch.parameter_count(256, 1000)
    state = params * STATE_BYTES_PER_PARAM
    g0 = runs["gathered"][0]
    writer = g0["bytes"] / max(g0["save_s"], 1e-9)  # one process gathering and writing the whole state (measured)
    lines = ["", f"on paper: pMF-H ({params / 1e9:.3f} B parameters; weights + AdamW moments = {state / GiB:.1f} GiB), "
             f"one writer at this run's {writer / GiB:.2f} GiB/s per process", "",
             "| GPUs | gathered: rank 0 host RAM for the full state | gathered: bytes rank 0 writes | gathered: loop "
             "blocked s | sharded: bytes each rank writes | sharded: loop blocked |", "|---|---|---|---|---|---|"]
    for world in (8, 64):
        per_rank = state / world
        lines.append(f"| {world} | {state / GiB:.1f} GiB (+ its shard {per_rank / GiB:.2f}) | {state / GiB:.1f} GiB | "
                     f"≥ {state / writer:.0f} (all ranks wait) | {per_rank / GiB:.2f} GiB | the staging copy of "
                     f"{per_rank / GiB:.2f} GiB to host memory |")
    lines.append("(the gathered save also sends the whole state through rank 0's collectives; the sharded save's "
                 "disk time overlaps training)")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        result = worker(sys.argv[2], sys.argv[3], Path(sys.argv[4]))
        from rdmx.train.distributed import shutdown

        shutdown()
        print(json.dumps(result))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="pmf-l", help="pmf-b, pmf-l, pmf-h or tiny")
    ap.add_argument("--world", type=int, default=2)
    args = ap.parse_args()
    runs = {mode: launch(mode, args.preset, args.world) for mode in ("gathered", "sharded")}
    print(table(runs, args.preset))
    if args.preset != "tiny":
        print(on_paper(runs))


if __name__ == "__main__":
    main()
