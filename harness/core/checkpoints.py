"""Training-step observers: a method's training loop reports each finished optimiser step, and
whoever measures *during* training (the checkpoint sweep) listens.

A method does not know it is being watched: it calls `step_finished(vlm, model, step)` after
each `optimizer.step()`, which does nothing unless the runner installed an observer with
`observing(fn)`. The observer sees the live model (LoRA adapters unmerged, train mode); it must
leave it as it found it (`evaluation_of`: eval mode and no gradients while it looks, train mode
and every random-number state restored afterwards), so a watched run trains exactly as an
unwatched one.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
from typing import Any, Callable, Iterator

Observer = Callable[[Any, int], None]  # (vlm whose .model is the live model, step number from 1)
_OBSERVER: contextvars.ContextVar[Observer | None] = contextvars.ContextVar("mmunlearn_training_observer", default=None)


@contextlib.contextmanager
def observing(fn: Observer | None) -> Iterator[None]:
    """Install `fn` as the training-step observer for the duration (None: no observer)."""
    token = _OBSERVER.set(fn)
    try:
        yield
    finally:
        _OBSERVER.reset(token)


def step_finished(vlm, model, step: int) -> None:
    """Called by a training loop after optimiser step `step` (1-based) of `model` (vlm's live model)."""
    fn = _OBSERVER.get()
    if fn is None:
        return
    with evaluation_of(model):
        fn(vlm, step)


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
