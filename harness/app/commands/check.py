"""`mmunlearn check`: exit 1 when a run regressed against a baseline run (CI gate)."""

from __future__ import annotations

import argparse

NAME = "check"
HELP = (
    "compare a run with a baseline: exit 1 if a forget/test metric rose or a retain/celebrity metric "
    "fell by more than the tolerance, or a --max/--min gate fails; 2 if the runs are not comparable"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (or its results.json)")
    p.add_argument(
        "--baseline",
        default=None,
        help="baseline run directory (or its results.json), or with --row a result root such as results/demo",
    )
    p.add_argument(
        "--row",
        default=None,
        help="the baseline is the run of this leaderboard label under --baseline (e.g. 'npo (lr=0.002, epochs=3)')",
    )
    p.add_argument(
        "--tolerance", type=float, default=0.02, help="allowed change on each metric's own scale (default 0.02)"
    )
    p.add_argument(
        "--all-metrics",
        action="store_true",
        help="also compare raw membership score means (mia_loss, mia_mink, ...; default: only their AUCs)",
    )
    p.add_argument(
        "--max",
        action="append",
        default=[],
        metavar="SET.KEY.MODE.METRIC=V",
        help="fail when this figure of the run is above V (or not a number), e.g. forget.mia_mink.image_text.auc=0.6",
    )
    p.add_argument(
        "--min",
        action="append",
        default=[],
        metavar="SET.KEY.MODE.METRIC=V",
        help="fail when this figure of the run is below V (or not a number), e.g. retain.cloze.text_only.accuracy=0.9",
    )


def run(args: argparse.Namespace) -> int:
    from mmunlearn.harness.app.check import Gate, apply_gates, compare, gate_only
    from mmunlearn.harness.app.leaderboard import find_row
    from mmunlearn.harness.core.errors import ConfigError
    from mmunlearn.harness.core.results import load_results

    gates = [Gate.parse("max", g) for g in args.max] + [Gate.parse("min", g) for g in args.min]
    if args.baseline is None:
        if not gates:
            raise ConfigError("check needs --baseline, or at least one --max/--min gate")
        report = gate_only(args.run, gates)
    else:
        baseline = find_row([args.baseline], args.row).path if args.row is not None else args.baseline
        report = apply_gates(
            compare(args.run, baseline, args.tolerance, args.all_metrics), load_results(args.run)["metrics"], gates
        )
    print(report.render())
    return 1 if report.failed else 0
