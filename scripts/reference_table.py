"""The reference-results tables of docs/reference-results.md, read from a demo root
(`make reference` -> results/demo): per method, forget and retain cloze accuracy and multiple
choice (`accuracy_loglik_frame`) in both modes, each as mean ±half-width of its 95% interval
(seeds and questions), with the between-seed sd where the row has several seeds.

    python scripts/reference_table.py results/demo

The page's tables are this script's output on the committed results
(tests/test_scripts.py checks it), so they cannot drift from the results they describe.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmunlearn.harness.app.leaderboard import load_runs
from mmunlearn.harness.app.seeds import seed_summary
from mmunlearn.harness.core.results import interval_bounds

COLUMNS = [
    ("cloze", "accuracy", "cloze"),
    ("classification", "accuracy_loglik_frame", "MC (loglik_frame)"),
]
CELLS = [(s, m) for s in ("forget", "retain") for m in ("image_text", "text_only")]
SHORT = {"image_text": "img", "text_only": "txt"}


def cell(results: dict, s: str, task: str, metric: str, mode: str) -> str:
    v = results["metrics"].get(s, {}).get(task, {}).get(mode, {}).get(metric)
    if not isinstance(v, (int, float)):
        return "–"
    b = interval_bounds(results, s, task, mode, metric)
    text = f"{v:.2f}" + ("" if b is None else f" ±{(b[1] - b[0]) / 2:.2f}")
    summary = seed_summary(results, s, task, mode, metric)
    if summary and summary.get("sd") is not None:
        text += f" (sd {summary['sd']:.2f})"
    return text


def tables(root: Path) -> list[str]:
    runs = load_runs([root])
    lines = []
    for task, metric, title in COLUMNS:
        header = ["method", "seeds"] + [f"{s} {SHORT[m]}" for s, m in CELLS]
        lines += [f"{title}:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in runs:
            cells = [cell(r.results, s, task, metric, m) for s, m in CELLS]
            lines.append("| " + " | ".join([r.label, str(r.n_seeds)] + cells) + " |")
        lines.append("")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path)
    args = p.parse_args(argv)
    print("\n".join(tables(args.root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
