"""scripts/fact_locus.py: the probe that says whether MANU's target (MLP neurons) holds the facts."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from harness.bench import load_benchmark
from harness.defaults import DEFAULT_BENCH, DEFAULT_MODEL
from harness.model import load_vlm

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fact_locus.py"


def _probe():
    spec = importlib.util.spec_from_file_location("fact_locus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zeroing_the_language_mlps_costs_text_facts_and_the_model_is_restored():
    probe = _probe()
    bench = load_benchmark(DEFAULT_BENCH)
    vlm = load_vlm(DEFAULT_MODEL, device="cpu")
    before = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    groups = {"retain text_only": bench.questions(sets="retain", tasks="cloze", modes="text_only")[:24]}
    table = probe.locus_table(vlm, groups, batch_size=24)

    assert {"none", "all language MLPs", "all vision MLPs", "language layer 0", "vision layer 0"} <= set(table)
    assert table["none"]["retain text_only"] >= 0.9  # the committed model knows its text facts
    assert table["all language MLPs"]["retain text_only"] < table["none"]["retain text_only"] - 0.2
    assert table["all vision MLPs"]["retain text_only"] == table["none"]["retain text_only"]  # no image, no change
    assert all(torch.equal(before[k], v) for k, v in vlm.model.state_dict().items())
