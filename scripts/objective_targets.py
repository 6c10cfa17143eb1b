"""Which methods of a result root meet an objective's target, cell by cell, against vanilla.

    python scripts/objective_targets.py results/demo --objective forget-visual [--task cloze --metric accuracy]

For every run and every (set, mode) of the forget and retain sets, the paired difference
run - vanilla over the same questions (seeds pooled per question, 95% profile-bootstrap interval,
harness.app.paired). A cell that should fall under the objective (harness.core.objectives) is met
when the drop is significant (interval below 0); a cell that should stay is met when the interval
shows it kept within the tolerance (its lower end >= -tolerance: an equivalence reading, so a wide
interval does not pass for "kept"). A method MEETS the target when every cell is met.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmunlearn.harness.app.paired import difference
from mmunlearn.harness.core.objectives import OBJECTIVES, should_fall
from mmunlearn.harness.core.records import MODES
from mmunlearn.harness.core.results import load_results

SETS = ("forget", "retain")
SHORT = {"image_text": "img", "text_only": "txt"}


def runs_of(root: Path) -> dict[str, dict]:
    """Run folder name -> its results (a seed aggregate where the folder has one)."""
    return {d.name: load_results(d) for d in sorted((root / "runs").iterdir()) if (d / "results.json").is_file()}


def table(root: Path, objective: str, task: str, metric: str, tolerance: float) -> list[str]:
    runs = runs_of(root)
    base = runs.pop("vanilla")
    cells = [(s, m) for s in SETS for m in MODES]
    head = " | ".join(f"{s} {SHORT[m]} ({'fall' if should_fall(objective, s, m) else 'stay'})" for s, m in cells)
    lines = [f"| method | {head} | target |", "|---|" + "---|" * (len(cells) + 1)]
    for name, run in runs.items():
        row, met = [], True
        for s, m in cells:
            d = difference(run, base, (s, task, m), metric)
            if d is None or d.lo is None or d.hi is None:
                row.append("–")
                met = False
                continue
            ok = d.hi < 0 if should_fall(objective, s, m) else d.lo >= -tolerance
            met &= ok
            row.append(f"{d.diff:+.2f} [{d.lo:+.2f}, {d.hi:+.2f}]{'' if ok else ' ✗'}")
        lines.append(f"| {name} | " + " | ".join(row) + f" | {'MEETS' if met else 'misses'} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="a result root (ROOT/runs/<run>/, vanilla among them)")
    p.add_argument("--objective", choices=OBJECTIVES, default="forget-visual")
    p.add_argument("--task", default="cloze")
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--tolerance", type=float, default=0.05, help="how far a kept cell may fall (default 0.05)")
    args = p.parse_args(argv)
    print(f"{args.task} {args.metric}, run - vanilla, objective {args.objective}, tolerance {args.tolerance}")
    print("\n".join(table(args.root, args.objective, args.task, args.metric, args.tolerance)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
