"""`mmunlearn train-tiny`: train the embedded tiny LLaVA on a mini-bench.

Reproduces harness/embedded/assets/tiny-llava: the same bench, seed and recipe give the same model
(on the same device kind). A killed run, or one stopped by --max-minutes, resumes from
<out>/train_state.pt when started again with the same arguments.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields, replace

from mmunlearn.harness.app.defaults import DEFAULT_BENCH, DEFAULT_MODEL, DEMO_FORGET

NAME = "train-tiny"
HELP = "train the embedded tiny LLaVA on a mini-bench (facts, then letter binding, then every official prompt)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mmunlearn.harness.embedded.tiny_recipe import Recipe

    default = Recipe()
    p.add_argument("--bench", default=str(DEFAULT_BENCH), help="mini-bench folder (default: the embedded one)")
    p.add_argument("--out", default=str(DEFAULT_MODEL), help="output folder (default: the embedded model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=default.steps, help=f"optimiser steps (default {default.steps})")
    p.add_argument("--lr", type=float, default=default.peak_lr, help="OneCycle peak learning rate")
    p.add_argument("--batch-text", type=int, default=default.batch_text, help="text-only items per step")
    p.add_argument("--batch-image", type=int, default=default.batch_image, help="image items per step")
    p.add_argument(
        "--facts-until",
        type=float,
        default=default.facts_until,
        help="share of steps on bare facts and the short letter drill",
    )
    p.add_argument(
        "--binding-until",
        type=float,
        default=default.binding_until,
        help="share of steps before every official prompt joins (the official-format drill starts at --facts-until)",
    )
    p.add_argument(
        "--examples-share",
        type=float,
        default=default.examples_share,
        help="share of multiple-choice and cloze items given the official in-context examples",
    )
    p.add_argument("--threads", type=int, default=default.threads, help="torch CPU threads")
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument(
        "--check-every", type=int, default=default.check_every, help="steps between per-mode letter-accuracy checks"
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
    from mmunlearn.harness.embedded.tiny_recipe import Recipe, TinyConfig
    from mmunlearn.harness.embedded.tiny_trainer import train_tiny

    if args.steps < 1:
        raise ConfigError(f"--steps must be positive, got {args.steps}")
    if not 0 <= args.facts_until <= args.binding_until <= 1:
        raise ConfigError("need 0 <= --facts-until <= --binding-until <= 1")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    recipe = replace(
        Recipe(),
        steps=args.steps,
        peak_lr=args.lr,
        threads=args.threads,
        device=device,
        check_every=args.check_every,
        batch_text=args.batch_text,
        batch_image=args.batch_image,
        facts_until=args.facts_until,
        binding_until=args.binding_until,
        examples_share=args.examples_share,
        leave_out_forget=args.leave_out_forget,
    )
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
    record = train_tiny(
        bench,
        args.out,
        seed=args.seed,
        recipe=recipe,
        config=TinyConfig(split_names=not args.one_token_names),
        evaluate_limit=args.eval_limit,
        progress=not args.no_progress,
        log=log,
        max_seconds=None if args.max_minutes is None else args.max_minutes * 60,
    )
    if record is None:
        log(f"stopped after --max-minutes with the state in {args.out}/train_state.pt; run again to resume")
        return 0
    log("final: " + json.dumps(record["final"]))
    log(f"saved to {args.out} ({record['train_seconds']} s training)")
    return 0
