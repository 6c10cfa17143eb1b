"""The diagnostic scripts under scripts/: fact_locus (where the facts live) and the option-binding drill."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import torch

from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.app.defaults import DEFAULT_BENCH, DEFAULT_MODEL
from mmunlearn.harness.core.model import load_vlm
from mmunlearn.harness.core.records import LETTERS

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zeroing_the_language_mlps_costs_text_facts_and_the_model_is_restored():
    probe = _script("fact_locus")
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


def test_drill_answer_names_each_option_with_its_own_letter():
    drill = _script("option_binding_drill")
    values = [f"v{i}" for i in range(20)]
    for seed in range(5):
        prompt, answer = drill.drill_item(values, random.Random(seed))
        listed = dict(line.split(": ") for line in prompt.split("\n"))
        words = answer.split()
        pairs = dict(zip(words[1::2], words[0::2]))  # letter -> option text named before it
        assert list(listed) == list(LETTERS) and pairs == listed


def test_robustness_grid_cell_reads_recovery_control_and_trained_or_not_defined():
    grid = _script("robustness_grid")
    figures = {
        "recovery_from_text_only": 0.5,
        "control_recovery_from_text_only": -0.25,
        "trained_recovery_from_text_only": 1.0,
        "recovery_from_image_text": None,  # unlearning removed too little: not defined
        "control_recovery_from_image_text": None,
        "trained_recovery_from_image_text": None,
    }
    assert grid.cell(figures, "text_only") == "0.50 / -0.25 / 1.00"
    assert grid.cell(figures, "image_text") == "n/a"


def test_robustness_page_tables_are_the_committed_results(capsys):
    """docs/robustness.md: its grid, attack-fit and sweep tables are exactly what
    `python scripts/robustness_grid.py results/robustness` prints from the committed runs (no row
    missing, none stale)."""
    grid = _script("robustness_grid")
    assert grid.main([str(SCRIPTS.parent / "results" / "robustness")]) == 0

    def rows(lines):
        return [line for line in lines if line.startswith("| ") and not line.startswith(("| method |", "|---"))]

    printed = rows(capsys.readouterr().out.splitlines())
    page = (SCRIPTS.parent / "docs" / "robustness.md").read_text()
    section = page[page.index("## On the embedded default (`make robustness`") :]
    assert len(printed) == 4 * 3 + 4 + 3 * 2  # grid: 4 methods x 3 tasks; fit: 4; sweep: 3 trained x 2 modes
    assert rows(section.splitlines()) == printed


def test_reference_results_page_tables_are_the_committed_results(capsys):
    """docs/reference-results.md: its cloze and multiple-choice tables are exactly what
    `python scripts/reference_table.py results/demo` prints from the committed runs."""
    table = _script("reference_table")
    assert table.main([str(SCRIPTS.parent / "results" / "demo")]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    page = (SCRIPTS.parent / "docs" / "reference-results.md").read_text()
    assert len(printed) == 2 * (1 + 10)  # two tables: a header and ten runs each
    assert [line for line in page.splitlines() if line.startswith("| ") and line in printed] == printed


def test_objective_targets_reads_each_cell_by_the_objective():
    """On the committed demo: under forget-visual the text-only forget cell must stay (MMUnlearner's
    stays, GA's falls), under forget-both it must fall; a method meets the target only when every
    cell is met."""
    targets = _script("objective_targets")
    root = Path(__file__).resolve().parent.parent / "results" / "demo"
    visual = {
        line.split(" | ")[0][2:]: line for line in targets.table(root, "forget-visual", "cloze", "accuracy", 0.05)
    }
    both = targets.table(root, "forget-both", "cloze", "accuracy", 0.05)
    assert "forget txt (stay)" in visual["method"] and "forget txt (fall)" in both[0]
    mmu = visual["mmunlearner"].split(" | ")
    assert not mmu[2].endswith("✗") and visual["ga"].split(" | ")[2].endswith("✗")
    assert all(line.endswith("| misses |") == ("✗" in line) for line in list(visual.values())[2:])
