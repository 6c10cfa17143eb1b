"""The "Robustness" page's tables (docs/robustness.md), read from a leaderboard root of runs made with `--stages relearn
--eval-every N` (`make robustness` writes results/robustness): per method and task, the 2x2
recovery grid (held-out recovery / control / trained profiles' recovery per cell), how well each
attack fitted what it trained on (its last epoch's answer NLL, over the folds), then the
checkpoint sweep (cloze on the swept subset at every checkpoint, and the first collapsed step).

    python scripts/robustness_grid.py results/robustness [--methods ga npo manu mmunlearner]

The page's figures are this script's output on the committed results, so they can be checked
against them (and regenerated with them) rather than copied by hand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmunlearn.harness.app.leaderboard import method_label
from mmunlearn.harness.core.records import MODES
from mmunlearn.harness.core.results import load_results

SHORT = {"image_text": "img", "text_only": "txt"}
# (the relearn task key, how the page names it)
TASKS = (
    ("relearn_cloze", "cloze"),
    ("relearn_classification_loglik_frame", "MC (loglik_frame)"),
    ("relearn_generation", "generation (ROUGE-L)"),
)
# the page's column order: relearned in r, evaluated in e
GRID = (
    ("text_only", "image_text"),
    ("text_only", "text_only"),
    ("image_text", "image_text"),
    ("image_text", "text_only"),
)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def cell(figures: dict, relearn: str) -> str:
    """'recovery / control / trained' for one (relearn mode, eval mode) cell, or n/a (not defined)."""
    keys = (f"recovery_from_{relearn}", f"control_recovery_from_{relearn}", f"trained_recovery_from_{relearn}")
    values = [figures.get(k) for k in keys]
    return "n/a" if values[0] is None else " / ".join(_fmt(v) for v in values)


def label(results: dict) -> str:
    """The leaderboard's row label: the method and the parameters it changed from its defaults."""
    method = results["manifest"]["method"]
    return method_label(method["name"], method.get("params") or {})


def grid_rows(results: dict) -> list[str]:
    forget = results["metrics"]["forget"]
    rows = []
    for key, name in TASKS:
        if key not in forget:
            continue
        cells = forget[key]
        levels = ", ".join(f"{_fmt(cells[m]['original'])} / {_fmt(cells[m]['unlearned'])}" for m in MODES)
        grid = " | ".join(cell(cells[e], r) for r, e in GRID)
        rows.append(f"| {label(results)} | {name} | {levels} | {grid} |")
    return rows


ATTACKS = ("attack-text_only", "attack-image_text", "control-text_only", "control-image_text")


def fit_row(results: dict) -> str:
    """The last epoch's training NLL of each attack, lowest-highest over the folds (a reused attack
    that was not retrained has none)."""
    attacks = results["manifest"]["stages"]["relearn"].get("attacks") or {}
    cells = []
    for name in ATTACKS:
        nll = [a["loss_by_epoch"][-1]["nll"] for a in attacks.get(name, []) if a.get("loss_by_epoch")]
        cells.append(f"{min(nll):.3g}-{max(nll):.3g}" if nll else "n/a")
    return f"| {label(results)} | {' | '.join(cells)} |"


def sweep_rows(results: dict, task: str = "cloze", metric: str = "accuracy") -> list[str]:
    sweep = results["manifest"].get("stages", {}).get("sweep")
    collapse = results["metrics"].get("retain", {}).get("collapse")
    if not sweep or not collapse or not sweep.get("curve"):
        return []  # no sweep, or a method without training steps (MANU)
    curve, rows = sweep["curve"], []
    for m in MODES:
        forget = ", ".join(_fmt(p["metrics"]["forget"][task][m][metric]) for p in curve)
        retain = ", ".join(_fmt(p["metrics"]["retain"][task][m][metric]) for p in curve)
        first = collapse[m]["first_collapse_step"]
        rows.append(
            f"| {label(results)} | {SHORT[m]} | {', '.join(str(p['step']) for p in curve)} | {forget} | {retain} "
            f"| {'never' if first is None else first} | {_fmt(collapse[m]['final_degenerate_share'])} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a leaderboard root (its runs/ hold the runs)")
    parser.add_argument("--methods", nargs="+", default=["ga", "npo", "manu", "mmunlearner"], help="run folder names")
    args = parser.parse_args(argv)
    runs = [load_results(args.root / "runs" / name) for name in args.methods]
    print("| method | task | original / unlearned img, txt | text → img | text → txt | image → img | image → txt |")
    print("|---|---|---|---|---|---|---|")
    for results in runs:
        print("\n".join(grid_rows(results)))
    print()
    print("| method | attack, text_only | attack, image_text | control, text_only | control, image_text |")
    print("|---|---|---|---|---|")
    for results in runs:
        print(fit_row(results))
    print()
    print("| method | mode | steps | forget cloze | retain cloze | first collapse | final degenerate share |")
    print("|---|---|---|---|---|---|---|")
    for results in runs:
        rows = sweep_rows(results)
        if rows:
            print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
