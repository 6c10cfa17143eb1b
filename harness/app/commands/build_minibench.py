"""`mmunlearn build-minibench`: (re)generate the embedded mini-bench deterministically."""

from __future__ import annotations

from mmunlearn.harness.app.defaults import DEFAULT_SEED
from mmunlearn.harness.embedded.minibench import HOLDOUT_PROFILES, build_minibench

NAME = "build-minibench"
HELP = "Generate the mini-bench (fictitious profiles, MLLMU-Bench layout) into a folder."


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="output folder (one sub-folder per config)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed (same seed = same bytes)")
    p.add_argument("--profiles", type=int, default=60, help="number of fictitious profiles")
    p.add_argument("--celebrities", type=int, default=20, help="number of celebrity (Retain_Set) profiles")
    p.add_argument(
        "--holdout",
        type=int,
        default=HOLDOUT_PROFILES,
        help="number of Holdout_Set profiles (never trained on: membership inference's non-members)",
    )


def run(args) -> int:
    out = build_minibench(
        args.out, seed=args.seed, n_profiles=args.profiles, n_celebrities=args.celebrities, n_holdout=args.holdout
    )
    print(f"wrote mini-bench to {out}")
    return 0
