"""`mmunlearn leaderboard`: tables (md/csv/html) and plots from many run directories."""

from __future__ import annotations

import argparse

NAME = "leaderboard"
HELP = "render leaderboard tables (Markdown, CSV, HTML) and PNG plots from run directories"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run directories (or results.json files) on one benchmark and forget split")
    p.add_argument("--out", required=True, help="folder for leaderboard.md/.csv/.html and the plots")
    p.add_argument(
        "--objective",
        default=None,
        help="judge every row under this objective (forget-both, forget-visual) instead of its run's own",
    )


def run(args: argparse.Namespace) -> int:
    from mmunlearn.harness.app.leaderboard import build_leaderboard

    files = build_leaderboard(args.runs, args.out, objective=args.objective)
    for name in sorted(files):
        print(files[name])
    return 0
