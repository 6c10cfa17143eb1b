"""`mmunlearn demo`: every registered method on the embedded tiny model and mini-bench, plus a
MANU alpha sweep, then the leaderboard. This is what `make run` does; it is resumable like `run`
(rerun to continue).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmunlearn.harness.app.commands.run import add_common_arguments, config_from_args
from mmunlearn.harness.app.defaults import DEMO_FORGET
from mmunlearn.harness.core.errors import ConfigError

NAME = "demo"
HELP = (
    "run every method (and a MANU alpha sweep) on the embedded default (forget 15%) into OUT/runs/<run>/, "
    "then the leaderboard into OUT"
)

# Method parameters for the demo on the embedded tiny model (values as the CLI would take them).
# The MLLMU-Bench training defaults (lr 2e-5, 1 epoch, LoRA r=16) barely move a 5M-parameter
# model, so the training baselines get a larger learning rate and 3 epochs here (measured on the
# tiny model: these show an effect). MANU runs with the paper's default alpha. A method not listed
# runs with its own defaults. The leaderboard labels each row with the parameters that differ
# from the method's defaults.
DEMO_PARAMS: dict[str, dict[str, str]] = {
    "ga": {"lr": "2e-3", "epochs": "3"},
    "grad_diff": {"lr": "2e-3", "epochs": "3"},
    "kl_min": {"lr": "2e-3", "epochs": "3"},
    "npo": {"lr": "2e-3", "epochs": "3"},
    "mmunlearner": {"lr": "1e-3"},
    "manu": {"alpha": "0.3"},
}
# MANU's alpha sweep. On the tiny model the paper's 2 % (and 5 %, 10 %) change no answer: every
# fact is spread over many of its 5,248 neurons. 30 % is the demo's alpha: it forgets in both
# modes and keeps retain within 0.05 (docs/reference-results.md). The "manu" row uses
# DEMO_PARAMS["manu"]; the others run as manu-alpha-<a>.
DEMO_MANU_ALPHAS = ("0.2", "0.3", "0.4")
# Questions per (set, task, mode): every forget and test question (54-63), 60 of the others.
DEMO_LIMIT = 60
DEMO_SCORERS = ("generate", "loglik_frame")
DEMO_BATCH_SIZE = 32
REFERENCE_FIRST = ("vanilla",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    # loglik_frame beside the official scorer: the tiny model knows its facts but cannot read an
    # option list (see docs/scorers.md), so the official letter accuracy alone would hide every effect; it
    # answers bare image questions in full sentences, so its options are scored inside that frame
    # (tasks/classification.py), not straight after ASSISTANT: as loglik_answer does.
    # Zero-shot: the tiny model's figures are zero-shot, and it keeps `make run` within minutes on a
    # laptop CPU (the official in-context prompts are 5-10x longer); `run` defaults to them.
    # Batches of 32: decoding a 5M-parameter model is per-step overhead, so larger batches are faster.
    p.set_defaults(
        judge=None,
        limit=DEMO_LIMIT,
        scorers=list(DEMO_SCORERS),
        forget=DEMO_FORGET,
        shots=0,
        batch_size=DEMO_BATCH_SIZE,
    )
    for action in p._actions:  # the demo needs no network: say so in --help
        if action.dest == "judge":
            action.help = "factuality judge model (default none for the demo)"
        elif action.dest == "scorers":
            action.help = f"classification scorers (default {' '.join(DEMO_SCORERS)} for the demo)"
        elif action.dest == "limit":
            action.help = f"at most N questions per (set, task, mode) (default {DEMO_LIMIT} for the demo)"
        elif action.dest == "shots":
            action.help = "in-context examples: 0 (default for the demo: zero-shot), 'official' or N"
        elif action.dest == "forget":
            action.help = f"forget split in percent (default {DEMO_FORGET} for the demo: 9 profiles)"
    p.add_argument("--methods", nargs="+", default=None, help="subset of methods (default: every registered method)")
    p.add_argument(
        "--manu-alphas",
        nargs="+",
        default=list(DEMO_MANU_ALPHAS),
        metavar="A",
        help=f"MANU alpha sweep (default {' '.join(DEMO_MANU_ALPHAS)}; the 'manu' row runs at its demo alpha)",
    )
    p.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="seeds 0..N-1 per run (default 1: one run folder per method); with N > 1 each run folder holds "
        "seed-<s>/ runs and their aggregate, and a seed-independent run runs once",
    )


def demo_methods(selected: list[str] | None) -> list[str]:
    from mmunlearn.harness.core.contracts import get_method, registered_methods

    names = list(selected) if selected else list(registered_methods())
    for n in names:
        get_method(n)  # unknown names fail before any work
    return [n for n in REFERENCE_FIRST if n in names] + [n for n in names if n not in REFERENCE_FIRST]


def demo_runs(methods: list[str], alphas=DEMO_MANU_ALPHAS) -> list[tuple[str, str, dict[str, str]]]:
    """(run folder name, method, params) of every demo run: each method once, and MANU at every
    sweep alpha other than its demo alpha."""
    runs = [(m, m, dict(DEMO_PARAMS.get(m, {}))) for m in methods]
    if "manu" in methods:
        chosen = DEMO_PARAMS.get("manu", {}).get("alpha")
        runs += [
            (f"manu-alpha-{a}", "manu", {**DEMO_PARAMS.get("manu", {}), "alpha": a}) for a in alphas if a != chosen
        ]
    return runs


def run(args: argparse.Namespace) -> int:
    from mmunlearn.harness.app.leaderboard import build_leaderboard
    from mmunlearn.harness.app.runner import run_benchmark
    from mmunlearn.harness.app.seeds import run_seeds

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    out = Path(args.out)
    runs = demo_runs(demo_methods(args.methods), tuple(args.manu_alphas))
    dirs = []
    for i, (folder, method, params) in enumerate(runs, 1):
        if not args.quiet:
            print(f"[mmunlearn demo] run {i}/{len(runs)}: {folder}", flush=True)
        run_dir = out / "runs" / folder
        cfg = config_from_args(args, method=method, params=params)
        if args.seeds > 1:
            run_seeds(cfg, list(range(args.seeds)), run_dir, lambda c, d: run_benchmark(c, d, progress=not args.quiet))
        else:
            run_benchmark(cfg, run_dir, progress=not args.quiet)
        dirs.append(run_dir)
    files = build_leaderboard(dirs, out)
    print(f"leaderboard: {files['leaderboard.md']}")
    return 0
