"""Shared fixtures: a small generated mini-bench, and writable copies of it to corrupt."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from mmunlearn.harness.embedded.minibench import PARQUET_NAME, build_minibench

# Tiny models: one thread is fastest, and spinning extra threads on a shared 2-core machine
# slows tests by two orders of magnitude.
torch.set_num_threads(1)

SMALL = {"n_profiles": 20, "n_celebrities": 4}  # forget_5/10/15 = 1/2/3 profiles


@pytest.fixture(scope="session")
def small_bench(tmp_path_factory) -> Path:
    """A small mini-bench built once per session (read-only by convention)."""
    return build_minibench(tmp_path_factory.mktemp("minibench") / "bench", seed=0, **SMALL)


@pytest.fixture
def bench_copy(small_bench, tmp_path) -> Path:
    """A private copy of the small mini-bench that a test may corrupt."""
    return Path(shutil.copytree(small_bench, tmp_path / "bench"))


def _rewrite_config(root: Path, config: str, edit) -> None:
    path = root / config / PARQUET_NAME
    table = pq.read_table(path)
    rows = edit(table.to_pylist())
    pq.write_table(table.from_pylist(rows, schema=table.schema), path)


@pytest.fixture
def rewrite_config():
    """rewrite_config(root, config, edit): apply edit(rows) -> rows to one config, keeping its schema."""
    return _rewrite_config
