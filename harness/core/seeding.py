"""Seeding and fixed-size slicing: the two small pieces every layer needs for results that repeat."""

from __future__ import annotations

import random


def seed_everything(seed: int) -> None:
    """Seed every RNG a run may touch (Python, NumPy, torch), so results repeat."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def chunks(items: list, size: int) -> list[list]:
    """Consecutive slices of `size` items (the last may be shorter)."""
    return [items[i : i + size] for i in range(0, len(items), size)]
