"""Training-step observers: a method's training loop reports each finished optimiser step and the
end of training, and whoever measures *during* training (the checkpoint sweep) listens.

A method does not know it is being watched: it calls `step_finished(vlm, model, step)` after
each `optimizer.step()` and `training_finished(vlm, model)` after its last one (before it merges
LoRA adapters or freezes the model), which do nothing unless the runner installed a `Watcher`
with `observing(watcher)`. The watcher sees the live model (LoRA adapters unmerged, train mode);
it must leave it as it found it (`evaluation_of`: eval mode and no gradients while it looks,
train mode and every random-number state restored afterwards), so a watched run trains exactly
as an unwatched one. One exception, asked for by the user: at the end of training a watcher may
put back the trainable weights of an earlier step (`snapshot` / `restore`, `--select best`).
"""

from __future__ import annotations

import contextlib
import contextvars
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator


@dataclass(frozen=True)
class Watcher:
    """step(vlm, n): after optimiser step n (from 1); finished(vlm): after the last one, before
    the method merges or freezes the model. Both see the live model as vlm.model."""

    step: Callable[[Any, int], None]
    finished: Callable[[Any], None] | None = None


_WATCHER: contextvars.ContextVar[Watcher | None] = contextvars.ContextVar("mmunlearn_training_watcher", default=None)


@contextlib.contextmanager
def observing(watcher: Watcher | None) -> Iterator[None]:
    """Install `watcher` for the duration (None: nobody watches)."""
    token = _WATCHER.set(watcher)
    try:
        yield
    finally:
        _WATCHER.reset(token)


def step_finished(vlm, model, step: int) -> None:
    """Called by a training loop after optimiser step `step` (1-based) of `model` (vlm's live model)."""
    w = _WATCHER.get()
    if w is None:
        return
    with evaluation_of(model):
        w.step(vlm, step)


def training_finished(vlm, model) -> None:
    """Called by a training loop after its last optimiser step, before merging or freezing `model`."""
    w = _WATCHER.get()
    if w is None or w.finished is None:
        return
    with evaluation_of(model):
        w.finished(vlm)


def snapshot(model) -> dict:
    """A CPU copy of the trainable parameters (requires_grad): what training changes. LoRA: the
    adapters (megabytes); full fine-tuning: a copy of the model in host memory."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def restore(model, snap: dict) -> None:
    """Put a `snapshot` back into the same live model (same parameter names)."""
    import torch

    params = dict(model.named_parameters())
    missing = sorted(set(snap) - set(params))
    if missing:
        raise RuntimeError(f"cannot restore a training snapshot: the model has no parameter {missing[0]!r}")
    with torch.no_grad():
        for n, value in snap.items():
            params[n].copy_(value.to(params[n].device))


@contextlib.contextmanager
def evaluation_of(model) -> Iterator[None]:
    """Eval mode and no gradients inside; the model's mode and every RNG state (Python, NumPy,
    torch) restored on exit, so the training that continues draws the same dropout masks and
    batches it would have drawn."""
    import numpy as np
    import torch

    was_training = model.training
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):  # CPU generator; CUDA generators are not used by evaluation
        model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            model.train(was_training)
            random.setstate(py_state)
            np.random.set_state(np_state)
