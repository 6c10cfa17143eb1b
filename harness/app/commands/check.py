"""`mmunlearn check`: exit 1 when a run regressed against a baseline run (CI gate)."""

from __future__ import annotations

import argparse

NAME = "check"
HELP = (
    "compare a run with a baseline: exit 1 if a forget/test metric rose or a retain/celebrity metric "
    "fell by more than the tolerance, 2 if the runs are not comparable"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory (or its results.json)")
    p.add_argument(
        "--baseline",
        required=True,
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


def run(args: argparse.Namespace) -> int:
    from mmunlearn.harness.app.check import compare
    from mmunlearn.harness.app.leaderboard import find_row

    baseline = find_row([args.baseline], args.row).path if args.row is not None else args.baseline
    report = compare(args.run, baseline, args.tolerance)
    print(report.render())
    return 1 if report.failed else 0
