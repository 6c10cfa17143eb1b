"""`mmunlearn build-minibench`: (re)generate the embedded mini-bench deterministically; with
`--clear`, the mini-CLEAR (the same people in the CLEAR hub layout) from an existing mini-bench; with
`--utility`, the mini utility suites (shape pictures in the MMMU, LLaVA-Bench, MME and POPE hub layouts)."""

from __future__ import annotations

from mmunlearn.harness.app.defaults import DEFAULT_SEED
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.embedded.mini_clear import MINIBENCH, build_mini_clear
from mmunlearn.harness.embedded.mini_utility import build_mini_utility
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
    p.add_argument(
        "--clear",
        nargs="?",
        const=str(MINIBENCH),
        metavar="MINIBENCH",
        help="instead write the mini-CLEAR (CLEAR hub layout) built from the mini-bench folder MINIBENCH "
        "(default: the embedded one); --profiles/--celebrities/--holdout do not apply",
    )
    p.add_argument(
        "--utility",
        action="store_true",
        help="instead write the mini utility suites (shape pictures in the MMMU, LLaVA-Bench, MME and POPE "
        "hub layouts); --profiles/--celebrities/--holdout do not apply",
    )


def run(args) -> int:
    if getattr(args, "utility", False):
        if args.clear is not None:
            raise ConfigError("--clear and --utility each write their own suite: give one of them")
        counts = build_mini_utility(args.out, seed=args.seed)
        print(f"wrote the mini utility suites ({len(counts)} configs, {sum(counts.values())} rows) to {args.out}")
        return 0
    if args.clear is not None:
        counts = build_mini_clear(args.out, args.clear, seed=args.seed)
        print(f"wrote mini-CLEAR ({len(counts)} configs, {sum(counts.values())} rows) to {args.out}")
        return 0
    out = build_minibench(
        args.out, seed=args.seed, n_profiles=args.profiles, n_celebrities=args.celebrities, n_holdout=args.holdout
    )
    print(f"wrote mini-bench to {out}")
    return 0
