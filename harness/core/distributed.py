"""Data parallelism across processes (`accelerate launch --num_processes N -m mmunlearn.harness.app.cli run ...`).

accelerate sets the process group up (gloo on CPU, NCCL on GPUs); this module gives the rest of
the harness the handful of collective operations it needs, and degrades to a single process
when nothing was launched, so every caller can use it unconditionally:
- evaluation: the batch plan is split round-robin across ranks, each rank appends to its own
  samples file, rank 0 merges them and writes results.json;
- MANU: each rank streams the statistics of its share of the samples; the sums are all-reduced;
- training methods: each step's batch is split across ranks and gradients are summed (the
  same update as one process on the whole batch, what DDP does).
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache


def launched() -> bool:
    """True when started by a launcher (accelerate / torchrun) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@lru_cache(maxsize=1)
def _state():
    from accelerate import PartialState
    import torch

    return PartialState(cpu=not torch.cuda.is_available())


def rank() -> int:
    return _state().process_index if launched() else 0


def world_size() -> int:
    return _state().num_processes if launched() else 1


def is_main() -> bool:
    return rank() == 0


def local_device() -> str | None:
    """This process's device under a launcher (its own GPU), else None (the caller's default)."""
    return str(_state().device) if launched() else None


def barrier() -> None:
    if launched():
        _state().wait_for_everyone()


def shard(items: list, r: int | None = None, n: int | None = None) -> list:
    """This rank's share of `items`: every n-th item starting at r (round-robin keeps shares
    within one item of each other and keeps each rank's order)."""
    r = rank() if r is None else r
    n = world_size() if n is None else n
    return list(items[r::n])


def all_reduce_sum_(tensor):
    """Sum a torch tensor over ranks, in place (no-op in a single process)."""
    if launched():
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_grads_(params) -> None:
    """Sum the gradients of `params` over ranks, in place: one collective per dtype over the
    flattened gradients (a missing gradient counts as zeros), as DDP's buckets do."""
    if not launched():
        return
    import torch

    by_dtype: dict = {}
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        all_reduce_sum_(flat)
        for p, part in zip(group, flat.split([p.grad.numel() for p in group])):
            p.grad.copy_(part.view_as(p.grad))


def all_reduce_sum_numpy(array):
    """Sum a NumPy array over ranks (returns a new array; float64 kept). The sum runs on this
    rank's device: NCCL, the backend on GPUs, refuses CPU tensors."""
    if not launched():
        return array
    import numpy as np
    import torch

    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)).to(_state().device)
    all_reduce_sum_(t)
    return t.cpu().numpy()


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order (a one-item list in a single process)."""
    if not launched():
        return [obj]
    import torch.distributed as dist

    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    """Leave the process group together: a final barrier, then destroy it, so no rank exits
    while another still talks to it (an abort at interpreter exit otherwise)."""
    if launched():
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def exit_launched_process(code: int) -> None:
    """Under a launcher, end this process now with `code`, skipping interpreter finalization
    (returns at once in a single process). Why: gloo's worker threads release the tensors of
    finished collectives after the caller has moved on; one still waiting for the GIL when the
    interpreter finalizes is killed mid-destructor, which aborts the process (SIGABRT, exit -6)
    after a run that wrote all its results.
    Everything this harness writes is fsynced before this point; the streams are flushed here."""
    if not launched():
        return
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
