"""Where does a model keep the benchmark's facts? Cloze accuracy with MLP blocks zeroed.

MANU removes knowledge by pruning MLP neurons, so it can only work on a model whose facts live
in MLP neurons. This probe zeroes every unit of one MLP block at a time (and then all language
MLPs, and all vision MLPs) with the same exact pruning MANU uses, and prints cloze accuracy
(official substring scoring, greedy) on the forget and retain sets in both modes.

    python scripts/fact_locus.py [--model DIR] [--bench DIR] [--limit 60]

Figures it gave on the embedded tiny LLaVA are in docs/reference-results.md (v2) and docs/tiny-model.md (v1).
"""

from __future__ import annotations

import argparse
import copy

import numpy as np

from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.app.defaults import DEFAULT_BENCH, DEFAULT_MODEL, DEMO_FORGET
from mmunlearn.harness.core.model import load_vlm
from mmunlearn.harness.core.neurons import neuron_map, prune_units
from mmunlearn.harness.core.records import MODES
from mmunlearn.harness.core.contracts import TaskContext, get_task


def cloze_accuracy(vlm, questions, batch_size: int) -> float:
    """The cloze task's own official accuracy, zero-shot (one scoring path with the runs)."""
    task = get_task("cloze")
    ctx = TaskContext(shots=0, batch_size=batch_size, max_new_tokens=12)
    return float(task.aggregate(task.evaluate(vlm, questions, ctx))["accuracy"])


def ablations(nmap) -> dict[str, np.ndarray]:
    """Unit masks: nothing, each MLP block in turn, all language MLPs, all vision MLPs."""
    out = {"none": np.zeros(nmap.total, bool)}
    for i, block in enumerate(nmap.blocks):
        mask = np.zeros(nmap.total, bool)
        mask[nmap.block_slice(i)] = True
        out[f"{block.tower} layer {block.layer}"] = mask
    for tower in ("language", "vision"):
        out[f"all {tower} MLPs"] = nmap.tower == tower
    return out


def locus_table(vlm, groups: dict, batch_size: int = 32) -> dict[str, dict]:
    """{ablation: {group: cloze accuracy}}; the model's weights are restored afterwards."""
    nmap = neuron_map(vlm.model)
    original = copy.deepcopy(vlm.model.state_dict())
    table = {}
    try:
        for name, mask in ablations(nmap).items():
            prune_units(vlm.model, nmap, mask)
            table[name] = {g: cloze_accuracy(vlm, qs, batch_size) for g, qs in groups.items()}
            vlm.model.load_state_dict(original)
    finally:
        vlm.model.load_state_dict(original)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--bench", default=str(DEFAULT_BENCH))
    p.add_argument("--forget", type=int, default=DEMO_FORGET)
    p.add_argument("--limit", type=int, default=60, help="cloze questions per (set, mode)")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()

    bench = load_benchmark(args.bench, forget=args.forget)
    groups = {
        f"{s} {m}": bench.questions(sets=s, tasks="cloze", modes=m)[: args.limit]
        for s in ("forget", "retain")
        for m in MODES
    }
    table = locus_table(load_vlm(args.model), groups, args.batch_size)
    print(f"| MLP units zeroed | {' | '.join(groups)} |\n|---|" + "---|" * len(groups))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row.values()) + " |")


if __name__ == "__main__":
    main()
