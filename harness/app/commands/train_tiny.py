"""`mmunlearn train-tiny`: train the embedded tiny LLaVA on a mini-bench.

Reproduces harness/embedded/assets/tiny-llava: the same bench, seed and recipe give the same model
(on the same device kind). `--skills-from MODEL` continues a trained model instead, teaching it the
utility suites' and CLEAR's prompts beside its facts (tiny_skills; recipe SKILLS_RECIPE). A killed
run, or one stopped by --max-minutes, resumes from <out>/train_state.pt when started again with
the same arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from dataclasses import fields, replace

from mmunlearn.harness.app.defaults import DEFAULT_BENCH, DEFAULT_MODEL, DEMO_FORGET

NAME = "train-tiny"
HELP = "train the embedded tiny LLaVA on a mini-bench (facts, then letter binding, then every official prompt), or teach a trained one the utility and CLEAR skills (--skills-from)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mmunlearn.harness.embedded.tiny_recipe import SKILLS_RECIPE, Recipe

    default, skills = Recipe(), SKILLS_RECIPE
    p.add_argument("--bench", default=str(DEFAULT_BENCH), help="mini-bench folder (default: the embedded one)")
    p.add_argument("--out", default=str(DEFAULT_MODEL), help="output folder (default: the embedded model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--skills-from",
        default=None,
        metavar="MODEL",
        help="continue this trained tiny model with the utility suites' and CLEAR's prompts beside its facts "
        "(its own defaults below in brackets)",
    )
    p.add_argument(
        "--clear-bench",
        default=None,
        help="mini-CLEAR folder whose prompts --skills-from teaches (default: the embedded one)",
    )
    p.add_argument(
        "--steps", type=int, default=None, help=f"optimiser steps (default {default.steps} [{skills.steps}])"
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"OneCycle peak learning rate (default {default.peak_lr} [{skills.peak_lr}])",
    )
    p.add_argument(
        "--vision-lr",
        type=float,
        default=None,
        help=f"peak learning rate of the vision tower and projector (default: --lr [{skills.vision_lr}])",
    )
    p.add_argument(
        "--utility-share",
        type=float,
        default=None,
        help=f"--skills-from: share of each image batch on the utility suites' pictures [{skills.utility_share}]",
    )
    p.add_argument(
        "--grounding-share",
        type=float,
        default=None,
        help="--skills-from: share of each image batch on reading the picture (what is where) "
        f"[{skills.grounding_share}]",
    )
    p.add_argument(
        "--clear-share",
        type=float,
        default=None,
        help=f"--skills-from: share of each batch on CLEAR's prompts [{skills.clear_share}]",
    )
    p.add_argument(
        "--batch-text", type=int, default=None, help=f"text-only items per step (default {default.batch_text})"
    )
    p.add_argument(
        "--batch-image", type=int, default=None, help=f"image items per step (default {default.batch_image})"
    )
    p.add_argument(
        "--facts-until",
        type=float,
        default=None,
        help=f"share of steps on bare facts and the short letter drill (default {default.facts_until} "
        f"[{skills.facts_until}])",
    )
    p.add_argument(
        "--binding-until",
        type=float,
        default=None,
        help="share of steps before every official prompt joins (the official-format drill starts at "
        f"--facts-until; default {default.binding_until} [{skills.binding_until}])",
    )
    p.add_argument(
        "--examples-share",
        type=float,
        default=None,
        help="share of multiple-choice and cloze items given the official in-context examples "
        f"(default {default.examples_share})",
    )
    p.add_argument("--threads", type=int, default=None, help=f"torch CPU threads (default {default.threads})")
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument(
        "--check-every",
        type=int,
        default=None,
        help=f"steps between per-mode letter-accuracy checks (default {default.check_every} [{skills.check_every}])",
    )
    p.add_argument(
        "--eval-limit",
        type=int,
        default=None,
        help="questions per (set, task, mode) in the final evaluation (default: all)",
    )
    p.add_argument(
        "--max-minutes", type=float, default=None, help="stop after this long with the state saved; run again to resume"
    )
    p.add_argument(
        "--one-token-names",
        action="store_true",
        help="one token per full name (the v1 model; its facts do not live in the MLPs)",
    )
    p.add_argument(
        "--leave-out-forget",
        action="store_true",
        help=f"never train on the forget {DEMO_FORGET} profiles (the reference model of the privacy metrics)",
    )
    p.add_argument("--log", default=None, help="also append progress lines to this file")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from mmunlearn.harness.core.bench import load_benchmark
    from mmunlearn.harness.core.errors import ConfigError
    from mmunlearn.harness.app.defaults import MINI_CLEAR
    from mmunlearn.harness.embedded.tiny_recipe import SKILLS_RECIPE, Recipe, TinyConfig
    from mmunlearn.harness.embedded.tiny_trainer import continue_tiny, train_tiny

    given = {
        "steps": args.steps,
        "peak_lr": args.lr,
        "vision_lr": args.vision_lr,
        "threads": args.threads,
        "check_every": args.check_every,
        "batch_text": args.batch_text,
        "batch_image": args.batch_image,
        "facts_until": args.facts_until,
        "binding_until": args.binding_until,
        "examples_share": args.examples_share,
        "utility_share": args.utility_share,
        "grounding_share": args.grounding_share,
        "clear_share": args.clear_share,
    }
    shares = ("utility_share", "grounding_share", "clear_share")
    if not args.skills_from and any(given[k] is not None for k in shares):
        raise ConfigError("--utility-share, --grounding-share and --clear-share apply to --skills-from only")
    recipe = replace(
        SKILLS_RECIPE if args.skills_from else Recipe(),
        **{k: v for k, v in given.items() if v is not None},
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        leave_out_forget=args.leave_out_forget,
    )
    if recipe.steps < 1:
        raise ConfigError(f"--steps must be positive, got {recipe.steps}")
    if not 0 <= recipe.facts_until <= recipe.binding_until <= 1:
        raise ConfigError("need 0 <= --facts-until <= --binding-until <= 1")
    if min(getattr(recipe, k) for k in shares) < 0 or sum(getattr(recipe, k) for k in shares) >= 1:
        raise ConfigError("the skill shares must be >= 0 with a sum below 1 (the facts keep the rest)")
    bench = load_benchmark(args.bench, forget=DEMO_FORGET)  # training uses every set but test; checks: forget 15

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        if args.log:
            with open(args.log, "a") as f:
                f.write(line + "\n")

    log(
        f"train-tiny: bench {bench.source}, out {args.out}, seed {args.seed}, recipe "
        + json.dumps({f.name: getattr(recipe, f.name) for f in fields(recipe)})
    )
    common = dict(
        seed=args.seed,
        recipe=recipe,
        evaluate_limit=args.eval_limit,
        progress=not args.no_progress,
        log=log,
        max_seconds=None if args.max_minutes is None else args.max_minutes * 60,
    )
    if args.skills_from:
        clear = args.clear_bench or MINI_CLEAR
        record = continue_tiny(args.skills_from, bench, args.out, Path(clear), **common)
    else:
        record = train_tiny(bench, args.out, config=TinyConfig(split_names=not args.one_token_names), **common)
    if record is None:
        log(f"stopped after --max-minutes with the state in {args.out}/train_state.pt; run again to resume")
        return 0
    log("final: " + json.dumps(record["final"]))
    log(f"saved to {args.out} ({record['train_seconds']} s training)")
    return 0
